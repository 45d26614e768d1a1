"""Data sets, transforms and loaders."""
from tudui.data.datasets import BUILTIN_DATASETS, DatasetSpec, build_dataset, channel_stats, load_image
from tudui.data.loaders import make_loader, pick_workers
from tudui.data.transforms import eval_transform, resolve_augment, train_transform

__all__ = ["BUILTIN_DATASETS", "DatasetSpec", "build_dataset", "channel_stats", "load_image", "make_loader",
           "pick_workers", "eval_transform", "resolve_augment", "train_transform"]
