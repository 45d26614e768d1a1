"""Model registry: `@register_model` adds a builder, `create_model` builds one by name."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from tudui.errors import TuduiError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    input_size: int   # side in pixels of the square images the model expects
    summary: str


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


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise TuduiError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _REGISTRY[name]


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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


from tudui.models import fastnet as _fastnet  # noqa: E402,F401  (registers the built-in models)
from tudui.models import tudui as _tudui  # noqa: E402,F401
