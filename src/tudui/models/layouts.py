"""Which model a state_dict is for, from its keys and shapes: each model of `tudui models` laid out
on the "meta" device (shapes, no memory for its numbers) and compared with the file's tensors."""
from __future__ import annotations

import functools
import warnings

import torch

import tudui.models.torchvision as tv
from tudui.models.registry import create_model, list_models, model_entry


def model_with_keys(state: dict[str, torch.Tensor], tried: str) -> str | None:
    """The model of `tudui models` other than tried whose state_dict has the keys of state
    (torchvision's old names allowed) and their shapes, but for one module's (the head, for
    another class count); failing that, the first with the keys alone (a width setting of
    another value); or None. Each model's layout is worked out once per process (layout: a few
    seconds for all of them, on an error's path only)."""
    same_keys = None
    for name in list_models():
        expected = layout(name) if name != tried else None
        if expected is None:
            continue
        found = tv.normalize_keys(name, state) if model_entry(name).family == "torchvision" else state
        if set(found) != set(expected):
            continue
        differ = {key.rsplit(".", 1)[0] for key, shape in expected.items() if shape != tuple(found[key].shape)}
        if len(differ) <= 1:
            return name
        same_keys = same_keys or name
    return same_keys


@functools.cache
def layout(name: str) -> dict[str, tuple[int, ...]] | None:
    """The shape of each tensor of model name's state_dict (torchvision's with its ImageNet head,
    tudui's with 10 classes), laid out on the "meta" device. None for a model that cannot be laid
    out there (the regnets)."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            skeleton = tv.base_model(name) if model_entry(name).family == "torchvision" else create_model(name, 10)
    except Exception:  # noqa: BLE001 - models whose construction needs real numbers
        return None
    return {key: tuple(value.shape) for key, value in skeleton.state_dict().items()}
