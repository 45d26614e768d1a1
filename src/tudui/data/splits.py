"""Holding out part of a data set: a seeded split by class, the same for the same seed."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def split_by_class(items: list[tuple[Path, int]], val_split: float,
                   seed: int) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
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
