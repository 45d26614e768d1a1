"""Which loader each split gets, and the DataLoader path: tensor loaders (tudui.data.tensor_loaders)
for data that fits in memory as uint8, torch DataLoader over PIL images for the rest."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tudui.config import DataConfig
from tudui.data.cache import decode_to_tensor
from tudui.data.datasets import ArrayImages, DatasetSpec, FileImages
from tudui.data.tensor_loaders import CropLoader, TensorLoader, epoch_order, shard_size
from tudui.data.transforms import Preprocess, normalize_batch, train_transform
from tudui.errors import TuduiError
from tudui.files import cache_root


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
    """-1 means: none for decoded arrays (a worker costs more than it saves), else up to 4, and no
    more than this process's share of the cores (torchrun's processes on this machine share them)."""
    if workers >= 0:
        return workers
    try:
        processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes = 1
    return 0 if in_memory else min(4, max(1, (os.cpu_count() or 1) // processes))


def balanced_weights(labels) -> torch.Tensor:
    """A weight per image, the inverse of its class's count: every class is drawn as often."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    counts = torch.bincount(labels).double()
    return 1.0 / counts[labels]


class EpochSampler(Sampler):
    """Indices in an order drawn from (seed, epoch), as the tensor loader draws them, so an
    epoch's order does not depend on what ran before it; skip() starts mid-epoch. With
    world_size > 1 this rank takes every world_size-th index of that order (training: the same
    number on every rank), as DistributedSampler does."""

    def __init__(self, size: int, shuffle: bool, seed: int = 0, weights: torch.Tensor | None = None,
                 rank: int = 0, world_size: int = 1):
        self.size, self.shuffle, self.seed, self.weights = size, shuffle, seed, weights
        self.rank, self.world_size = rank, world_size
        self.shard = shard_size(size, rank, world_size, equal=shuffle)
        self.epoch, self.start = 0, 0

    def __len__(self) -> int:
        return self.shard - self.start

    def __iter__(self):
        first, self.start = self.start, 0
        order = epoch_order(self.size, self.shuffle, self.seed, self.epoch, self.weights)
        return iter(order[self.rank::self.world_size][:self.shard][first:].tolist())


class EpochDataLoader(DataLoader):
    """A DataLoader with the tensor loader's set_epoch and skip, through its EpochSampler."""

    def set_epoch(self, epoch: int) -> None:
        self.sampler.epoch = epoch

    def skip(self, steps: int) -> None:
        self.sampler.start = steps * self.batch_size

    def __len__(self) -> int:  # steps of a whole epoch, whatever was skipped
        full = self.sampler.shard
        return full // self.batch_size if self.drop_last else -(-full // self.batch_size)


def make_loader(dataset: Dataset, transform: Callable, batch_size: int, shuffle: bool,
                workers: int, seed: int = 0, device: torch.device | None = None,
                drop_last: bool = False, weights: torch.Tensor | None = None, rank: int = 0,
                world_size: int = 1) -> DataLoader:
    """A DataLoader over dataset; the order is drawn from (seed, epoch) so a run repeats exactly."""
    sampler = EpochSampler(len(dataset), shuffle, seed, weights, rank, world_size)
    return EpochDataLoader(Transformed(dataset, transform), batch_size=batch_size,
                           sampler=sampler, num_workers=workers,
                           generator=torch.Generator().manual_seed(seed),
                           pin_memory=device is not None and device.type == "cuda", drop_last=drop_last,
                           persistent_workers=workers > 0)


DATA = DataConfig()   # the defaults of the data settings
TENSOR_MAX_SIDE = 64            # "small images": 32-px sets and thumbnails
TENSOR_MAX_BYTES = 4 * 1024 ** 3


# The photo preset's tensor path stores training images at this many times the input side: the
# smallest crop (a quarter of the area at ratio 4/3: 0.43 of the side) then still has about as
# many pixels as the input (0.87x), so crops are mostly downscaled, never blown up much.
CROP_SOURCE_SCALE = 2


def use_tensor_loader(choice: str, input_size: int, num_images: int, augment: str = "none") -> bool:
    """auto: the tensor loader for small images that fit in memory as uint8, else DataLoader.

    The photo preset (random resized crops) takes its own path: see use_crop_loader.
    """
    if choice != "auto":
        return choice == "tensor"
    return input_size <= TENSOR_MAX_SIDE and num_images * 3 * input_size ** 2 <= TENSOR_MAX_BYTES \
        and not augment.startswith("resized-crop")


def use_crop_loader(choice: str, augment: str, stored_bytes: int) -> bool:
    """The photo preset (resized-crop augment) on the tensor path (CropLoader): always with --loader
    tensor, and with auto whenever every split's stored copy (stored_bytes) fits TENSOR_MAX_BYTES."""
    if not augment.startswith("resized-crop") or choice == "dataloader":
        return False
    return choice == "tensor" or stored_bytes <= TENSOR_MAX_BYTES


def crop_source(dataset: Dataset, preprocess: Preprocess) -> tuple[int, int | None]:
    """(side, resize_size): the square CropLoader crops from, as decode_to_tensor's geometry.

    It is the frame evaluation takes (transforms.geometry) at CROP_SOURCE_SCALE times the input
    side: the whole image squashed, or, for torchvision's weights (resize_size), the centre
    square of the shorter side. So unlike the PIL path's RandomResizedCrop over the whole photo,
    (1) a squashed photo's crops have their ratio (3/4-4/3) in the squashed frame, that is the
    photo's own aspect times it in its pixels: objects come out as eval's squash shows them, give
    or take 4/3, where the PIL path ignores the photo's shape; (2) with a centre square, the parts
    of a non-square photo outside it (which eval never shows) are never seen; (3) crops sample a
    copy at twice the input side, not the full photo: the smallest crops are up to 1.15x upscaled.
    Images held as a square array smaller than that are kept at their own size (upscaling once
    would only cost memory; the crops are resized anyway).
    """
    side = CROP_SOURCE_SCALE * preprocess.input_size
    if isinstance(dataset, ArrayImages) and dataset.images.shape[1] == dataset.images.shape[2]:
        return min(side, dataset.images.shape[1]), None   # a square: squashed = its centre square
    return side, side if preprocess.resize_size else None


@dataclass(frozen=True, kw_only=True)
class Loaders:
    """A run's loaders: train, and val and test where the data has them; kind says which loader."""
    train: object
    val: object | None
    test: object | None
    kind: str


def make_loaders(spec: DatasetSpec, preprocess: Preprocess, device: torch.device, batch_size: int, *,
                 choice: str = DATA.loader, workers: int = DATA.workers, augment: str = "none",
                 translate: int = DATA.translate, seed: int = 0, channels_last: bool = False,
                 sampler: str = DATA.sampler, rank: int = 0, world_size: int = 1) -> Loaders:
    """The loaders of every split of spec: tensor loaders for data that fits in memory (small images,
    or the photo preset's stored copies: see use_crop_loader), else DataLoaders.

    preprocess says how images become the model's inputs (see Preprocess); augment is resolved.
    Training drops the last partial batch when there are at least ten full ones: every step
    then has the same shape (cuDNN's choice of algorithm and torch.compile's graph hold), and
    as the order changes each epoch, no image is left out for long. batch_size is the global
    batch: with world_size processes, this rank loads batch_size / world_size images of each
    batch, and its share of every split (see TensorLoader, EpochSampler). Evaluation splits on
    the tensor path are decoded at exactly the eval geometry of preprocess, whatever training does.
    """
    if batch_size % world_size:
        raise TuduiError(f"--batch-size {batch_size} is the batch of all {world_size} processes together; "
                         f"make it a multiple of {world_size}")
    count = sum(len(images) for images in spec.splits().values())
    side, resize_size = crop_source(spec.train, preprocess)
    stored = 3 * (len(spec.train) * side ** 2 + (count - len(spec.train)) * preprocess.input_size ** 2)
    crops = use_crop_loader(choice, augment, stored)
    tensors = crops or use_tensor_loader(choice, preprocess.input_size, count, augment)
    workers = pick_workers(workers, spec.in_memory)
    drop_last = len(spec.train) // batch_size >= 10
    shard = {"rank": rank, "world_size": world_size}
    batch_size //= world_size
    weights = balanced_weights(spec.train.labels) if sampler == "balanced" else None
    options = dict(mean=preprocess.mean, std=preprocess.std, seed=seed, device=device, drop_last=drop_last,
                   channels_last=channels_last, weights=weights, **shard)
    if crops:
        images, labels = decode_to_tensor(spec.train, side, cache_root() / "tensors", resize_size,
                                          preprocess.interpolation)
        train = CropLoader(images, labels, batch_size, input_size=preprocess.input_size, augment=augment, **options)
        kind = f"tensor (decoded once at {side} px, resized crops on {device})"
    elif tensors:
        images, labels = decode_to_tensor(spec.train, preprocess.input_size, cache_root() / "tensors",
                                          preprocess.resize_size, preprocess.interpolation)
        train = TensorLoader(images, labels, batch_size, True, augment=augment, translate=translate, **options)
        kind = f"tensor (decoded once, on {device})"
    else:
        transform = train_transform(preprocess.input_size, preprocess.mean, preprocess.std, augment, translate,
                                    preprocess.resize_size, preprocess.interpolation)
        # Large JPEGs decoded as small as the first resize allows: the random resized crop's
        # smallest crops still have about input_size pixels a side, as on the tensor path.
        least = side if augment.startswith("resized-crop") else preprocess.decode_side
        train = make_loader(decoded_for(spec.train, least), transform, batch_size, True, workers, seed, device,
                            drop_last, weights, **shard)
        kind = f"DataLoader ({workers} workers)" + _over_budget(choice, augment, stored)
    evaluation = {name: _eval_loader(images, preprocess, device, batch_size, tensors, workers, channels_last, **shard)
                  for name, images in spec.splits().items() if name != "train"}
    return Loaders(train=train, val=evaluation.get("val"), test=evaluation.get("test"), kind=kind)


def _over_budget(choice: str, augment: str, stored_bytes: int) -> str:
    """Why the photo preset is not on the tensor path, for the run's first lines ("" when it was not asked)."""
    if choice != "auto" or not augment.startswith("resized-crop"):
        return ""
    return (f"; the photo preset's decoded copy would take {stored_bytes / 1024 ** 3:.1f} GiB, over the "
            f"{TENSOR_MAX_BYTES / 1024 ** 3:g} GiB budget of the tensor path")


def make_eval_loader(dataset: Dataset, preprocess: Preprocess, device: torch.device, batch_size: int, *,
                     choice: str = DATA.loader, workers: int = DATA.workers, in_memory: bool = False):
    """A loader over dataset in order, each image as evaluation sees it (no augmentation)."""
    tensors = use_tensor_loader(choice, preprocess.input_size, len(dataset))
    return _eval_loader(dataset, preprocess, device, batch_size, tensors, pick_workers(workers, in_memory))


def _eval_loader(dataset: Dataset, preprocess: Preprocess, device: torch.device, batch_size: int, tensors: bool,
                 workers: int, channels_last: bool = False, rank: int = 0, world_size: int = 1):
    if tensors:
        images, labels = decode_to_tensor(dataset, preprocess.input_size, cache_root() / "tensors",
                                          preprocess.resize_size, preprocess.interpolation)
        return TensorLoader(images, labels, batch_size, False, preprocess.mean, preprocess.std, device=device,
                            channels_last=channels_last, rank=rank, world_size=world_size)
    return make_loader(decoded_for(dataset, preprocess.decode_side), preprocess.eval_transform(), batch_size, False,
                       workers, device=device, rank=rank, world_size=world_size)


def decoded_for(dataset: Dataset, at_least: int) -> Dataset:
    """dataset with its large JPEGs decoded down to at_least pixels a side (file images only)."""
    return dataset.decoded_for(at_least) if isinstance(dataset, FileImages) else dataset


def sample_inputs(loader, count: int, device: torch.device) -> torch.Tensor:
    """count normalised training images, for data-dependent initialisation (fastnet's whitening)."""
    if isinstance(loader, TensorLoader):
        # A seeded random subset: stored order is often sorted by class (folders are).
        index = torch.randperm(len(loader.labels), generator=torch.Generator().manual_seed(loader.seed))[:count]
        return normalize_batch(loader.whole_images(index.to(loader.device)), loader.mean, loader.std)
    batches, seen = [], 0
    for images, _ in loader:
        batches.append(images.to(device).float())
        seen += len(images)
        if seen >= count:
            break
    return torch.cat(batches)[:count]
