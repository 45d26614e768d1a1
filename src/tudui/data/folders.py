"""Image folders as data sets: class folders, train/ + val/ or test/, the course's paired
`<class>_image/` + `<class>_label/` layout, and .zip or .tar archives (plain, gz, bz2, xz) of any of them.

Folders as people have them hold hidden files (.DS_Store, ._x.jpg), notes and empty class
folders: those are skipped and counted in `DatasetSpec.ignored`.
"""
from __future__ import annotations

import hashlib
import logging
import lzma
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath

from tudui import caches
from tudui.data.datasets import DatasetSpec, FileImages
from tudui.data.images import IMAGE_EXTENSIONS, is_image_file
from tudui.errors import TuduiError
from tudui.files import human_bytes
from tudui.settings import shown, shown_path

log = logging.getLogger(__name__)


def _image_files(folder: Path, ignored: Counter, recursive: bool = True) -> list[Path]:
    """The image files under folder, sorted; hidden and non-image files are counted in ignored.

    One os.scandir per folder and no call per file: the entries' types come with the listing
    (symlinked files count, symlinked folders are not followed, as os.walk does). A folder that
    cannot be listed raises its OSError (folder() turns it into one line): skipping it would
    train on one class fewer without a word.
    """
    found: list[tuple[tuple[str, ...], str]] = []   # (parts below folder, path) to sort as Paths do

    def scan(directory: str, parts: tuple[str, ...], hidden: bool) -> None:
        with os.scandir(directory) as entries:
            for entry in entries:
                name_hidden = hidden or entry.name.startswith(".")
                if recursive and entry.is_dir(follow_symlinks=False):
                    scan(entry.path, parts + (entry.name,), name_hidden)
                elif not entry.is_file():
                    continue
                elif name_hidden:
                    ignored["hidden file"] += 1
                elif os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                    ignored["non-image file"] += 1
                else:
                    found.append((parts + (entry.name,), entry.path))

    scan(str(folder), (), False)
    found.sort()
    return [Path(path) for _, path in found]


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


# Caps on what an archive may unpack to: a few hundred kilobytes can expand into gigabytes.
MAX_UNPACKED_BYTES = 64 * 1024 ** 3
MAX_UNPACKED_FILES = 5_000_000
DISK_MARGIN = 1024 ** 3          # what unpacking leaves free on the cache's disk


MAX_LABEL_BYTES = 1000   # a label file of the course's paired layout: one class name

# The archives --data unpacks: tarfile reads each compression of tar by itself.
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVES = ".zip or .tar(.gz, .bz2, .xz)"


# The folders this process unpacked (or found unpacked) archives into, and those archives: a
# file's messages name it as the user knows it, "archive: member", not by its place in the cache.
_UNPACKED: dict[Path, Path] = {}


def as_given(path: str | Path) -> str:
    """path as the user knows it: a file unpacked from an archive as "ARCHIVE: member/path"."""
    path = Path(path)
    for folder, archive in _UNPACKED.items():
        if path.is_relative_to(folder):
            inside = path.relative_to(folder).as_posix()
            return str(archive) if inside == "." else f"{archive}: {inside}"
    return str(path)


def extract_archive(archive: Path, cache_dir: Path) -> Path:
    """Unpack a .zip or .tar archive once into cache_dir; later calls reuse it while the file is unchanged.

    It unpacks into a folder of its own and renames that into place, so a crash or a second
    process unpacking the same archive at the same time never leaves or uses half a copy; what
    it unpacks is capped in bytes (and by the disk's free space) and in files.
    """
    stat, source = archive.stat(), archive.resolve()
    key = hashlib.sha256(f"{source}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    target = cache_dir / f"{archive.name.split('.')[0]}-{key[:12]}"
    if target.is_dir():
        caches.note_use(target, source, stamp=stat)
        caches.hold(target)
        if target.is_dir():   # not removed by another process just before the hold
            _UNPACKED[target] = archive
            return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_partials(cache_dir)
        partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=cache_dir))
    except OSError as e:
        raise TuduiError(f"cannot unpack {archive} into {cache_dir}: {e.strerror or e}") from None
    log.info("unpacking %s into the cache (once): %s", archive, target)
    try:
        if archive.name.lower().endswith(".zip"):
            _unzip(archive, partial, _CappedFilter(archive, cache_dir))
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(partial, filter=_CappedFilter(archive, cache_dir))
                _check_ended(tar, archive)
        try:
            os.replace(partial, target)
        except OSError:
            if not target.is_dir():   # not "another process got there first"
                raise
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError,
            zlib.error, lzma.LZMAError) as e:
        # RuntimeError: zipfile's word for an encrypted member; NotImplementedError: a compression it lacks;
        # zlib's and lzma's errors: a damaged compressed member of a zip
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(":")
        raise TuduiError(f"cannot unpack {archive}: {first[:200]}; the file is damaged or not an archive") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)   # gone already when the rename succeeded
    caches.note_use(target, source, stat)
    caches.hold(target)
    caches.prune_once(cache_dir.parent)
    _UNPACKED[target] = archive
    return target


class _CappedFilter:
    """tarfile's "data" filter (no absolute paths, no links out of the folder, no devices), no links
    at all, and a running count of files and bytes that stops the unpacking past the caps.

    An image data set needs no links, and the data filter alone has been got round with them
    (CVE-2025-4517 and others, fixed only in Python 3.10.18, 3.11.13, 3.12.11, 3.13.4): a link
    member, symbolic or hard, is refused before anything of it is written."""

    def __init__(self, archive: Path, cache_dir: Path):
        self.archive, self.files, self.bytes = archive, 0, 0
        self.max_bytes = min(MAX_UNPACKED_BYTES, shutil.disk_usage(cache_dir).free - DISK_MARGIN)

    def __call__(self, member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        if member.issym() or member.islnk():
            raise TuduiError(f"{self.archive} holds a link ({shown_path(member.name)}); an image data set needs "
                             f"none, and tudui unpacks no links: unpack it yourself and pass the folder")
        member = tarfile.data_filter(member, path)
        self.count(member.size)
        return member

    def count(self, size: int) -> None:
        """One more file of size bytes; past a cap, the unpacking stops."""
        self.files += 1
        self.bytes += size
        if self.files > MAX_UNPACKED_FILES:
            raise TuduiError(f"{self.archive} holds more than {MAX_UNPACKED_FILES:,} files; unpack it "
                             f"yourself and pass the folder")
        if self.bytes > self.max_bytes:
            if self.max_bytes < MAX_UNPACKED_BYTES:   # the disk, not the cap
                free = human_bytes(max(self.max_bytes + DISK_MARGIN, 0))
                raise TuduiError(f"{self.archive} does not fit in the cache: its disk has {free} free and tudui "
                                 f"leaves {human_bytes(DISK_MARGIN)} of a disk free; free some space, or point "
                                 f"TUDUI_CACHE at another disk")
            raise TuduiError(f"{self.archive} unpacks to more than {MAX_UNPACKED_BYTES:,} bytes (the cap); "
                             f"unpack it yourself and pass the folder")


MAX_TRAILING = 64 << 20   # bytes after the last tar member (tar pads with at most a record of zeros)


def _check_ended(tar: tarfile.TarFile, archive: Path) -> None:
    """Read what tarfile left after the members it unpacked: only zero blocks may follow. tarfile
    takes a damaged header for the archive's end, and a compressed stream is checked (its CRC)
    only when read to its end. What follows is read up to MAX_TRAILING bytes: zeros compress a
    million-fold (bzip2), and a small archive could keep tudui reading them for hours."""
    read = 0
    while chunk := tar.fileobj.read(1 << 20):
        read += len(chunk)
        if read > MAX_TRAILING:
            raise TuduiError(f"cannot unpack {archive}: more than {MAX_TRAILING >> 20} MiB follow the end of its "
                             f"members; the file is damaged or not an image archive")
        if chunk.strip(b"\0"):
            raise TuduiError(f"cannot unpack {archive}: it is damaged after its first {len(tar.getmembers()):,} "
                             f"members (what follows is not a tar member)")


def _unzip(archive: Path, into: Path, caps: _CappedFilter) -> None:
    """A zip archive's files into the folder into, each counted against the caps first (a member's
    declared size bounds what zipfile writes of it). A name that would land outside the folder
    (absolute, a drive, ..) is refused, as tarfile's data filter refuses it."""
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            parts = PurePosixPath(member.filename.replace("\\", "/")).parts
            if member.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise TuduiError(f"{archive} has a member outside its folder: {shown(member.filename)}")
            caps.count(0 if member.is_dir() else member.file_size)   # folders count against the file cap too
            if not member.is_dir():
                zipped.extract(member, into)


def _remove_abandoned_partials(cache_dir: Path) -> None:
    """Delete half-unpacked folders whose process is gone (a crash or a kill in the middle)."""
    for partial in cache_dir.glob(".*.partial-*"):
        pid = partial.name.rsplit(".partial-", 1)[1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        return True
    return True


def _descend(root: Path) -> Path:
    """Skip wrapper folders: an archive often holds one folder that holds the data."""
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith((".", "_"))]
        if len(entries) == 1 and entries[0].is_dir() and not _has_images(entries[0]) \
                and not any(entries[0].name in names for names in SPLIT_FOLDERS.values()):
            root = entries[0]
        else:
            return root


def _has_images(folder: Path) -> bool:
    return any(is_image_file(p) for p in folder.iterdir() if p.is_file())


def _scan_split(folder: Path, ignored: Counter | None = None) -> list[tuple[Path, str]]:
    """(image path, class name) pairs of one split, in either supported layout; what is
    skipped (hidden files, other files, empty class folders) is counted in ignored."""
    ignored = Counter() if ignored is None else ignored
    subdirs = _visible_dirs(folder)
    names = {d.name for d in subdirs}
    paired = [d for d in subdirs if d.name.endswith("_image") and d.name[:-6] + "_label" in names]
    items: list[tuple[Path, str]] = []
    if paired:
        # The course's layout: ants_image/x.jpg with its label text in ants_label/x.txt.
        for image_dir in paired:
            label_dir = folder / (image_dir.name[:-6] + "_label")
            for path in _image_files(image_dir, ignored, recursive=False):
                label_file = label_dir / (path.stem + ".txt")
                if not label_file.is_file():
                    raise TuduiError(f"image {path} has no label file {label_file}")
                with open(label_file, "rb") as f:   # a label is a line: read no more than a line's worth
                    raw = f.read(MAX_LABEL_BYTES + 1)
                try:
                    label = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise TuduiError(f"label file {label_file} is not UTF-8 text") from None
                if len(raw) > MAX_LABEL_BYTES:
                    raise TuduiError(f"label file {label_file} is over {MAX_LABEL_BYTES:,} bytes; a label is "
                                     f"one line")
                if not label:
                    raise TuduiError(f"label file {label_file} is empty")
                items.append((path, label))
        return items
    for class_dir in subdirs:
        images = _image_files(class_dir, ignored)
        if not images:
            ignored["empty class folder"] += 1
        items += [(p, class_dir.name) for p in images]
    loose = sum(1 for p in folder.iterdir() if p.is_file() and is_image_file(p)) if subdirs else 0
    if loose:   # beside the class folders: no class says what they are
        ignored["loose image"] += loose
    return items


def _index(items: list[tuple[Path, str]], class_names: list[str], split: Path) -> list[tuple[Path, int]]:
    lookup = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({name for _, name in items} - set(lookup))
    if unknown:
        raise TuduiError(f"{split} has classes the training split lacks: {', '.join(unknown)}")
    return [(path, lookup[name]) for path, name in items]


def resolve_folder(path: str | Path, cache_dir: Path) -> Path:
    """The folder that holds the data: path itself, or an archive's unpacked copy, minus wrappers."""
    root = Path(path)
    if not root.exists():
        raise TuduiError(f"data set not found: {path} (expected cifar10, digits, synthetic, "
                         f"a folder, a {ARCHIVES} archive or a .csv list)")
    if root.is_file():
        if not root.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise TuduiError(f"{path} is a file, not a folder, a {ARCHIVES} archive or a .csv list")
        root = extract_archive(root, cache_dir)
    elif not root.is_dir():
        raise TuduiError(f"{path} is neither a folder nor a file (a device or a socket?); pass a folder, "
                         f"a {ARCHIVES} archive or a .csv list")
    return _descend(root)


# Folder names of each split, in the order they are looked for.
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def folder(path: str, cache_dir: Path, min_classes: int = 2) -> DatasetSpec:
    """An image folder (train/ with val/ and/or test/ beside it, or one folder of class folders),
    or an archive of one; val is held out of train later when the data has none (hold_out_val).
    Training needs two classes or more (min_classes); evaluating may take a folder of one."""
    try:
        # An archive is named as the user knows it, not by its copy in the cache.
        archive = path if Path(path).is_file() else None
        return _read_folder(resolve_folder(path, cache_dir), min_classes, archive)
    except OSError as e:   # a folder or file that cannot be listed or read (permissions, a broken disk)
        raise TuduiError(f"cannot read {e.filename or path}: {e.strerror or e}") from None


def _read_folder(root: Path, min_classes: int, archive: str | None = None) -> DatasetSpec:
    """The data set in root; archive: the archive root was unpacked from, which its source names."""
    found = {split: next((root / n for n in names if (root / n).is_dir()), None)
             for split, names in SPLIT_FOLDERS.items()}
    ignored: Counter = Counter()
    if found["train"] is not None and (found["val"] is not None or found["test"] is not None):
        train_items = _scan_split(found["train"], ignored)
        class_names = sorted({name for _, name in train_items})
        splits = {split: _index(_scan_split(folder, ignored) if split != "train" else train_items,
                                class_names, folder)
                  for split, folder in found.items() if folder is not None}
        layout = " and ".join(folder.name + "/" for folder in found.values() if folder is not None)
    else:
        items = _scan_split(root, ignored)
        class_names = sorted({name for _, name in items})
        splits = {"train": _index(items, class_names, root)}
        layout = "one folder of class folders"
    if len(class_names) < min_classes:
        found = f"found one: {shown(class_names[0])}" if class_names else "found none (images directly in it?)"
        least = "two classes" if min_classes > 1 else "one class"
        raise TuduiError(f"{as_given(root)} needs at least {least}, each a folder of its images "
                         f"({as_given(root / 'CLASS' / 'image.jpg')}); {found}")
    source = f"{root} ({layout})" if archive is None else f"{archive} ({layout}, unpacked in the cache)"
    return DatasetSpec(**{split: FileImages(items) for split, items in splits.items()}, class_names=class_names,
                       kind="folder", source=source, in_memory=False, ignored=dict(ignored))
