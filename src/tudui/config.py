"""Settings as frozen dataclasses: defaults, YAML files, command-line overrides, checks.

Precedence is dataclass default < YAML file < command-line flag. Every field carries
its help text and its flag, so the CLI is generated from this file and nothing is
typed twice.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from tudui.errors import TuduiError

AUGMENTS = ("auto", "none", "flip", "crop", "crop-flip", "alt-flip", "crop-alt-flip",
            "resized-crop", "resized-crop-flip")
LOADERS = ("auto", "tensor", "dataloader")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
OPTIMIZERS = ("sgd", "adamw", "muon")
SCHEDULES = ("constant", "cosine", "linear")
DEVICES = ("auto", "cpu", "cuda", "mps")
HEADS = ("replace", "append")


def _opt(help: str, flag: str | None = None, **kwargs: Any) -> Any:
    """A dataclass field carrying its help text and (optionally) its flag name."""
    default = kwargs.pop("default")
    return field(default=default, metadata={"help": help, "flag": flag}, **kwargs)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise TuduiError(message)


@dataclass(frozen=True)
class DataConfig:
    name: str = _opt("data set: cifar10, digits, synthetic, a folder, a .tar/.tar.gz of one, or a "
                     ".csv list of path,label rows", flag="--data", default="cifar10")
    data_dir: str = _opt("where cifar10 is stored or downloaded", default="./data")
    val_split: float = _opt("share of a single-folder data set held out for testing", default=0.2)
    batch_size: int = _opt("images per training step", default=64)
    workers: int = _opt("DataLoader worker processes (-1: pick for the data set)", default=-1)
    normalize: bool = _opt("normalise images by the training set's channel mean and std",
                           default=True)
    augment: str = _opt("training augmentation: " + ", ".join(AUGMENTS)
                        + " (auto: none for digits and synthetic; for photos crop-flip up to 64 px, "
                        "resized-crop-flip above)", default="auto")
    download: bool = _opt("download cifar10 when it is missing", default=True)
    translate: int = _opt("pixels of random translation in the crop presets (-1: an eighth of the side)",
                          default=-1)
    max_bad_share: float = _opt("largest share of unreadable images in a folder that is skipped with "
                                "a warning; more stops the run", default=0.01)
    loader: str = _opt("tensor: decode once, keep on the device, augment in batches; dataloader: "
                       "PIL + worker processes; auto: tensor for images up to 64 px", default="auto")

    def __post_init__(self) -> None:
        _check(bool(self.name), "--data must not be empty")
        _check(0.0 < self.val_split < 1.0, f"--val-split must be between 0 and 1, got {self.val_split}")
        _check(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        _check(self.workers >= -1, f"--workers must be -1 or more, got {self.workers}")
        _check(self.augment in AUGMENTS,
               f"--augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}")
        _check(self.loader in LOADERS, f"--loader must be one of {', '.join(LOADERS)}, got {self.loader!r}")
        _check(self.translate >= -1, f"--translate must be -1 or more, got {self.translate}")
        _check(0 <= self.max_bad_share <= 1, f"--max-bad-share must be in [0, 1], got {self.max_bad_share}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = _opt("model name (see `tudui models`)", flag="--model", default="tudui")
    widths: str = _opt("fastnet's three block widths, e.g. 64,256,256 (empty: the model's own)",
                       default="")
    input_size: int = _opt("input side in pixels (0: the model's own: 32 for tudui's nets, the "
                           "weights' crop size for torchvision's, e.g. 224)", default=0)
    head: str = _opt("torchvision models' new classifier: replace (the last Linear gets one output per "
                     "class) or append (a Linear added after it, as the course's add_module)",
                     default="replace")
    pretrained: bool = _opt("start a torchvision model from its ImageNet weights (torch hub cache, "
                            "downloaded when missing)", default=False)
    weights_file: str = _opt("a local copy of torchvision's pretrained weights file (implies --pretrained)",
                             default="")
    weights: str = _opt("start from these weights: a state_dict file (torch.save(model.state_dict(), "
                        "'x.pth')), tudui weights or a run directory", default="")
    trust_pickle: bool = _opt("let --weights load a whole pickled model (torch.save(model, ...)); "
                              "unpickling runs code from the file, so only for files you made",
                              default=False)

    def __post_init__(self) -> None:
        _check(self.head in HEADS, f"--head must be one of {', '.join(HEADS)}, got {self.head!r}")
        _check(self.input_size == 0 or self.input_size >= 8,
               f"--input-size must be 0 (the model's own) or at least 8, got {self.input_size}")
        _check(not (self.weights and (self.pretrained or self.weights_file)),
               "--weights and --pretrained/--weights-file both set the starting weights; pick one")


@dataclass(frozen=True)
class OptimConfig:
    name: str = _opt("optimizer: sgd, adamw, or muon (Muon for convolution filters, SGD with the "
                     "settings below for the rest)", flag="--optimizer", default="sgd")
    lr: float = _opt("peak learning rate (default: 0.01 for sgd, 0.001 for adamw)", default=0.0)
    momentum: float = _opt("SGD momentum", default=0.9)
    nesterov: bool = _opt("use Nesterov momentum with SGD", default=False)
    weight_decay: float = _opt("weight decay", default=5e-4)
    schedule: str = _opt("learning-rate schedule: " + ", ".join(SCHEDULES), default="cosine")
    warmup_epochs: float = _opt("epochs of linear learning-rate warm-up", default=0.0)
    label_smoothing: float = _opt("label smoothing of the cross-entropy loss", default=0.0)
    final_lr: float = _opt("learning rate at the end of a cosine/linear schedule, as a share of the peak",
                           default=0.0)
    bias_lr_scale: float = _opt("learning-rate multiple for BatchNorm biases (their weight decay is "
                                "divided by it, so its pull stays the same)", default=1.0)
    backbone_lr_scale: float = _opt("learning-rate multiple for the backbone once --freeze-epochs are "
                                    "over (the head keeps the full rate)", default=0.1)
    loss_sum: bool = _opt("sum the loss over the batch instead of averaging it", default=False)
    muon_lr: float = _opt("with --optimizer muon: the filters' learning rate (a step's size relative "
                          "to the filters' norm)", default=0.24)
    muon_momentum: float = _opt("with --optimizer muon: the filters' momentum", default=0.6)

    def __post_init__(self) -> None:
        _check(self.name in OPTIMIZERS,
               f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        _check(self.schedule in SCHEDULES,
               f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        _check(self.lr >= 0, f"--lr must be positive, got {self.lr}")
        if self.lr == 0:  # 0 means "the optimizer's usual value"; resolved here so it is recorded
            object.__setattr__(self, "lr", 1e-3 if self.name == "adamw" else 0.01)
        _check(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        _check(self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}")
        _check(self.warmup_epochs >= 0, f"--warmup-epochs must be 0 or more, got {self.warmup_epochs}")
        _check(0 <= self.label_smoothing < 1,
               f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        _check(0 <= self.final_lr <= 1, f"--final-lr must be in [0, 1], got {self.final_lr}")
        _check(self.muon_lr > 0, f"--muon-lr must be positive, got {self.muon_lr}")
        _check(0 <= self.muon_momentum < 1, f"--muon-momentum must be in [0, 1), got {self.muon_momentum}")
        _check(self.bias_lr_scale > 0, f"--bias-lr-scale must be positive, got {self.bias_lr_scale}")
        _check(self.backbone_lr_scale > 0,
               f"--backbone-lr-scale must be positive, got {self.backbone_lr_scale}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _opt("passes over the training set", default=10)
    seed: int = _opt("random seed (weights, shuffling, augmentation, splits)", default=0)
    device: str = _opt("auto, cpu, cuda or mps (auto: cuda, then mps, then cpu)", default="auto")
    project: str = _opt("folder that holds the run directories", default="runs")
    name: str = _opt("run directory name (default: exp, exp2, ...)", default="")
    log_every: int = _opt("log the training loss to TensorBoard every N steps", default=20)
    eval_every: int = _opt("evaluate on the test split every N epochs (0: only after the last)",
                           default=1)
    precision: str = _opt("fp32, bf16 or fp16 autocast (auto: bf16 where the device has it, else fp32)",
                          default="fp32")
    channels_last: bool = _opt("channels-last memory layout (faster convolutions on most hardware)",
                               default=False)
    compile: bool = _opt("torch.compile the model (slow first steps, faster after)", default=False)
    tta: int = _opt("test-time augmentation: 0 none, 1 mirror, 2 mirror + 1-px shifts", default=0)
    lookahead: bool = _opt("lookahead weight averaging, applied at the end", default=False)
    time_budget: float = _opt("seconds of training to fit the schedule into (0: run --epochs)",
                              default=0.0)
    whiten_bias_epochs: int = _opt("fastnet: epochs in which its whitening stem's bias learns, then it "
                                   "is frozen (-1: all)", default=-1)
    report: bool = _opt("at the end, write report.html, metrics.json, pictures of the confusion "
                        "matrix, mistakes and curves, and TensorBoard figures into the run directory",
                        default=True)
    freeze_backbone: bool = _opt("train only the classifier head; every other layer keeps its weights",
                                 default=False)
    freeze_epochs: int = _opt("fine-tune: train only the head for the first N epochs, then every layer "
                              "(the backbone at --backbone-lr-scale times the rate)", default=0)

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        _check(self.device in DEVICES,
               f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        _check(self.log_every >= 1, f"--log-every must be at least 1, got {self.log_every}")
        _check(self.eval_every >= 0, f"--eval-every must be 0 or more, got {self.eval_every}")
        _check(self.precision in PRECISIONS,
               f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _check(self.tta in (0, 1, 2), f"--tta must be 0, 1 or 2, got {self.tta}")
        _check(self.time_budget >= 0, f"--time-budget must be 0 or more, got {self.time_budget}")
        _check(self.whiten_bias_epochs >= -1,
               f"--whiten-bias-epochs must be -1 or more, got {self.whiten_bias_epochs}")
        _check(0 <= self.freeze_epochs < self.epochs,
               f"--freeze-epochs must be 0 or more and below --epochs ({self.epochs}), got {self.freeze_epochs}")
        _check(not (self.freeze_backbone and self.freeze_epochs),
               "--freeze-backbone freezes the whole run and --freeze-epochs only its start; pick one")
        _check("/" not in self.name and "\\" not in self.name,
               f"--name is a directory name, not a path: {self.name!r} (use --project for the parent)")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig,
                             "optim": OptimConfig, "train": TrainConfig}


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def iter_options():
    """Yield (section, field) for every setting, in the order the help shows them."""
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            yield section, f


def to_dict(config: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(config)


def from_dict(values: dict[str, Any]) -> Config:
    """Build a Config from nested {section: {field: value}} over the defaults; unknown keys are errors."""
    if not isinstance(values, dict):
        raise TuduiError("a config file must be a mapping of sections (data, model, optim, train)")
    unknown = set(values) - set(SECTIONS)
    if unknown:
        raise TuduiError(f"unknown config section(s) {sorted(unknown)}; "
                         f"the sections are {', '.join(SECTIONS)}")
    sections = {}
    for section, cls in SECTIONS.items():
        current: dict[str, Any] = {}
        given = values.get(section) or {}
        if not isinstance(given, dict):
            raise TuduiError(f"config section {section!r} must be a mapping, got {given!r}")
        known = {f.name: f for f in fields(cls)}
        for key, value in given.items():
            if key not in known:
                raise TuduiError(f"unknown setting {section}.{key}; "
                                 f"{section} has {', '.join(known)}")
            current[key] = _coerce(value, known[key], f"{section}.{key}")
        sections[section] = cls(**current)
    return Config(**sections)


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    kind = type(f.default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise TuduiError(f"{where} must be true or false, got {value!r}")
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise TuduiError(f"{where} must be a {kind.__name__}, got {value!r}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TuduiError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise TuduiError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    return values or {}


def dump_yaml(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def option_key(f: dataclasses.Field) -> str:
    """The keyword a setting has in Python calls: its flag without dashes (--batch-size: batch_size)."""
    return flag_name(f)[2:].replace("-", "_")


def make_config(config_file: str | Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the YAML file, then overrides named like the flags (lr=0.1, data="digits")."""
    values = load_yaml(config_file) if config_file else {}
    if not isinstance(values, dict):
        raise TuduiError(f"config file {config_file} must be a mapping of sections "
                         f"({', '.join(SECTIONS)})")
    nested = {s: dict(v) if isinstance(v, dict) else v for s, v in values.items()}
    where = {option_key(f): (section, f.name) for section, f in iter_options()}
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in where:
            raise TuduiError(f"unknown setting {key!r}; the settings are {', '.join(sorted(where))}")
        section, name = where[key]
        nested.setdefault(section, {})[name] = value
    return from_dict(nested)
