"""Image preprocessing presets built from torchvision.transforms.v2.

Training and evaluation share one pipeline shape (resize to the model's input size:
squashed, or for torchvision's weights the shorter side resized and the centre cropped;
to float in [0, 1], normalise); training adds augmentation in front. Evaluation,
`tudui eval` and `tudui predict` all call `eval_transform` with the values stored in
the weights, so a prediction sees exactly what the test set saw.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import roi_align
from torchvision.transforms import v2

# Photos look the same mirrored; digits, characters and the synthetic stripes do not.
FLIP_SAFE = {"digits": False, "synthetic": False, "mnist": False, "kmnist": False, "svhn": False}
# Above this input side the photo preset (random resized crops) is the automatic choice.
SMALL_IMAGE_SIDE = 64
# Random resized crops keep at least this share of the image: the usual 8 % often cuts the
# object out of small folders of photos, where every image counts.
RESIZED_CROP_SCALE = (0.25, 1.0)
# The aspect ratios (width / height) of the crops, as torchvision's RandomResizedCrop draws them.
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)


def resolve_augment(augment: str, kind: str, input_size: int = 32) -> str:
    """The augmentation preset to use. `auto` picks none for digits and synthetic data, and
    for photos: crop-flip (pad-and-crop shifts) up to 64 px, resized-crop-flip above."""
    if augment != "auto":
        return augment
    if not FLIP_SAFE.get(kind, True):   # photos (folders, cifar10, cifar100, stl10, fashion-mnist) are safe
        return "none"
    return "crop-flip" if input_size <= SMALL_IMAGE_SIDE else "resized-crop-flip"


@dataclass(frozen=True, kw_only=True)
class Preprocess:
    """What an image goes through before the model, recorded with its weights: the resize (squash
    to input_size square, or the shorter side to resize_size and a centre crop), then to float in
    [0, 1] and, with mean and std, normalised."""
    input_size: int
    resize_size: int | None = None
    interpolation: str = "bilinear"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("mean", "std"):   # lists from JSON or statistics: stored as tuples (frozen)
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(float(v) for v in value))

    def eval_transform(self) -> v2.Compose:
        return eval_transform(self.input_size, self.mean, self.std, self.resize_size, self.interpolation)

    @property
    def decode_side(self) -> int:
        """The fewest pixels an image's sides need before eval_transform (see decode_side())."""
        return decode_side(self.input_size, self.resize_size)


def decode_side(input_size: int, resize_size: int | None = None) -> int:
    """The side geometry() resizes to: what a large JPEG is decoded down to at least, the same
    for evaluation, prediction, serving and the decoded copies, so that all see the same pixels."""
    return resize_size or input_size


def geometry(input_size: int, resize_size: int | None = None, interpolation: str = "bilinear") -> list:
    """The resize steps: squash to input_size square, or (resize_size given) resize the shorter
    side to resize_size and take the centre input_size square, as torchvision's weights do."""
    mode = v2.InterpolationMode(interpolation)
    if resize_size:
        return [v2.Resize(resize_size, interpolation=mode, antialias=True), v2.CenterCrop(input_size)]
    return [v2.Resize((input_size, input_size), interpolation=mode, antialias=True)]


def _to_float(mean: Sequence[float] | None, std: Sequence[float] | None) -> list:
    steps: list = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if mean is not None and std is not None:
        steps.append(v2.Normalize(list(mean), list(std)))
    return steps


def eval_transform(input_size: int, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, resize_size: int | None = None,
                   interpolation: str = "bilinear") -> v2.Compose:
    """PIL RGB image -> float tensor (3, input_size, input_size), as the model expects it."""
    return v2.Compose(geometry(input_size, resize_size, interpolation) + _to_float(mean, std))


def translate_pixels(translate: int, input_size: int) -> int:
    """The crop presets' shift in pixels; -1 means an eighth of the side (4 px at 32, the classic)."""
    return max(1, input_size // 8) if translate < 0 else translate


def train_transform(input_size: int, mean: Sequence[float] | None, std: Sequence[float] | None,
                    augment: str, translate: int = -1, resize_size: int | None = None,
                    interpolation: str = "bilinear") -> v2.Compose:
    """The evaluation pipeline with the augmentation preset in front (augment is resolved).

    resized-crop presets replace the resize steps by a random crop of 25-100 % of the image
    at a random aspect ratio, scaled to input_size (the photo preset). The PIL path has no
    epoch-alternating flip: alt-flip presets flip at random here.
    """
    if augment.startswith("resized-crop"):
        steps = [v2.RandomResizedCrop(input_size, scale=RESIZED_CROP_SCALE,
                                      interpolation=v2.InterpolationMode(interpolation), antialias=True)]
    else:
        steps = geometry(input_size, resize_size, interpolation)
        pad = translate_pixels(translate, input_size)
        if augment.startswith("crop") and pad > 0:
            # Pad and crop back: small shifts that keep the whole object in view.
            steps.append(v2.RandomCrop(input_size, padding=pad, padding_mode="reflect"))
    if augment.endswith("flip"):
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + _to_float(mean, std))


# ---------------------------------------------------------------- batched tensor augmentation
# Pure functions on whole batches (B, C, H, W), the same on CPU and CUDA: the tensor loader
# applies them on the device, so no worker process touches a single image.

def batch_flip(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose entry in the boolean vector flip is True."""
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def reflect_pad(images: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad (B, C, H, W) by pad pixels on each side, keeping the dtype (uint8 included)."""
    source = images if images.is_floating_point() else images.float()
    return torch.nn.functional.pad(source, (pad, pad, pad, pad), mode="reflect").to(images.dtype)


def batch_crop(padded: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor, pad: int,
               flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop each image of a reflect-padded batch back to its size, offset by (shift_y, shift_x),
    and mirror those marked in flip (the mirror of the crop, as batch_flip would give).

    One gather over the flattened pixels: several times faster on a CPU than a slice per
    shift followed by a separate flip.
    """
    B, C, padded_h, padded_w = padded.shape
    H, W = padded_h - 2 * pad, padded_w - 2 * pad
    device = padded.device
    rows = (shift_y + pad).view(B, 1, 1) + torch.arange(H, device=device).view(1, H, 1)
    across = torch.arange(W, device=device).view(1, 1, W)
    if flip is not None:
        across = torch.where(flip.view(B, 1, 1), W - 1 - across, across)
    cols = (shift_x + pad).view(B, 1, 1) + across
    index = (rows * padded_w + cols).view(B, 1, H * W).expand(B, C, H * W)
    return padded.reshape(B, C, padded_h * padded_w).gather(2, index).view(B, C, H, W)


def batch_translate(images: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor,
                    pad: int) -> torch.Tensor:
    """Shift each image by (shift_y, shift_x) pixels in [-pad, pad], filling by reflection.

    Equals reflect-padding by pad and cropping the original size at offset (pad+dy, pad+dx),
    which is what RandomCrop(size, padding=pad, padding_mode="reflect") does image by image.
    """
    if pad == 0:
        return images
    return batch_crop(reflect_pad(images, pad), shift_y, shift_x, pad)


def resize_batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """A batch (B, C, H, W) resized to size x size: bilinear with antialiasing (the smoothing a
    downscale needs, as PIL's resize does). uint8 comes back as uint8 values: computed in uint8 on
    the CPU (several times faster there than float), in float elsewhere (CUDA has no uint8 kernel
    for it) and rounded, so both devices give the same pixels within one level."""
    if images.shape[-2:] == (size, size):
        return images
    if images.dtype == torch.uint8 and images.device.type == "cpu":
        return torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                               align_corners=False)
    out = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True,
                                          align_corners=False)
    return out.round_().clamp_(0, 255) if images.dtype == torch.uint8 else out


def normalize_batch(images: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [0, 1], then (x - mean) / std as eval_transform computes it."""
    x = images.to(torch.float32).div_(255.0)
    if mean is not None and std is not None:
        x = x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))
    return x.to(dtype)


def draw_resized_crops(count: int, generator: torch.Generator, scale: tuple[float, float] = RESIZED_CROP_SCALE,
                       ratio: tuple[float, float] = RESIZED_CROP_RATIO, attempts: int = 10) -> torch.Tensor:
    """count crop boxes (x0, y0, x1, y1) of a unit square, (count, 4), as RandomResizedCrop draws them.

    As torchvision's get_params: the area a share of the image uniform in scale, the log of the
    aspect ratio uniform in log(ratio), the first of `attempts` draws that fits (the whole image
    when none does), then the corner uniform where the box fits. Unlike it, the box is not
    rounded to whole pixels: the resize samples between pixels anyway.
    """
    area = torch.empty(attempts, count).uniform_(*scale, generator=generator)
    aspect = torch.empty(attempts, count).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                   generator=generator).exp()
    width, height = (area * aspect).sqrt(), (area / aspect).sqrt()
    fits = (width <= 1) & (height <= 1)
    first = fits.to(torch.uint8).argmax(0, keepdim=True)   # the first attempt that fits
    none_fit = ~fits.any(0)
    width = width.gather(0, first)[0].masked_fill(none_fit, 1.0)
    height = height.gather(0, first)[0].masked_fill(none_fit, 1.0)
    x0 = torch.rand(count, generator=generator) * (1 - width)
    y0 = torch.rand(count, generator=generator) * (1 - height)
    return torch.stack([x0, y0, x0 + width, y0 + height], dim=1)


def batch_resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int,
                       flip: torch.Tensor | None = None) -> torch.Tensor:
    """Each image's box (x0, y0, x1, y1 in pixels, (0, 0) the top-left corner of the image)
    resized to size x size, and mirrored where flip is True: float32 (B, C, size, size) in the
    images' own range (0-255 for uint8).

    One roi_align over the batch (torchvision.ops, on any device): it takes the boxes as they are
    drawn (grid_sample would need an affine grid built per image, for the same speed on a CPU),
    and each output pixel is the mean of a grid of bilinear samples in its cell, a grid that grows
    with the downscale, where grid_sample takes one point per pixel and aliases. One bilinear
    sample at a cell's centre already averages a cell two pixels wide, so boxes up to twice the
    output's side (CropLoader's crops of a copy at twice the input side) take one sample per pixel
    (as the plain bilinear resize does: a 2x downscale of a whole image equals it), a third of the
    cost of roi_align's own adaptive grid on a CPU; larger images take more. aligned=True puts the
    samples on pixel centres: a whole image at its own size comes back exactly.
    """
    batch = torch.arange(len(images), device=images.device, dtype=torch.float32).view(-1, 1)
    rois = torch.cat([batch, boxes.to(device=images.device, dtype=torch.float32)], dim=1)
    samples = max(1, math.ceil(max(images.shape[-2:]) / (2 * size)))
    out = roi_align(images.float(), rois, (size, size), spatial_scale=1.0, sampling_ratio=samples, aligned=True)
    return out if flip is None else batch_flip(out, flip)


def mirror_suits(dataset: str, augment: str) -> bool:
    """Whether test-time views may mirror the images of a model trained on dataset with augment: yes
    for images that look the same mirrored, and for a model that training showed mirrored images (an
    augment with a flip). A mirrored digit is another shape, or another digit."""
    return FLIP_SAFE.get(dataset, True) or "flip" in augment


def tta_note(level: int, mirror: bool, dataset: str) -> str:
    """A warning when test-time augmentation leaves the mirror out (mirror_suits), else ""."""
    if level == 0 or mirror:
        return ""
    views = "the image alone, as --tta 0" if level == 1 else "the image and its 1-px shifts"
    return (f"--tta {level} without the mirror: {dataset} images change when mirrored, and the model is not "
            f"trained on mirrored ones (--augment flip would); the views are {views}")


def tta_views(images: torch.Tensor, level: int, mirror: bool = True) -> list[tuple[torch.Tensor, float]]:
    """Test-time views and their weights: 0 the image; 1 adds its mirror; 2 adds 1-px shifts.

    Level 2 follows airbench94 (Jordan, arXiv 2404.00498): half the weight on the image and
    its mirror, half on the mirrored pairs shifted one pixel up-left and down-right. Without
    mirror (mirror_suits), the same views less the mirrored ones: level 1 is the image alone.
    """
    if level == 0 or (level == 1 and not mirror):
        return [(images, 1.0)]
    if level == 1:
        return [(images, 0.5), (images.flip(-1), 0.5)]
    shifted = [batch_translate(images, shift, shift, 1)
               for shift in (torch.full((images.shape[0],), d, device=images.device) for d in (-1, 1))]
    if not mirror:
        return [(images, 0.5)] + [(view, 0.25) for view in shifted]
    return [(images, 0.25), (images.flip(-1), 0.25)] + [(v, 0.125) for view in shifted for v in (view, view.flip(-1))]
