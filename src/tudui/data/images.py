"""Reading one image file: any mode and size to RGB, with Pillow's pixel limit as a hard refusal."""
from __future__ import annotations

import contextlib
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tudui.errors import TuduiError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm", ".pbm"}
# The Pillow formats of those files, the only ones tudui decodes, whatever a file's name says:
# Pillow's others are not for image data sets, and one of them (EPS) hands the file to Ghostscript.
IMAGE_FORMATS = ("BMP", "GIF", "JPEG", "PNG", "PPM", "TIFF", "WEBP")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB: EXIF rotation applied, 16-bit scaled, transparency over white."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I"):
        # 16/32-bit greyscale: scale the full range to 0-255 instead of clamping at 255, in place and
        # in whole numbers (float64 copies took 28 bytes a pixel: 3 GB for an image within the limit)
        pixels = np.array(image, dtype=np.uint16 if image.mode.startswith("I;16") else np.int64)
        if image.mode.startswith("I;16"):
            pixels //= 257                                        # 65535 -> 255
        else:
            np.clip(pixels, 0, None, out=pixels)
            top = max(int(pixels.max()), 1) if pixels.size else 1
            pixels *= 255
            pixels //= top
        image = Image.fromarray(pixels.astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


# warnings.catch_warnings swaps a process-wide filter list: two threads inside it at once can leave
# one's filter in place for the other, so the opening (the header read) takes turns; decoding does not.
_OPENING = threading.Lock()


@contextlib.contextmanager
def open_image(source: str | Path | BinaryIO, formats: tuple[str, ...] = IMAGE_FORMATS):
    """Image.open (of a path or a file object, in one of formats) with Pillow's pixel limit as a
    hard refusal (DecompressionBombWarning raised), safe in several threads at once.

    Pillow only warns between its limit and twice it, and raises above; both are refusals
    here, decided from the header (in Image.open) before any pixel is decoded.
    """
    with _OPENING, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(source, formats=formats)
    with image:
        yield image


def reduce_while_decoding(image: Image.Image, at_least: int) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 of its size (the decoder's own scaling, before any pixel
    is decoded) as long as both sides keep at least at_least pixels; nothing for other formats or
    for at_least 0. A resize to at_least or less afterwards gives nearly the same pixels as from the
    whole image (within 1 % of the range, measured on photos) at a third of the time for large
    photos. Pillow's thumbnail() does the same."""
    if at_least > 0 and image.format in ("JPEG", "MPO"):    # MPO: a camera's JPEG with a second image
        image.draft(None, (at_least, at_least))


def load_image(path: str | Path, at_least: int = 0) -> Image.Image:
    """Read an image file as RGB, or raise TuduiError naming the file; at_least: see
    reduce_while_decoding (the side that evaluation resizes to, or 0 for every pixel).

    Images above Pillow's pixel limit (decompression bombs) are refused before decoding.
    """
    try:
        with open_image(path) as image:
            reduce_while_decoding(image, at_least)
            image.load()
            return to_rgb(image)
    except FileNotFoundError:
        raise TuduiError(f"image not found: {path}") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):   # above twice the limit: the error
        raise TuduiError(f"cannot read image {path}: larger than Pillow's limit of "
                         f"{Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except UnidentifiedImageError:   # Pillow's own words name the file a second time
        raise TuduiError(f"cannot read image {path}: not in an image format tudui reads (JPEG, PNG, "
                         f"BMP, GIF, TIFF, WebP, PPM)") from None
    except (OSError, ValueError) as e:
        raise TuduiError(f"cannot read image {path}: {e}") from None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
