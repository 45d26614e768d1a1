"""Image folders as data sets: class folders, train/ + val/ or test/, the course's paired
`<class>_image/` + `<class>_label/` layout, and .tar/.tar.gz archives of any of them.

Folders as people have them hold hidden files (.DS_Store, ._x.jpg), notes and empty class
folders: those are skipped and counted in `DatasetSpec.ignored`.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tarfile
from collections import Counter
from pathlib import Path

from tudui.data.datasets import DatasetSpec, FileImages
from tudui.data.images import IMAGE_EXTENSIONS, is_image_file
from tudui.data.splits import split_by_class
from tudui.errors import TuduiError

log = logging.getLogger(__name__)


def _image_files(folder: Path, ignored: Counter, recursive: bool = True) -> list[Path]:
    """The image files under folder, sorted; hidden and non-image files are counted in ignored."""
    found = []
    for path in sorted(folder.rglob("*") if recursive else folder.iterdir()):
        if not path.is_file():
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            ignored["hidden file"] += 1
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            ignored["non-image file"] += 1
        else:
            found.append(path)
    return found


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def extract_archive(archive: Path, cache_dir: Path) -> Path:
    """Unpack a .tar/.tar.gz once into cache_dir; later calls reuse it while the file is unchanged."""
    stat = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    target = cache_dir / f"{archive.name.split('.')[0]}-{key[:12]}"
    if target.is_dir():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".{target.name}.partial-{os.getpid()}"
    log.info("unpacking %s into %s (once)", archive, target)
    try:
        with tarfile.open(archive) as tar:
            # The "data" filter refuses absolute paths, links out of the folder and devices.
            tar.extractall(partial, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise TuduiError(f"cannot unpack {archive}: {e}") from None
    os.replace(partial, target)
    return target


def _descend(root: Path) -> Path:
    """Skip wrapper folders: an archive often holds one folder that holds the data."""
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith((".", "_"))]
        if len(entries) == 1 and entries[0].is_dir() and not _has_images(entries[0]) \
                and entries[0].name not in ("train", "val", "test"):
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
                label = label_file.read_text().strip()
                if not label:
                    raise TuduiError(f"label file {label_file} is empty")
                items.append((path, label))
        return items
    for class_dir in subdirs:
        images = _image_files(class_dir, ignored)
        if not images:
            ignored["empty class folder"] += 1
        items += [(p, class_dir.name) for p in images]
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
                         f"a folder, a .tar/.tar.gz or a .csv list)")
    if root.is_file():
        if not root.name.endswith((".tar", ".tar.gz", ".tgz")):
            raise TuduiError(f"{path} is a file, not a folder or a .tar/.tar.gz archive")
        root = extract_archive(root, cache_dir)
    return _descend(root)


def folder(path: str, val_split: float, seed: int, cache_dir: Path) -> DatasetSpec:
    """An image folder (train/ + val/ or test/, or one folder split by val_split), or an archive of one."""
    root = resolve_folder(path, cache_dir)
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    ignored: Counter = Counter()
    if (root / "train").is_dir() and test_dir is not None:
        train_items = _scan_split(root / "train", ignored)
        class_names = sorted({name for _, name in train_items})
        train = _index(train_items, class_names, root / "train")
        test = _index(_scan_split(test_dir, ignored), class_names, test_dir)
        layout = f"{root} (train/ and {test_dir.name}/)"
    else:
        items = _scan_split(root, ignored)
        class_names = sorted({name for _, name in items})
        train, test = split_by_class(_index(items, class_names, root), val_split, seed)
        layout = f"{root} ({val_split:.0%} held out for testing)"
    if len(class_names) < 2:
        raise TuduiError(f"{root} needs at least two classes (one folder each), found "
                         f"{len(class_names)}: {class_names}")
    if not train or not test:
        raise TuduiError(f"{root} has no images in its {'training' if not train else 'test'} split")
    if ignored:
        log.info("%s: ignored %s", root, dict(ignored))
    return DatasetSpec(train=FileImages(train), test=FileImages(test), class_names=class_names,
                       kind="folder", source=layout, in_memory=False, ignored=dict(ignored))
