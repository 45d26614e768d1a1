"""The decode cache on its own: pixels, keys, reuse, and a cache that is broken or cannot be written."""
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tudui.data.cache import decode_to_tensor, files_key, source_key
from tudui.data.datasets import ArrayImages, FileImages
from tudui.data.transforms import eval_transform


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Whatever the module decides to write lands in this test's folder."""
    monkeypatch.setenv("TUDUI_CACHE", str(tmp_path / "tudui-cache"))


def write_images(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> list[tuple[Path, int]]:
    """Noisy RGB PNGs of the given (width, height), labels alternating 0, 1: (path, label) samples."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, (width, height) in enumerate(sizes):
        path = folder / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        samples.append((path, i % 2))
    return samples


def cached_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.safetensors")) if cache.is_dir() else []


def refuse_to_decode(monkeypatch) -> None:
    """From now on, opening any image file fails the test: only the cache can answer."""
    def no_decoding(self, i):
        raise AssertionError(f"image {i} was decoded again")
    monkeypatch.setattr(FileImages, "__getitem__", no_decoding)


def assert_matches_eval_transform(images, labels, dataset, size, **geometry):
    transform = eval_transform(size, **geometry)
    assert images.shape == (len(dataset), 3, size, size) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels.tolist() == [int(label) for label in dataset.labels]
    for i in range(len(dataset)):
        expected = transform(dataset[i][0])           # float in [0, 1], what the model is fed
        assert torch.allclose(images[i].float() / 255, expected, atol=1e-6), i


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "bicubic"])
def test_resize_and_centre_crop_give_the_pixels_of_the_eval_transform(tmp_path, interpolation):
    # Wide, tall and square images: the crop must take the centre of the shorter side's resize.
    dataset = FileImages(write_images(tmp_path / "img", [(30, 20), (20, 30), (25, 25)]))
    images, labels = decode_to_tensor(dataset, 16, tmp_path / "cache", resize_size=20,
                                      interpolation=interpolation)
    assert_matches_eval_transform(images, labels, dataset, 16, resize_size=20, interpolation=interpolation)


def test_the_second_call_reads_the_cache_instead_of_the_images(tmp_path, monkeypatch):
    dataset = FileImages(write_images(tmp_path / "img", [(12, 12)] * 4))
    first_images, first_labels = decode_to_tensor(dataset, 8, tmp_path / "cache")
    assert len(cached_files(tmp_path / "cache")) == 1
    refuse_to_decode(monkeypatch)
    images, labels = decode_to_tensor(FileImages(list(dataset.samples)), 8, tmp_path / "cache")
    assert torch.equal(images, first_images) and torch.equal(labels, first_labels)


@pytest.mark.parametrize("other", [dict(size=10), dict(size=8, resize_size=12),
                                   dict(size=8, interpolation="nearest")],
                         ids=["size", "resize", "interpolation"])
def test_another_geometry_is_not_served_from_the_cache(tmp_path, other):
    dataset = FileImages(write_images(tmp_path / "img", [(14, 12)] * 2))
    decode_to_tensor(dataset, 8, tmp_path / "cache")
    geometry = dict(other)
    size = geometry.pop("size")
    images, labels = decode_to_tensor(dataset, size, tmp_path / "cache", **geometry)
    assert len(cached_files(tmp_path / "cache")) == 2       # a second entry, not the first one reused
    assert_matches_eval_transform(images, labels, dataset, size, **geometry)


def test_a_changed_file_is_decoded_again_with_its_new_pixels(tmp_path):
    samples = write_images(tmp_path / "img", [(8, 8)] * 3)
    decode_to_tensor(FileImages(samples), 8, tmp_path / "cache")
    Image.new("RGB", (8, 8), (0, 255, 0)).save(samples[1][0])
    os.utime(samples[1][0], ns=(1_000_000_000, 1_000_000_000))   # a clearly different mtime too
    images, _ = decode_to_tensor(FileImages(samples), 8, tmp_path / "cache")
    assert images[1, 1].min() == 255 and images[1, 0].max() == 0 and images[1, 2].max() == 0
    assert len(cached_files(tmp_path / "cache")) == 2


def test_files_key_changes_with_size_mtime_label_or_salt_and_only_then(tmp_path):
    samples = write_images(tmp_path / "img", [(6, 6)] * 2)
    path = samples[0][0]
    key = files_key(samples, "size=8")
    assert key == files_key([(p, label) for p, label in samples], "size=8")   # same files, same key
    assert files_key(samples, "size=9") != key
    assert files_key([(path, 1 - samples[0][1]), samples[1]], "size=8") != key   # a relabelled file
    assert files_key(samples[::-1], "size=8") != key                             # another order
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))           # touched only
    touched = files_key(samples, "size=8")
    assert touched != key
    path.write_bytes(path.read_bytes() + b"\0")                                  # grown, mtime put back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert files_key(samples, "size=8") not in (key, touched)


def test_files_key_names_the_file_not_the_spelling_of_its_path(tmp_path, monkeypatch):
    samples = write_images(tmp_path / "img", [(6, 6)] * 2)
    monkeypatch.chdir(tmp_path)
    relative = [(Path("img") / p.name, label) for p, label in samples]
    dotted = [(tmp_path / "img" / ".." / "img" / p.name, label) for p, label in samples]
    assert files_key(relative, "s") == files_key(samples, "s") == files_key(dotted, "s")


def test_source_key_depends_on_the_geometry_and_is_none_for_arrays(tmp_path):
    dataset = FileImages(write_images(tmp_path / "img", [(6, 6)] * 2))
    keys = {source_key(dataset, 8), source_key(dataset, 16), source_key(dataset, 8, 10),
            source_key(dataset, 8, None, "nearest"), source_key(dataset, 8, 10, "nearest")}
    assert len(keys) == 5 and None not in keys
    assert source_key(dataset, 8) == source_key(FileImages(list(dataset.samples)), 8)
    assert source_key(ArrayImages(np.zeros((2, 8, 8, 3)), np.array([0, 1])), 8) is None


def test_a_corrupt_cache_file_is_decoded_again_with_a_warning(tmp_path, caplog):
    dataset = FileImages(write_images(tmp_path / "img", [(10, 10)] * 3))
    expected, _ = decode_to_tensor(dataset, 8, tmp_path / "cache")
    [cached] = cached_files(tmp_path / "cache")
    cached.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with caplog.at_level(logging.WARNING, logger="tudui"):
        images, labels = decode_to_tensor(dataset, 8, tmp_path / "cache")
    assert torch.equal(images, expected) and labels.tolist() == [0, 1, 0]
    assert any("unreadable" in record.getMessage() and cached.name in record.getMessage()
               for record in caplog.records)


def test_a_cache_file_without_the_images_is_decoded_again_and_replaced(tmp_path, monkeypatch, caplog):
    from safetensors.torch import load_file, save_file
    dataset = FileImages(write_images(tmp_path / "img", [(10, 10)] * 2))
    expected, _ = decode_to_tensor(dataset, 8, tmp_path / "cache")
    [cached] = cached_files(tmp_path / "cache")
    save_file({"something_else": torch.zeros(2)}, str(cached))      # readable, but not a decode cache
    with caplog.at_level(logging.WARNING, logger="tudui"):
        images, _ = decode_to_tensor(dataset, 8, tmp_path / "cache")
    assert torch.equal(images, expected)
    assert any("unreadable" in record.getMessage() for record in caplog.records)
    assert torch.equal(load_file(str(cached))["images"], expected)   # the next run reads it again
    refuse_to_decode(monkeypatch)
    assert torch.equal(decode_to_tensor(dataset, 8, tmp_path / "cache")[0], expected)


def test_in_memory_arrays_are_never_written_to_the_cache(tmp_path):
    arrays = ArrayImages(np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3)), np.array([0, 1, 1]))
    decode_to_tensor(arrays, 8, tmp_path / "cache")
    decode_to_tensor(arrays, 6, tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("shape", [(3, 8, 8, 3), (3, 8, 8), (3, 11, 7, 3), (3, 11, 7)],
                         ids=["rgb-same-size", "grey-same-size", "rgb-resized", "grey-resized"])
def test_arrays_decode_to_the_pixels_of_the_eval_transform(shape):
    arrays = ArrayImages(np.random.default_rng(1).integers(0, 256, shape), np.array([2, 0, 1]))
    images, labels = decode_to_tensor(arrays, 8, None)
    assert_matches_eval_transform(images, labels, arrays, 8)


def test_arrays_with_a_resize_and_crop_decode_to_the_pixels_of_the_eval_transform():
    arrays = ArrayImages(np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3)), np.array([0, 1]))
    images, labels = decode_to_tensor(arrays, 8, None, resize_size=10)   # same size, but still cropped
    assert_matches_eval_transform(images, labels, arrays, 8, resize_size=10)


def test_no_cache_folder_means_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = FileImages(write_images(tmp_path / "img", [(9, 9)] * 2))
    images, _ = decode_to_tensor(dataset, 8, None)
    assert images.shape == (2, 3, 8, 8)
    assert list(tmp_path.rglob("*.safetensors")) == []


def test_a_cache_folder_that_cannot_be_made_still_returns_the_tensors(tmp_path, caplog):
    dataset = FileImages(write_images(tmp_path / "img", [(10, 10)] * 2))
    expected, _ = decode_to_tensor(dataset, 8, None)
    (tmp_path / "blocker").write_text("a file where the cache folder's parent should be")
    with caplog.at_level(logging.WARNING, logger="tudui"):
        images, labels = decode_to_tensor(dataset, 8, tmp_path / "blocker" / "cache")
    assert torch.equal(images, expected) and labels.tolist() == [0, 1]
    assert any("not written" in record.getMessage() for record in caplog.records)


def test_a_cache_file_that_cannot_be_replaced_still_returns_the_tensors(tmp_path, caplog):
    dataset = FileImages(write_images(tmp_path / "img", [(10, 10)] * 2))
    cache = tmp_path / "cache"
    (cache / f"{source_key(dataset, 8)}.safetensors").mkdir(parents=True)   # a folder in the way
    with caplog.at_level(logging.WARNING, logger="tudui"):
        images, _ = decode_to_tensor(dataset, 8, cache)
    assert torch.equal(images, decode_to_tensor(dataset, 8, None)[0])
    assert any("not written" in record.getMessage() for record in caplog.records)
    assert [p.name for p in cache.iterdir() if ".tmp" in p.name] == []        # no temporary file left


def write_photos(folder: Path, sizes: list[tuple[int, int]]) -> list[tuple[Path, int]]:
    """JPEG photos (tests/photos.py's: a smooth background, noise, an object) of the given
    (width, height), labels alternating 0, 1."""
    from photos import photo_image
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, (width, height) in enumerate(sizes):
        path = folder / f"{i:02d}.jpg"
        photo_image(i % 2, rng, width, height).save(path, quality=90)
        samples.append((path, i % 2))
    return samples


def test_large_jpegs_decode_reduced_to_what_the_resize_needs_with_nearly_the_same_pixels(tmp_path):
    from tudui.data.images import load_image
    (photo, _), (png, _) = write_photos(tmp_path, [(1024, 768)])[0], write_images(tmp_path, [(1024, 768)])[0]
    assert load_image(photo).size == (1024, 768)
    assert load_image(photo, 32).size == (128, 96)       # 1/8: both sides still at least 32
    assert load_image(photo, 256).size == (512, 384)     # 1/2: 1/4 would leave 192 rows
    assert load_image(photo, 400).size == (1024, 768)    # no reduction keeps 400 a side
    assert load_image(png, 32).size == (1024, 768)       # JPEG's decoder alone can do it
    camera = tmp_path / "camera.jpg"                     # a camera's JPEG with a second picture: MPO
    Image.open(photo).save(camera, "MPO", save_all=True, append_images=[Image.new("RGB", (64, 48))])
    assert load_image(camera, 32).size == (128, 96)
    for size, resize_size in ((32, None), (224, 256)):
        transform = eval_transform(size, resize_size=resize_size)
        full = transform(load_image(photo))
        reduced = transform(load_image(photo, resize_size or size))
        assert full.shape == reduced.shape and (full - reduced).abs().mean() < 0.01
        assert (full - reduced).abs().max() < 0.1


def test_the_decoded_copy_of_large_jpegs_has_the_pixels_that_predict_and_the_eval_loader_see(tmp_path):
    from tudui.data.images import load_image
    from tudui.data.loaders import make_eval_loader
    from tudui.data.transforms import Preprocess
    dataset = FileImages(write_photos(tmp_path / "img", [(1024, 768), (640, 960), (300, 200)]))
    for preprocess in (Preprocess(input_size=32), Preprocess(input_size=48, resize_size=56)):
        images, _ = decode_to_tensor(dataset, preprocess.input_size, tmp_path / "cache", preprocess.resize_size)
        transform = preprocess.eval_transform()
        predicted = torch.stack([transform(load_image(path, preprocess.decode_side)) for path, _ in dataset.samples])
        assert torch.allclose(images.float() / 255, predicted, atol=1e-6)
        loader = make_eval_loader(dataset, preprocess, torch.device("cpu"), 8, choice="dataloader", workers=0)
        assert torch.equal(next(iter(loader))[0], predicted)
