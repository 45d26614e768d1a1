"""Training state for --resume: written atomically after every epoch (and on a stop), read
without unpickling anything (going on with a stopped run is tudui.resume's).

weights/state.pt holds what the run's parts need to continue exactly (model, optimizer,
schedule, averaging, loss scaler, every random state, where in the epoch it stopped), as
tensors and plain values only, so `torch.load(weights_only=True)` reads it.
"""
from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tudui.errors import TuduiError
from tudui.files import atomic_write, same_file_as
from tudui.rundir import RunDir
from tudui.settings import counted, shown
from tudui.state_dicts import check_tensors_hold_their_data
from tudui.weights import WeightsMeta, save_weights
from tudui.weights_meta import FORMAT_VERSION


def save_state(path: Path, state: dict) -> None:
    """Training state (tensors and plain types only, so weights_only loading can read it)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict:
    """A training state written by save_state, read without unpickling any object."""
    path = Path(path)
    if path.is_dir():
        raise TuduiError(f"{path} is a folder, not a training state file")
    if path.exists() and not path.is_file():   # a pipe or a device would be read forever
        raise TuduiError(f"{path} is not a plain file, so not a training state file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TuduiError(f"training state not found: {path} (a run killed or failed before its first epoch ended has "
                         f"nothing to resume: start it again without --resume)") from None
    except Exception as e:  # the restricted unpickler refuses anything but tensors and plain types
        # torch's own text goes on for sentences ("This is an internal miniz error. If you are ..."): the first.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:200]
        raise TuduiError(f"cannot read training state {path} ({first}): the file is damaged, cut short or not "
                         f"tudui's; the run cannot resume, but its weights can start a new one (tudui train --weights "
                         f"{path.parent / 'last.safetensors'} ...)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise TuduiError(f"{path} has training-state format {shown(found)}; this tudui reads format "
                         f"{FORMAT_VERSION}")
    if "best_score" not in state and "best_accuracy" in state:   # written before the val split
        state["best_score"] = state.pop("best_accuracy")
    for key, kinds in STATE_FIELDS.items():
        value = state.get(key)
        if not isinstance(value, kinds) or isinstance(value, bool) or (isinstance(value, int) and value < 0):
            raise TuduiError(f"{path} is damaged: {key} is {'missing' if value is None else shown(value)}")
    if not {"python", "numpy", "torch"} <= set(state["rng"]):
        raise TuduiError(f"{path} is damaged: its random states are incomplete")
    for key, fits in OPTIONAL_FIELDS.items():   # absent from older files; when there, what they must be
        if key in state and not fits(state[key]):
            raise TuduiError(f"{path} is damaged: {key} is {shown(state[key])}")
    check_tensors_hold_their_data({"model": state["model"], "optimizer": state["optimizer"],
                                   "averager": state.get("averager")}, str(path))
    return state


# What state.pt must hold, and the type of each (whole numbers are never negative).
STATE_FIELDS = {"epoch": int, "step_in_epoch": int, "partial_loss": (int, float), "partial_images": int,
                "best_score": (int, float), "best_epoch": int, "model": dict, "optimizer": dict,
                "scheduler": dict, "rng": dict}


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 53


def _amount(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf


def _fingerprint(value) -> bool:
    return value is None or (isinstance(value, dict) and all(
        split in ("train", "val", "test") and (print_ is None or (
            isinstance(print_, (list, tuple)) and len(print_) == 2 and _count(print_[0])
            and isinstance(print_[1], str))) for split, print_ in value.items()))


# What the fields that later versions added must be, when a state file has them (build reads them).
OPTIONAL_FIELDS = {
    "elapsed": _amount, "partial_seconds": _amount, "tensorboard_step": _count, "epochs": _count,
    "world_size": lambda v: _count(v) and v >= 1,
    "schedule": lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(_count(x) for x in v),
    "best_tiebreak": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v),
    "data": _fingerprint, "progressive": lambda v: v is None or isinstance(v, dict),
    "averager": lambda v: v is None or isinstance(v, dict), "scaler": lambda v: v is None or isinstance(v, dict),
}


def capture_rng() -> dict:
    """Every random state training draws from: Python, NumPy, torch (and CUDA when in use)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
                       "has_gauss": has_gauss, "gauss": gauss},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Put saved random states back; a state that cannot be one is a TuduiError."""
    try:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"],
                             n["gauss"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise TuduiError(f"the saved random states cannot be restored ({type(e).__name__}: "
                         f"{shown(str(e))}); the state file is damaged") from None


def all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point())


class CheckpointHook:
    """After each epoch: weights/last.safetensors, weights/best.safetensors when the monitored val
    metric improves (every epoch when the run has no val split: best is then the last; a hard link
    to last where the file system has them, so the two take the room of one), and
    weights/state.pt with everything resuming needs.

    extra_state() adds the state of the parts this hook does not own (weight averaging, the
    loss scaler, the time-budget clock, TensorBoard's step). Weights that are not finite are
    never saved: "last" and "best" stay the last good ones. Epochs that tie on the monitored
    metric (a small val split: 100 % twice) are told apart by the other one: the lower val loss,
    or the higher val accuracy.
    """

    def __init__(self, run: RunDir, model: nn.Module, optimizer, scheduler, meta: WeightsMeta, *,
                 monitor: str, has_val: bool, best_score: float = -math.inf, best_epoch: int = 0,
                 best_val_accuracy: float | None = None, best_tiebreak: float = -math.inf,
                 extra_state: Callable[[], dict] | None = None, writes: bool = True):
        self.run, self.writes = run, writes   # writes: False in all processes but rank 0
        if writes:
            run.weights_dir.mkdir(parents=True, exist_ok=True)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.meta, self.monitor, self.has_val = meta, monitor, has_val
        self.best_score, self.best_epoch, self.best_tiebreak = best_score, best_epoch, best_tiebreak
        self.best_val_accuracy = best_val_accuracy   # the kept epoch's, whatever --monitor is
        self.extra_state = extra_state
        self.saved_epoch: int | None = None

    def score(self, row: dict) -> float | None:
        """The monitored metric of an epoch as a score, higher is better (None: not evaluated)."""
        value = row[self.monitor]
        return None if value is None else -value if self.monitor.endswith("loss") else value

    def tiebreak(self, row: dict) -> float:
        """The other val metric as a score, higher is better: what decides between epochs of equal score."""
        other = "val_loss" if self.monitor == "val_accuracy" else "val_accuracy"
        value = row.get(other)
        return -math.inf if value is None else -value if other.endswith("loss") else value

    def save_state(self, epoch: int, step_in_epoch: int = 0, partial_loss: float = 0.0,
                   partial_images: int = 0, partial_seconds: float = 0.0) -> None:
        """state.pt after `epoch` finished epochs and step_in_epoch steps of the next one."""
        save_state(self.run.state, {
            "format": FORMAT_VERSION, "epoch": epoch, "step_in_epoch": step_in_epoch,
            "partial_loss": partial_loss, "partial_images": partial_images, "partial_seconds": partial_seconds,
            "best_score": self.best_score, "best_epoch": self.best_epoch, "best_tiebreak": self.best_tiebreak,
            "best_val_accuracy": self.best_val_accuracy,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": capture_rng(),
            **(self.extra_state() if self.extra_state is not None else {}),
            "meta": self.meta.to_json()})

    def on_epoch_end(self, row: dict, val_metrics: dict | None) -> None:
        loss = row["val_loss"]
        if (loss is not None and not math.isfinite(loss)) or not all_finite(self.model):
            raise FloatingPointError(f"the weights stopped being finite numbers in epoch {row['epoch']}")
        meta = dataclasses.replace(self.meta, epoch=row["epoch"], val_accuracy=row["val_accuracy"],
                                   val_loss=row["val_loss"])
        if self.writes:
            save_weights(self.run.last, self.model, meta)
        score, tiebreak = self.score(row), self.tiebreak(row)
        better = score is not None and (score > self.best_score or
                                        (score == self.best_score and tiebreak > self.best_tiebreak))
        if not self.has_val or better:
            self.best_epoch, self.best_val_accuracy = row["epoch"], row["val_accuracy"]
            self.best_score = score if score is not None else self.best_score
            self.best_tiebreak = tiebreak
            if self.writes:   # the file just written, linked: one copy on disk for best and last
                same_file_as(self.run.best, self.run.last)
        if self.writes:
            self.save_state(row["epoch"])
        self.saved_epoch = row["epoch"]


class EarlyStopping:
    """A hook that ends the run once `patience` epochs pass without the monitored val metric
    improving on its best (Ultralytics' patience, Lightning's EarlyStopping). With `after` (the
    --freeze-epochs of a fine-tune) the count starts once those epochs are over, so that the whole
    model trains for at least `patience` epochs before the run can stop."""

    def __init__(self, checkpoints: CheckpointHook, patience: int, after: int = 0):
        self.checkpoints, self.patience, self.after = checkpoints, patience, after
        self.epoch = 0
        self.reason: str | None = None

    def on_epoch_end(self, row: dict, val_metrics: dict | None) -> None:
        self.epoch = row["epoch"]

    def stop_reason(self) -> str | None:
        best = self.checkpoints.best_epoch
        if self.epoch - max(best, self.after) >= self.patience:
            self.reason = (f"stopped early after epoch {self.epoch}: {self.checkpoints.monitor} has not improved "
                           f"for {counted(self.patience, 'epoch')}"
                           + (f" since the backbone was unfrozen after epoch {self.after}" if best < self.after else "")
                           + f" (best in epoch {best})")
        return self.reason
