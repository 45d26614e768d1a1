"""Finding unreadable images: every kind of broken file, and the pixel limit."""
from __future__ import annotations

import pytest
from PIL import Image, ImageFile

import tudui
from tudui.data.validate import check_image
from tudui.errors import TuduiError


def test_each_kind_of_broken_file_is_found_and_good_ones_pass(folder_with_bad_images):
    folder, names = folder_with_bad_images
    for name in names:
        path = next(folder.rglob(name))
        assert check_image(path) is not None, name
    assert check_image(folder / "a" / "000.png") is None


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
