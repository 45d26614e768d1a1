"""Data: sources (built-in sets, folders, archives, CSV lists), image checks, caches, transforms, loaders."""
from tudui.data.cache import decode_to_tensor
from tudui.data.datasets import DatasetSpec, channel_stats
from tudui.data.images import load_image
from tudui.data.loaders import make_loader, make_loaders, pick_workers, use_tensor_loader
from tudui.data.sources import BUILTIN_DATASETS, build_dataset
from tudui.data.tensor_loaders import TensorLoader
from tudui.data.transforms import Preprocess, eval_transform, resolve_augment, train_transform
from tudui.files import cache_root

__all__ = ["BUILTIN_DATASETS", "DatasetSpec", "Preprocess", "TensorLoader", "build_dataset", "cache_root",
           "channel_stats", "decode_to_tensor", "eval_transform", "load_image", "make_loader", "make_loaders",
           "pick_workers", "resolve_augment", "train_transform", "use_tensor_loader"]
