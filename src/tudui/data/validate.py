"""Unreadable images in a folder data set: found once, skipped with a warning, counted.

Every file is opened and decoded (JPEGs at an eighth of their size, which still reads all
their data, so truncation shows). Images above Pillow's pixel limit are rejected from the
header alone, before any decoding: the limit guards against decompression bombs and stays
on. The result is cached by the files' paths, sizes and modification times.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from tudui import caches
from tudui.data.cache import files_key
from tudui.data.datasets import DatasetSpec, FileImages
from tudui.data.folders import as_given
from tudui.data.images import open_image
from tudui.errors import TuduiError
from tudui.files import atomic_write, cache_root
from tudui.settings import counted

log = logging.getLogger(__name__)


def check_image(path: Path) -> str | None:
    """Why the image at path cannot be used, or None when it decodes."""
    try:
        with open_image(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return f"larger than Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} pixels (a possible decompression bomb)"
    except Exception as e:  # Pillow raises many types for broken files (OSError, SyntaxError, ...)
        # the message names the file already: not again (and not by its place in the cache)
        text = str(e).replace(f" {str(path)!r}", "").strip()
        return f"{type(e).__name__}: {text}" if text else type(e).__name__
    return None


def find_unreadable(files: FileImages) -> list[tuple[str, str]]:
    """[(path, reason)] for the files that cannot be decoded, each path spelled as in files."""
    return check_files(files)[0]


def check_files(files: FileImages) -> tuple[list[tuple[str, str]], list[str]]:
    """([(path, reason)] for the files that cannot be decoded, each path spelled as in files, and
    a short hash of each file's bytes, in order, "" for those that cannot be decoded); cached per set
    of files (by position in the list: the same files may be spelled otherwise, relative or
    absolute, the next time)."""
    cached = cache_root() / "checked" / f"{files_key(files, 'check-v5')}.json"
    if cached.is_file():
        try:
            saved = json.loads(cached.read_text())
            found = [(files.samples[int(i)][0], str(reason)) for i, reason in saved["bad"]]
            digests = [str(d) for d in saved["digests"]]
            if len(digests) == len(files.samples):
                caches.touch(cached)
                return [(str(path), reason) for path, reason in found], digests
        except (OSError, ValueError, TypeError, IndexError, KeyError):
            pass
    if len(files.samples) >= caches.SAY_FROM_FILES:
        log.info("checking %s images for unreadable files (once)", f"{len(files.samples):,}")
    bad, digests = [], []
    for i, (path, _) in enumerate(files.samples):
        if (reason := check_image(path)) is not None:
            bad.append((i, reason))
        digests.append("" if reason is not None else _digest(path))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cached, lambda tmp: tmp.write_text(json.dumps({"bad": bad, "digests": digests})))
    except (OSError, TuduiError) as e:
        log.warning("could not cache the image check (%s)", e)
    else:
        caches.prune_once()
    return [(str(files.samples[i][0]), reason) for i, reason in bad], digests


def _digest(path: Path) -> str:
    """16 hex digits of the file's bytes (BLAKE2b): equal files, equal digests; "" if unreadable."""
    digest = hashlib.blake2b(digest_size=8)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return ""
    return digest.hexdigest()


def drop_unreadable(spec: DatasetSpec, max_bad_share: float) -> tuple[DatasetSpec, list[tuple[str, str]]]:
    """(spec without its unreadable images, [(path, reason)] skipped); each is warned about.

    More than max_bad_share of the data set (all its splits together) unreadable stops the run
    with the list: that many broken files means a wrong folder or a broken copy, not a few bad
    downloads. One bad file is always skipped, unless max_bad_share is 0.
    """
    checked = {split: check_files(images) for split, images in spec.splits().items()
               if isinstance(images, FileImages)}
    found = {split: bad for split, (bad, _) in checked.items()}
    _warn_of_copies(spec, {split: digests for split, (_, digests) in checked.items()})
    skipped = [item for bad in found.values() for item in bad]
    _check_share(skipped, sum(len(images) for images in spec.splits().values()), "", max_bad_share)
    for split, bad in found.items():
        _check_left(bad, len(getattr(spec, split)), f"{split} split")
    splits = {split: _without(getattr(spec, split), bad) for split, bad in found.items() if bad}
    return (dataclasses.replace(spec, **splits) if splits else spec), skipped


def _warn_of_copies(spec: DatasetSpec, digests: dict[str, list[str]]) -> None:
    """A warning for the val and test images whose bytes a train image has too: measured, they
    are images the model was trained on, and flatter the numbers (unreadable files, skipped, have
    no digest)."""
    in_train = {d: path for d, (path, _) in zip(digests["train"], spec.train.samples) if d} \
        if "train" in digests else {}
    for split in ("val", "test"):
        images = getattr(spec, split)
        if split not in digests or not in_train:
            continue
        copies = [(path, in_train[d]) for d, (path, _) in zip(digests[split], images.samples) if d and d in in_train]
        if copies:
            first, twin = copies[0]
            log.warning("%s of the %s split %s byte for byte the same as train images (first: %s = %s): "
                        "measured, they flatter the %s numbers; remove one file of each pair",
                        counted(len(copies), "image"), split, "is" if len(copies) == 1 else "are",
                        as_given(first), as_given(twin), split)


def readable_images(dataset: Dataset, split: str, max_bad_share: float) -> tuple[Dataset, list[tuple[str, str]]]:
    """(dataset without its unreadable images, [(path, reason)] skipped) for one split, as
    drop_unreadable does for a whole data set (datasets that are not image files pass through)."""
    if not isinstance(dataset, FileImages):
        return dataset, []
    bad = find_unreadable(dataset)
    _check_share(bad, len(dataset), f"{split} ", max_bad_share)
    _check_left(bad, len(dataset), f"{split} split")
    return (_without(dataset, bad) if bad else dataset), bad


def _check_share(bad: list[tuple[str, str]], total: int, which: str, max_bad_share: float) -> None:
    """Stop with the list when more than max_bad_share of total images are unreadable (one alone
    passes unless the limit is 0)."""
    share = len(bad) / max(total, 1)
    if share > max_bad_share and (len(bad) > 1 or max_bad_share == 0):
        enough = math.ceil(share * 1000) / 1000
        raise TuduiError(f"{len(bad)} of {total:,} {which}images are unreadable ({share:.1%}, more than "
                         f"--max-bad-share {max_bad_share:g}; --max-bad-share {enough:g} would skip them): "
                         f"{_listed(bad)}")


def _check_left(bad: list[tuple[str, str]], total: int, which: str) -> None:
    """Stop when skipping bad would leave no image of `which` (a split) to train or measure on."""
    if bad and len(bad) == total:
        raise TuduiError(f"every image of the {which} is unreadable ({_listed(bad)}); it would be left empty")


def _listed(bad: list[tuple[str, str]]) -> str:
    more = f"; and {len(bad) - 10} more" if len(bad) > 10 else ""
    return "; ".join(f"{as_given(path)} ({reason})" for path, reason in bad[:10]) + more


def _without(dataset: FileImages, bad: list[tuple[str, str]]) -> FileImages:
    """dataset less the unreadable files in bad, each warned about."""
    for path, reason in bad:
        log.warning("skipping unreadable image %s: %s", as_given(path), reason)
    paths = {path for path, _ in bad}
    return FileImages([s for s in dataset.samples if str(s[0]) not in paths])
