"""What every data source becomes (`DatasetSpec`), its two kinds of image sets, and the sets that
need no files: digits and synthetic. torchvision's sets are read by data/torchvision_sets.py,
folders, archives and CSV lists by data/folders.py and data/csvlist.py; data/sources.py picks
the reader for a --data value.

A `DatasetSpec` has a train and a test split that yield (PIL RGB image, class index), and the
class names. Images stay in their own size and mode until here; the model decides the input
size later.
"""
from __future__ import annotations

import hashlib
import os

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from tudui.data.images import IMAGE_FORMATS, load_image
from tudui.settings import counted

SPLITS = ("train", "val", "test")


@dataclass(kw_only=True)
class DatasetSpec:
    """A built data set: a train split, a val and/or a test split of (PIL RGB image, label), and
    what they mean. val picks the best epoch; test is measured once, on the chosen weights."""
    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None
    class_names: list[str]
    kind: str            # digits, synthetic, folder, or a torchvision set's name (cifar10, mnist, ...)
    source: str          # what was loaded, for messages and metadata
    in_memory: bool      # decoded arrays (no worker processes needed) or files on disk
    ignored: dict[str, int] = field(default_factory=dict)   # what was skipped: {"hidden file": 2, ...}

    def splits(self) -> dict[str, Dataset]:
        """{name: images} of the splits it has, in the order train, val, test."""
        return {name: getattr(self, name) for name in SPLITS if getattr(self, name) is not None}

    def fingerprint(self, sizes: bool = False) -> dict[str, list]:
        """{split: [images, a short hash of which ones]}: what a resumed run checks is unchanged.
        Files count by path within the data set's folder and label (and with sizes, their size in
        bytes), not by time, so a copy touched again, or an archive unpacked again, is the same."""
        absolute = {name: [os.path.abspath(path) for path, _ in images.samples]
                    for name, images in self.splits().items() if isinstance(images, FileImages)}
        files = [file for paths in absolute.values() for file in paths]
        root = os.path.commonpath(files) if files else ""
        # Every file is under root: its path within the data set is what follows root (os.path.relpath's
        # answer, without its per-file cost, which was most of a start-up's second on 60,000 files).
        cut = len(root) if root.endswith(os.sep) else len(root) + 1
        prints = {}
        for name, images in self.splits().items():
            digest = hashlib.sha256()
            if isinstance(images, FileImages):
                for file, (path, label) in zip(absolute[name], images.samples):
                    size = f"|{_size(path)}" if sizes else ""
                    digest.update(f"{file[cut:] or '.'}|{label}{size}\n".encode())
            elif getattr(images, "labels", None) is not None:
                digest.update(np.asarray(images.labels, dtype=np.int64).tobytes())
            prints[name] = [len(images), digest.hexdigest()[:16]]
        return prints

    def ignored_words(self) -> str:
        """What was skipped, in words: "1 empty class folder, 3 hidden files"."""
        return ", ".join(counted(n, what) for what, n in self.ignored.items())

    def sizes(self) -> str:
        """The split sizes, e.g. "1,000 train / 200 val / 500 test images"."""
        splits = self.splits()
        total = sum(len(images) for images in splits.values())
        return " / ".join(f"{len(images):,} {name}" for name, images in splits.items()) + (
            " image" if total == 1 else " images")


def _size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


class ArrayImages(Dataset):
    """Images held as a uint8 array (N, H, W) or (N, H, W, 3) with integer labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images = np.ascontiguousarray(images, dtype=np.uint8)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[i]).convert("RGB"), int(self.labels[i])


class FileImages(Dataset):
    """Image files listed as (path, label) pairs, decoded on access; with at_least, large JPEGs
    are decoded at a fraction of their size that keeps both sides at least that many pixels
    (for evaluation's resize: images.reduce_while_decoding)."""

    def __init__(self, samples: list[tuple[Path, int]], at_least: int = 0):
        self.samples = samples
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.at_least = at_least
        self._identity: str | None = None

    def decoded_for(self, at_least: int) -> FileImages:
        """The same files (and identity), decoded for a resize to at_least pixels."""
        other = FileImages.__new__(FileImages)
        other.__dict__.update(self.__dict__, at_least=at_least)
        return other

    def identity(self) -> str:
        """files_identity of the samples, worked out once (the caches' keys all start from it)."""
        if self._identity is None:
            self._identity = files_identity(self.samples)
        return self._identity

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        path, label = self.samples[i]
        return load_image(path, self.at_least), label


def typical_side(dataset: Dataset, sample: int = 16) -> int | None:
    """The median longer side, in pixels, of up to `sample` images spread over dataset (for file
    images, from their headers only); None when none can be read."""
    if isinstance(dataset, ArrayImages):
        return max(dataset.images.shape[1:3]) if len(dataset) else None
    if not isinstance(dataset, FileImages):
        return None
    sides = []
    for i in np.linspace(0, len(dataset) - 1, min(sample, len(dataset))).astype(int) if len(dataset) else []:
        try:
            with Image.open(dataset.samples[i][0], formats=IMAGE_FORMATS) as image:
                sides.append(max(image.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return int(np.median(sides)) if sides else None


def files_identity(samples: list[tuple[Path, int]]) -> str:
    """A hash of each (path, label) with the file's size and modification time, in order. The path
    is made absolute by its spelling (os.path.abspath: no call to the disk per file); a file that
    changes changes its size or time."""
    digest = hashlib.sha256()
    for path, label in samples:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- embedded and generated sets

def digits() -> DatasetSpec:
    """scikit-learn's 1,797 8x8 handwritten digits, split 80/20 by class with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # Pixel values are 0..16 counts of a 4x4 block; stretch them to 0..255 grey levels.
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=0.2, stratify=bunch.target, random_state=0)
    return DatasetSpec(train=ArrayImages(x_train, y_train), test=ArrayImages(x_test, y_test),
                       class_names=[str(d) for d in range(10)], kind="digits",
                       source="scikit-learn digits (8x8)", in_memory=True)


def synthetic(num_classes: int = 4, train_per_class: int = 64, test_per_class: int = 16,
              size: int = 32, seed: int = 0) -> DatasetSpec:
    """Generated 32-px images: each class is a stripe orientation on its own colour, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    # Evenly spaced hues, so classes differ in colour as well as in stripe direction.
    hues = np.arange(num_classes) / num_classes
    palette = 128 + 80 * np.stack([np.cos(2 * np.pi * (hues + s / 3)) for s in range(3)], axis=1)

    def make(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        for k in range(num_classes):
            angle = np.pi * k / num_classes
            for _ in range(per_class):
                phase = rng.uniform(0, 2 * np.pi)
                wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.8 + phase)
                image = palette[k] + 40.0 * wave[..., None] + rng.normal(0, 20, (size, size, 3))
                images.append(image.clip(0, 255).astype(np.uint8))
                labels.append(k)
        return np.stack(images), np.array(labels)

    x_train, y_train = make(train_per_class)
    x_test, y_test = make(test_per_class)
    return DatasetSpec(train=ArrayImages(x_train, y_train), test=ArrayImages(x_test, y_test),
                       class_names=[f"class{k}" for k in range(num_classes)], kind="synthetic",
                       source=f"synthetic stripes ({num_classes} classes)", in_memory=True)


STATS_SIDE = 64   # file images are resized to this square for channel_stats


def _stats_pixels(image: Image.Image) -> np.ndarray:
    """An image's pixels in [0, 1] as (N, 3) float32, resized to STATS_SIDE square: a photo of 12 MP
    then takes 48 KB, not 290 MB, and counts as much as a thumbnail (at full size it would drown 500)."""
    if image.size != (STATS_SIDE, STATS_SIDE):
        image = image.resize((STATS_SIDE, STATS_SIDE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float32).reshape(-1, 3) / 255.0


def channel_stats(dataset: Dataset, max_images: int = 500, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of an RGB data set (a seeded sample of up to max_images for
    file sets, each resized to STATS_SIDE: memory stays bounded and every image counts alike)."""
    if isinstance(dataset, ArrayImages):
        pixels = dataset.images.astype(np.float64) / 255.0
        if pixels.ndim == 3:  # greyscale: the same value on all three channels
            pixels = pixels[..., None].repeat(3, axis=-1)
        flat = pixels.reshape(-1, 3)
    else:
        rng = np.random.default_rng(seed)
        picks = rng.permutation(len(dataset))[:max_images]
        flat = np.concatenate([_stats_pixels(dataset[int(i)][0]) for i in picks])
    std = flat.std(axis=0)
    return [round(float(m), 4) for m in flat.mean(axis=0)], [round(float(max(s, 1e-3)), 4) for s in std]
