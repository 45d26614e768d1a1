"""State dicts from outside tudui: .pth files read without pickle, key prefixes, exact fitting.

The course saves models two ways: `torch.save(model.state_dict(), path)` ("method 2", plain
tensors) and `torch.save(model, path)` ("method 1", the whole object pickled). The first is
read here with `weights_only=True`; the second needs the unpickler to import and run code
named in the file, so it is refused unless the user says --trust-pickle.
"""
from __future__ import annotations

import logging
import pickle
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from tudui.errors import TuduiError
from tudui.settings import counted, shown

log = logging.getLogger(__name__)

# DataParallel / DistributedDataParallel save under "module.", torch.compile under "_orig_mod.".
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Training checkpoints often nest the weights one level down under one of these keys.
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net")


class NotWeights(TuduiError):
    """A file that torch.load cannot read at all (an image, a text file, a truncated download)."""


def strip_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """state with the wrapper prefixes (module., _orig_mod., in any combination) removed from its keys."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


# What a pickle names that is no model's class but a way to run programs or code: such a file is
# an attack, not a model to convert.
RUNS_PROGRAMS = {"os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil", "socket", "runpy",
                 "importlib", "pty", "ctypes", "webbrowser", "code", "codecs", "pickle", "marshal", "types"}


def _pickle_refusal(path: Path, what: str) -> str:
    if what.split(".")[0] in RUNS_PROGRAMS:
        return (f"{path} is not a model: its pickle calls {shown(what)[1:-1]}, which runs programs or code; "
                f"tudui does not load it (do not load it anywhere)")
    code = (f"import torch; m = torch.load({str(path)!r}, weights_only=False); "
            f"torch.save(m.state_dict(), {str(path.with_suffix('')) + '_state_dict.pth'!r})")
    return (f"{path} holds a whole pickled model ({what}, saved by torch.save(model, ...)), not a state_dict; "
            f"loading it would run code stored in the file (pickle), so tudui does not. Convert it "
            f"once, where you trust the file: python -c {shlex.quote(code)} "
            f"and pass the new file, or pass --trust-pickle if you made the file yourself")


def _unpickle_failure(path: Path, error: Exception) -> str:
    """Why a whole pickled model did not load, and what to do: a pickle names the module that
    defined its model's class (the course's `from model import *`: model.py), which must be
    importable here."""
    first = (str(error).splitlines() or [""])[0]
    said = f"cannot unpickle {path}: {type(error).__name__}: {first}"
    if isinstance(error, ModuleNotFoundError) and error.name:
        module = error.name.split(".")[0]
        return (f"{said}. Its model's class was defined in {module}.py: run tudui in the folder that holds "
                f"{module}.py, with that folder on Python's path (PYTHONPATH=. tudui ...)")
    where = re.search(r"Can't get attribute '(\w+)' on <module '[\w.]*__main__'", first)
    if where:
        return (f"{said}. Its model's class {where.group(1)} was defined in the script that saved it: "
                f"move the class into a module of its own (model.py), or save model.state_dict() "
                f"from that script and pass that file")
    return f"{said} (the classes it was saved with must be importable)"


def _as_state_dict(obj: object, path: Path, depth: int = 0) -> dict[str, torch.Tensor]:
    if depth > len(NESTED_KEYS):   # {"model": {"model": ...}}, or a dict that holds itself
        raise TuduiError(f"{path} nests its weights too deeply to be a checkpoint")
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        if {"format", "rng", "optimizer", "model"} <= set(obj):
            raise TuduiError(f"{path} is tudui's training state, which --resume reads; to evaluate, predict or "
                             f"export, give the run directory or its weights/best.safetensors")
        for key in NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, (Mapping, nn.Module)) and inner:
                return _as_state_dict(inner, path, depth + 1)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj) and all(isinstance(k, str) for k in tensors):
            return dict(tensors)
    raise TuduiError(f"{path} holds {type(obj).__name__}, not a model's state_dict (a mapping of "
                     f"parameter names to tensors)")


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state_dict in a .pth/.pt file (or a plain .safetensors), on the CPU, prefixes stripped.

    Read with weights_only=True. A whole pickled model is refused with a message that says
    how to convert it, unless trust_pickle is set (then it is loaded, with a warning).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TuduiError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = strip_prefixes(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as e:
            raise TuduiError(f"{path} is not a readable safetensors file ({e})") from None
        check_finite(state, str(path))
        return state
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refuses the classes a pickled object names; other failures mean "not torch".
        needs_class = re.search(r"GLOBAL ([\w.]+)", str(e))
        if needs_class is None:
            raise NotWeights(f"{path} is not a PyTorch weights file (torch.load cannot read it)") from None
        if not trust_pickle or needs_class.group(1).split(".")[0] in RUNS_PROGRAMS:   # the latter: never
            raise TuduiError(_pickle_refusal(path, needs_class.group(1))) from None
        log.warning("--trust-pickle: unpickling %s, which runs code stored in the file", path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001  (unpickling runs the file's code: it can raise anything)
            raise TuduiError(_unpickle_failure(path, e)) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NotWeights(f"{path} is not a PyTorch weights file ({first})") from None
    except Exception:  # noqa: BLE001 - the restricted unpickler, fed bytes that are not a pickle, can
        # fail in any way (a text file: KeyError); it runs no code, so nothing else can have happened
        raise NotWeights(f"{path} is not a PyTorch weights file (torch.load cannot read it)") from None
    state = strip_prefixes(_as_state_dict(obj, path))
    check_tensors_hold_their_data(state, str(path))
    check_finite(state, str(path))
    return state


def check_tensors_hold_their_data(tensors, source: str) -> None:
    """A TuduiError naming the first tensor (of a mapping, or nested in dicts and lists) whose shape
    is larger than the data stored for it: one number saved "expanded" to billions of elements
    (stride 0) takes bytes in the file and gigabytes once anything computes with it."""
    stack, seen = [("", tensors)], set()
    while stack:
        where, value = stack.pop()
        if id(value) in seen:   # a structure that holds itself is walked once
            continue
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            if value.numel() * value.element_size() > value.untyped_storage().nbytes():
                raise TuduiError(f"{source}: {where or 'a tensor'} has the shape {tuple(value.shape)} but holds "
                                 f"{value.untyped_storage().nbytes():,} bytes of data; the file is damaged or "
                                 f"crafted")
        elif isinstance(value, Mapping):
            stack.extend((f"{where}.{key}" if where else str(key), item) for key, item in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """A TuduiError naming the first tensor of state that holds NaN or infinity: such weights
    would only predict nonsense or send training to NaN at once."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise TuduiError(f"{source}: {key} holds values that are not finite numbers (NaN or infinity); "
                             f"these weights cannot be used")


def _listed(keys: list[str], limit: int = 4) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def renamed_container(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                      source: str) -> Mapping[str, torch.Tensor]:
    """state with its one top-level name read as the model's, when that name is all that differs:
    the course's nn_seq lesson calls its Sequential `model1`, tudui's net (and the course's
    model.py) `model`. Anything else is returned as it is, for fit_state_dict to judge."""
    tops, wanted = {k.split(".", 1)[0] for k in state}, {k.split(".", 1)[0] for k in expected}
    if len(tops) != 1 or len(wanted) != 1 or tops == wanted or not all("." in k for k in state):
        return state
    (top,), (name,) = tops, wanted
    renamed = {name + key[len(top):]: value for key, value in state.items()}
    if set(renamed) != set(expected):
        return state
    log.info("%s names its layers %s.*, the model %s.*: read as the same layers", source, top, name)
    return renamed


def fit_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, what: str) -> None:
    """Load state into model exactly, or raise TuduiError naming the missing, unexpected and
    differently shaped keys (source: the file, what: the model, both for the message)."""
    check_fits(model.state_dict(), state, source, what)
    model.load_state_dict(state)


class KeysDiffer(TuduiError):
    """Weights whose keys are not the model's: most likely a file of another model."""


def check_fits(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str,
               what: str) -> None:
    """fit_state_dict's check alone: expected may be a model's state_dict on the "meta" device,
    so that weights that do not fit are refused before the model takes any memory."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise KeysDiffer(f"weights {source} do not fit {what}: missing keys {_listed(missing)}; "
                         f"unexpected keys {_listed(unexpected)}")
    shapes = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if shapes:
        k = shapes[0]
        verb = "differs" if len(shapes) == 1 else "differ"
        raise TuduiError(f"weights {source} do not fit {what}: {counted(len(shapes), 'tensor')} {verb} in shape, "
                         f"first {k} ({tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} "
                         f"in the model; was it built for another class count or input size?)")


def transfer_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], skip: tuple[str, ...],
                        source: str, what: str) -> int:
    """Copy every tensor of state whose key and shape match model; keys under the prefixes in
    skip (the heads) may differ. Anything else that differs is an error. Returns tensors copied."""
    expected = model.state_dict()

    def in_head(key: str) -> bool:
        return any(key == p or key.startswith(p + ".") for p in skip)

    usable = {k: v for k, v in state.items()
              if k in expected and tuple(v.shape) == tuple(expected[k].shape)}
    missing = sorted(k for k in expected if k not in usable and not in_head(k))
    unexpected = sorted(k for k in state if k not in usable and not in_head(k))
    if missing or unexpected:
        raise TuduiError(f"weights {source} do not fit {what} outside its classifier head: missing "
                         f"keys {_listed(missing)}; unexpected or differently shaped keys {_listed(unexpected)}")
    model.load_state_dict(usable, strict=False)
    return len(usable)
