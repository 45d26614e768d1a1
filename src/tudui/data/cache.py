"""Decode a data set once into a uint8 tensor (N, 3, S, S), cached on disk for the next run.

The pixels are exactly those `eval_transform` feeds the model (same PIL resize and crop), so the
tensor path and `tudui predict` see the same numbers. The cache is a safetensors file (no
pickle) whose name is a hash of the source files' paths, sizes and modification times and
of the size S: change a file and the next run decodes again.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from torchvision.transforms import v2

from tudui import caches
from tudui.data.datasets import ArrayImages, FileImages, files_identity
from tudui.data.transforms import decode_side, geometry
from tudui.errors import TuduiError
from tudui.files import atomic_write

log = logging.getLogger(__name__)


def source_key(dataset: Dataset, size: int, resize_size: int | None = None,
               interpolation: str = "bilinear") -> str | None:
    """A hash naming dataset's files and the geometry; None for in-memory arrays (nothing to cache)."""
    if not isinstance(dataset, FileImages):
        return None
    geometry_key = f"size={size}" if not resize_size and interpolation == "bilinear" else \
        f"size={size}|resize={resize_size}|{interpolation}"
    # "jpeg-reduced": copies made before large JPEGs were decoded reduced (_decode) are not reused
    return files_key(dataset, geometry_key + "|jpeg-reduced")


def files_key(files: FileImages | list[tuple[Path, int]], salt: str) -> str:
    """A hash of salt and each (path, label)'s file identity: path, size and modification time
    (computed once per FileImages)."""
    identity = files.identity() if isinstance(files, FileImages) else files_identity(files)
    return hashlib.sha256(f"{salt}|{identity}".encode()).hexdigest()[:24]


def _decode(dataset: Dataset, size: int, resize_size: int | None = None,
            interpolation: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(dataset, ArrayImages) and not resize_size:
        images = dataset.images
        if images.ndim == 3:
            images = np.repeat(images[..., None], 3, axis=-1)
        if images.shape[1:3] == (size, size):  # already the model's size: no per-image work
            return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(dataset.labels)
    resize = v2.Compose(geometry(size, resize_size, interpolation))  # the steps eval_transform takes
    if isinstance(dataset, FileImages):     # large JPEGs decoded as small as that resize allows
        dataset = dataset.decoded_for(decode_side(size, resize_size))
    out = torch.empty((len(dataset), 3, size, size), dtype=torch.uint8)
    for i in range(len(dataset)):
        image, _ = dataset[i]
        out[i] = torch.from_numpy(np.array(resize(image), dtype=np.uint8)).permute(2, 0, 1)
    return out, torch.as_tensor(dataset.labels, dtype=torch.int64)


def decode_to_tensor(dataset: Dataset, size: int, cache_dir: Path | None, resize_size: int | None = None,
                     interpolation: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (N, 3, size, size), int64 labels), from the disk cache when it is current."""
    key = source_key(dataset, size, resize_size, interpolation) if cache_dir is not None else None
    path = cache_dir / f"{key}.safetensors" if key else None
    if path is not None and path.is_file():
        try:
            tensors = load_file(str(path))
            caches.note_use(path, lambda: common_folder(dataset))
            return tensors["images"], tensors["labels"]
        except (SafetensorError, OSError, KeyError):
            log.warning("decode cache %s is unreadable; decoding again", path)
    if len(dataset) >= caches.SAY_FROM_FILES and isinstance(dataset, FileImages):
        log.info("decoding %s images at %d px%s (once)", f"{len(dataset):,}", size,
                 " into the cache" if path is not None else "")
    images, labels = _decode(dataset, size, resize_size, interpolation)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: save_file({"images": images, "labels": labels}, str(tmp)))
        except (OSError, TuduiError) as e:  # the cache only saves time; training goes on without it
            log.warning("decode cache not written (%s); the next run decodes again", e)
        else:
            caches.note_use(path, common_folder(dataset))
            caches.prune_once(cache_dir.parent)
    return images, labels


def common_folder(dataset: Dataset) -> str | None:
    """The folder all of dataset's files are in (what its decoded copy is gone with), or None."""
    if not isinstance(dataset, FileImages) or not dataset.samples:
        return None
    try:
        return os.path.commonpath([os.path.abspath(path) for path, _ in dataset.samples])
    except ValueError:   # paths on different drives (Windows)
        return None
