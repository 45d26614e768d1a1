"""Settings files and keywords: YAML read safely (flat keys named like the flags, or sections),
overrides laid over it, the resolved settings written back (config.yaml) and read from weights."""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from tudui.config import SECTIONS, Config, ModelConfig, iter_options
from tudui.errors import SettingError, TuduiError
from tudui.files import atomic_write
from tudui.settings import SHOWN_CHARS, flag_name, nearest, option_key, shown, value_type

MAX_FILE_BYTES = 1 << 20     # a settings file is a few hundred bytes; refuse what cannot be one

# Names the settings had before they were renamed; files written with them still read.
OLD_NAMES = {("data", "name"): "dataset", ("model", "name"): "arch", ("optim", "name"): "optimizer",
             ("train", "name"): "run_name"}
# Once a setting, now a command-line flag only: a file may say it is off (old config.yaml files
# do), never that it is on.
FLAG_ONLY = {"trust_pickle": "--trust-pickle"}


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
        raise SettingError("a config file must be a mapping of settings (epochs: 3) or of sections "
                         f"({', '.join(SECTIONS)})")
    names = _setting_names()
    given: dict[str, dict[str, tuple[Any, str]]] = {section: {} for section in SECTIONS}

    def put(section: str, name: str, value: Any, where: str) -> None:
        if name in given[section]:
            raise SettingError(f"{where} is set twice in the config (also as {given[section][name][1]})")
        given[section][name] = (value, where)

    for key, value in values.items():
        key = str(key).replace("-", "_")
        if key in SECTIONS and (isinstance(value, dict) or value is None):
            for name, inner in (value or {}).items():
                name = OLD_NAMES.get((key, name), str(name))
                if _flag_only(name, inner):
                    continue
                if name not in SECTIONS[key].__dataclass_fields__:
                    home = next((other for other, cls in SECTIONS.items() if name in cls.__dataclass_fields__), None)
                    hint = (f"{name} belongs in the {home} section ({home}.{name}), or write it without a section"
                            if home else nearest(name, [f.name for f in fields(SECTIONS[key])], prefix=f"{key}.")
                            or f"`tudui train --help` lists the settings, and config.yaml of any run shows the "
                               f"{key} section")
                    raise SettingError(f"unknown setting {key}.{shown(name)[1:-1]}; {hint}")
                put(key, name, inner, f"{key}.{name}")
        elif _flag_only(key, value):
            continue
        elif key in names and isinstance(value, dict):
            raise SettingError(f"{key!r} is not a config section (they are {', '.join(SECTIONS)}); as a "
                             f"setting it takes one value, got {shown(value)}")
        elif key in names:
            put(*names[key], value, key)
        elif key in SECTIONS:
            raise SettingError(f"config section {key!r} must be a mapping, got {shown(value)}")
        else:
            meant = nearest(key, list(dict.fromkeys([*names, *SECTIONS])))
            raise SettingError(f"unknown setting {shown(key)} in the config: not a setting (`tudui train "
                             f"--help` lists them) and not a config section ({', '.join(SECTIONS)})"
                             + (f"; {meant}" if meant else ""))
    return given


def _flag_only(name: str, value: Any) -> bool:
    """True for a command-line-only flag that a file leaves off (skip it); an error if it turns it on."""
    if name not in FLAG_ONLY:
        return False
    if value is False:
        return True
    raise SettingError(f"{name} cannot be switched on in a settings file (a shared file could then run "
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


# A number in exponent form whose mantissa has no dot or whose exponent has no sign (1e-3, 1.0e3).
_EXPONENT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")


def _coerce(value: Any, f: dataclasses.Field, where: str) -> Any:
    kind = value_type(f)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise SettingError(f"{where} must be true or false, got {shown(value)}")
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        return float(value)   # YAML 1.1 (PyYAML) reads 1e-3 and 1.0e3 as text; the command line takes them
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    article = "an" if kind is int else "a"
    raise SettingError(f"{where} must be {article} {kind.__name__}, got {shown(value)}")


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
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise yaml.constructor.ConstructorError(None, None, "a key must be a plain name, not a list or "
                                                        "a mapping", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{shown(key)} is given twice",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _no_sixties(constructor):
    """YAML 1.1 reads 190:20:30 as a number in base 60 (685,230): a setting takes it as the text it
    looks like (and refuses it where it wants a number)."""
    def construct(loader, node):
        text = loader.construct_scalar(node)
        return text if ":" in text else constructor(loader, node)
    return construct


_SettingsLoader.add_constructor("tag:yaml.org,2002:int", _no_sixties(yaml.SafeLoader.construct_yaml_int))
_SettingsLoader.add_constructor("tag:yaml.org,2002:float", _no_sixties(yaml.SafeLoader.construct_yaml_float))


# The recipes that come with tudui (seed, cifar10-fast, ...), which --config takes by name anywhere.
BUILTIN_CONFIGS = Path(__file__).with_name("configs")


def builtin_configs() -> list[str]:
    return sorted(path.stem for path in BUILTIN_CONFIGS.glob("*.yaml"))


def config_path(name: str | Path) -> Path:
    """The settings file --config names: a file here, else one of tudui's own recipes by its name
    (seed, seed.yaml, or configs/seed.yaml as the repository's README spells it)."""
    path = Path(name)
    if path.is_file():
        return path
    parts = path.parts
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == "configs"):
        builtin = BUILTIN_CONFIGS / (path.name if path.suffix in (".yaml", ".yml") else path.name + ".yaml")
        if builtin.with_suffix(".yaml").is_file():
            return builtin.with_suffix(".yaml")
    return path


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A settings file's mapping (a file, or one of tudui's own recipes by name); any file that
    cannot be one is a TuduiError naming it."""
    path = config_path(path)
    if not path.is_file():
        raise SettingError(f"config file not found: {path} (tudui's own, which --config takes by name from "
                           f"anywhere: {', '.join(builtin_configs())})")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise SettingError(f"config file {path} is {path.stat().st_size:,} bytes; a settings file is "
                             f"under {MAX_FILE_BYTES:,}")
        text = path.read_bytes().decode("utf-8")
        values = yaml.load(text, Loader=_SettingsLoader)  # noqa: S506 (a SafeLoader, stricter still)
    except UnicodeDecodeError:
        raise SettingError(f"config file {path} is not a text file (it is not UTF-8)") from None
    except OSError as e:
        raise SettingError(f"cannot read config file {path}: {e.strerror or e}") from None
    except yaml.MarkedYAMLError as e:
        where = f" (line {e.problem_mark.line + 1})" if e.problem_mark is not None else ""
        raise SettingError(f"config file {path} is not valid YAML: {e.problem or e.context}{where}") from None
    except RecursionError:
        raise SettingError(f"config file {path} is not valid YAML for settings: nested too deeply") from None
    except (yaml.YAMLError, ValueError) as e:   # ValueError: a number too long to be one
        raise SettingError(f"config file {path} is not valid YAML: {str(e).splitlines()[0][:SHOWN_CHARS]}") from None
    return values if values is not None else {}


def dump_yaml(config: Config, path: str | Path) -> None:
    """config as YAML at path, through a temporary file (a failed write leaves the old file whole).
    A setting at one of its special values (-1 or 0: "auto", "off", "the model's own") says what
    that value means in a comment, from its help."""
    lines = []
    meanings = special_meanings(config)
    section = ""
    for line in yaml.safe_dump(to_dict(config), sort_keys=False).splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
        key = line.strip().split(":", 1)[0]
        setting = line.startswith("  ") and not line.startswith("   ")   # not a long value's continuation
        meaning = meanings.get((section, key)) if setting else None
        lines.append(f"{line}  # {meaning}" if meaning else line)
    text = "\n".join(lines) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def special_meanings(config: Config) -> dict[tuple[str, str], str]:
    """{(section, key): "-1: pick for the data set", ...} for the settings of config whose value is
    one their help gives a meaning to, written "(-1: ...)" or "; 0: ..." there."""
    found = {}
    for section, f in iter_options():
        value = getattr(getattr(config, section), f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (-1, 0):
            continue
        said = re.search(rf"(?:\(|; ){int(value)}: ((?:[^;()]|\([^()]*\))*)", f.metadata.get("help", ""))
        if said:
            found[section, f.name] = f"{int(value)}: {said.group(1).strip()}"
    return found


def make_config(config_file: str | Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the YAML file, then overrides named like the flags (lr=0.1, data="digits")."""
    try:
        given = _collect(load_yaml(config_file) if config_file else {})
    except TuduiError as e:
        raise _from_file(e, config_file) from None
    names = {option_key(f): (section, f.name) for section, f in iter_options()}
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in names:
            hint = nearest(str(key), list(names)) or "`tudui train --help` lists the settings"
            raise SettingError(f"unknown setting {shown(key)}; {hint}")
        section, name = names[key]
        flag = flag_name(SECTIONS[section].__dataclass_fields__[name])
        given[section][name] = (os.fspath(value) if isinstance(value, os.PathLike) else value, flag)
    _one_start(given.get("model", {}))
    try:
        return _build(given)
    except TuduiError as e:
        raise _from_file(e, config_file, given) from None


def start_resolved(model: ModelConfig) -> ModelConfig:
    """model with its starting weights (--weights, --weights-file) as absolute paths where they exist."""
    return dataclasses.replace(model, **{name: str(Path(getattr(model, name)).resolve())
                                         for name in ("weights", "weights_file")
                                         if getattr(model, name) and Path(getattr(model, name)).exists()})


def _one_start(model: dict) -> None:
    """The starting weights are one choice, so a flag that makes it (--weights, or --pretrained /
    --weights-file) replaces the file's (a run's config.yaml that started from ImageNet weights,
    given with --weights of that run)."""
    flagged = {name for name, (value, where) in model.items() if where.startswith("--") and value}
    drop = ("pretrained", "weights_file") if "weights" in flagged else \
        ("weights",) if flagged & {"pretrained", "weights_file"} else ()
    for name in drop:
        if name in model and not model[name][1].startswith("--"):
            del model[name]


def _from_file(error: TuduiError, config_file: str | Path | None, given: dict | None = None) -> TuduiError:
    """error naming the settings file when what it is about came from there: a value's check names
    the flag (--device must be ...), which the file spelled as its key (device: gpu)."""
    text = str(error)
    if not config_file or str(config_file) in text:
        return error
    if given is None:   # reading the file: every error is about it
        return type(error)(f"{config_file}: {text}")
    first = text.split(" ", 1)[0]
    flagged = [where for values in given.values() for _, where in values.values() if where.startswith("--")]
    for section, values in given.items():
        for name, (value, where) in values.items():
            if where.startswith("--"):
                continue    # given on the command line
            flag = flag_name(SECTIONS[section].__dataclass_fields__[name])
            if first in (where, flag):
                # the other setting it names may be a flag: then both sides are said
                if any(re.search(rf"{re.escape(f)}\b", text.split(" ", 1)[1]) for f in flagged):
                    return type(error)(f"{text} ({flag} {value} is from {config_file})")
                return type(error)(f"{config_file}: {where} {text.split(' ', 1)[1]}")
    return error
