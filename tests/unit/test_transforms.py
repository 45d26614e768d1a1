import torch
from PIL import Image

from tudui.data import eval_transform, resolve_augment, train_transform


def test_eval_transform_resizes_and_normalises():
    image = Image.new("RGB", (8, 8), (255, 0, 128))
    out = eval_transform(32, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5])(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out[:, 10, 10], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-5)


def test_eval_transform_without_stats_is_to_tensor():
    image = Image.new("RGB", (32, 32), (51, 102, 204))
    out = eval_transform(32)(image)
    assert torch.allclose(out[:, 0, 0], torch.tensor([0.2, 0.4, 0.8]))


def test_auto_augment_never_flips_digits():
    assert resolve_augment("auto", "digits") == "none"
    assert resolve_augment("auto", "cifar10") == "crop-flip"
    assert resolve_augment("flip", "digits") == "flip"


def test_flip_augmentation_mirrors_some_images_and_keeps_content():
    image = Image.new("RGB", (32, 32))
    image.paste((255, 255, 255), (0, 0, 8, 32))  # a white band on the left
    transform = train_transform(32, None, None, "flip")
    torch.manual_seed(0)
    lefts = {bool(transform(image)[0, 0, 0] > 0.5) for _ in range(20)}
    assert lefts == {True, False}


def test_weights_preset_resizes_the_shorter_side_then_takes_the_centre():
    image = Image.new("RGB", (300, 200), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 40, 200))          # a band the centre crop leaves out
    out = eval_transform(224, resize_size=256)(image)       # 300x200 -> 384x256 -> centre 224
    assert out.shape == (3, 224, 224)
    assert out[:, :, :8].max() < 0.05
    squashed = eval_transform(224)(image)                   # tudui's own nets: the whole image
    assert squashed[:, :, :8].min() > 0.95


def test_photo_preset_is_random_resized_crops_above_64_px():
    assert resolve_augment("auto", "folder", 224) == "resized-crop-flip"
    assert resolve_augment("auto", "folder", 64) == "crop-flip"
    assert resolve_augment("auto", "digits", 224) == "none"
    image = Image.new("RGB", (120, 80))
    image.paste((255, 255, 255), (0, 0, 60, 80))
    transform = train_transform(96, None, None, "resized-crop-flip")
    torch.manual_seed(0)
    crops = [transform(image) for _ in range(20)]
    assert all(c.shape == (3, 96, 96) for c in crops)
    assert len({round(c.mean().item(), 2) for c in crops}) > 5   # different crops of the image
