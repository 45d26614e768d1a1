"""What POST /predict accepts: the body read within its limits, images from it, decoded within theirs.

Nothing uploaded touches the disk or pickle: a raw body or the parts of a multipart/form-data
body are kept in memory (python-multipart's streaming parser, fed chunk by chunk), and every
limit is checked as soon as it can be, before the bytes past it are read.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from PIL import Image, UnidentifiedImageError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from tudui.data.images import IMAGE_FORMATS, open_image, reduce_while_decoding, to_rgb

RAW_TYPES = ("application/octet-stream",)
MAX_NAME = 255
RETRY_AFTER_S = 1


class Refusal(Exception):
    """A request refused: the HTTP status, the message the client gets as {"detail": ...}, headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


@dataclass(frozen=True)
class Limits:
    max_body: int       # bytes
    max_images: int     # per request
    max_pixels: int     # width x height of one image


@dataclass
class Upload:
    """One image of a request, as sent: its name (the file's, or "image") and its bytes."""
    name: str
    data: bytes | bytearray = field(repr=False)
    part: bool = False      # a part of a multipart body, not the whole body

    @property
    def label(self) -> str:
        """How messages name it."""
        return f"image {self.name!r}" if self.part else "the image"


def multipart_boundary(content_type: str | None) -> bytes | None:
    """None for a body that is one image; the boundary for multipart/form-data; else a 415."""
    kind, options = parse_options_header(content_type or "")
    kind = kind.decode("latin-1")
    if kind.startswith("image/") or kind in RAW_TYPES:
        return None
    if kind == "multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise Refusal(400, "multipart/form-data without a boundary in its Content-Type")
        return boundary
    raise Refusal(415, f"Content-Type {kind or 'missing'!s:.60}: send one image as the body (image/png, "
                       "image/jpeg, ... or application/octet-stream) or images as multipart/form-data")


def busy(why: str) -> Refusal:
    return Refusal(503, f"the server is busy ({why}); try again in a moment",
                   {"Retry-After": str(RETRY_AFTER_S)})


class UploadMemory:
    """The bytes of request bodies held in memory at once, over every request, and their limit.

    --max-connections times --max-body is what uploads could hold without it (2 GiB by default);
    a request whose bytes would pass the limit is a 503 with Retry-After, and what it held is let
    go. Used from the event loop's thread only, as the app's requests are.
    """

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    @contextlib.contextmanager
    def lease(self) -> Iterator[Lease]:
        """What one request takes, given back when it ends however it ends."""
        lease = Lease(self)
        try:
            yield lease
        finally:
            self.held -= lease.taken


class Lease:
    def __init__(self, memory: UploadMemory):
        self.memory, self.taken = memory, 0

    def take(self, size: int) -> None:
        if self.memory.held + size > self.memory.limit:
            raise busy(f"uploads in progress hold {self.memory.held:,} bytes of the {self.memory.limit:,} "
                       f"allowed (--max-upload-memory)")
        self.memory.held += size
        self.taken += size


def too_large(max_body: int) -> Refusal:
    return Refusal(413, f"the request body is larger than the limit of {max_body:,} bytes (--max-body)")


def check_declared_length(content_length: str | None, max_body: int) -> None:
    """A 413 at once when the declared Content-Length is over the limit; nothing of the body is read."""
    if content_length is None:
        return
    if not content_length.strip().isdigit():
        raise Refusal(400, f"Content-Length {content_length!s:.40} is not a number of bytes")
    if int(content_length) > max_body:
        raise too_large(max_body)


async def read_uploads(chunks: AsyncIterator[bytes], boundary: bytes | None, limits: Limits,
                       lease: Lease) -> list[Upload]:
    """The images of a body (one, or the image parts of a multipart body), read while it stays within
    limits: past max_body bytes or max_images images the reading stops with a 413, and when the
    lease cannot take a chunk's bytes, with a 503."""
    parts = None if boundary is None else MultipartImages(boundary, limits.max_images)
    raw = bytearray()
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limits.max_body:
            raise too_large(limits.max_body)
        lease.take(len(chunk))
        if parts is None:
            raw += chunk
        else:
            parts.write(chunk)
    if parts is not None:
        return parts.finish()
    if not raw:
        raise Refusal(400, "the request body is empty: send an image")
    return [Upload("image", bytes(raw))]    # bytes: BytesIO shares them while decoding, where it copies a bytearray


class MultipartImages:
    """python-multipart's MultipartParser with callbacks that keep the image parts in memory.

    A part is an image when it carries a filename or an image (or octet-stream) Content-Type;
    other fields are skipped. The (max_images + 1)-th image stops the parse with a 413, and so
    does a part past max_images + EXTRA_PARTS of any kind (200,000 tiny text fields kept the
    event loop parsing for seconds).
    """

    EXTRA_PARTS = 64

    def __init__(self, boundary: bytes, max_images: int):
        self.max_images = max_images
        self.uploads: list[Upload] = []
        self._headers: dict[str, bytes] = {}
        self._field, self._value = bytearray(), bytearray()
        self._current: Upload | None = None    # None inside a part that is not an image
        self._parts = 0
        try:
            self._parser = MultipartParser(boundary, {
                "on_part_begin": self._part_begin,
                "on_header_field": lambda data, start, end: self._field.extend(data[start:end]),
                "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end})
        except FormParserError as e:
            raise Refusal(400, f"bad multipart boundary: {e}") from None

    def write(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except FormParserError as e:
            raise Refusal(400, f"the multipart body is malformed: {e}") from None

    def finish(self) -> list[Upload]:
        """The images, once the whole body is in: a 400 when it was cut short or held none."""
        if self._parser.state != MultipartState.END:
            raise Refusal(400, "the multipart body ends before its closing boundary")
        if not self.uploads:
            raise Refusal(400, "no image in the multipart body: send files as its parts "
                               "(curl -F file=@dog.png ...)")
        return self.uploads

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > self.max_images + self.EXTRA_PARTS:
            raise Refusal(413, f"more than {self.max_images + self.EXTRA_PARTS} parts in the multipart body "
                               f"(--max-images {self.max_images}, and a few other fields)")
        self._headers.clear()

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, disposition = parse_options_header(self._headers.get("content-disposition", b""))
        kind, _ = parse_options_header(self._headers.get("content-type", b""))
        filename = disposition.get(b"filename")
        kind = kind.decode("latin-1")
        if filename is None and not (kind.startswith("image/") or kind in RAW_TYPES):
            self._current = None    # a text field
            return
        if len(self.uploads) >= self.max_images:
            raise Refusal(413, f"more than {self.max_images} images in one request (--max-images)")
        # Browsers send file names as UTF-8 bytes.
        name = upload_name(filename.decode("utf-8", "replace") if filename else "")
        self._current = Upload(name, bytearray(), part=True)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current.data += data[start:end]

    def _part_end(self) -> None:
        if self._current is not None:
            self._current.data = bytes(self._current.data)     # as read_uploads' raw body
            self.uploads.append(self._current)
            self._current = None


def upload_name(filename: str) -> str:
    """The last part of a sent file name (browsers of old sent whole paths), or "image"."""
    name = PurePosixPath(filename.replace("\\", "/")).name
    return name[:MAX_NAME] or "image"


def decode_image(upload: Upload, max_pixels: int, at_least: int = 0) -> Image.Image:
    """The upload as an RGB image (a large JPEG decoded down to at_least pixels a side, as `tudui
    predict` decodes it); a 400 when it is no image Pillow reads, or when its header says more
    than max_pixels pixels (or past Pillow's own bomb limit) before any pixel is decoded."""
    try:
        with open_image(io.BytesIO(upload.data), IMAGE_FORMATS) as image:
            if image.width * image.height > max_pixels:
                raise Refusal(400, f"{upload.label} has {image.width} x {image.height} pixels, more than the "
                                   f"limit of {max_pixels:,} (--max-pixels)")
            reduce_while_decoding(image, at_least)
            image.load()
            return to_rgb(image)
    except Refusal:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise Refusal(400, f"{upload.label} has more pixels than the limit of {max_pixels:,} (--max-pixels), and "
                           f"than Pillow's own of {Image.MAX_IMAGE_PIXELS:,}") from None
    except UnidentifiedImageError:
        raise Refusal(400, f"{upload.label} is not in a format tudui reads "
                           f"({', '.join(IMAGE_FORMATS)})") from None
    except Exception as e:   # noqa: BLE001 - a broken file may fail in any of Pillow's plugins
        raise Refusal(400, f"cannot read {upload.label}: {e}") from None
