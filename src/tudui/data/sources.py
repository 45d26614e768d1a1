"""Which reader a --data value names (a built-in set, a CSV list, a folder or archive), and the
val split held out where the data has none."""
from __future__ import annotations

import difflib
import logging
from pathlib import Path

from tudui.config import DataConfig, TrainConfig
from tudui.data.csvlist import csv_dataset
from tudui.data.datasets import DatasetSpec, digits, synthetic
from tudui.data.folders import folder
from tudui.data.splits import hold_out_val
from tudui.data.torchvision_sets import SETS, torchvision_set
from tudui.errors import TuduiError
from tudui.files import cache_root
from tudui.settings import shown_path

log = logging.getLogger(__name__)

DATA, TRAIN = DataConfig(), TrainConfig()   # the defaults of the settings below
# --data values that name a data set rather than a path
BUILTIN_DATASETS = ("digits", "synthetic", *SETS)


def data_reference(name: str) -> str:
    """A --data value as runs record it: a built-in set by name, a folder, archive or list as its
    absolute path (so that eval, --config RUN/config.yaml and --resume find it from anywhere, and
    two spellings of one path compare equal)."""
    return name if name in BUILTIN_DATASETS else str(Path(name).resolve())


def build_dataset(name: str, data_dir: str = DATA.data_dir, val_split: float = DATA.val_split,
                  seed: int = TRAIN.seed, download: bool = DATA.download) -> DatasetSpec:
    """The data set a --data value names (see DataConfig.dataset), with its val split."""
    spec = read_dataset(name, data_dir, seed, download)
    if spec.val is not None and val_split > 0:
        log.warning("--val-split %g is not used: %s has a val split of its own (%s images)", val_split,
                    spec.source, f"{len(spec.val):,}")
    return hold_out_val(spec, val_split, seed)


def read_dataset(name: str, data_dir: str = DATA.data_dir, seed: int = TRAIN.seed,
                 download: bool = DATA.download, min_classes: int = 2) -> DatasetSpec:
    """The data set a --data value names, with only the splits it comes with. A folder or CSV list
    with fewer than min_classes classes is refused (training needs two; evaluating may take one)."""
    if name in SETS:
        return torchvision_set(name, data_dir, download)
    if name == "digits":
        return digits()
    if name == "synthetic":
        return synthetic(seed=seed)
    if name.lower().endswith(".csv"):
        return csv_dataset(name, min_classes)
    if not Path(name).exists():
        close = difflib.get_close_matches(name.lower(), BUILTIN_DATASETS, n=1)
        meant = f"; did you mean {close[0]}?" if close else ""
        raise TuduiError(f"data set not found: {shown_path(name)}{meant} (expected a built-in one: "
                         f"{', '.join(BUILTIN_DATASETS)}; or a folder, a .zip or .tar archive, or a .csv list)")
    try:
        return folder(name, cache_root() / "extracted", min_classes)
    except TuduiError as e:
        # the course's `root="./dataset"`: torchvision's own files of a set, not class folders
        held = [key for key, info in SETS.items() if info.folder != "." and (Path(name) / info.folder).is_dir()]
        if held:
            raise TuduiError(f"{e}; it holds torchvision's {SETS[held[0]].title} ({SETS[held[0]].folder}/): train on "
                             f"that with --data {held[0]} --data-dir {name}") from None
        raise
