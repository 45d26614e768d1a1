"""Loaders of uint8 image tensors that live on the device: decoded once, moved once, augmented in
batches there. TensorLoader (crops by shifts, flips) and CropLoader (the photo preset's random
resized crops), and the seeded epoch order and shards they share with the DataLoader path."""
from __future__ import annotations

import torch

from tudui.data.transforms import (
    batch_crop,
    batch_flip,
    batch_resized_crop,
    draw_resized_crops,
    normalize_batch,
    reflect_pad,
    resize_batch,
    translate_pixels,
)

WHOLE_EPOCH_BYTES = 2 * 1024 ** 3


def epoch_order(size: int, shuffle: bool, seed: int, epoch: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The order of an epoch's indices: drawn from (seed, epoch) alone when shuffling, so an
    epoch's order does not depend on what ran before it (resumable, the same on every rank).
    With weights (one per image), size indices are drawn with replacement in proportion to them."""
    if not shuffle:
        return torch.arange(size)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if weights is not None:
        return torch.multinomial(weights, size, replacement=True, generator=generator)
    return torch.randperm(size, generator=generator)


def shard_size(size: int, rank: int, world_size: int, equal: bool) -> int:
    """How many of size positions rank takes (every world_size-th from rank): with equal, the same
    number on every rank (training: every rank must take the same number of steps)."""
    return size // world_size if equal else len(range(rank, size, world_size))


class TensorLoader:
    """Batches from a uint8 image tensor that lives on the device: decoded once, moved once.

    Every epoch draws a fresh permutation from (seed, epoch), so epochs are reproducible
    and resumable, and with world_size > 1 each rank takes its own slice of the same
    permutation (call set_epoch before each epoch, as with DistributedSampler).
    Augmentation and normalisation run on whole batches on the device; with whole_epoch
    (the default on a GPU when the epoch's floats fit in 2 GiB) on the whole epoch at once,
    as airbench does, so a training step launches no data kernels of its own. Both ways
    give the same batches.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool,
                 mean=None, std=None, augment: str = "none", seed: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 channels_last: bool = False, translate: int = -1, whole_epoch: bool | None = None,
                 weights: torch.Tensor | None = None):
        self.device = torch.device(device)
        self.labels = labels.to(self.device)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.mean = None if mean is None else torch.tensor(mean, device=self.device)
        self.std = None if std is None else torch.tensor(std, device=self.device)
        self.augment, self.seed, self.dtype = augment, seed, dtype
        self.weights = weights   # per image: drawn with replacement in proportion (balanced sampling)
        self.rank, self.world_size = rank, world_size
        # Training shards are equal, so every rank takes the same number of steps.
        self.shard = shard_size(len(labels), rank, world_size, equal=shuffle)
        self.channels_last = channels_last
        self.epoch, self.start_step = 0, 0
        self.size: int | None = None   # a smaller side to train at (progressive resizing; set_size)
        self.pad = translate_pixels(translate, images.shape[-1]) if augment.startswith("crop") else 0
        # It is faster to move and augment uint8 data and convert per batch than to hold floats.
        # With crops, the set is reflect-padded once (in chunks) and kept only padded: each
        # batch is then just cropped, and the plain images are a view into the padded ones.
        if self.pad:
            self.padded = torch.cat([reflect_pad(chunk.to(self.device), self.pad)
                                     for chunk in images.split(4096)])
            p = self.pad
            self.images = self.padded[:, :, p:-p, p:-p]
        else:
            self.padded = None
            self.images = images.to(self.device)
        # The alternating flip: a fixed random half of the images is mirrored on even epochs and
        # the other half on odd ones, so every image is seen both ways in any two epochs
        # (airbench, Jordan 2024, arXiv 2404.00498).
        if whole_epoch is None:
            whole_epoch = self.device.type == "cuda" and images.numel() * 4 <= WHOLE_EPOCH_BYTES
        self.whole_epoch = whole_epoch
        self.flip_parity = torch.rand(len(labels), generator=torch.Generator().manual_seed(seed)) < 0.5

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_size(self, size: int | None) -> None:
        """Train at size x size from the next pass on (None: the images' own size)."""
        self.size = size

    def skip(self, steps: int) -> None:
        """Start the next pass at batch `steps` of this epoch (resuming mid-epoch)."""
        self.start_step = steps

    def _mine(self, values: torch.Tensor) -> torch.Tensor:
        """This rank's share of values given for every position of the epoch (the last axis)."""
        return values[..., self.rank::self.world_size][..., :self.shard]

    def _order(self) -> torch.Tensor:
        return self._mine(epoch_order(len(self.labels), self.shuffle, self.seed, self.epoch, self.weights))

    def __len__(self) -> int:
        return self.shard // self.batch_size if self.drop_last else -(-self.shard // self.batch_size)

    def _epoch_draws(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """This rank's flips and crop shifts (2, n) of the epoch, drawn on the CPU from (seed, epoch)
        for every position of the epoch, so CPU and GPU runs, and runs of any number of processes,
        see the same augmentation."""
        rng = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7)
        count = len(self.labels)
        flips = torch.rand(count, generator=rng) < 0.5 if self.augment in ("flip", "crop-flip") else None
        shifts = torch.randint(-self.pad, self.pad + 1, (2, count), generator=rng) if self.pad else None
        return (None if flips is None else self._mine(flips)), (None if shifts is None else self._mine(shifts))

    def __iter__(self):
        # Everything random for the epoch goes to the device in one copy per tensor: a copy
        # from pageable host memory waits for the GPU, so one per batch would stall every step.
        first, self.start_step = self.start_step, 0
        order = self._order()
        flips, shifts = self._epoch_draws()
        if self.augment in ("alt-flip", "crop-alt-flip"):
            flips = self.flip_parity[order] ^ bool(self.epoch % 2)
        order = order.to(self.device)
        flips = None if flips is None else flips.to(self.device)
        shifts = None if shifts is None else shifts.to(self.device)
        if self.whole_epoch:
            used = len(self) * self.batch_size
            order, flips = order[:used], None if flips is None else flips[:used]
            x, labels = self._batch(order, flips, None if shifts is None else shifts[:, :used])
            for step in range(first, len(self)):
                cut = slice(step * self.batch_size, (step + 1) * self.batch_size)
                yield x[cut], labels[cut]
            return
        for step in range(first, len(self)):
            cut = slice(step * self.batch_size, (step + 1) * self.batch_size)
            yield self._batch(order[cut], None if flips is None else flips[cut],
                              None if shifts is None else shifts[:, cut])

    def _batch(self, index: torch.Tensor, flip: torch.Tensor | None,
               shifts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented, normalised images at index, and their labels."""
        if self.pad:
            images = batch_crop(self.padded[index], shifts[0], shifts[1], self.pad, flip)
        else:
            images = self.images[index]
            if flip is not None:
                images = batch_flip(images, flip)
        if self.size is not None:
            images = resize_batch(images, self.size)
        return self._finish(images, index)

    def _finish(self, images: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented images (uint8, or float in 0-255) normalised and laid out, with their labels."""
        x = normalize_batch(images, self.mean, self.std, self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, self.labels[index]

    def whole_images(self, index: torch.Tensor) -> torch.Tensor:
        """The images at index, unaugmented, at the input size (uint8)."""
        return self.images[index]


class CropLoader(TensorLoader):
    """The photo preset (random resized crops, flips) on the tensor path: batches cropped from
    uint8 images stored larger than the input (see crop_source), resized to input_size on the
    device in one op per batch (batch_resized_crop).

    Everything random (order, boxes, flips) is drawn on the CPU from (seed, epoch) for every
    position of the epoch, as TensorLoader's shifts are: reproducible, resumable mid-epoch (skip),
    and each of world_size ranks takes its slice of the same draws.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, input_size: int,
                 augment: str = "resized-crop-flip", shuffle: bool = True, **options):
        # Per batch, not the whole epoch at once: the epoch's crops would first need every
        # source image as floats, several times the input's size.
        super().__init__(images, labels, batch_size, shuffle, augment=augment, whole_epoch=False, **options)
        self.input_size = input_size

    def _epoch_draws(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """This rank's flips (n,) and crop boxes in stored pixels (4, n) of the epoch."""
        rng = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 7)
        count = len(self.labels)
        boxes = draw_resized_crops(count, rng).T * self.images.shape[-1]
        flips = torch.rand(count, generator=rng) < 0.5 if self.augment.endswith("flip") else None
        return (None if flips is None else self._mine(flips)), self._mine(boxes)

    def _batch(self, index: torch.Tensor, flip: torch.Tensor | None,
               boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._finish(batch_resized_crop(self.images[index], boxes.T, self.size or self.input_size, flip),
                            index)

    def whole_images(self, index: torch.Tensor) -> torch.Tensor:
        """The stored images at index, uncropped, resized to the input size (uint8)."""
        side = self.images.shape[-1]
        whole = torch.tensor([[0.0, 0.0, side, side]]).expand(len(index), 4)
        return batch_resized_crop(self.images[index], whole, self.input_size).round_().to(torch.uint8)


class ProgressiveResize:
    """Hook: progressive resizing. Epochs that start within the first share of the run train at
    size (cheaper: a convolution's cost goes with the pixels), the rest at the images' own size.

    progress(step) is the run's clock (RunProgress): by steps, an epoch count (the first
    share * epochs epochs, the same after a resume); under a time budget, by the time spent.
    """

    def __init__(self, loader: TensorLoader, size: int, share: float, progress, steps_per_epoch: int):
        self.loader, self.size, self.share = loader, size, share
        self.progress, self.steps_per_epoch = progress, steps_per_epoch
        self.epoch = 0
        self.kept: dict | None = None   # a resumed epoch's size, as it was when the run stopped

    def state_dict(self) -> dict:
        """The epoch in progress and its size: a run stopped mid-epoch finishes it at that size (under a
        time budget the clock at the resume would say otherwise)."""
        return {"epoch": self.epoch, "size": self.loader.size}

    def load_state_dict(self, state: dict | None) -> None:
        self.kept = state if isinstance(state, dict) else None

    def small(self, epoch: int) -> bool:
        """Whether epoch (from 1) trains at the smaller size."""
        # A hair below the share, so that float rounding of e / epochs never adds an epoch.
        return self.progress((epoch - 1) * self.steps_per_epoch) < self.share - 1e-9

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch = epoch
        if self.kept is not None and self.kept.get("epoch") == epoch and self.kept.get("size") in (self.size, None):
            self.loader.set_size(self.kept["size"])
        else:
            self.loader.set_size(self.size if self.small(epoch) else None)
        self.kept = None
