"""Loaders: torch DataLoader over PIL images for big photos, TensorLoader for data that fits in memory."""
from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from tudui.data.cache import decode_to_tensor
from tudui.data.datasets import DatasetSpec, cache_root
from tudui.errors import TuduiError
from tudui.data.transforms import (batch_crop, batch_flip, eval_transform, normalize_batch, reflect_pad,
                                   train_transform, translate_pixels)


class Transformed(Dataset):
    """A (PIL image, label) data set with a transform applied to each image."""

    def __init__(self, dataset: Dataset, transform: Callable):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, label = self.dataset[i]
        return self.transform(image), label


def pick_workers(workers: int, in_memory: bool) -> int:
    """-1 means: none for decoded arrays (a worker costs more than it saves), else up to 4."""
    if workers >= 0:
        return workers
    return 0 if in_memory else min(4, os.cpu_count() or 1)


def make_loader(dataset: Dataset, transform: Callable, batch_size: int, shuffle: bool,
                workers: int, seed: int = 0, device: torch.device | None = None) -> DataLoader:
    """A DataLoader over dataset; shuffling is seeded so a run repeats exactly."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(Transformed(dataset, transform), batch_size=batch_size, shuffle=shuffle,
                      num_workers=workers, generator=generator,
                      pin_memory=device is not None and device.type == "cuda",
                      persistent_workers=workers > 0)


class TensorLoader:
    """Batches from a uint8 image tensor that lives on the device: decoded once, moved once.

    Every epoch draws a fresh permutation from (seed, epoch), so epochs are reproducible
    and resumable, and with world_size > 1 each rank takes its own slice of the same
    permutation (call set_epoch before each epoch, as with DistributedSampler).
    Augmentation and normalisation run on whole batches on the device.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool,
                 mean=None, std=None, augment: str = "none", seed: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, translate: int = -1):
        self.device = torch.device(device)
        # It is faster to move and augment uint8 data and convert per batch than to hold floats.
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.mean = None if mean is None else torch.tensor(mean, device=self.device)
        self.std = None if std is None else torch.tensor(std, device=self.device)
        self.augment, self.seed, self.dtype = augment, seed, dtype
        self.rank, self.world_size = rank, world_size
        self.channels_last = channels_last
        self.epoch = 0
        self.pad = translate_pixels(translate, images.shape[-1]) if augment.startswith("crop") else 0
        # Pad the whole set once (uint8, in chunks), so each batch is only cropped.
        self.padded = torch.cat([reflect_pad(chunk, self.pad) for chunk in self.images.split(4096)]) \
            if self.pad else None
        # The alternating flip: a fixed random half of the images is mirrored on even epochs and
        # the other half on odd ones, so every image is seen both ways in any two epochs
        # (airbench, Jordan 2024, arXiv 2404.00498).
        self.flip_parity = torch.rand(len(labels), generator=torch.Generator().manual_seed(seed)) < 0.5

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            order = torch.arange(len(self.labels))
        else:
            order = torch.randperm(len(self.labels),
                                   generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        n = len(range(self.rank, len(self.labels), self.world_size))  # this rank's share, no permutation
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        order = self._order()
        augment_rng = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7)
        steps = len(self)
        for step in range(steps):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            index_on_device = index.to(self.device)
            flip = None
            if self.augment in ("flip", "crop-flip"):
                flip = (torch.rand(len(index), generator=augment_rng) < 0.5).to(self.device)
            elif self.augment in ("alt-flip", "crop-alt-flip"):
                flip = (self.flip_parity[index] ^ bool(self.epoch % 2)).to(self.device)
            if self.pad:
                shifts = torch.randint(-self.pad, self.pad + 1, (2, len(index)), generator=augment_rng)
                images = batch_crop(self.padded[index_on_device], shifts[0].to(self.device),
                                    shifts[1].to(self.device), self.pad, flip)
            else:
                images = self.images[index_on_device]
                if flip is not None:
                    images = batch_flip(images, flip)
            x = normalize_batch(images, self.mean, self.std, self.dtype)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[index_on_device]


TENSOR_MAX_SIDE = 64            # "small images": 32-px sets and thumbnails
TENSOR_MAX_BYTES = 4 * 1024 ** 3


def use_tensor_loader(choice: str, input_size: int, num_images: int, augment: str = "none") -> bool:
    """auto: the tensor loader for small images that fit in memory as uint8, else DataLoader.

    Random resized crops need the whole image, which the tensor loader no longer has.
    """
    if choice == "tensor" and augment.startswith("resized-crop"):
        raise TuduiError(f"--loader tensor cannot do --augment {augment} (it keeps only the resized "
                         f"images); use --loader dataloader or --augment crop-flip")
    if choice != "auto":
        return choice == "tensor"
    return input_size <= TENSOR_MAX_SIDE and num_images * 3 * input_size ** 2 <= TENSOR_MAX_BYTES \
        and not augment.startswith("resized-crop")


def make_loaders(spec: DatasetSpec, input_size: int, mean, std, device: torch.device, batch_size: int,
                 choice: str = "auto", workers: int = -1, augment: str = "none", translate: int = -1,
                 seed: int = 0, channels_last: bool = False, train: bool = True,
                 resize_size: int | None = None, interpolation: str = "bilinear"):
    """(train loader or None, test loader, description): tensor loaders for small images, else DataLoaders.

    resize_size and interpolation are the resize/crop of torchvision's weights (see geometry).
    """
    if use_tensor_loader(choice, input_size, len(spec.train) + len(spec.test), augment if train else "none"):
        cache = cache_root() / "tensors"
        test_images, test_labels = decode_to_tensor(spec.test, input_size, cache, resize_size, interpolation)
        test = TensorLoader(test_images, test_labels, batch_size, False, mean, std, device=device,
                            channels_last=channels_last)
        train_loader = None
        if train:
            images, labels = decode_to_tensor(spec.train, input_size, cache, resize_size, interpolation)
            train_loader = TensorLoader(images, labels, batch_size, True, mean, std, augment, seed,
                                        device, channels_last=channels_last, translate=translate)
        return train_loader, test, f"tensor (decoded once, on {device})"
    workers = pick_workers(workers, spec.in_memory)
    test = make_loader(spec.test, eval_transform(input_size, mean, std, resize_size, interpolation),
                       batch_size, False, workers, device=device)
    train_loader = make_loader(spec.train, train_transform(input_size, mean, std, augment, translate,
                                                           resize_size, interpolation),
                               batch_size, True, workers, seed, device) if train else None
    return train_loader, test, f"DataLoader ({workers} workers)"


def sample_inputs(loader, count: int, device: torch.device) -> torch.Tensor:
    """count normalised training images, for data-dependent initialisation (fastnet's whitening)."""
    if isinstance(loader, TensorLoader):
        # A seeded random subset: stored order is often sorted by class (folders are).
        index = torch.randperm(len(loader.labels), generator=torch.Generator().manual_seed(loader.seed))[:count]
        return normalize_batch(loader.images[index.to(loader.device)], loader.mean, loader.std)
    batches, seen = [], 0
    for images, _ in loader:
        batches.append(images.to(device).float())
        seen += len(images)
        if seen >= count:
            break
    return torch.cat(batches)[:count]
