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


def test_the_cached_check_names_files_as_this_data_set_spells_them(tmp_path, monkeypatch):
    from helpers import write_class_folder
    from tudui.data.datasets import FileImages
    from tudui.data.validate import find_unreadable
    monkeypatch.setenv("TUDUI_CACHE", str(tmp_path / "cache"))
    write_class_folder(tmp_path / "d" / "cat", ["x"], 3)
    (tmp_path / "d" / "cat" / "x" / "bad.png").write_text("no picture")
    files = sorted((tmp_path / "d" / "cat" / "x").iterdir())
    monkeypatch.chdir(tmp_path)
    relative = FileImages([(p.relative_to(tmp_path), 0) for p in files])
    absolute = FileImages([(p, 0) for p in files])
    assert [path for path, _ in find_unreadable(relative)] == ["d/cat/x/bad.png"]
    assert [path for path, _ in find_unreadable(absolute)] == [str(tmp_path / "d/cat/x/bad.png")]   # from the cache


def test_a_split_that_skipping_would_empty_is_refused(tmp_path, monkeypatch):
    from helpers import write_class_folder
    from tudui.data import build_dataset
    from tudui.data.validate import drop_unreadable
    monkeypatch.setenv("TUDUI_CACHE", str(tmp_path / "cache"))
    write_class_folder(tmp_path / "d" / "train", ["a", "b"], 40)
    for name in ("a", "b"):
        (tmp_path / "d" / "test" / name).mkdir(parents=True)
        (tmp_path / "d" / "test" / name / "0.png").write_text("no picture")
    spec = build_dataset(str(tmp_path / "d"), "unused", -1, 0, False)
    with pytest.raises(TuduiError, match="every image of the test split is unreadable .*left empty"):
        drop_unreadable(spec, 0.05)
    # eval's one split: the same refusal, even where the share allows the files to be skipped
    from tudui.data.validate import readable_images
    with pytest.raises(TuduiError, match="every image of the test split is unreadable .*left empty"):
        readable_images(spec.test, "test", 1.0)


def test_val_and_test_images_that_are_copies_of_train_images_are_warned_of(tmp_path, monkeypatch, caplog):
    import shutil

    from helpers import write_class_folder
    from tudui.data import build_dataset
    from tudui.data.validate import drop_unreadable
    monkeypatch.setenv("TUDUI_CACHE", str(tmp_path / "cache"))
    write_class_folder(tmp_path / "d" / "train", ["a", "b"], 6)
    write_class_folder(tmp_path / "d" / "test", ["a", "b"], 3, seed=8)
    spec = build_dataset(str(tmp_path / "d"), "unused", -1, 0, False)
    with caplog.at_level("WARNING", logger="tudui"):
        drop_unreadable(spec, 0.05)
    assert not caplog.records                                # same names (000.png) in both, other pixels
    for name in ("000.png", "001.png"):                      # the same bytes under another name
        shutil.copy(tmp_path / "d" / "train" / "b" / name, tmp_path / "d" / "test" / "b" / f"copy-{name}")
    spec = build_dataset(str(tmp_path / "d"), "unused", -1, 0, False)
    with caplog.at_level("WARNING", logger="tudui"):
        drop_unreadable(spec, 0.05)
    said = caplog.records[-1].getMessage()
    assert said.startswith("2 images of the test split are byte for byte the same as train images (first: ")
    assert "copy-000.png = " in said and said.endswith("the test numbers; remove one file of each pair")


def test_unreadable_files_alike_in_two_splits_are_skipped_not_called_copies(tmp_path, monkeypatch, caplog):
    from helpers import write_class_folder
    from tudui.data import build_dataset
    from tudui.data.validate import drop_unreadable
    monkeypatch.setenv("TUDUI_CACHE", str(tmp_path / "cache"))
    write_class_folder(tmp_path / "d" / "train", ["a", "b"], 6)
    write_class_folder(tmp_path / "d" / "test", ["a", "b"], 3, seed=8)
    for split in ("train", "test"):
        (tmp_path / "d" / split / "a" / "empty.png").write_bytes(b"")
    with caplog.at_level("WARNING", logger="tudui"):
        drop_unreadable(build_dataset(str(tmp_path / "d"), "unused", -1, 0, False), 0.5)
    said = [r.getMessage() for r in caplog.records]
    assert sum("skipping unreadable image" in line for line in said) == 2
    assert not any("byte for byte" in line for line in said)
