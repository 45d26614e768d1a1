"""tudui serve: an HTTP prediction service for a run or a weights file, with dynamic batching.

    from tudui.serve import create_app
    app = create_app("runs/exp", max_batch=32)      # a FastAPI app; mount it in your own if you like

Needs FastAPI and uvicorn (the serve extra: pip install fastapi uvicorn python-multipart, or
pip install -e ".[serve]" in a clone); they are imported at the first call.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tudui.config_commands import ServeConfig
from tudui.errors import TuduiError


def create_app(weights: str | Path, **settings: Any) -> Any:
    """A FastAPI app serving these weights (settings: `tudui serve`'s, by name)."""
    _check_installed()
    from tudui.serve.app import create_app as make
    return make(weights, **settings)


def serve(cfg: ServeConfig) -> None:
    """Run `tudui serve` until SIGTERM or Ctrl-C."""
    _check_installed()
    from tudui.serve.server import serve as run
    run(cfg)


def _check_installed() -> None:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        from tudui.extras import install_hint
        raise TuduiError(f"tudui serve needs FastAPI and uvicorn: {install_hint('serve')}") from None
