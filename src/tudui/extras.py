"""The optional extras (export, serve): what each needs, and the one line that installs it."""
from __future__ import annotations

import importlib.metadata
import re
import shlex


def install_hint(extra: str) -> str:
    """How to install an extra's packages: by their names and least versions, which works however
    tudui itself was installed, and as the extra of a clone (the README's `pip install -e .`)."""
    try:
        requirements = importlib.metadata.requires("tudui") or []
    except importlib.metadata.PackageNotFoundError:   # run from a source tree without installing
        requirements = []
    wanted = [line.split(";", 1)[0].strip() for line in requirements
              if re.search(rf"extra\s*==\s*['\"]{re.escape(extra)}['\"]", line)]
    clone = f'pip install -e ".[{extra}]" in a clone of tudui'
    return f"pip install {' '.join(shlex.quote(w) for w in wanted)}  (or {clone})" if wanted else clone
