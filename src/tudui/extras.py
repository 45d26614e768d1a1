"""The optional extras (export, serve): what each needs, and the one line that installs it."""
from __future__ import annotations

import importlib.metadata
import re


def install_hint(extra: str) -> str:
    """How to install an extra's packages: by their names, which works however tudui itself was
    installed, and as the extra of a clone (the README's `pip install -e .`)."""
    try:
        requirements = importlib.metadata.requires("tudui") or []
    except importlib.metadata.PackageNotFoundError:   # run from a source tree without installing
        requirements = []
    names = [re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0] for line in requirements
             if re.search(rf"extra\s*==\s*['\"]{re.escape(extra)}['\"]", line)]
    clone = f'pip install -e ".[{extra}]" in a clone of tudui'
    return f"pip install {' '.join(names)}  (or {clone})" if names else clone
