"""Models by name: the registry, tudui's own nets (registered on import) and torchvision's."""
from tudui.models import fastnet as _fastnet  # noqa: F401  (registers fastnet)
from tudui.models import tudui as _tudui  # noqa: F401  (registers tudui, tudui_relu)
from tudui.models.registry import (
                                   ModelEntry,
                                   count_parameters,
                                   create_model,
                                   list_models,
                                   model_entry,
                                   preprocess_of,
                                   register_model,
)

__all__ = ["ModelEntry", "count_parameters", "create_model", "list_models", "model_entry", "preprocess_of",
           "register_model"]
