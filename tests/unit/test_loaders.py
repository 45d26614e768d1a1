"""The tensor loader and the decode cache: alignment, augmentation, reuse and invalidation."""
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tudui.data import TensorLoader, build_dataset, decode_to_tensor, eval_transform
from tudui.data.tensor_loaders import ProgressiveResize
from tudui.data.transforms import (
    batch_flip,
    batch_translate,
    mirror_suits,
    normalize_batch,
    resize_batch,
    tta_note,
    tta_views,
)
from tudui.engine.optim import RunProgress

from helpers import write_class_folder


def numbered_images(n: int, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with the value i (mod 256) and has label i: alignment is checkable."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()
    return images, torch.arange(n)


@pytest.mark.parametrize("augment", ["none", "flip", "crop-flip", "crop-alt-flip"])
def test_labels_stay_with_their_images_through_shuffling_and_augmentation(augment):
    images, labels = numbered_images(200)
    loader = TensorLoader(images, labels, batch_size=32, shuffle=True, augment=augment, seed=1)
    seen = []
    for x, y in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8)
        # constant images stay constant under flips and reflect-padded shifts
        assert torch.equal(x[:, 0, 0, 0] * 255, y.float())
        seen += y.tolist()
    assert sorted(seen) == list(range(200)) and seen != list(range(200))
    assert len(loader) == 7


@pytest.mark.parametrize("drop_last", [False, True])
def test_augmenting_the_whole_epoch_at_once_gives_the_same_batches(drop_last):
    images = torch.randint(0, 256, (150, 3, 8, 8), dtype=torch.uint8)
    kwargs = dict(batch_size=32, shuffle=True, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.2),
                  augment="crop-alt-flip", seed=2, translate=2, drop_last=drop_last, channels_last=True)
    per_batch = TensorLoader(images, torch.arange(150), whole_epoch=False, **kwargs)
    at_once = TensorLoader(images, torch.arange(150), whole_epoch=True, **kwargs)
    for epoch in (0, 1):
        per_batch.set_epoch(epoch)
        at_once.set_epoch(epoch)
        batches = list(zip(per_batch, at_once, strict=True))
        assert len(batches) == (4 if drop_last else 5)
        for (x, y), (x_all, y_all) in batches:
            assert torch.equal(y, y_all) and torch.equal(x, x_all)
            assert x_all.is_contiguous(memory_format=torch.channels_last)


def test_each_epoch_has_its_own_order_and_repeats_with_the_seed():
    images, labels = numbered_images(64)
    a = TensorLoader(images, labels, 16, True, seed=3)
    b = TensorLoader(images, labels, 16, True, seed=3)
    first = torch.cat([y for _, y in a])
    a.set_epoch(1)
    second = torch.cat([y for _, y in a])
    assert not torch.equal(first, second)
    b.set_epoch(1)
    assert torch.equal(second, torch.cat([y for _, y in b]))


def test_ranks_get_disjoint_shards_of_the_same_epoch():
    images, labels = numbered_images(100)
    shards = [torch.cat([y for _, y in TensorLoader(images, labels, 8, True, seed=0, rank=r, world_size=2)])
              for r in range(2)]
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert sorted(shards[0].tolist() + shards[1].tolist()) == list(range(100))


def test_flip_mirrors_exactly_the_chosen_images():
    pattern = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(2, 3, 4, 4)
    out = batch_flip(pattern, torch.tensor([True, False]))
    assert torch.equal(out[0, 0, 0], torch.tensor([3, 2, 1, 0], dtype=torch.uint8))
    assert torch.equal(out[1], pattern[1])


def test_translate_moves_a_known_pattern_with_reflection():
    image = torch.zeros(1, 1, 5, 5)
    image[0, 0, 2, 2] = 1.0
    out = batch_translate(image, torch.tensor([1]), torch.tensor([-2]), pad=2)
    # content shifts by (-dy, -dx): the dot moves up one row and right two columns, and the
    # reflection of column 2 about the left edge fills column 0
    expected = torch.zeros(5, 5)
    expected[1, 4] = expected[1, 0] = 1.0
    assert torch.equal(out[0, 0], expected)


def test_alternating_flip_mirrors_each_image_every_other_epoch():
    pattern = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(50, 3, 4, 4).contiguous()
    loader = TensorLoader(pattern, torch.arange(50), 50, False, augment="alt-flip", seed=0)
    x0, _ = next(iter(loader))
    loader.set_epoch(1)
    x1, _ = next(iter(loader))
    flipped0 = x0[:, 0, 0, 0] > x0[:, 0, 0, 3]
    flipped1 = x1[:, 0, 0, 0] > x1[:, 0, 0, 3]
    assert torch.equal(flipped0, ~flipped1) and 10 < flipped0.sum() < 40


def test_batch_normalisation_matches_the_pil_pipeline():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    reference = eval_transform(32, mean, std)(Image.fromarray(array))
    batched = normalize_batch(torch.from_numpy(array).permute(2, 0, 1)[None], torch.tensor(mean), torch.tensor(std))
    assert torch.allclose(reference, batched[0], atol=1e-6)


def test_decoded_tensor_equals_the_eval_pipeline_pixels(tmp_path):
    root = write_class_folder(tmp_path / "f", ["a", "b"], 3, size=20)
    spec = build_dataset(str(root), val_split=0.34)
    images, labels = decode_to_tensor(spec.train, 32, tmp_path / "cache")
    assert images.shape == (len(spec.train), 3, 32, 32) and images.dtype == torch.uint8
    for i in range(len(spec.train)):
        expected = eval_transform(32)(spec.train[i][0])
        assert torch.allclose(images[i].float() / 255, expected, atol=1e-7)
    assert labels.tolist() == spec.train.labels.tolist()


def test_decode_cache_is_reused_and_invalidated_when_a_file_changes(tmp_path):
    root = write_class_folder(tmp_path / "f", ["a", "b"], 4)
    cache = tmp_path / "cache"
    spec = build_dataset(str(root))
    decode_to_tensor(spec.train, 32, cache)
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    decode_to_tensor(build_dataset(str(root)).train, 32, cache)
    assert [f.stat().st_mtime_ns for f in cache.glob("*.safetensors")] == [stamp]   # reused
    changed = spec.train.samples[0][0]
    Image.new("RGB", (32, 32), (255, 0, 0)).save(changed)
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    images, _ = decode_to_tensor(build_dataset(str(root)).train, 32, cache)
    assert len(list(cache.glob("*.safetensors"))) == 2                                # decoded again
    assert images[0, 0].float().mean() == 255 and images[0, 1].float().mean() == 0


def test_tta_views_are_the_image_its_mirror_and_shifted_mirrors():
    x = torch.randn(2, 3, 6, 6)
    assert [w for _, w in tta_views(x, 0)] == [1.0]
    views = tta_views(x, 2)
    assert sum(w for _, w in views) == pytest.approx(1.0) and len(views) == 6
    assert torch.equal(views[1][0], x.flip(-1))
    assert torch.equal(views[2][0][:, :, 1:, 1:], x[:, :, :-1, :-1])   # shifted by one pixel


def test_without_the_mirror_the_views_are_the_image_and_its_shifts():
    x = torch.randn(2, 3, 6, 6)
    assert [(torch.equal(view, x), w) for view, w in tta_views(x, 1, mirror=False)] == [(True, 1.0)]
    views = tta_views(x, 2, mirror=False)
    assert [w for _, w in views] == [0.5, 0.25, 0.25]
    with_mirror = tta_views(x, 2)
    assert torch.equal(views[1][0], with_mirror[2][0]) and torch.equal(views[2][0], with_mirror[4][0])
    assert not any(torch.equal(view, x.flip(-1)) for view, _ in views)


@pytest.mark.parametrize("dataset, augment, mirror", [
    ("digits", "auto", False), ("digits", "crop", False), ("digits", "flip", True), ("mnist", "none", False),
    ("svhn", "crop-alt-flip", True), ("cifar10", "none", True), ("/data/photos", "auto", True)])
def test_the_mirror_is_left_out_for_digits_never_trained_mirrored(dataset, augment, mirror):
    assert mirror_suits(dataset, augment) is mirror
    assert bool(tta_note(2, mirror, dataset)) is not mirror and not tta_note(0, mirror, dataset)


def test_tta_help_names_every_kind_of_data_that_is_not_mirrored():
    from dataclasses import fields

    from tudui.config import TrainConfig
    from tudui.data.transforms import FLIP_SAFE
    text = next(f for f in fields(TrainConfig) if f.name == "tta").metadata["help"]
    assert all(kind in text for kind, safe in FLIP_SAFE.items() if not safe)


def test_crop_with_flip_is_the_mirror_of_the_crop():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    shift_y, shift_x = torch.randint(-2, 3, (2, 6))
    flip = torch.tensor([True, False, True, True, False, False])
    padded = torch.nn.functional.pad(images.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    from tudui.data.transforms import batch_crop
    expected = batch_flip(batch_translate(images, shift_y, shift_x, 2), flip)
    assert torch.equal(batch_crop(padded, shift_y, shift_x, 2, flip), expected)


def test_balanced_sampling_draws_every_class_about_as_often(tmp_path):
    from tudui.data.loaders import balanced_weights
    from tudui.data.tensor_loaders import epoch_order
    labels = np.array([0] * 150 + [1] * 8 + [2] * 60)
    drawn = labels[epoch_order(len(labels), True, 0, 0, balanced_weights(labels)).numpy()]
    counts = np.bincount(drawn, minlength=3)
    assert counts.sum() == len(labels) and counts.min() > 0.6 * counts.max()


# ---------------------------------------------------------------- progressive resizing

def test_resize_batch_matches_pils_bilinear_downscale():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    small = resize_batch(images, 24)
    assert small.dtype == torch.uint8 and small.shape == (4, 3, 24, 24)
    for image, resized in zip(images, small, strict=True):
        pil = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((24, 24), Image.BILINEAR)
        expected = torch.from_numpy(np.array(pil)).permute(2, 0, 1).int()
        assert (resized.int() - expected).abs().max() <= 1   # antialiased, as PIL's resize
    assert resize_batch(images, 32) is images
    as_float = resize_batch(images.float(), 24)               # floats (0-255) as the GPU path takes them
    assert as_float.dtype == torch.float32 and (as_float - small.float()).abs().max() <= 1 + 1e-4


def test_a_smaller_size_resizes_the_same_augmented_batches():
    images = torch.randint(0, 256, (96, 3, 32, 32), dtype=torch.uint8)
    kwargs = dict(batch_size=32, shuffle=True, augment="crop-alt-flip", translate=2, seed=4)
    full, small = TensorLoader(images, torch.arange(96), **kwargs), TensorLoader(images, torch.arange(96), **kwargs)
    small.set_size(20)
    for (x, y), (x_small, y_small) in zip(full, small, strict=True):
        assert torch.equal(y, y_small) and x_small.shape == (32, 3, 20, 20)
        # no mean/std: the batches are pixels / 255, so the full one gives back its uint8 pixels
        expected = resize_batch((x * 255).round().to(torch.uint8), 20).float() / 255
        assert torch.allclose(x_small, expected)
    small.set_size(None)
    assert next(iter(small))[0].shape == (32, 3, 32, 32)


def test_progressive_resize_shrinks_the_first_epochs_of_the_run():
    images, labels = numbered_images(64, size=16)
    loader = TensorLoader(images, labels, 16, True, augment="crop-flip", seed=1)
    clock = RunProgress(total_steps=len(loader) * 5)
    hook = ProgressiveResize(loader, 8, 2 / 5, clock, len(loader))
    sides = []
    for epoch in range(1, 6):
        loader.set_epoch(epoch - 1)
        hook.on_epoch_start(epoch, 5, len(loader))
        sides.append({tuple(x.shape[-2:]) for x, _ in loader})
    assert sides == [{(8, 8)}] * 2 + [{(16, 16)}] * 3
    # a resumed run asks again for its epoch and gets the same answer
    hook.on_epoch_start(2, 5, len(loader))
    assert loader.size == 8


def test_under_a_time_budget_the_small_share_is_a_share_of_the_time():
    images, labels = numbered_images(32)
    loader = TensorLoader(images, labels, 16, True)
    elapsed = {"share": 0.0}
    hook = ProgressiveResize(loader, 4, 0.5, lambda step: elapsed["share"], len(loader))
    for share, size in [(0.0, 4), (0.49, 4), (0.5, None), (0.9, None)]:
        elapsed["share"] = share
        hook.on_epoch_start(7, 10, len(loader))   # the epoch number does not matter, the time spent does
        assert loader.size == size
    # Stopped in epoch 7 while it was small, resumed when the clock is past the share: epoch 7
    # finishes small (as it began), epoch 8 follows the clock.
    elapsed["share"] = 0.3
    hook.on_epoch_start(7, 10, len(loader))
    saved = hook.state_dict()
    assert saved == {"epoch": 7, "size": 4}
    elapsed["share"] = 0.6
    resumed = ProgressiveResize(loader, 4, 0.5, lambda step: elapsed["share"], len(loader))
    resumed.load_state_dict(saved)
    resumed.on_epoch_start(7, 10, len(loader))
    assert loader.size == 4
    resumed.on_epoch_start(8, 10, len(loader))
    assert loader.size is None


@pytest.mark.parametrize("cores, processes, expected", [(2, None, 2), (2, "2", 1), (16, "2", 4), (16, "8", 2),
                                                        (1, "4", 1), (8, "junk", 4)])
def test_automatic_workers_share_the_cores_among_torchruns_processes(monkeypatch, cores, processes, expected):
    from tudui.data.loaders import pick_workers
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    if processes is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
    assert pick_workers(-1, in_memory=False) == expected
    assert pick_workers(-1, in_memory=True) == 0 and pick_workers(3, in_memory=False) == 3
