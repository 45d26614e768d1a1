"""What every benchmark line carries: the commit measured and the machine it ran on."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# The CIFAR-10 copy (JPEG, train/ and test/ class folders in a tar.gz); TUDUI_SHARED_DATA names its folder.
CIFAR_COPY = Path(os.environ.get("TUDUI_SHARED_DATA", REPO.parent / "shared" / "data")) / "cifar10-jpeg.tar.gz"


def git_commit(checkout: Path = REPO) -> str:
    """The short commit of the checkout (this one by default), with -dirty when tracked files have changed.

    $TUDUI_COMMIT, when set, wins for this checkout: a copy sent to another machine may carry a stale .git.
    """
    if os.environ.get("TUDUI_COMMIT") and checkout == REPO:
        return os.environ["TUDUI_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=checkout,
                               capture_output=True, text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine(device: str = "cpu") -> str:
    """The GPU's name, or the CPU model and torch's thread count."""
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"
