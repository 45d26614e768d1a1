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
