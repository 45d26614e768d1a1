"""What tests share besides fixtures: paths, the CLI as a subprocess, generated image folders."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TUDUI_SHARED_DATA", REPO.parent / "shared" / "data"))
CIFAR_COPY = SHARED_DATA / "cifar10-jpeg.tar.gz"
# What a user who wants the test sees: how to turn it on, not a folder of ours they do not have.
CIFAR_SKIP = ("needs a CIFAR-10 archive, cifar10-jpeg.tar.gz (train/<class>/*.jpg and test/<class>/*.jpg in a "
              "tar.gz): put it in a folder and set TUDUI_SHARED_DATA=/that/folder to run this test")


def run_cli(*args: str, cwd: Path | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """`tudui ARGS` in a subprocess, as a user runs it; returns exit code and output."""
    result = subprocess.run([sys.executable, "-m", "tudui", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and result.returncode != 0:
        raise AssertionError(f"tudui {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def class_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A learnable RGB image of class `label`: a bright square in a class-specific corner."""
    image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
    half = size // 2
    y, x = divmod(label % 4, 2)
    image[y * half:(y + 1) * half, x * half:(x + 1) * half, label % 3] = 230
    return image


def write_class_folder(root: Path, classes: list[str], per_class: int, seed: int = 0,
                       size: int = 32, ext: str = ".png") -> Path:
    """root/<class>/<i>.png with generated class images."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(class_image(k, rng, size)).save(root / name / f"{i:03d}{ext}")
    return root
