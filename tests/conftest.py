"""Shared fixtures (generated image folders, a trained digits run) and the test lanes.

tests/unit/ are quick tests of one module each; tests/e2e/ run the tool as a user does
(subprocesses, whole trainings, resume, GPU) and are marked e2e, so `pytest -m "not e2e"`
is the quick lane. Tests that need a CUDA GPU are marked gpu and skip without one.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from helpers import run_cli, write_class_folder

E2E = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if E2E in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Archives unpack into a per-session cache, never into the user's ~/.cache."""
    os.environ["TUDUI_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def split_folder(tmp_path) -> Path:
    """An ImageFolder data set with train/ and val/ splits of three classes."""
    root = tmp_path / "folder"
    write_class_folder(root / "train", ["cat", "dog", "fox"], 12, seed=1)
    write_class_folder(root / "val", ["cat", "dog", "fox"], 4, seed=2)
    return root


@dataclass
class FinishedRun:
    run_dir: Path
    stdout: str


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> FinishedRun:
    """The README's main job (`tudui train --data digits`), run once for the whole session."""
    cwd = tmp_path_factory.mktemp("readme_job")
    result = run_cli("train", "--data", "digits", cwd=cwd, check=True)
    return FinishedRun(cwd / "runs" / "exp", result.stdout)


@pytest.fixture
def folder_with_bad_images(tmp_path) -> tuple[Path, list[str]]:
    """A two-class folder of 50 good images each, plus four kinds of broken file named like images."""
    folder = write_class_folder(tmp_path / "photos", ["a", "b"], 50)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, "JPEG")
    (folder / "a" / "truncated.jpg").write_bytes(buffer.getvalue()[:300])
    (folder / "a" / "notes.jpg").write_text("these are my notes, not a picture")
    (folder / "b" / "empty.png").write_bytes(b"")
    (folder / "b" / "page.jpg").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    return folder, ["truncated.jpg", "notes.jpg", "empty.png", "page.jpg"]
