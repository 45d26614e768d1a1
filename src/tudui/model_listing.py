"""The table `tudui models` prints, kept once per installed version so the command answers at once.

Building it imports PyTorch and torchvision and builds tudui's models to count their parameters
(seconds); the text is then kept under the cache folder, named by a hash of what it depends on:
tudui's version and the source of its models, and the installed torch and torchvision. A change
to any of them names another file, so a stale table is never read.
"""
from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path

from tudui import _version
from tudui.errors import TuduiError
from tudui.files import atomic_write, cache_root

MAX_TEXT = 1 << 20   # the table is ~20 KB; a cached file larger than this is not ours


def listing_key() -> str:
    digest = hashlib.sha256(f"v1|{_version.__version__}".encode())
    for package in ("torch", "torchvision"):
        try:
            digest.update(f"|{package}={metadata.version(package)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"|{package}=?".encode())
    for source in sorted((Path(__file__).parent / "models").glob("*.py")):
        digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()[:16]


def build_listing() -> str:
    from tudui.models import count_parameters, create_model, list_models, model_entry
    lines = [f"{'name':<14} {'parameters':>11}  input  description"]
    for name in list_models("tudui"):
        entry = model_entry(name)
        params = count_parameters(create_model(name, num_classes=10))
        lines.append(f"{name:<14} {params:>11,}  {entry.input_size:>3}px  {entry.summary}")
    names = list_models("torchvision")
    lines.append(f"\ntorchvision's {len(names)} classification models (--model NAME; --pretrained starts\n"
                 f"from their ImageNet weights; the head is remade for your classes):")
    for name in names:
        entry = model_entry(name)
        lines.append(f"{name:<20} {entry.input_size:>3}px  {entry.summary}")
    return "\n".join(lines) + "\n"


def model_listing() -> str:
    """The table, from the cache when this installation has written it before."""
    path = cache_root() / "models" / f"listing-{listing_key()}.txt"
    try:
        if path.is_file() and path.stat().st_size <= MAX_TEXT:
            return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass   # unreadable: build it again
    text = build_listing()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except (OSError, TuduiError):   # a read-only or full cache folder costs speed next time, nothing else
        pass
    return text
