"""The model registry: `@register_model` adds a builder, `create_model` builds one by name.

It sits below the model families: tudui's own nets register here when tudui.models is
imported, and every torchvision classification model is found by its torchvision name
(resnet18, vgg16, vit_b_16, ...) through models/torchvision.py.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

import tudui.models.torchvision as tv
from tudui.data.transforms import Preprocess
from tudui.errors import SettingError, TuduiError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    input_size: int   # side in pixels of the square images the model expects
    summary: str
    family: str = "tudui"          # "tudui" (registered here) or "torchvision"
    # torchvision models: resize side, interpolation, mean and std of their weights' transforms
    preprocess: Preprocess | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, input_size: int = 32, summary: str = ""):
    """Decorator: make `builder(num_classes=...) -> nn.Module` available as `name`."""
    def decorate(builder: Callable[..., nn.Module]):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelEntry(name, builder, input_size, summary or (doc[0] if doc else ""))
        return builder
    return decorate


def list_models(family: str | None = None) -> list[str]:
    """Model names: tudui's registered ones, then torchvision's (family: only "tudui" or "torchvision")."""
    if family not in (None, "tudui", "torchvision"):
        raise SettingError(f"family must be 'tudui' or 'torchvision' (or left out for both), got {family!r}")
    ours = sorted(_REGISTRY) if family in (None, "tudui") else []
    theirs = [n for n in tv.torchvision_names() if n not in _REGISTRY] if family in (None, "torchvision") else []
    return ours + theirs


@functools.cache
def _torchvision_entry(name: str) -> ModelEntry:
    preset = tv.preprocess_preset(name)
    return ModelEntry(name, functools.partial(tv.create_torchvision_model, name), preset.input_size,
                      tv.model_summary(name), "torchvision", preset)


def model_entry(name: str) -> ModelEntry:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in tv.torchvision_names():
        return _torchvision_entry(name)
    raise TuduiError(f"unknown model {name!r}{tv.suggest(name, list_models())}; tudui's models are "
                     f"{', '.join(sorted(_REGISTRY))}, and every torchvision classification model "
                     f"by name (resnet18, vgg16, vit_b_16, ...): `tudui models` lists them all")


def create_model(name: str, num_classes: int = 10, **options) -> nn.Module:
    """Build the registered model `name` with a head for num_classes classes.

    options are the model's own settings (fastnet's widths); empty values are ignored.
    """
    if num_classes < 2:
        raise TuduiError(f"a classifier needs at least 2 classes, got {num_classes}")
    options = {k: v for k, v in options.items() if v not in (None, "")}
    try:
        return model_entry(name).builder(num_classes=num_classes, **options)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise TuduiError(f"model {name!r} takes no setting {', '.join(options)}") from None
        raise
    except ValueError as e:
        raise TuduiError(f"model {name!r}: {e}") from None


def preprocess_of(name: str, input_size: int = 0) -> Preprocess:
    """Input size, resize side, interpolation and mean/std for model name (mean/std None: not
    fixed by the model; tudui's own nets normalise by the training set's statistics).

    input_size other than the model's own scales the resize side with it.
    """
    entry = model_entry(name)
    if entry.preprocess is None:
        return Preprocess(input_size=input_size or entry.input_size)
    preset = entry.preprocess
    if input_size and input_size != preset.input_size:
        preset = replace(preset, input_size=input_size,
                         resize_size=round(preset.resize_size * input_size / preset.input_size))
    return preset


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
