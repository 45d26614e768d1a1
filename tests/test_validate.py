"""Unreadable images in a folder: skipped with a warning and counted, or the run stops."""
from __future__ import annotations

import io
import logging

import pytest
from PIL import Image, ImageFile

import tudui
from conftest import write_class_folder
from tudui.data.validate import check_image
from tudui.errors import TuduiError


def plant_bad_images(folder):
    """Four kinds of broken file, each under a name that looks like an image."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, "JPEG")
    (folder / "a" / "truncated.jpg").write_bytes(buffer.getvalue()[:300])
    (folder / "a" / "notes.jpg").write_text("these are my notes, not a picture")
    (folder / "b" / "empty.png").write_bytes(b"")
    (folder / "b" / "page.jpg").write_text("<!DOCTYPE html><html><body>404 Not Found</body></html>")
    return ["truncated.jpg", "notes.jpg", "empty.png", "page.jpg"]


@pytest.fixture
def folder_with_bad_images(tmp_path):
    folder = write_class_folder(tmp_path / "photos", ["a", "b"], 50)
    return folder, plant_bad_images(folder)


def test_each_kind_of_broken_file_is_found_and_good_ones_pass(folder_with_bad_images):
    folder, names = folder_with_bad_images
    for name in names:
        path = next(folder.rglob(name))
        assert check_image(path) is not None, name
    assert check_image(folder / "a" / "000.png") is None


def test_training_skips_unreadable_images_naming_each_and_counts_them(folder_with_bad_images, tmp_path, caplog):
    folder, names = folder_with_bad_images
    with caplog.at_level(logging.WARNING):
        result = tudui.train(data=str(folder), epochs=1, batch_size=16, max_bad_share=0.1,
                             project=str(tmp_path / "runs"), progress=False, report=False)
    warned = "\n".join(record.getMessage() for record in caplog.records)
    for name in names:
        assert f"skipping unreadable image {folder}" in warned and name in warned
    assert "4 unreadable image(s) were skipped" in warned
    assert result.final_accuracy is not None


def test_too_many_unreadable_images_stop_the_run_with_the_list(folder_with_bad_images, tmp_path):
    folder, names = folder_with_bad_images
    with pytest.raises(TuduiError, match=r"images are unreadable .*more than --max-bad-share 1%") as error:
        tudui.train(data=str(folder), epochs=1, project=str(tmp_path / "runs"), progress=False)
    assert all(name in str(error.value) for name in names)


# Pillow only warns between its limit and twice it, and raises above: both are refusals here.
@pytest.mark.parametrize("limit", [30_000, 10_000])
def test_images_over_the_pixel_limit_are_refused_without_decoding(tmp_path, monkeypatch, limit):
    assert Image.MAX_IMAGE_PIXELS is not None          # importing tudui leaves the limit on
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(path)            # 40,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self))
    assert f"limit of {limit:,} pixels" in check_image(path)
    with pytest.raises(TuduiError, match="limit of"):
        tudui.data.datasets.load_image(path)
    assert decoded == []
