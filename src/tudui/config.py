"""Settings of every command as frozen dataclasses: defaults, checks, YAML files and overrides.

Each field carries its help text, its flag (when the flag is not `--field-name`) and the rule
its value must follow, so the command line is generated from this file and every default and
check is written once. Training's precedence is dataclass default < YAML file < flag; `eval`
and `predict` take what they are not given from the settings recorded with the weights.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from tudui.errors import TuduiError
from tudui.files import atomic_write

AUGMENTS = ("auto", "none", "flip", "crop", "crop-flip", "alt-flip", "crop-alt-flip",
            "resized-crop", "resized-crop-flip")
LOADERS = ("auto", "tensor", "dataloader")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
OPTIMIZERS = ("sgd", "adamw", "muon")
SCHEDULES = ("constant", "cosine", "linear")
DEVICES = ("auto", "cpu", "cuda", "mps")
HEADS = ("replace", "append")
TTA_LEVELS = (0, 1, 2)
MAX_FILE_BYTES = 1 << 20     # a settings file is a few hundred bytes; refuse what cannot be one
SHOWN_CHARS = 60             # how much of a bad value an error message quotes


@dataclass(frozen=True)
class Rule:
    """What a setting's value must be: a test, and the words for it in the error message."""
    test: Callable[[Any], bool]
    says: str


def one_of(*options: Any) -> Rule:
    return Rule(lambda v: v in options, "one of " + ", ".join(str(o) for o in options))


def within(low: float, high: float, *, high_included: bool = False) -> Rule:
    return Rule(lambda v: low <= v <= high and (high_included or v < high),
                f"in [{low}, {high}{']' if high_included else ')'}")


def up_to(low: float, high: float) -> Rule:
    return Rule(lambda v: low <= v <= high, f"between {low} and {high}")


def shown_path(path: Any) -> str:
    """A path for a message: as it is when short, else its last SHOWN_CHARS characters (the file's
    name matters more than the folders above it); control characters escaped."""
    text = repr(str(path))[1:-1]
    return text if len(text) <= SHOWN_CHARS else "..." + text[-SHOWN_CHARS:]


def shown(value: Any) -> str:
    """repr(value), cut to SHOWN_CHARS: an error message never quotes a whole hostile value."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + f"... ({len(text):,} characters)"


RATE_SCALE = Rule(lambda v: 0 < v <= 1e4, "positive and at most 10000")
SHARE = Rule(lambda v: 0 < v < 1, "between 0 and 1")


def _opt(help: str, *, flag: str | None = None, rule: Rule | None = None, kind: type | None = None,
         cli: dict | None = None, **kwargs: Any) -> Any:
    """A dataclass field with its help text, flag (default: --field-name), rule, value type (needed
    when the default is None) and extra argparse keywords (cli)."""
    return field(metadata={"help": help, "flag": flag, "rule": rule, "kind": kind, "cli": cli or {}}, **kwargs)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise TuduiError(message)


class Settings:
    """Checks every field against its rule after construction (None means "not given": skipped)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, os.PathLike) and value_type(f) is str:  # Path objects from Python
                object.__setattr__(self, f.name, value := os.fspath(value))
            if isinstance(value, float) and not math.isfinite(value):
                raise TuduiError(f"{flag_name(f)} must be a finite number, got {value}")
            rule = f.metadata.get("rule")
            if rule is not None and value is not None and not rule.test(value):
                raise TuduiError(f"{flag_name(f)} must be {rule.says}, got {shown(value)}")


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def option_key(f: dataclasses.Field) -> str:
    """The keyword a setting has in Python calls: its flag without dashes (--batch-size: batch_size)."""
    return flag_name(f)[2:].replace("-", "_")


def value_type(f: dataclasses.Field) -> type:
    """The type of a setting's values: given in its metadata, else its default's."""
    return f.metadata.get("kind") or type(f.default)


# ---------------------------------------------------------------- training

@dataclass(frozen=True, kw_only=True)
class DataConfig(Settings):
    dataset: str = _opt("data set: cifar10, digits, synthetic, a folder, a .tar/.tar.gz of one, or a "
                        ".csv list of path,label rows", flag="--data",
                        rule=Rule(bool, "a data set name or path, not empty"), default="cifar10")
    data_dir: str = _opt("where cifar10 is stored or downloaded", default="./data")
    val_split: float = _opt("share of a single-folder data set held out for testing", rule=SHARE,
                            default=0.2)
    batch_size: int = _opt("images per batch", rule=up_to(1, 1 << 16), default=64)
    workers: int = _opt("DataLoader worker processes (-1: pick for the data set)", rule=up_to(-1, 256),
                        default=-1)
    normalize: bool = _opt("normalise images by the training set's channel mean and std",
                           default=True)
    augment: str = _opt("training augmentation: " + ", ".join(AUGMENTS)
                        + " (auto: none for digits and synthetic; for photos crop-flip up to 64 px, "
                        "resized-crop-flip above)", rule=one_of(*AUGMENTS), default="auto")
    download: bool = _opt("download cifar10 when it is missing", default=True)
    translate: int = _opt("pixels of random translation in the crop presets (-1: an eighth of the side)",
                          rule=up_to(-1, 1024), default=-1)
    max_bad_share: float = _opt("largest share of unreadable images in a folder that is skipped with "
                                "a warning; more stops the run", rule=within(0, 1, high_included=True),
                                default=0.01)
    loader: str = _opt("tensor: decode once, keep on the device, augment in batches; dataloader: "
                       "PIL + worker processes; auto: tensor for images up to 64 px",
                       rule=one_of(*LOADERS), default="auto")


@dataclass(frozen=True, kw_only=True)
class ModelConfig(Settings):
    arch: str = _opt("model name (see `tudui models`)", flag="--model", default="tudui")
    widths: str = _opt("fastnet's three block widths, e.g. 64,256,256 (empty: the model's own)",
                       default="")
    input_size: int = _opt("input side in pixels (0: the model's own: 32 for tudui's nets, the "
                           "weights' crop size for torchvision's, e.g. 224)",
                           rule=Rule(lambda v: v == 0 or 8 <= v <= 4096, "0 (the model's own) or 8 to 4096"),
                           default=0)
    head: str = _opt("torchvision models' new classifier: replace (the last Linear gets one output per "
                     "class) or append (a Linear added after it, as the course's add_module)",
                     rule=one_of(*HEADS), default="replace")
    pretrained: bool = _opt("start a torchvision model from its ImageNet weights (torch hub cache, "
                            "downloaded when missing)", default=False)
    weights_file: str = _opt("a local copy of torchvision's pretrained weights file (implies --pretrained)",
                             default="")
    weights: str = _opt("start from these weights: a state_dict file (torch.save(model.state_dict(), "
                        "'x.pth')), tudui weights or a run directory", default="")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(not (self.weights and (self.pretrained or self.weights_file)),
               "--weights and --pretrained/--weights-file both set the starting weights; pick one")


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Settings):
    optimizer: str = _opt("optimizer: sgd, adamw, or muon (Muon for convolution filters, SGD with the "
                          "settings below for the rest)", flag="--optimizer", rule=one_of(*OPTIMIZERS),
                          default="sgd")
    lr: float = _opt("peak learning rate (default: 0.01 for sgd, 0.001 for adamw)",
                     rule=Rule(lambda v: 0 <= v <= 1000, "positive and at most 1000"), default=0.0)
    momentum: float = _opt("SGD momentum", rule=within(0, 1), default=0.9)
    nesterov: bool = _opt("use Nesterov momentum with SGD", default=False)
    weight_decay: float = _opt("weight decay", rule=up_to(0, 1e4), default=5e-4)
    schedule: str = _opt("learning-rate schedule: " + ", ".join(SCHEDULES), rule=one_of(*SCHEDULES),
                         default="cosine")
    warmup_epochs: float = _opt("epochs of linear learning-rate warm-up", rule=up_to(0, 1e6), default=0.0)
    label_smoothing: float = _opt("label smoothing of the cross-entropy loss", rule=within(0, 1),
                                  default=0.0)
    final_lr: float = _opt("learning rate at the end of a cosine/linear schedule, as a share of the peak",
                           rule=within(0, 1, high_included=True), default=0.0)
    bias_lr_scale: float = _opt("learning-rate multiple for BatchNorm biases (their weight decay is "
                                "divided by it, so its pull stays the same)", rule=RATE_SCALE, default=1.0)
    backbone_lr_scale: float = _opt("learning-rate multiple for the backbone once --freeze-epochs are "
                                    "over (the head keeps the full rate)", rule=RATE_SCALE, default=0.1)
    loss_sum: bool = _opt("sum the loss over the batch instead of averaging it", default=False)
    muon_lr: float = _opt("with --optimizer muon: the filters' learning rate (a step's size relative "
                          "to the filters' norm)", rule=Rule(lambda v: 0 < v <= 1000, "positive and at most 1000"),
                          default=0.24)
    muon_momentum: float = _opt("with --optimizer muon: the filters' momentum", rule=within(0, 1),
                                default=0.6)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lr == 0:  # 0 means "the optimizer's usual value"; resolved here so it is recorded
            object.__setattr__(self, "lr", 1e-3 if self.optimizer == "adamw" else 0.01)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Settings):
    epochs: int = _opt("passes over the training set", rule=up_to(1, 1_000_000), default=10)
    seed: int = _opt("random seed (weights, shuffling, augmentation, splits)", rule=up_to(0, 2**32 - 1),
                     default=0)
    device: str = _opt("auto, cpu, cuda or mps (auto: cuda, then mps, then cpu)", rule=one_of(*DEVICES),
                       default="auto")
    project: str = _opt("folder that holds the run directories", default="runs")
    run_name: str = _opt("run directory name (default: exp, exp2, ...)", flag="--name",
                         rule=Rule(lambda v: "/" not in v and "\\" not in v,
                                   "a directory name, not a path (use --project for the parent)"),
                         default="")
    log_every: int = _opt("log the training loss to TensorBoard every N steps", rule=up_to(1, 1 << 30),
                          default=20)
    eval_every: int = _opt("evaluate on the test split every N epochs (0: only after the last)",
                           rule=up_to(0, 1_000_000), default=1)
    precision: str = _opt("fp32, bf16 or fp16 autocast (auto: bf16 where the device has it, else fp32)",
                          rule=one_of(*PRECISIONS), default="fp32")
    channels_last: bool = _opt("channels-last memory layout (faster convolutions on most hardware)",
                               default=False)
    compile: bool = _opt("torch.compile the model (slow first steps, faster after)", default=False)
    tta: int = _opt("test-time augmentation: 0 none, 1 (or a bare --tta) the image and its mirror, "
                    "2 adds 1-px shifts", rule=one_of(*TTA_LEVELS), cli={"nargs": "?", "const": 1},
                    default=0)
    lookahead: bool = _opt("lookahead weight averaging, applied at the end", default=False)
    time_budget: float = _opt("seconds of training to fit the schedule into (0: run --epochs)",
                              rule=up_to(0, 1e8), default=0.0)
    whiten_bias_epochs: int = _opt("fastnet: epochs in which its whitening stem's bias learns, then it "
                                   "is frozen (-1: all)", rule=up_to(-1, 1_000_000), default=-1)
    report: bool = _opt("at the end, write report.html, metrics.json, pictures of the confusion "
                        "matrix, mistakes and curves, and TensorBoard figures into the run directory",
                        default=True)
    freeze_backbone: bool = _opt("train only the classifier head; every other layer keeps its weights",
                                 default=False)
    freeze_epochs: int = _opt("fine-tune: train only the head for the first N epochs, then every layer "
                              "(the backbone at --backbone-lr-scale times the rate)", default=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(0 <= self.freeze_epochs < self.epochs,
               f"--freeze-epochs must be 0 or more and below --epochs ({self.epochs}), got {self.freeze_epochs}")
        _check(not (self.freeze_backbone and self.freeze_epochs),
               "--freeze-backbone freezes the whole run and --freeze-epochs only its start; pick one")


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting of a training run, in four sections (as config.yaml writes them)."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig,
                             "optim": OptimConfig, "train": TrainConfig}
# Names the settings had before they were renamed; files written with them still read.
OLD_NAMES = {("data", "name"): "dataset", ("model", "name"): "arch", ("optim", "name"): "optimizer",
             ("train", "name"): "run_name"}
# Once a setting, now a command-line flag only: a file may say it is off (old config.yaml files
# do), never that it is on.
FLAG_ONLY = {"trust_pickle": "--trust-pickle"}


def iter_options() -> Iterator[tuple[str, dataclasses.Field]]:
    """Yield (section, field) for every training setting, in the order the help shows them."""
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            yield section, f


# ---------------------------------------------------------------- the other commands, and train's flags
# Settings of eval and predict that training has too are training's own fields (the same flag,
# help and rule); those whose default is the value recorded with the weights default to None.

def _like(section: type, name: str, *, as_trained: bool) -> Any:
    """Training's setting `name` for another command; as_trained: None by default, meaning the
    value the weights were trained with."""
    f = next(f for f in fields(section) if f.name == name)
    metadata = {**f.metadata, "kind": value_type(f)}
    if as_trained:
        metadata["help"] += " (default: as in training)"
        return field(default=None, metadata=metadata)
    return field(default=f.default, metadata=metadata)


def _weights_to_use() -> Any:
    return _opt("a .safetensors file, a run directory, or a state_dict .pth with --model", kind=str,
                cli={"required": True})


def trust_pickle_option() -> Any:
    """--trust-pickle: a flag of each command that loads weights, never a setting in a file, so a
    shared recipe cannot switch on running code from a weights file."""
    return _opt("let --weights load a whole pickled model (torch.save(model, ...)); unpickling runs "
                "code from the file, so only for files you made", default=False)


def _model_of_state_dict() -> Any:
    return _opt("the model a plain state_dict file (.pth) is for, e.g. vgg16 (tudui weights name "
                "their own)", default="")


@dataclass(frozen=True, kw_only=True)
class TrainFlags(Settings):
    """Flags of `tudui train` that are not settings of the run: never read from a file, never recorded."""
    config: str = _opt("YAML settings (flags win over it)", cli={"metavar": "FILE.yaml"}, default="")
    resume: str = _opt("continue a stopped run where it stopped (its own settings; flags may change them, "
                       "e.g. a larger --epochs extends a finished run)", cli={"metavar": "RUN_DIR"}, default="")
    trust_pickle: bool = trust_pickle_option()


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Settings):
    """Settings of `tudui eval`: which weights, on which data, and where the report goes."""
    weights: str = _weights_to_use()
    data: str | None = _like(DataConfig, "dataset", as_trained=True)
    data_dir: str | None = _like(DataConfig, "data_dir", as_trained=True)
    val_split: float | None = _like(DataConfig, "val_split", as_trained=True)
    batch_size: int | None = _like(DataConfig, "batch_size", as_trained=True)
    download: bool = _like(DataConfig, "download", as_trained=False)
    device: str = _like(TrainConfig, "device", as_trained=False)
    tta: int | None = _like(TrainConfig, "tta", as_trained=True)
    model: str = _model_of_state_dict()
    trust_pickle: bool = trust_pickle_option()
    out: str = _opt("folder for the report (default: RUN/eval, RUN/eval2, ...; files of the same names "
                    "in DIR are replaced)", cli={"metavar": "DIR"}, default="")
    report: bool = _opt("write report.html, metrics.json, the pictures and TensorBoard events "
                        "(--no-report: print the metrics only, write no files)", default=True)


@dataclass(frozen=True, kw_only=True)
class PredictConfig(Settings):
    """Settings of `tudui predict` (the images are its arguments)."""
    weights: str = _weights_to_use()
    topk: int = _opt("classes to show per image", rule=up_to(1, 1000), default=5)
    batch_size: int | None = _like(DataConfig, "batch_size", as_trained=True)
    device: str = _like(TrainConfig, "device", as_trained=False)
    tta: int | None = _like(TrainConfig, "tta", as_trained=True)
    model: str = _model_of_state_dict()
    trust_pickle: bool = trust_pickle_option()
    out: str = _opt("also write the predictions to FILE.csv or FILE.json", cli={"metavar": "FILE"},
                    default="")


# ---------------------------------------------------------------- files and overrides

def to_dict(config: Config) -> dict[str, dict[str, Any]]:
    return dataclasses.asdict(config)


def _setting_names() -> dict[str, tuple[str, str]]:
    """{name a setting may have in a flat file or a keyword: (section, field)}: its flag's name
    (batch_size, model) and its field's (arch)."""
    names = {}
    for section, f in iter_options():
        names[f.name] = names[option_key(f)] = (section, f.name)
    return names


def _collect(values: Any) -> dict[str, dict[str, tuple[Any, str]]]:
    """{section: {field: (value, where it was given)}} from a mapping of sections and/or flat settings."""
    if not isinstance(values, dict):
        raise TuduiError("a config file must be a mapping of settings (epochs: 3) or of sections "
                         f"({', '.join(SECTIONS)})")
    names = _setting_names()
    given: dict[str, dict[str, tuple[Any, str]]] = {section: {} for section in SECTIONS}

    def put(section: str, name: str, value: Any, where: str) -> None:
        if name in given[section]:
            raise TuduiError(f"{where} is set twice in the config (also as {given[section][name][1]})")
        given[section][name] = (value, where)

    for key, value in values.items():
        key = str(key).replace("-", "_")
        if key in SECTIONS and (isinstance(value, dict) or value is None):
            for name, inner in (value or {}).items():
                name = OLD_NAMES.get((key, name), str(name))
                if _flag_only(name, inner):
                    continue
                if name not in SECTIONS[key].__dataclass_fields__:
                    raise TuduiError(f"unknown setting {key}.{shown(name)[1:-1]}; {key} has "
                                     f"{', '.join(f.name for f in fields(SECTIONS[key]))}")
                put(key, name, inner, f"{key}.{name}")
        elif _flag_only(key, value):
            continue
        elif key in names and isinstance(value, dict):
            raise TuduiError(f"{key!r} is not a config section (they are {', '.join(SECTIONS)}); as a "
                             f"setting it takes one value, got {shown(value)}")
        elif key in names:
            put(*names[key], value, key)
        elif key in SECTIONS:
            raise TuduiError(f"config section {key!r} must be a mapping, got {shown(value)}")
        else:
            raise TuduiError(f"unknown setting {shown(key)} in the config: not a setting (`tudui train "
                             f"--help` lists them) and not a config section ({', '.join(SECTIONS)})")
    return given


def _flag_only(name: str, value: Any) -> bool:
    """True for a command-line-only flag that a file leaves off (skip it); an error if it turns it on."""
    if name not in FLAG_ONLY:
        return False
    if value is False:
        return True
    raise TuduiError(f"{name} cannot be switched on in a settings file (a shared file could then run "
                     f"code from a weights file); pass {FLAG_ONLY[name]} on the command line instead")


def _build(given: dict[str, dict[str, tuple[Any, str]]]) -> Config:
    sections = {}
    for section, cls in SECTIONS.items():
        known = cls.__dataclass_fields__
        sections[section] = cls(**{name: _coerce(value, known[name], where)
                                   for name, (value, where) in given[section].items()})
    return Config(**sections)


def from_dict(values: Any) -> Config:
    """A Config from a mapping over the defaults: sections ({data: {batch_size: 16}}), flat
    settings named like the flags ({batch_size: 16, model: resnet18}), or both. A section name
    with a plain value is the flag of that name (data: digits). Unknown keys are errors."""
    return _build(_collect(values))


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    kind = value_type(f)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise TuduiError(f"{where} must be true or false, got {shown(value)}")
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    article = "an" if kind is int else "a"
    raise TuduiError(f"{where} must be {article} {kind.__name__}, got {shown(value)}")


class _SettingsLoader(yaml.SafeLoader):
    """YAML as settings need it: no aliases (an alias bomb expands a few bytes into gigabytes),
    no key given twice (the second would silently win)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(None, None, "aliases (*name) are not allowed in "
                                                    "tudui settings", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{shown(key)} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A settings file's mapping; any file that cannot be one is a TuduiError naming it."""
    path = Path(path)
    if not path.is_file():
        raise TuduiError(f"config file not found: {path}")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise TuduiError(f"config file {path} is {path.stat().st_size:,} bytes; a settings file is "
                             f"under {MAX_FILE_BYTES:,}")
        text = path.read_bytes().decode("utf-8")
        values = yaml.load(text, Loader=_SettingsLoader)  # noqa: S506 (a SafeLoader, stricter still)
    except UnicodeDecodeError:
        raise TuduiError(f"config file {path} is not a text file (it is not UTF-8)") from None
    except OSError as e:
        raise TuduiError(f"cannot read config file {path}: {e.strerror or e}") from None
    except yaml.MarkedYAMLError as e:
        where = f" (line {e.problem_mark.line + 1})" if e.problem_mark is not None else ""
        raise TuduiError(f"config file {path} is not valid YAML: {e.problem or e.context}{where}") from None
    except RecursionError:
        raise TuduiError(f"config file {path} is not valid YAML for settings: nested too deeply") from None
    except (yaml.YAMLError, ValueError) as e:   # ValueError: a number too long to be one
        raise TuduiError(f"config file {path} is not valid YAML: {str(e).splitlines()[0][:SHOWN_CHARS]}") from None
    return values if values is not None else {}


def dump_yaml(config: Config, path: str | Path) -> None:
    """config as YAML at path, through a temporary file (a failed write leaves the old file whole)."""
    text = yaml.safe_dump(to_dict(config), sort_keys=False)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def make_config(config_file: str | Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the YAML file, then overrides named like the flags (lr=0.1, data="digits")."""
    given = _collect(load_yaml(config_file) if config_file else {})
    names = {option_key(f): (section, f.name) for section, f in iter_options()}
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in names:
            raise TuduiError(f"unknown setting {key!r}; the settings are {', '.join(sorted(names))}")
        section, name = names[key]
        flag = flag_name(SECTIONS[section].__dataclass_fields__[name])
        given[section][name] = (os.fspath(value) if isinstance(value, os.PathLike) else value, flag)
    return _build(given)
