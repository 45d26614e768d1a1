"""Which reader a --data value names: a built-in set, a CSV list, or a folder or archive."""
from __future__ import annotations

from tudui.config import DataConfig, TrainConfig
from tudui.data.cache import cache_root
from tudui.data.csvlist import csv_dataset
from tudui.data.datasets import DatasetSpec, cifar10, digits, synthetic
from tudui.data.folders import folder


DATA, TRAIN = DataConfig(), TrainConfig()   # the defaults of the settings below


def build_dataset(name: str, data_dir: str = DATA.data_dir, val_split: float = DATA.val_split,
                  seed: int = TRAIN.seed, download: bool = DATA.download) -> DatasetSpec:
    """The data set a --data value names (see DataConfig.dataset)."""
    if name == "cifar10":
        return cifar10(data_dir, download)
    if name == "digits":
        return digits()
    if name == "synthetic":
        return synthetic(seed=seed)
    if name.lower().endswith(".csv"):
        return csv_dataset(name, val_split, seed)
    return folder(name, val_split, seed, cache_root() / "extracted")
