"""WeightsMeta: what travels with a model's weights in tudui's files (the model's name and options,
the class names, the preprocessing, the settings of the run, the training data's fingerprint), and
the schema that checks every field of it when a file is read: metadata is as hostile as the file.
tudui.weights writes and reads the files.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torchvision.transforms import InterpolationMode

from tudui._version import __version__
from tudui.config import HEADS, Config
from tudui.config_files import from_dict, to_dict
from tudui.data.transforms import Preprocess, mirror_suits, tta_note
from tudui.errors import TuduiError
from tudui.settings import shown

FORMAT_VERSION = 1
_REQUIRED = object()


@dataclass(frozen=True, kw_only=True)
class WeightsMeta:
    """What travels with a model's weights: enough to rebuild it, feed it and name its answers."""
    model: str                          # registry name: create_model(model, num_classes, **model_options)
    num_classes: int
    class_names: tuple[str, ...]
    preprocess: Preprocess              # exactly what the test split went through
    model_options: dict = field(default_factory=dict)
    config: Config = field(default_factory=Config)   # every setting of the run that made them
    tudui_version: str = __version__
    start: str = ""                     # where the run's starting weights came from
    pretrained: str | None = None       # torchvision's weights name, when the run started from them
    data: str | None = None             # the data set, a folder as an absolute path
    data_dir: str = ""                  # where cifar10 was, absolute
    epoch: int | None = None            # the epoch these weights are from, and its val numbers
    val_accuracy: float | None = None
    val_loss: float | None = None
    imported: bool = False              # made here from a plain state_dict, not read from a file
    source: str = ""                    # imported: the file
    exported: str = ""                  # read from an exported file: its format (onnx, pt2, torchscript)
    # {split: [images, hash]} of the training data as listed and split (DatasetSpec.fingerprint):
    # eval tells by it whether it has the run's own images, wherever they are now
    listed: dict | None = None

    def tta_mirror(self) -> bool:
        """Whether test-time views may mirror images for these weights (data.transforms.mirror_suits)."""
        return mirror_suits(self.data or self.config.data.dataset, self.config.data.augment)

    def tta_note(self, level: int) -> str:
        """A warning when --tta level leaves the mirror out for these weights, else ""."""
        return tta_note(level, self.tta_mirror(), self.data or self.config.data.dataset)

    def to_json(self) -> str:
        """The header entry (format 1: flat keys, the settings as {section: {name: value}})."""
        pre = self.preprocess
        return json.dumps({
            "format": FORMAT_VERSION, "model": self.model, "num_classes": self.num_classes,
            "class_names": list(self.class_names), "input_size": pre.input_size,
            "resize_size": pre.resize_size, "interpolation": pre.interpolation,
            "model_options": self.model_options,
            "mean": None if pre.mean is None else list(pre.mean),
            "std": None if pre.std is None else list(pre.std),
            "tudui_version": self.tudui_version, "start": self.start, "pretrained": self.pretrained,
            "data": self.data, "data_dir": self.data_dir, "config": to_dict(self.config),
            "epoch": self.epoch, "val_accuracy": self.val_accuracy, "val_loss": self.val_loss,
            "listed": self.listed})

    @classmethod
    def from_json(cls, text: str, source: str) -> WeightsMeta:
        """The metadata in a header entry, every field checked for its type; TuduiError names the
        file and the first field that is wrong."""
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError):   # a JSON error, or an integer past Python's 4,300 digits
            raise TuduiError(f"{source} has damaged tudui metadata") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT_VERSION:
            found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise TuduiError(f"{source} has weights format {shown(found)}; this tudui reads "
                             f"format {FORMAT_VERSION}")
        values = {key: _checked(raw, key, spec, source) for key, spec in SCHEMA.items()}
        if len(values["class_names"]) != values["num_classes"]:
            raise TuduiError(f"{source} has damaged tudui metadata: {values['num_classes']} classes but "
                             f"{len(values['class_names'])} class names")
        try:
            config = Config() if values["config"] is None else from_dict(values["config"])
        except TuduiError as e:
            raise TuduiError(f"{source} has damaged tudui metadata: its settings: {e}") from None
        preprocess = Preprocess(**{key: values.pop(key) for key in PREPROCESS_KEYS})
        return cls(**{**values, "class_names": tuple(values["class_names"]), "preprocess": preprocess,
                      "config": config})


@dataclass(frozen=True)
class _Spec:
    """What one metadata field may hold: its types (those of a list's items), a test and its words."""
    kinds: tuple[type, ...]
    default: Any = _REQUIRED
    items: tuple[type, ...] | None = None
    test: Callable[[Any], bool] = lambda value: True
    says: str = ""


def _checked(raw: dict, key: str, spec: _Spec, source: str) -> Any:
    """raw[key] (or the default when absent), if it has spec's type and passes its test."""
    value = raw.get(key)
    if value is None:
        if spec.default is _REQUIRED:
            raise TuduiError(f"{source} has damaged tudui metadata: no {key}")
        return spec.default
    right_type = isinstance(value, spec.kinds) and not (isinstance(value, bool) and bool not in spec.kinds)
    right_items = right_type and (spec.items is None or all(isinstance(v, spec.items) and not isinstance(v, bool)
                                                            for v in value))
    if not (right_items and spec.test(value)):
        says = f" (it must be {spec.says})" if spec.says else ""
        raise TuduiError(f"{source} has damaged tudui metadata: {key} is {shown(value)}{says}")
    return value


MAX_CLASSES = 100_000
MAX_SIDE = 4096
INTERPOLATIONS = tuple(mode.value for mode in InterpolationMode)
PREPROCESS_KEYS = ("input_size", "resize_size", "interpolation", "mean", "std")
# What the model families take as options (create_model(name, n, **options)), and their bounds.
MODEL_OPTIONS = {"widths": lambda v: isinstance(v, str) and len(v) <= 40,
                 "head": lambda v: v in HEADS,
                 "image_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= MAX_SIDE,
                 "transform_input": lambda v: isinstance(v, bool)}


def _three(test: Callable[[float], bool]) -> Callable[[list], bool]:
    return lambda values: len(values) == 3 and all(math.isfinite(v) and test(v) for v in values)


SCHEMA = {
    "model": _Spec((str,), test=lambda v: 0 < len(v) <= 100, says="a model name"),
    "num_classes": _Spec((int,), test=lambda v: 2 <= v <= MAX_CLASSES, says=f"2 to {MAX_CLASSES:,}"),
    "class_names": _Spec((list,), items=(str,), test=lambda v: all(len(n) <= 1000 for n in v),
                         says="names of up to 1,000 characters"),
    "input_size": _Spec((int,), test=lambda v: 8 <= v <= MAX_SIDE, says=f"8 to {MAX_SIDE} pixels"),
    "resize_size": _Spec((int,), None, test=lambda v: 8 <= v <= 2 * MAX_SIDE, says=f"8 to {2 * MAX_SIDE} pixels"),
    "interpolation": _Spec((str,), "bilinear", test=lambda v: v in INTERPOLATIONS,
                           says="one of " + ", ".join(INTERPOLATIONS)),
    "mean": _Spec((list,), None, items=(int, float), test=_three(lambda v: True), says="three finite numbers"),
    "std": _Spec((list,), None, items=(int, float), test=_three(lambda v: v > 0), says="three positive numbers"),
    "model_options": _Spec((dict,), {}, test=lambda v: all(k in MODEL_OPTIONS and MODEL_OPTIONS[k](o)
                                                          for k, o in v.items()),
                           says="options of the model: " + ", ".join(MODEL_OPTIONS)),
    "config": _Spec((dict,), None),
    "tudui_version": _Spec((str,), ""),
    "start": _Spec((str,), ""),
    "pretrained": _Spec((str,), None),
    "data": _Spec((str,), None),
    "data_dir": _Spec((str,), ""),
    "epoch": _Spec((int,), None, test=lambda v: v >= 0, says="0 or more"),
    "val_accuracy": _Spec((int, float), None, test=lambda v: 0 <= v <= 1, says="between 0 and 1"),
    "val_loss": _Spec((int, float), None),
    "listed": _Spec((dict,), None, test=lambda v: all(
        split in ("train", "val", "test") and isinstance(print_, list) and len(print_) == 2
        and type(print_[0]) is int and 0 <= print_[0] and isinstance(print_[1], str) and len(print_[1]) <= 64
        for split, print_ in v.items()), says="{split: [images, hash]} of train, val and test"),
}
