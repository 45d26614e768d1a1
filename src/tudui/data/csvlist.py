"""A CSV list of images as a data set: one `path,label` row per image.

Paths are relative to the CSV file's folder (or absolute). A header row naming the
columns is optional (`path,label`, in any order, plus an optional `split` column with
train, val (valid, validation) or test); without one the first two columns are path and
label. Without a split column every row is train, and --val-split holds out the val split.
A column of only train/val/test values under another name (or none) is refused rather than
ignored: its test rows would otherwise be trained on.
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from tudui.data.datasets import DatasetSpec, FileImages
from tudui.data.images import IMAGE_EXTENSIONS
from tudui.errors import TuduiError
from tudui.settings import counted, shown, shown_path

MAX_ROWS = 20_000_000   # ImageNet-21k has 14 million images; more is not a list a person made
MAX_CELLS = 64          # in one row: path, label, split and what a spreadsheet keeps beside them
SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _read_rows(path: Path) -> tuple[list[list[str]], dict[str, int]]:
    """The data rows (with their line numbers first) and the column of each field."""
    rows = []
    try:
        # utf-8-sig: spreadsheets often start the file with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader, first_line = csv.reader(f), 1
            for row in reader:   # a quoted cell may span lines: a row starts after the last one ended
                if len(rows) > MAX_ROWS:
                    raise TuduiError(f"the CSV list {path} has more than {MAX_ROWS:,} rows; split the data set")
                if len(row) > MAX_CELLS:   # every cell is kept until the columns are known
                    raise TuduiError(f"the CSV list {path} has more than {MAX_CELLS} cells in line "
                                     f"{first_line}; it needs path,label (and split) columns")
                if any(cell.strip() for cell in row):
                    rows.append((first_line, [cell.strip() for cell in row]))
                first_line = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TuduiError(f"cannot read the CSV list {path}: {shown(str(e))}") from None
    if not rows:
        raise TuduiError(f"the CSV list {path} is empty; it needs path,label rows")
    header = [cell.lower() for cell in rows[0][1]]
    if "path" in header and "label" in header:
        columns = {name: header.index(name) for name in ("path", "label", "split") if name in header}
        rows = rows[1:]
    else:
        if len(rows) > 1 and not any(_is_image_name(cell) for cell in rows[0][1]) and _is_image_name(rows[1][1][0]):
            raise TuduiError(f"the first row of the CSV list {path} looks like a header "
                             f"({shown(','.join(rows[0][1]))}) but names no path and label columns: name them "
                             f"path,label (and split, for a column of train, val or test)")
        header, columns = [], {"path": 0, "label": 1}
    _check_no_unread_split(path, rows, columns, header)
    return [[str(i), *row] for i, row in rows], columns


def _is_image_name(cell: str) -> bool:
    return Path(cell).suffix.lower() in IMAGE_EXTENSIONS


def _check_no_unread_split(path: Path, rows: list, columns: dict[str, int], header: list[str]) -> None:
    """A column that tudui would not read but that holds only train/val/test values is meant as the
    split (when no column is named split): refused, so that its test rows are not trained on
    without a word."""
    if "split" in columns:
        return
    width = max(len(cells) for _, cells in rows) if rows else 0
    for index in set(range(width)) - set(columns.values()):
        cells = [cells[index].lower() for _, cells in rows if index < len(cells)]
        if len(cells) == len(rows) and all(cell in SPLITS for cell in cells):
            name = f"column {shown(header[index])}" if index < len(header) else f"column {index + 1}"
            fix = "name it split" if header else "add a header row path,label,split (in the order of the columns)"
            raise TuduiError(f"{name} of the CSV list {path} holds only train, val and test, but tudui reads the split "
                             f"from a column named split: {fix} to split the images by it, or remove the column")


def _entries(path: Path, rows: list[list[str]], columns: dict[str, int]) -> tuple[list, Counter]:
    """[(image file, label, split or None, line)] of the rows, and what was ignored; a malformed row, a
    missing file or a file listed twice is a TuduiError naming its line."""
    base = path.resolve().parent
    ignored: Counter = Counter()
    entries: list[tuple[Path, str, str | None, str]] = []
    missing: list[str] = []
    seen: dict[Path, str] = {}
    for line, *cells in rows:
        if len(cells) <= max(columns.values()) or not cells[columns["path"]] or not cells[columns["label"]]:
            raise TuduiError(f"{path} line {line}: expected path,label{',split' if 'split' in columns else ''}, "
                             f"got {shown(','.join(cells))}")
        try:
            file = Path(cells[columns["path"]]).expanduser()
        except RuntimeError:   # ~someone who has no home here
            raise TuduiError(f"{path} line {line}: {shown(cells[columns['path']])} names a home folder that "
                             f"is not here") from None
        file = file if file.is_absolute() else base / file
        split = cells[columns["split"]].lower() if "split" in columns else None
        if split is not None and split not in SPLITS:
            raise TuduiError(f"{path} line {line}: split must be train, val or test, got {shown(split)}")
        if file.suffix.lower() not in IMAGE_EXTENSIONS:
            ignored["non-image file"] += 1
        elif not file.is_file():
            missing.append(f"{shown_path(file)} (line {line})")
        elif (key := file.resolve()) in seen:
            # Twice in the list could put one image in both splits, or under two labels.
            raise TuduiError(f"{path} lists {shown_path(file)} twice (lines {seen[key]} and {line}); each image "
                             f"belongs in one row")
        else:
            seen[key] = line
            entries.append((file, cells[columns["label"]], split, line))
    if missing:
        raise TuduiError(f"{path} lists {counted(len(missing), 'file')} that {'does' if len(missing) == 1 else 'do'} "
                         f"not exist, first {missing[0]}; "
                         f"paths are relative to the CSV file's folder")
    return entries, ignored


def _check_trained_labels(path: Path, entries: list) -> None:
    """A label with no train row would be a class the model never sees (often a typo, say 'bleu'
    for 'blue'): refused with its first line, as a folder's test class without a train folder is."""
    trained = {label for _, label, split, _ in entries if SPLITS[split] == "train"}
    first: dict[str, tuple[str, str]] = {}
    for _, label, split, line in entries:
        if label not in trained:
            first.setdefault(label, (line, SPLITS[split]))
    if first:
        named = ", ".join(f"{shown(label)} (line {line}, {split})" for label, (line, split) in list(first.items())[:5])
        raise TuduiError(f"{path} has labels that no train row has: {named}; the model could never predict "
                         f"them: give each some train rows, or correct the label")


def csv_dataset(csv_path: str | Path, min_classes: int = 2) -> DatasetSpec:
    """The images a CSV list names, in the splits its split column gives (or all in train); with
    fewer than min_classes labels an error (training needs two, evaluating one)."""
    path = Path(csv_path)
    if not path.is_file():
        raise TuduiError(f"data set not found: {csv_path}")
    rows, columns = _read_rows(path)
    entries, ignored = _entries(path, rows, columns)
    class_names = sorted({label for _, label, _, _ in entries})
    if len(class_names) < min_classes:
        least = "two labels" if min_classes > 1 else "one label"
        raise TuduiError(f"{path} needs at least {least}, found {len(class_names)}: {shown(class_names)}")
    lookup = {name: i for i, name in enumerate(class_names)}
    if "split" in columns:
        splits = {name: [(f, lookup[label]) for f, label, split, _ in entries if SPLITS[split] == name]
                  for name in ("train", "val", "test")}
        layout = f"{path} (its split column)"
        if not splits["train"]:
            raise TuduiError(f"{path} has no images in its train split")
        if min_classes > 1:   # training; eval measures whatever classes its rows name
            _check_trained_labels(path, entries)
    else:
        splits = {"train": [(f, lookup[label]) for f, label, _, _ in entries]}
        layout = f"{path} (no split column)"
    return DatasetSpec(**{name: FileImages(items) for name, items in splits.items() if items},
                       class_names=class_names, kind="folder", source=layout, in_memory=False,
                       ignored=dict(ignored))
