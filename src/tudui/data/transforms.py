"""Image preprocessing presets built from torchvision.transforms.v2.

Training and evaluation share one pipeline shape (resize to the model's input size,
to float in [0, 1], normalise); training adds augmentation in front. Evaluation,
`tudui eval` and `tudui predict` all call `eval_transform` with the values stored in
the weights, so a prediction sees exactly what the test set saw.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

# Photos look the same mirrored; digits and the synthetic stripes do not.
FLIP_SAFE = {"cifar10": True, "folder": True, "digits": False, "synthetic": False}


def resolve_augment(augment: str, kind: str) -> str:
    """The augmentation preset to use: `auto` picks crop-flip for photos and none otherwise."""
    if augment != "auto":
        return augment
    return "crop-flip" if FLIP_SAFE.get(kind, True) else "none"


def _to_input(input_size: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> list:
    steps: list = [v2.Resize((input_size, input_size), antialias=True),
                   v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if mean is not None and std is not None:
        steps.append(v2.Normalize(list(mean), list(std)))
    return steps


def eval_transform(input_size: int, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> v2.Compose:
    """PIL RGB image -> float tensor (3, input_size, input_size), as the model expects it."""
    return v2.Compose(_to_input(input_size, mean, std))


def train_transform(input_size: int, mean: Sequence[float] | None, std: Sequence[float] | None,
                    augment: str) -> v2.Compose:
    """The evaluation pipeline with the augmentation preset in front (augment is resolved)."""
    steps = _to_input(input_size, mean, std)
    if augment in ("crop", "crop-flip"):
        # Pad by an eighth of the side (4 px at 32 px, as in the classic CIFAR-10 recipe) and
        # crop back: small translations that keep the whole object in view.
        steps.insert(1, v2.RandomCrop(input_size, padding=max(1, input_size // 8),
                                      padding_mode="reflect"))
    if augment in ("flip", "crop-flip"):
        steps.insert(1, v2.RandomHorizontalFlip())
    return v2.Compose(steps)
