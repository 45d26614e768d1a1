"""Going on with a stopped run (--resume): the settings it may and may not change, the checks
that its data and state still fit, the learning-rate schedule of a longer run, and putting the
saved state back into freshly built parts. The state file itself is tudui.checkpoint's."""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from tudui.checkpoint import load_state
from tudui.config import Config
from tudui.config_files import make_config, start_resolved
from tudui.data.sources import BUILTIN_DATASETS, data_reference
from tudui.errors import SettingError, TuduiError
from tudui.rundir import RunDir
from tudui.settings import counted, flag_name, shown
from tudui.weights import read_meta


def _changes(before, after) -> str:
    """The settings that differ between two sections of a config, as "--flag old -> new, ..."."""
    return ", ".join(f"{flag_name(f)} {getattr(before, f.name)} -> {getattr(after, f.name)}"
                     for f in fields(after) if getattr(before, f.name) != getattr(after, f.name))


@dataclass(frozen=True, kw_only=True)
class Resume:
    """A stopped run to go on with: its directory, its saved training state, the settings to use."""
    run: RunDir
    state: dict
    config: Config
    schedule: tuple[int, int]   # the epochs the learning-rate schedule spans: (first epoch, epochs)
    extension: str = ""         # what a larger --epochs did to the schedule, in words ("" when unchanged)


def resume_settings(resume: str | Path, config: Config | None, config_file, overrides: dict,
                    extend: str = "stretch") -> Resume:
    """The run, its training state and the settings to go on with, for --resume RUN_DIR.

    The run's own config.yaml is the base and flags may change it (a larger --epochs extends a
    finished run), but not the model or the data set (the saved weights would not fit them),
    the split, seed or batch size (the saved position would mean other images), nor the
    optimizer's settings (its saved state would overrule them).
    """
    run = RunDir.open(resume)
    if config is not None or config_file is not None:
        raise SettingError("--resume continues with the run's own config.yaml; change settings with "
                         "flags instead of --config")
    state = load_state(run.state)
    before = make_config(run.config)
    cfg = make_config(run.config, **{k: v for k, v in overrides.items() if k not in ("project", "name")})
    # config.yaml records the starting weights as absolute paths: the same file spelled relative is no change
    model_changes = _changes(start_resolved(before.model), start_resolved(cfg.model))
    if model_changes:
        raise TuduiError(f"cannot resume {run} with a different model ({model_changes}); start a new run instead")
    _check_data_place(run, state, before.data.dataset, cfg.data.dataset)
    for what, old, new in (("--val-split", before.data.val_split, cfg.data.val_split),
                           # the saved step counts and the schedule are in steps of this batch size
                           ("--batch-size", before.data.batch_size, cfg.data.batch_size),
                           ("--seed", before.train.seed, cfg.train.seed)):
        if old != new:
            old, new = ("auto" if v == -1 and what == "--val-split" else v for v in (old, new))
            raise TuduiError(f"cannot resume {run} with a different {what} ({old} -> {new}); "
                             f"start a new run instead")
    changed = _changes(before.optim, cfg.optim)
    if changed:
        # The optimizer's state (its rates included) and the schedule's come back from state.pt:
        # new values would be silently overwritten by the saved ones.
        raise TuduiError(f"cannot resume {run} with other optimizer settings ({changed}): "
                         f"its saved state holds the old ones; start a new run from its weights instead: "
                         f" tudui train --config {run.config} --weights {run.last} ...")
    if before.train.monitor != cfg.train.monitor and state.get("best_val_accuracy") is not None:
        raise TuduiError(f"cannot resume {run} with a different --monitor ({before.train.monitor} -> "
                         f"{cfg.train.monitor}): its best epoch so far was chosen by {before.train.monitor}; "
                         f"start a new run instead")
    if state["epoch"] >= cfg.train.epochs:
        raise TuduiError(f"{run} has finished its {state['epoch']} epochs; pass a larger --epochs "
                         f"to extend it")
    _check_not_stopped_early(run, state, cfg)
    # The epochs the run was started (or last resumed) with: config.yaml may have been edited since,
    # and an edited length is a longer run like a larger --epochs, not more epochs of the old schedule.
    planned = state.get("epochs")
    planned = planned if isinstance(planned, int) and not isinstance(planned, bool) and planned > 0 \
        else before.train.epochs
    schedule, extension = extended_schedule(state, planned, cfg.train.epochs, extend)
    return Resume(run=run, state=state, config=cfg, schedule=schedule, extension=extension)


def _check_data_place(run: RunDir, state: dict, old: str, new: str) -> None:
    """A resumed run trains on its own data set. A folder, archive or list that moved may be given
    by its new place (--data) when state.pt holds the images' fingerprint, which check_same_data
    then compares; without one (state files from before it), or for another built-in set, no."""
    old, new = data_reference(old), data_reference(new)
    fingerprinted = isinstance(state.get("data"), dict)
    is_path = old not in BUILTIN_DATASETS
    if old == new:
        if is_path and not Path(old).exists():
            where = ("if it moved, give its new place with --data (its images must be the same)" if fingerprinted
                     else "put it back there")
            raise TuduiError(f"cannot resume {run}: its data set {old} is not there any more; {where}")
        return
    if not (fingerprinted and is_path and new not in BUILTIN_DATASETS):
        raise TuduiError(f"cannot resume {run} with a different data set ({old} -> {new}); start a new run instead")


def _check_not_stopped_early(run: RunDir, state: dict, cfg: Config) -> None:
    """A run whose --patience has run out (one that stopped early, or one given a smaller
    patience now) would stop after one more epoch, or more should that one improve by chance:
    going on takes a larger patience."""
    waited = state["epoch"] - max(state["best_epoch"], cfg.train.freeze_epochs)   # as EarlyStopping counts
    if cfg.train.patience and state["best_epoch"] and waited >= cfg.train.patience:
        raise TuduiError(f"{run} has gone {counted(waited, 'epoch')}, to epoch {state['epoch']}, without its "
                         f"{cfg.train.monitor} improving (best in epoch {state['best_epoch']}): --patience "
                         f"{cfg.train.patience} would stop it again; to train on, pass a larger --patience (0: "
                         f"never stop early)")


def check_same_data(resumed: Resume, fingerprint: dict[str, list], class_names: list[str], data: str) -> None:
    """Refuse to resume on a data set whose images changed since the run started: the val split
    would be drawn again (perhaps with images already trained on). Other classes are another data
    set, said so. State files from before the fingerprint was kept are let through."""
    saved = resumed.state.get("data")
    if not isinstance(saved, dict) or saved == fingerprint:
        return
    trained = list(read_meta(resumed.run.last).class_names) if resumed.run.last.is_file() else class_names
    if trained != list(class_names):
        raise TuduiError(f"cannot resume {resumed.run} on {data}: its classes ({', '.join(class_names[:6])}"
                         f"{', ...' if len(class_names) > 6 else ''}) are not the run's ({', '.join(trained[:6])}"
                         f"{', ...' if len(trained) > 6 else ''}); to train on it from this run's weights, start a "
                         f"new run:  tudui train --data {data} --weights {resumed.run.last}")
    changes = []
    for split in ("train", "val", "test"):
        old, new = saved.get(split), fingerprint.get(split)
        if old == new:
            continue
        if old is None or new is None:
            changes.append(f"a {split} split it did not have" if old is None else f"no {split} split now")
        elif old[0] != new[0]:
            changes.append(f"{split} {old[0]:,} -> {new[0]:,} images")
        else:
            changes.append(f"other {split} images, as many")
    raise TuduiError(f"cannot resume {resumed.run}: its images have changed since it started "
                     f"({', '.join(changes)}), so the val split would not be the run's; "
                     f"put the files back, or start a new run from its weights:  tudui train --config "
                     f"{resumed.run.config} --weights {resumed.run.last}")


def extended_schedule(state: dict, old_epochs: int, epochs: int, extend: str) -> tuple[tuple[int, int], str]:
    """(the epochs the schedule spans, what changed in words) when a run of old_epochs goes on to
    epochs: stretch lays the schedule again up to the new end, tail keeps it (its last rate holds),
    restart lays a new one over the epochs from the resume point on."""
    saved = state.get("schedule")
    window = (saved[0], saved[1]) if saved else (0, old_epochs)   # state.pt from before windows: the whole run
    if epochs == old_epochs:
        return window, ""
    if extend == "tail":
        return window, (f"--epochs {old_epochs} -> {epochs} with --extend tail: the schedule of epochs "
                        f"{window[0] + 1}-{sum(window)} goes on, its last rate holding")
    if extend == "restart":
        start = state["epoch"]
        return (start, epochs - start), (f"--epochs {old_epochs} -> {epochs} with --extend restart: a new "
                                         f"schedule over epochs {start + 1}-{epochs}")
    return (window[0], epochs - window[0]), (f"--epochs {old_epochs} -> {epochs} with --extend stretch: the "
                                             f"schedule is laid again over epochs {window[0] + 1}-{epochs}")


def _check_optimizer_shapes(saved: dict, optimizer) -> None:
    """Each saved per-parameter buffer (momentum, Adam's averages) has its parameter's shape: one of
    another shape would fail at the first step, after the resume had begun."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    buffers = saved.get("state") if isinstance(saved, dict) else None
    for index, values in (buffers.items() if isinstance(buffers, dict) else ()):
        if not (isinstance(index, int) and 0 <= index < len(params) and isinstance(values, dict)):
            raise TuduiError(f"the saved optimizer state does not fit this run (parameter {shown(index)}); the "
                             f"state file is damaged or from another run")
        for name, value in values.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != params[index].shape:
                raise TuduiError(f"the saved optimizer state does not fit this run ({shown(name)} of parameter "
                                 f"{index} has the shape {tuple(value.shape)}, the parameter "
                                 f"{tuple(params[index].shape)}); the state file is damaged or from another run")


def restore_training(state: dict, model: nn.Module, optimizer, scheduler, averager, scaler) -> None:
    """Put a saved training state back into freshly built parts (the random state comes last);
    a state that does not fit them is a TuduiError."""
    _check_optimizer_shapes(state["optimizer"], optimizer)
    try:
        missing, unexpected = model.load_state_dict(state["model"], strict=False)
        if missing or unexpected:
            raise TuduiError(f"the saved state does not fit the model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if averager is not None and state.get("averager"):
            averager.load_state_dict(state["averager"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        raise TuduiError(f"the saved state does not fit this run ({type(e).__name__}: {shown(str(e))}); "
                         f"the state file is damaged or from another run") from None
