"""The photo preset on the tensor path: the batched resized-crop op, CropLoader's draws, the choice
of loader in make_loaders, and the decode cache at the larger geometry."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tudui.data import build_dataset, eval_transform
from tudui.data import loaders as loaders_module
from tudui.data.datasets import ArrayImages, FileImages
from tudui.data.loaders import crop_source, make_loaders, sample_inputs
from tudui.data.tensor_loaders import CropLoader, TensorLoader
from tudui.data.transforms import (
    RESIZED_CROP_RATIO,
    RESIZED_CROP_SCALE,
    Preprocess,
    batch_resized_crop,
    draw_resized_crops,
    geometry,
)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """The decode cache of each test in its own folder: a test can count what it decodes."""
    monkeypatch.setenv("TUDUI_CACHE", str(tmp_path / "tudui-cache"))


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, size, size) of slow gradients and waves: resizes of them differ little by method."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = [[128 + 100 * np.sin(2 * np.pi * (rng.uniform(0.5, 1.5) * xx + rng.uniform(0.5, 1.5) * yy + c))
               for c in range(3)] for _ in range(n)]
    return torch.from_numpy(np.array(images)).round().to(torch.uint8)


def write_photos(root, classes=("a", "b", "c"), per_class=8, size=(200, 150), seed=0):
    """root/<class>/<i>.jpg: noisy photos, a class-coloured block in each."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = rng.integers(0, 80, (size[1], size[0], 3), dtype=np.uint8)
            array[20:100, 30:120, k % 3] = 220
            Image.fromarray(array).save(root / name / f"{i:02d}.jpg", quality=90)
    return root


# ---------------------------------------------------------------- the crop op

def test_resized_crops_have_the_input_size_and_are_floats_in_the_pixel_range():
    images = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    boxes = draw_resized_crops(5, torch.Generator().manual_seed(0)) * 40
    out = batch_resized_crop(images, boxes, 24, torch.tensor([True, False, True, False, False]))
    assert out.shape == (5, 3, 24, 24) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 255


def test_drawn_crops_lie_inside_the_image_with_scale_and_ratio_in_range():
    boxes = draw_resized_crops(20_000, torch.Generator().manual_seed(1))
    x0, y0, x1, y1 = boxes.T
    assert x0.min() >= 0 and y0.min() >= 0 and x1.max() <= 1 and y1.max() <= 1
    width, height = x1 - x0, y1 - y0
    area, ratio = width * height, width / height
    low, high = RESIZED_CROP_SCALE
    assert area.min() >= low - 1e-6 and area.max() <= high + 1e-6
    assert ratio.min() >= RESIZED_CROP_RATIO[0] - 1e-5 and ratio.max() <= RESIZED_CROP_RATIO[1] + 1e-5
    # the whole ranges are used, not a corner of them; the crops wander over the whole image
    assert area.min() < low + 0.01 and area.max() > high - 0.02
    assert ratio.min() < 0.76 and ratio.max() > 1.32
    assert x0.max() > 0.5 and y0.max() > 0.5 and x1.min() < 0.5 and y1.min() < 0.5


def test_a_crop_of_the_whole_image_without_flip_is_a_plain_resize():
    images = smooth_images(3, 64)
    whole = torch.tensor([[0.0, 0.0, 64.0, 64.0]]).expand(3, 4)
    assert torch.equal(batch_resized_crop(images, whole, 64), images.float())     # its own size: itself
    out = batch_resized_crop(images, whole, 32)
    bilinear = F.interpolate(images.float(), size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(out, bilinear, atol=1e-3)
    # and close to what the PIL path's resize (antialiased) gives
    pil = torch.stack([geometry(32)[0](image) for image in images]).float()
    assert (out - pil).abs().mean() < 1.0 and (out - pil).abs().max() < 6


def test_a_box_is_the_pixels_it_covers_resized():
    images = smooth_images(2, 48)
    boxes = torch.tensor([[8.0, 4.0, 40.0, 28.0], [0.0, 16.0, 24.0, 48.0]])   # (x0, y0, x1, y1)
    out = batch_resized_crop(images, boxes, 24)
    for image, (x0, y0, x1, y1), crop in zip(images, boxes.int().tolist(), out):
        expected = F.interpolate(image[None, :, y0:y1, x0:x1].float(), size=(24, 24), mode="bilinear",
                                 align_corners=False)[0]
        assert torch.allclose(crop, expected, atol=1e-3)


def test_flips_mirror_the_crop():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    boxes = draw_resized_crops(4, torch.Generator().manual_seed(2)) * 32
    flip = torch.tensor([True, False, True, False])
    plain, flipped = batch_resized_crop(images, boxes, 16), batch_resized_crop(images, boxes, 16, flip)
    assert torch.equal(flipped[flip], plain[flip].flip(-1)) and torch.equal(flipped[~flip], plain[~flip])


# ---------------------------------------------------------------- CropLoader's draws

def crop_loader(images, labels=None, **options):
    labels = torch.arange(len(images)) if labels is None else labels
    return CropLoader(images, labels, options.pop("batch_size", 8), input_size=options.pop("input_size", 12),
                      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), **options)


def epoch_batches(loader, epoch: int = 0, skip: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    loader.skip(skip)
    return list(loader)


def test_labels_stay_with_their_images_and_every_image_is_seen_once():
    values = torch.arange(40)
    images = (values * 6).to(torch.uint8).view(40, 1, 1, 1).expand(40, 3, 24, 24).contiguous()
    seen = []
    for x, y in crop_loader(images, seed=3):
        assert x.shape[1:] == (3, 12, 12)
        # a crop of a constant image is that constant
        assert torch.allclose((x[:, 0, 0, 0] * 0.25 + 0.5) * 255, (y * 6).float(), atol=1e-3)
        seen += y.tolist()
    assert sorted(seen) == list(range(40)) and seen != list(range(40))


def test_the_same_seed_and_epoch_give_the_same_batches_and_another_epoch_others():
    images = torch.randint(0, 256, (30, 3, 24, 24), dtype=torch.uint8)
    first = epoch_batches(crop_loader(images, seed=4), epoch=2)
    again = epoch_batches(crop_loader(images, seed=4), epoch=2)
    assert all(torch.equal(x, x2) and torch.equal(y, y2) for (x, y), (x2, y2) in zip(first, again, strict=True))
    other = torch.cat([x for x, _ in epoch_batches(crop_loader(images, seed=4), epoch=3)])
    assert not torch.allclose(torch.cat([x for x, _ in first]), other)
    # the crops themselves change with the epoch, not only the order
    unshuffled = [torch.cat([x for x, _ in epoch_batches(crop_loader(images, seed=4, shuffle=False), e)])
                  for e in (0, 1)]
    assert not torch.allclose(*unshuffled)


def test_resuming_at_step_k_gives_the_rest_of_the_epoch():
    images = torch.randint(0, 256, (50, 3, 24, 24), dtype=torch.uint8)
    whole = epoch_batches(crop_loader(images, seed=5), epoch=1)
    rest = epoch_batches(crop_loader(images, seed=5), epoch=1, skip=3)
    assert len(rest) == len(whole) - 3
    for (x, y), (x2, y2) in zip(whole[3:], rest, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_two_ranks_together_see_what_one_process_sees():
    images = torch.randint(0, 256, (48, 3, 24, 24), dtype=torch.uint8)
    one = epoch_batches(crop_loader(images, seed=6, batch_size=8), epoch=1)
    ranks = [epoch_batches(crop_loader(images, seed=6, batch_size=4, rank=r, world_size=2), epoch=1)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(one)
    for (x, y), (x0, y0), (x1, y1) in zip(one, *ranks, strict=True):
        # rank r takes every second position of the global batch, crop and flip included
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)


def test_the_loader_crops_inside_the_stored_image_with_flips_in_about_half():
    loader = crop_loader(torch.zeros(400, 3, 30, 30, dtype=torch.uint8), seed=7)
    flips, boxes = loader._epoch_draws()
    assert boxes.shape == (4, 400) and boxes.min() >= 0 and boxes.max() <= 30
    assert 150 < flips.sum() < 250
    area = (boxes[2] - boxes[0]) * (boxes[3] - boxes[1]) / 30 ** 2
    assert area.min() >= RESIZED_CROP_SCALE[0] - 1e-6 and area.max() <= 1 + 1e-6
    no_flip = crop_loader(torch.zeros(10, 3, 30, 30, dtype=torch.uint8), augment="resized-crop")
    assert no_flip._epoch_draws()[0] is None


def test_whitening_samples_are_whole_images_at_the_input_size():
    images = smooth_images(20, 24)
    samples = sample_inputs(crop_loader(images), 6, torch.device("cpu"))
    assert samples.shape == (6, 3, 12, 12)
    index = torch.randperm(20, generator=torch.Generator().manual_seed(0))[:6]   # sample_inputs' seeded pick
    plain = F.interpolate(images[index].float(), size=(12, 12), mode="bilinear", align_corners=False)
    assert torch.allclose((samples * 0.25 + 0.5) * 255, plain, atol=0.51)   # rounded to uint8 on the way


# ---------------------------------------------------------------- the choice, the cache

def photo_spec(tmp_path):
    root = tmp_path / "photos"
    return build_dataset(str(root if root.is_dir() else write_photos(root)), val_split=0.25)


def test_photos_above_64_px_with_the_photo_preset_go_to_the_crop_loader(tmp_path):
    spec = photo_spec(tmp_path)
    preprocess = Preprocess(input_size=96, mean=(0.5,) * 3, std=(0.2,) * 3)
    loaders = make_loaders(spec, preprocess, torch.device("cpu"), 4, augment="resized-crop-flip")
    assert isinstance(loaders.train, CropLoader)
    assert loaders.kind == "tensor (decoded once at 192 px, resized crops on cpu)"
    assert loaders.train.images.shape == (len(spec.train), 3, 192, 192)
    x, _ = next(iter(loaders.train))
    assert x.shape == (4, 3, 96, 96)
    # evaluation is untouched: exactly the eval geometry of Preprocess, at the input size
    assert isinstance(loaders.val, TensorLoader) and not isinstance(loaders.val, CropLoader)
    expected = torch.stack([eval_transform(96)(spec.val[i][0]) for i in range(len(spec.val))])
    assert torch.allclose(loaders.val.images.float() / 255, expected, atol=1e-6)


def test_over_the_memory_budget_or_when_asked_the_photo_preset_uses_the_dataloader(tmp_path, monkeypatch):
    spec = photo_spec(tmp_path)
    preprocess = Preprocess(input_size=96)
    forced = make_loaders(spec, preprocess, torch.device("cpu"), 4, augment="resized-crop-flip",
                          choice="dataloader", workers=0)
    assert forced.kind == "DataLoader (0 workers)" and not isinstance(forced.train, TensorLoader)
    stored = 3 * (len(spec.train) * 192 ** 2 + len(spec.val) * 96 ** 2)
    monkeypatch.setattr(loaders_module, "TENSOR_MAX_BYTES", stored - 1)
    over = make_loaders(spec, preprocess, torch.device("cpu"), 4, augment="resized-crop-flip", workers=0)
    assert over.kind.startswith("DataLoader (0 workers); the photo preset's decoded copy would take")
    assert not isinstance(over.train, TensorLoader) and not isinstance(over.val, TensorLoader)
    monkeypatch.setattr(loaders_module, "TENSOR_MAX_BYTES", stored)
    fits = make_loaders(spec, preprocess, torch.device("cpu"), 4, augment="resized-crop-flip")
    assert isinstance(fits.train, CropLoader)
    tensor = make_loaders(spec, preprocess, torch.device("cpu"), 4, augment="resized-crop-flip", choice="tensor")
    assert isinstance(tensor.train, CropLoader)   # --loader tensor: whatever the budget


def test_the_decode_cache_keeps_the_larger_geometry_and_the_next_build_reads_it(tmp_path, monkeypatch):
    spec = photo_spec(tmp_path)
    # torchvision's weights: the stored square is the centre of the shorter side
    preprocess = Preprocess(input_size=80, resize_size=92)
    first = make_loaders(spec, preprocess, torch.device("cpu"), 4, augment="resized-crop-flip")
    assert crop_source(spec.train, preprocess) == (160, 160)
    reference = eval_transform(160, resize_size=160)
    for i in (0, len(spec.train) - 1):
        assert torch.allclose(first.train.images[i].float() / 255, reference(spec.train[i][0]), atol=1e-6)
    cached = sorted((tmp_path / "tudui-cache" / "tensors").glob("*.safetensors"))
    assert len(cached) == 2                                         # train at 160 px, val at 80 px

    def no_decoding(self, i):
        raise AssertionError(f"image {i} was decoded again")
    monkeypatch.setattr(FileImages, "__getitem__", no_decoding)
    again = make_loaders(photo_spec(tmp_path), preprocess, torch.device("cpu"), 4, augment="resized-crop-flip")
    assert torch.equal(again.train.images, first.train.images)
    assert sorted((tmp_path / "tudui-cache" / "tensors").glob("*.safetensors")) == cached


def test_small_square_arrays_are_kept_at_their_own_size():
    arrays = ArrayImages(np.zeros((4, 32, 32, 3), dtype=np.uint8), np.zeros(4, dtype=np.int64))
    assert crop_source(arrays, Preprocess(input_size=96)) == (32, None)
    assert crop_source(arrays, Preprocess(input_size=12, resize_size=14)) == (24, None)


def test_without_augmentation_the_cached_path_gives_the_dataloader_batches(tmp_path):
    spec = photo_spec(tmp_path)
    preprocess = Preprocess(input_size=96, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    batches = {}
    for choice in ("tensor", "dataloader"):
        loaders = make_loaders(spec, preprocess, torch.device("cpu"), 4, augment="none", choice=choice,
                               workers=0, seed=3)
        batches[choice] = list(loaders.train)
    assert len(batches["tensor"]) == len(batches["dataloader"]) > 1
    for (x_tensor, y_tensor), (x_loader, y_loader) in zip(batches["tensor"], batches["dataloader"]):
        assert torch.equal(y_tensor, y_loader)                # the same seeded order
        # the same pixels, but for the cache's rounding to uint8: half a level over the std
        assert (x_tensor - x_loader).abs().max() <= 0.5 / 255 / 0.2 + 1e-6


def test_the_photo_cache_is_decoded_again_when_a_photo_changes(tmp_path):
    spec = photo_spec(tmp_path)
    preprocess = Preprocess(input_size=96)
    before = make_loaders(spec, preprocess, torch.device("cpu"), 4, augment="resized-crop-flip").train.images
    changed = spec.train.samples[0][0]
    Image.fromarray(np.full((150, 200, 3), 255, dtype=np.uint8)).save(changed, quality=90)   # now all white
    spec = photo_spec(tmp_path)
    after = make_loaders(spec, preprocess, torch.device("cpu"), 4, augment="resized-crop-flip").train.images
    index = [path for path, _ in spec.train.samples].index(changed)
    assert (after[index] >= 254).all() and not (before[index] >= 254).all()
    others = [i for i in range(len(after)) if i != index]
    assert torch.equal(after[others], before[others])


def test_a_smaller_size_crops_straight_to_it():
    values = torch.arange(40)
    images = (values * 6).to(torch.uint8).view(40, 1, 1, 1).expand(40, 3, 24, 24).contiguous()
    full, small = crop_loader(images, seed=3), crop_loader(images, seed=3)
    small.set_size(8)                        # progressive resizing: the same boxes, resized to 8 px
    for (x, y), (x_small, y_small) in zip(epoch_batches(full), epoch_batches(small), strict=True):
        assert torch.equal(y, y_small) and x.shape[-2:] == (12, 12) and x_small.shape[-2:] == (8, 8)
        assert torch.allclose(x_small[:, 0, 0, 0], x[:, 0, 0, 0], atol=1e-4)   # constant images stay constant
