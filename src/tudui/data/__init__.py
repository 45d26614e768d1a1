"""Data sets, transforms and loaders."""
from tudui.data.datasets import BUILTIN_DATASETS, DatasetSpec, build_dataset, channel_stats, load_image
from tudui.data.cache import decode_to_tensor
from tudui.data.loaders import TensorLoader, make_loader, make_loaders, pick_workers, use_tensor_loader
from tudui.data.transforms import eval_transform, resolve_augment, train_transform

__all__ = ["BUILTIN_DATASETS", "DatasetSpec", "build_dataset", "channel_stats", "load_image", "decode_to_tensor", "TensorLoader", "use_tensor_loader", "make_loader", "make_loaders",
           "pick_workers", "eval_transform", "resolve_augment", "train_transform"]
