"""The machinery of tudui's settings: a field with its help, flag and rule; checks on construction;
values quoted short in messages. config.py declares the settings themselves with it."""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import reprlib
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from tudui.errors import SettingError

SHOWN_CHARS = 60             # how much of a bad value an error message quotes


@dataclass(frozen=True)
class Rule:
    """What a setting's value must be: a test, and the words for it in the error message (options:
    the values allowed, when they can be listed, for a "did you mean")."""
    test: Callable[[Any], bool]
    says: str
    options: tuple = ()

    def message(self, flag: str, value: Any) -> str:
        meant = (difflib.get_close_matches(value, [str(o) for o in self.options], n=1)
                 if isinstance(value, str) else [])
        return f"{flag} must be {self.says}, got {shown(value)}" + (f"; did you mean {meant[0]}?" if meant else "")


def one_of(*options: Any) -> Rule:
    return Rule(lambda v: v in options, "one of " + ", ".join(str(o) for o in options), options)


def within(low: float, high: float, *, high_included: bool = False) -> Rule:
    return Rule(lambda v: low <= v <= high and (high_included or v < high),
                f"in [{low}, {high}{']' if high_included else ')'}")


def up_to(low: float, high: float) -> Rule:
    return Rule(lambda v: low <= v <= high, f"between {low} and {high}")


def counted(n: int, one: str, many: str = "") -> str:
    """n with its noun: "1 epoch", "3 epochs" (many: the plural when it is not one + "s")."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def shown_path(path: Any) -> str:
    """A path for a message: as it is when short, else its last SHOWN_CHARS characters (the file's
    name matters more than the folders above it); control characters escaped."""
    text = repr(str(path))[1:-1]
    return text if len(text) <= SHOWN_CHARS else "..." + text[-SHOWN_CHARS:]


def columns(text: str) -> int:
    """How many terminal columns text takes: Chinese, Japanese and Korean characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)


def clipped(text: str, width: int) -> str:
    """text in at most width terminal columns, cut with "…" when it is longer."""
    if columns(text) <= width:
        return text
    while text and columns(text) > width - 1:
        text = text[:-1]
    return text + "…"


def distinct_labels(names: Sequence[str], width: int, head: int = 5) -> list[str]:
    """Each name in at most width columns, as clipped() cuts it where that keeps the names apart.

    Where cut names would look the same (PlantVillage's Corn_(maize)___Common_rust_ and
    Corn_(maize)___healthy), a long name keeps its first `head` columns and then, after "…", the part
    from the start of the word where it first differs from the names it was confused with:
    "Corn_…Common_rust_", "Corn_…healthy". Names still alike after that show their ends, and
    then, as a last resort, a number.
    """
    labels = [clipped(name, width) for name in names]
    head = head if width >= head + 4 else 0
    for cut in (_from_where_it_differs, _its_end):
        for group in _alike(names, labels):
            for i, label in zip(group, cut([names[i] for i in group], width, head)):
                labels[i] = label
    number = 0
    for _ in range(3):   # numbers never used before: a pass leaves no two alike unless a name ends so
        for i in (i for group in _alike(names, labels) for i in group):
            number += 1
            labels[i] = clipped(names[i], width - len(f" {number}")) + f" {number}"
    return labels


def _alike(names: Sequence[str], labels: list[str]) -> list[list[int]]:
    """The positions of the names whose labels are the same although the names differ, by label."""
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    return [group for group in groups.values() if len({names[i] for i in group}) > 1]


def _from_where_it_differs(names: list[str], width: int, head: int) -> list[str]:
    labels = []
    for name, differs in zip(names, _where_each_differs(names)):
        start, word = _within(name, head), _word_start(name, differs)
        fits = columns(name) <= width or word <= len(start) or width - columns(start) - 1 < 2
        labels.append(clipped(name, width) if fits else start + "…" + clipped(name[word:], width - columns(start) - 1))
    return labels


def _its_end(names: list[str], width: int, head: int) -> list[str]:
    return ["…" + _within(name[::-1], width - 1)[::-1] if columns(name) > width else name for name in names]


def _where_each_differs(names: Sequence[str]) -> list[int]:
    """For each name, the length of the longest prefix it shares with another name (its neighbours
    in sorted order are the nearest)."""
    order = sorted(range(len(names)), key=lambda i: names[i])
    shared = [0] * len(names)
    for a, b in zip(order, order[1:]):
        common = len(os.path.commonprefix([names[a], names[b]]))
        shared[a], shared[b] = max(shared[a], common), max(shared[b], common)
    return shared


def _word_start(name: str, at: int, back: int = 4) -> int:
    """Where the word holding name[at] starts (after _, space, ( and the like), at most back characters
    before at; back characters before when no such start is that near."""
    starts = [k + 1 for k in range(max(at - back, 0), at) if not name[k].isalnum()]
    return starts[-1] if starts else at - back


def _within(text: str, width: int) -> str:
    """The longest start of text that fits in width columns."""
    while columns(text) > width:
        text = text[:-1]
    return text


def padded(text: str, width: int) -> str:
    """text followed by the spaces that make it width terminal columns wide (a table's column)."""
    return text + " " * max(0, width - columns(text))


# A container's repr, bounded however the value nests: a list that holds itself twice, 40 deep,
# is a few hundred bytes of pickle and 2**40 elements of repr.
_SHORT = reprlib.Repr()   # (keywords only from Python 3.12)
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 3, SHOWN_CHARS, 40, SHOWN_CHARS
_SHORT.maxtuple = _SHORT.maxlist = _SHORT.maxarray = _SHORT.maxdict = _SHORT.maxset = _SHORT.maxfrozenset = \
    _SHORT.maxdeque = 6


def shown(value: Any) -> str:
    """repr(value), cut to SHOWN_CHARS: an error message never quotes a whole hostile value (nor
    works out the whole repr of one)."""
    if isinstance(value, (str, bytes, float, bool, type(None))):
        text = repr(value)
    elif isinstance(value, int):
        text = repr(value) if value.bit_length() < 200 else f"a number of {value.bit_length():,} bits"
    else:
        text = _SHORT.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + f"... ({len(text):,} characters)"


def option(help: str, *, flag: str | None = None, rule: Rule | None = None, kind: type | None = None,
         cli: dict | None = None, **kwargs: Any) -> Any:
    """A dataclass field with its help text, flag (default: --field-name), rule, value type (needed
    when the default is None) and extra argparse keywords (cli)."""
    return field(metadata={"help": help, "flag": flag, "rule": rule, "kind": kind, "cli": cli or {}}, **kwargs)


def check(ok: bool, message: str) -> None:
    if not ok:
        raise SettingError(message)


class Settings:
    """Checks every field against its rule after construction (None means "not given": skipped)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, os.PathLike) and value_type(f) is str:  # Path objects from Python
                object.__setattr__(self, f.name, value := os.fspath(value))
            if isinstance(value, float) and not math.isfinite(value):
                raise SettingError(f"{flag_name(f)} must be a finite number, got {value}")
            rule = f.metadata.get("rule")
            if rule is not None and value is not None and not rule.test(value):
                raise SettingError(rule.message(flag_name(f), value))


def nearest(name: str, names: list[str], prefix: str = "") -> str:
    """'did you mean ...?' with the names spelled like name, or "" when none is (the message names
    these few, not every setting: that list would be long, and longer with every setting added)."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    return f"did you mean {' or '.join(prefix + c for c in close)}?" if close else ""


def made(cls: type, command: str, given: dict):
    """cls(**given) for `tudui COMMAND`'s settings given in a Python call, those given as None left
    at their defaults: a keyword that is no setting (None or not) is said as the setting error it
    is, with the names spelled like it, rather than as the TypeError the dataclass would raise."""
    known = [f.name for f in fields(cls)]
    for key in given:
        if key not in known:
            raise SettingError(f"unknown setting {shown(key)} for {command}; "
                               f"{nearest(str(key), known) or f'`tudui {command} --help` lists them'}")
    return cls(**{key: value for key, value in given.items() if value is not None})


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def option_key(f: dataclasses.Field) -> str:
    """The keyword a setting has in Python calls: its flag without dashes (--batch-size: batch_size)."""
    return flag_name(f)[2:].replace("-", "_")


def value_type(f: dataclasses.Field) -> type:
    """The type of a setting's values: given in its metadata, else its default's."""
    return f.metadata.get("kind") or type(f.default)
