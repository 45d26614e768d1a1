"""tudui: train image classifiers with PyTorch from one command.

    import tudui
    result = tudui.train(data="digits", epochs=5)
    tudui.evaluate(result.best_weights)
    tudui.predict("my_digit.png", weights=result.run_dir)
    tudui.export_model(result.run_dir, format="onnx")

The names below load their modules when first used, so `tudui --help` does not wait for
PyTorch to import.
"""
from __future__ import annotations

import importlib

from tudui._version import __version__
from tudui.errors import TuduiError

_LAZY = {"create_model": "tudui.models", "list_models": "tudui.models", "register_model": "tudui.models",
         "predict": "tudui.prediction", "train": "tudui.runner", "TrainResult": "tudui.runner",
         "evaluate": "tudui.evaluation", "export_model": "tudui.export"}

__all__ = ["__version__", "TuduiError", *_LAZY]


SUBPACKAGES = ("serve",)   # tudui.serve.create_app(...) after a plain `import tudui`


def __getattr__(name: str):
    if name in SUBPACKAGES:
        return importlib.import_module(f"tudui.{name}")
    if name not in _LAZY:
        raise AttributeError(f"module 'tudui' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value   # once loaded, an ordinary attribute
    return value


def __dir__() -> list[str]:
    """The public names only (what `dir(tudui)` shows someone exploring), not the module's plumbing."""
    return sorted([*__all__, *SUBPACKAGES])
