"""The first lines of a training run: the data and its splits, the classes, the model and loader,
the optimizer, where the weights start from (or where the run resumes), and the warnings that
belong there (imbalanced classes, a backbone frozen at random, images much smaller than the input).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from tudui.config import Config
from tudui.data import DatasetSpec
from tudui.data.datasets import typical_side
from tudui.data.transforms import mirror_suits, tta_note
from tudui.engine.distributed import described
from tudui.engine.optim import describe_optimizer
from tudui.models import count_parameters
from tudui.parts import Parts
from tudui.settings import counted, distinct_labels
from tudui.transfer import frozen_at_random, trainable_parameters, upscaled

IMBALANCE_RATIO = 10   # largest class over smallest at which the first lines warn


def announce(parts: Parts) -> None:
    """The run's first lines: data and its splits, model, where it starts from (and where it resumes)."""
    cfg, spec, pre, say = parts.cfg, parts.spec, parts.preprocess, parts.say
    stats = f"mean {_triple(pre.mean)} std {_triple(pre.std)}" if pre.mean else "off"
    small = cfg.train.progressive_epochs
    resize = (f"; progressive resizing: {'epoch 1' if small == 1 else f'epochs 1-{small}'} at "
              f"{cfg.train.progressive_size} px"
              + (" (that share of the time budget)" if cfg.train.time_budget else "")
              if cfg.train.progressive_size else "")
    say(f"data: {spec.source}: {spec.sizes()}, {len(spec.class_names)} classes; augment {parts.augment}{resize}; "
        f"normalise {stats}")
    if spec.ignored:
        say(f"data: ignored {spec.ignored_words()}")
    _announce_classes(parts)
    say(f"splits: {_split_roles(spec, cfg.train.monitor)}")
    resize = f", resize {pre.resize_size} + centre crop" if pre.resize_size else ""
    say(f"model: {cfg.model.arch} ({count_parameters(parts.model):,} parameters, "
        f"{pre.input_size}x{pre.input_size} input{resize}) on {described(parts.runtime)}, {parts.runtime.precision}"
        f"{' (--precision auto)' if cfg.train.precision == 'auto' else ''}; "
        f"loader: {parts.loaders.kind}; run directory {parts.run}{_taken_note(cfg, parts)}")
    say(f"optimizer: {describe_optimizer(cfg.optim, parts.step.optimizer, backbone=bool(cfg.train.freeze_epochs))}")
    mirror = tta_note(cfg.train.tta, mirror_suits(cfg.data.dataset, cfg.data.augment), cfg.data.dataset)
    for warning in (mirror, _unused_flags(cfg, parts)):
        if warning:
            parts.warn(warning)
    if cfg.train.time_budget:
        say(f"time budget: {cfg.train.time_budget:g} s of training, at most {counted(cfg.train.epochs, 'epoch')} "
            f"(--epochs); the schedule follows the clock, or the epochs if they end first; the final "
            f"{'test' if parts.loaders.test is not None else 'val'} pass comes after")
    if parts.resumed is None:
        say(f"start: {parts.start.start}{_freeze_note(cfg, parts.model)}")
        for warning in (frozen_at_random(cfg, parts.start),
                        upscaled(cfg, typical_side(parts.spec.train), parts.preprocess.input_size)):
            if warning:
                parts.warn(warning)
    else:   # the weights, optimizer and position come from state.pt, whatever the run first started from
        at, best = parts.start_at, parts.checkpoints
        so_far = f" (best so far: epoch {best.best_epoch})" if best.best_epoch else ""
        say(f"start: resuming {parts.run} after epoch {at.epoch}"
            + (f" and {at.step} steps of epoch {at.epoch + 1}" if at.step else "") + so_far
            + _freeze_note(cfg, parts.model))


def _unused_flags(cfg: Config, parts: Parts) -> str:
    """A warning for settings that this run cannot use, given all the same, else ""."""
    unused = []
    if cfg.data.workers > 0 and not parts.loaders.kind.startswith("DataLoader"):
        unused.append(f"--workers {cfg.data.workers} (the tensor loader has no worker processes; --loader "
                      f"dataloader uses them)")
    if cfg.train.sync_bn and not parts.runtime.distributed:
        unused.append("--sync-bn (one process: its BatchNorm sees the whole batch already)")
    return f"not used by this run: {'; '.join(unused)}" if unused else ""


def _split_roles(spec: DatasetSpec, monitor: str) -> str:
    """What each split is for in this run, in words."""
    if spec.val is None:
        return ("no val split, so the last epoch is kept; test is measured once, at the end "
                "(--val-split 0.1 holds a val split out of train to pick the best epoch)")
    if spec.test is None:
        return (f"val picks the best epoch (by {monitor}); there is no test split, so the val numbers "
                f"are the ones that chose: expect a little less on new images")
    return f"val picks the best epoch (by {monitor}); test is measured once, at the end, on those weights"


def class_listing(names: list[str], counts: np.ndarray) -> str:
    """Each class with its image count; past 12 classes, the fewest and the most, and the median."""
    order = np.argsort(counts, kind="stable")
    label = distinct_labels([repr(name)[1:-1] for name in names], 20)   # class names, short and on one line
    if len(names) <= 12:
        return ", ".join(f"{label[i]} {counts[i]:,}" for i in range(len(names)))
    if counts[order[0]] == counts[order[-1]]:
        return f"{counts[0]:,} each"
    return (f"{counts[order[0]]:,} ({label[order[0]]}) to {counts[order[-1]]:,} ({label[order[-1]]}), "
            f"median {int(np.median(counts)):,}")


def _announce_classes(parts: Parts) -> None:
    """The training images of each class (the fewest and most when there are many), and a warning
    when the largest class outnumbers the smallest IMBALANCE_RATIO times or more."""
    names = parts.spec.class_names
    counts = np.bincount(np.asarray(parts.spec.train.labels), minlength=len(names))
    evened = [what for what, on in (("batches drawn evenly over the classes (--sampler balanced)",
                                     parts.cfg.data.sampler == "balanced"),
                                    ("the loss weighted by 1/class size (--class-weights auto)",
                                     parts.cfg.optim.class_weights == "auto")) if on]
    parts.say(f"classes (train images): {class_listing(names, counts)}"
              + (f"; {' and '.join(evened)}" if evened else ""))
    if len(evened) == 2:
        parts.warn("--sampler balanced and --class-weights auto each even out the classes; together they "
                   "correct twice, and the small classes then count far more than the large ones did: use one")
    _unmeasured(parts, counts)
    order = np.argsort(counts, kind="stable")
    smallest, largest = counts[order[0]], counts[order[-1]]
    cfg = parts.cfg
    if largest >= IMBALANCE_RATIO * max(smallest, 1) and cfg.optim.class_weights == "none" \
            and cfg.data.sampler == "random":
        parts.warn(f"the classes are imbalanced ({largest:,} vs {smallest:,} training images): accuracy will "
                   f"flatter a model that ignores the small ones (balanced accuracy and macro-F1 do not); "
                   f"--class-weights auto or --sampler balanced let every class count"
                   + (", and --monitor val_balanced_accuracy picks the epoch by them all"
                      if cfg.train.monitor != "val_balanced_accuracy" else ""))


def _unmeasured(parts: Parts, counts: np.ndarray) -> None:
    """A warning for the classes that train has and val or test has none of: that split never
    measures them (a class of one image keeps it for training when val is held out of train)."""
    spec, names = parts.spec, parts.spec.class_names
    final = "test" if spec.test is not None else "val"
    for split in ("val", "test"):
        images = getattr(spec, split)
        if images is None:
            continue
        present = np.bincount(np.asarray(images.labels), minlength=len(names))
        missing = [repr(names[i])[1:-1] for i in range(len(names)) if counts[i] and not present[i]]
        if not missing:
            continue
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5:,} more" if len(missing) > 5 else "")
        one = len(missing) == 1
        role = ("the final numbers (balanced accuracy and macro-F1 too)" if split == final
                else "choosing the kept epoch")
        parts.warn(f"{counted(len(missing), 'class', 'classes')} with training images {'has' if one else 'have'} "
                   f"no {split} images ({shown}): {role} {'leaves' if split != final else 'leave'} "
                   f"{'it' if one else 'them'} out")


def _taken_note(cfg: Config, parts: Parts) -> str:
    """Why the run directory is not the --name asked for: a run of that name exists."""
    name = cfg.train.run_name
    if not name or parts.resumed is not None or parts.run.path.name == name:
        return ""
    return f" ({Path(cfg.train.project) / name} exists)"


def _freeze_note(cfg: Config, model: nn.Module) -> str:
    if cfg.train.freeze_backbone:
        return f"; backbone frozen: {trainable_parameters(model):,} parameters train (the head)"
    if cfg.train.freeze_epochs:
        return (f"; the head alone trains for {counted(cfg.train.freeze_epochs, 'epoch')}, then every layer "
                f"(the backbone at {cfg.optim.backbone_lr_scale:g}x the rate)")
    return ""


def _triple(values) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"
