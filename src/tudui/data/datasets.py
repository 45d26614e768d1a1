"""Data sets: cifar10, digits, synthetic, image folders (plain, paired-label, tar archives), CSV lists.

Every source becomes a `DatasetSpec`: a train and a test split that yield (PIL RGB image,
class index), and the class names. Images stay in their own size and mode until here;
`to_rgb` makes any mode RGB, and the model decides the input size later. Folders as people
have them hold hidden files (.DS_Store, ._x.jpg), notes and empty class folders: those are
skipped and counted in `DatasetSpec.ignored`.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tarfile
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from tudui.errors import TuduiError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm"}
BUILTIN_DATASETS = ("cifar10", "digits", "synthetic")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@dataclass
class DatasetSpec:
    """A built data set: two splits of (PIL RGB image, label) and what they mean."""
    train: Dataset
    test: Dataset
    class_names: list[str]
    kind: str            # cifar10, digits, synthetic or folder
    source: str          # what was loaded, for messages and metadata
    in_memory: bool      # decoded arrays (no worker processes needed) or files on disk
    ignored: dict[str, int] = field(default_factory=dict)   # what was skipped: {"hidden file": 2, ...}


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
    """Image files listed as (path, label) pairs, decoded on access."""

    def __init__(self, samples: list[tuple[Path, int]]):
        self.samples = samples
        self.labels = np.array([label for _, label in samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        path, label = self.samples[i]
        return load_image(path), label


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB: EXIF rotation applied, 16-bit scaled, transparency over white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I"):
        # 16/32-bit greyscale: scale the full range to 0-255 instead of clamping at 255.
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        image = Image.fromarray((pixels / top * 255.0).clip(0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


@contextlib.contextmanager
def open_image(path: str | Path):
    """Image.open with Pillow's pixel limit as a hard refusal (DecompressionBombWarning raised).

    Pillow only warns between its limit and twice it, and raises above; both are refusals
    here, decided from the header before any pixel is decoded.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            yield image


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as RGB, or raise TuduiError naming the file.

    Images above Pillow's pixel limit (decompression bombs) are refused before decoding.
    """
    try:
        with open_image(path) as image:
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise TuduiError(f"image not found: {path}") from None
    except Image.DecompressionBombWarning:
        raise TuduiError(f"cannot read image {path}: larger than Pillow's limit of "
                         f"{Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise TuduiError(f"cannot read image {path}: {e}") from None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _image_files(folder: Path, ignored: Counter, recursive: bool = True) -> list[Path]:
    """The image files under folder, sorted; hidden and non-image files are counted in ignored."""
    found = []
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if not path.is_file():
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            ignored["hidden file"] += 1
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            ignored["non-image file"] += 1
        else:
            found.append(path)
    return found


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


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
    return DatasetSpec(ArrayImages(x_train, y_train), ArrayImages(x_test, y_test),
                       [str(d) for d in range(10)], "digits", "scikit-learn digits (8x8)", True)


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
    return DatasetSpec(ArrayImages(x_train, y_train), ArrayImages(x_test, y_test),
                       [f"class{k}" for k in range(num_classes)], "synthetic",
                       f"synthetic stripes ({num_classes} classes)", True)


def cifar10(data_dir: str, download: bool) -> DatasetSpec:
    """torchvision's CIFAR-10 under data_dir, downloaded when absent (as the course does)."""
    from torchvision.datasets import CIFAR10

    root = Path(data_dir)
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except Exception as e:  # network errors, missing files, bad checksums: all mean "not here"
        reason = "download turned off (--no-download)" if not download else \
            f"download failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})"
        raise TuduiError(
            f"CIFAR-10 is not in {root / 'cifar-10-batches-py'} and {reason}; put "
            f"cifar-10-python.tar.gz (from {CIFAR10_URL}) in {root}/ or pass --data-dir, "
            f"or run offline with --data digits") from None
    return DatasetSpec(ArrayImages(train.data, np.array(train.targets)),
                       ArrayImages(test.data, np.array(test.targets)),
                       list(train.classes), "cifar10", f"CIFAR-10 in {root}", True)


# ---------------------------------------------------------------- folders

def extract_archive(archive: Path, cache_dir: Path) -> Path:
    """Unpack a .tar/.tar.gz once into cache_dir; later calls reuse it while the file is unchanged."""
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    target = cache_dir / f"{archive.name.split('.')[0]}-{key[:12]}"
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".{target.name}.partial-{os.getpid()}"
    log.info("unpacking %s into %s (once)", archive, target)
    try:
        with tarfile.open(archive) as tar:
            # The "data" filter refuses absolute paths, links out of the folder and devices.
            tar.extractall(partial, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise TuduiError(f"cannot unpack {archive}: {e}") from None
    os.replace(partial, target)
    return target


def _descend(root: Path) -> Path:
    """Skip wrapper folders: an archive often holds one folder that holds the data."""
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith((".", "_"))]
        if len(entries) == 1 and entries[0].is_dir() and not _has_images(entries[0]) \
                and entries[0].name not in ("train", "val", "test"):
            root = entries[0]
        else:
            return root


def _has_images(folder: Path) -> bool:
    return any(is_image_file(p) for p in folder.iterdir() if p.is_file())


def _scan_split(folder: Path, ignored: Counter | None = None) -> list[tuple[Path, str]]:
    """(image path, class name) pairs of one split, in either supported layout; what is
    skipped (hidden files, other files, empty class folders) is counted in ignored."""
    ignored = Counter() if ignored is None else ignored
    subdirs = _visible_dirs(folder)
    names = {d.name for d in subdirs}
    paired = [d for d in subdirs if d.name.endswith("_image") and d.name[:-6] + "_label" in names]
    items: list[tuple[Path, str]] = []
    if paired:
        # The course's layout: ants_image/x.jpg with its label text in ants_label/x.txt.
        for image_dir in paired:
            label_dir = folder / (image_dir.name[:-6] + "_label")
            for path in _image_files(image_dir, ignored, recursive=False):
                label_file = label_dir / (path.stem + ".txt")
                if not label_file.is_file():
                    raise TuduiError(f"image {path} has no label file {label_file}")
                label = label_file.read_text().strip()
                if not label:
                    raise TuduiError(f"label file {label_file} is empty")
                items.append((path, label))
        return items
    for class_dir in subdirs:
        images = _image_files(class_dir, ignored)
        if not images:
            ignored["empty class folder"] += 1
        items += [(p, class_dir.name) for p in images]
    return items


def _index(items: list[tuple[Path, str]], class_names: list[str], split: Path) -> list[tuple[Path, int]]:
    lookup = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({name for _, name in items} - set(lookup))
    if unknown:
        raise TuduiError(f"{split} has classes the training split lacks: {', '.join(unknown)}")
    return [(path, lookup[name]) for path, name in items]


def _split_by_class(items: list[tuple[Path, int]], val_split: float, seed: int):
    """Hold out val_split of every class, chosen by a seeded shuffle (same seed, same split)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    labels = np.array([label for _, label in items])
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        # At least one image of each class in each split, when the class has two or more.
        held = min(len(members) - 1, max(1, round(len(members) * val_split))) if len(members) > 1 else 0
        test += [items[i] for i in sorted(members[:held])]
        train += [items[i] for i in sorted(members[held:])]
    return train, test


def resolve_folder(path: str | Path, cache_dir: Path) -> Path:
    """The folder that holds the data: path itself, or an archive's unpacked copy, minus wrappers."""
    root = Path(path)
    if not root.exists():
        raise TuduiError(f"data set not found: {path} (expected cifar10, digits, synthetic, "
                         f"a folder, a .tar/.tar.gz or a .csv list)")
    if root.is_file():
        if not root.name.endswith((".tar", ".tar.gz", ".tgz")):
            raise TuduiError(f"{path} is a file, not a folder or a .tar/.tar.gz archive")
        root = extract_archive(root, cache_dir)
    return _descend(root)


def folder(path: str, val_split: float, seed: int, cache_dir: Path) -> DatasetSpec:
    """An image folder (train/ + val/ or test/, or one folder split by val_split), or an archive of one."""
    root = resolve_folder(path, cache_dir)
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    ignored: Counter = Counter()
    if (root / "train").is_dir() and test_dir is not None:
        train_items = _scan_split(root / "train", ignored)
        class_names = sorted({name for _, name in train_items})
        train = _index(train_items, class_names, root / "train")
        test = _index(_scan_split(test_dir, ignored), class_names, test_dir)
        layout = f"{root} (train/ and {test_dir.name}/)"
    else:
        items = _scan_split(root, ignored)
        class_names = sorted({name for _, name in items})
        train, test = _split_by_class(_index(items, class_names, root), val_split, seed)
        layout = f"{root} ({val_split:.0%} held out for testing)"
    if len(class_names) < 2:
        raise TuduiError(f"{root} needs at least two classes (one folder each), found "
                         f"{len(class_names)}: {class_names}")
    if not train or not test:
        raise TuduiError(f"{root} has no images in its {'training' if not train else 'test'} split")
    if ignored:
        log.info("%s: ignored %s", root, dict(ignored))
    return DatasetSpec(FileImages(train), FileImages(test), class_names, "folder", layout, False,
                       dict(ignored))


def cache_root() -> Path:
    return Path(os.environ.get("TUDUI_CACHE", Path.home() / ".cache" / "tudui"))


def build_dataset(name: str, data_dir: str = "./data", val_split: float = 0.2, seed: int = 0,
                  download: bool = True) -> DatasetSpec:
    """The data set a --data value names (see DataConfig.name)."""
    if name == "cifar10":
        return cifar10(data_dir, download)
    if name == "digits":
        return digits()
    if name == "synthetic":
        return synthetic(seed=seed)
    if name.lower().endswith(".csv"):
        from tudui.data.csvlist import csv_dataset
        return csv_dataset(name, val_split, seed)
    return folder(name, val_split, seed, cache_root() / "extracted")


def channel_stats(dataset: Dataset, max_images: int = 500, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] of an RGB data set (a seeded sample for big file sets)."""
    if isinstance(dataset, ArrayImages):
        pixels = dataset.images.astype(np.float64) / 255.0
        if pixels.ndim == 3:  # greyscale: the same value on all three channels
            pixels = pixels[..., None].repeat(3, axis=-1)
        flat = pixels.reshape(-1, 3)
    else:
        rng = np.random.default_rng(seed)
        picks = rng.permutation(len(dataset))[:max_images]
        flat = np.concatenate([np.asarray(dataset[int(i)][0], dtype=np.float64).reshape(-1, 3) / 255.0
                               for i in picks])
    std = flat.std(axis=0)
    return [round(float(m), 4) for m in flat.mean(axis=0)], [round(float(max(s, 1e-3)), 4) for s in std]
