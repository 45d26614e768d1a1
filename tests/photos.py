"""Generated photo-like folders: two classes of objects on varied backgrounds, in mixed sizes,
and the mess real folders hold (odd image modes, EXIF rotation, hidden and stray files)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("ants", "bees")


def photo_image(label: int, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth random background with an object: dark small blobs (ants) or a striped
    yellow ellipse (bees), at a random place and scale."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    start, end = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    ramp = (xx / width * rng.uniform(0.3, 1) + yy / height * rng.uniform(0.3, 1))[..., None] / 2
    image = start + (end - start) * ramp + rng.normal(0, 12, (height, width, 3))
    side = min(width, height)
    if label == 0:
        for _ in range(rng.integers(2, 5)):
            cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
            r = side * rng.uniform(0.06, 0.12)
            blob = ((yy - cy) / (r * 0.6)) ** 2 + ((xx - cx) / r) ** 2 < 1
            image[blob] = rng.uniform(10, 50, 3)
    else:
        cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
        r = side * rng.uniform(0.2, 0.3)
        body = ((yy - cy) / (r * 0.7)) ** 2 + ((xx - cx) / r) ** 2 < 1
        stripes = np.sin((xx - cx) / r * 9) > 0.3
        image[body] = [235, 190, 30]
        image[body & stripes] = [20, 15, 10]
    return Image.fromarray(image.clip(0, 255).astype(np.uint8))


def write_photo_folder(root: Path, per_class: int, seed: int = 0, ext: str = ".jpg") -> Path:
    """root/<class>/<i>.jpg, each image of its own size (80-200 px a side)."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            width, height = (int(v) for v in rng.integers(80, 200, 2))
            photo_image(label, rng, width, height).save(root / name / f"{i:03d}{ext}")
    return root


def add_messy_files(root: Path, seed: int = 0) -> dict[str, int]:
    """Add what real folders hold to a write_photo_folder folder; returns what should be ignored.

    In the class folders: images in modes L, LA, P, P with transparency, RGBA, CMYK and
    I;16, and a JPEG stored sideways with an EXIF orientation tag. Beside them: .DS_Store,
    a macOS ._ resource file, a hidden folder, notes and an empty class folder.
    """
    rng = np.random.default_rng(seed)
    odd = {"L": "png", "LA": "png", "P": "gif", "RGBA": "png", "CMYK": "jpg"}
    for label, name in enumerate(CLASSES):
        folder = root / name
        for mode, ext in odd.items():
            photo_image(label, rng, 120, 90).convert(mode).save(folder / f"mode_{mode}.{ext}")
        transparent = photo_image(label, rng, 100, 100).convert("P")
        transparent.info["transparency"] = 0
        transparent.save(folder / "mode_P_transparent.png", transparency=0)
        grey = np.asarray(photo_image(label, rng, 90, 110).convert("L"), dtype=np.uint16) * 257
        Image.fromarray(grey).save(folder / "mode_I16.png")          # 16-bit: 0..65535
        write_rotated_jpeg(folder / "exif_rotated.jpg", photo_image(label, rng, 160, 100))
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (folder / "._000.jpg").write_bytes(b"\x00\x05\x16\x07 resource fork")
        (folder / "notes.txt").write_text("taken on holiday")
        (folder / ".ipynb_checkpoints").mkdir(exist_ok=True)
        photo_image(label, rng, 50, 50).save(folder / ".ipynb_checkpoints" / "000-checkpoint.jpg")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "wasps").mkdir(exist_ok=True)                           # an empty class folder
    return {"hidden file": 2 * 3, "non-image file": 2, "empty class folder": 1}


def write_rotated_jpeg(path: Path, upright: Image.Image) -> None:
    """Save upright turned on its side, with the EXIF orientation that turns it back (6: rotate 90 CW)."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif.tobytes())
