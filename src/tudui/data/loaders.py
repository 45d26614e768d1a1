"""DataLoader factory: a transform applied to a data set's PIL images, batched and shuffled."""
from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset


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
