"""tudui.train: the whole training job, as a function that returns its results.

The CLI is a thin layer over it and a notebook calls it directly; tudui.evaluate and the
report a run leaves are in tudui.evaluation.
"""
from __future__ import annotations

import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tudui import __version__
from tudui.checkpoint import (CheckpointHook, restore_rng, restore_training,
                              resume_settings)
from tudui.config import Config, dump_yaml, make_config, to_dict
from tudui.data import BUILTIN_DATASETS, build_dataset, channel_stats, make_loaders, resolve_augment
from tudui.data.loaders import sample_inputs
from tudui.data.validate import drop_unreadable
from tudui.engine.averaging import Lookahead
from tudui.engine.fit import FitOptions, StoppedMidEpoch
from tudui.engine.optim import RunProgress
from tudui.engine import create_optimizer, create_scheduler, fit
from tudui.engine.fit import call_hooks
from tudui.errors import TuduiError
from tudui.interrupts import StopRequest, TrainingInterrupted
from tudui.logging import CSVHook, ProgressHook, TensorBoardHook
from tudui.models import count_parameters, model_entry, preprocess_of
from tudui.models.fastnet import whiten_bias_schedule
from tudui.models.torchvision import freeze_backbone
from tudui.transfer import FreezeSchedule, build_starting_model, check_input_size, trainable_parameters

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished training run produced."""
    run_dir: Path
    best_accuracy: float
    best_epoch: int
    final_accuracy: float
    history: list[dict] = field(default_factory=list)
    best_weights: Path | None = None
    last_weights: Path | None = None
    config: Config | None = None
    report: Path | None = None       # report.html, when it was written


def resolve_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is missing is an error."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TuduiError("--device cuda was asked for, but PyTorch sees no CUDA GPU here "
                         "(use --device auto or cpu)")
    if name == "mps" and not has_mps:
        raise TuduiError("--device mps was asked for, but this machine has no Apple GPU "
                         "(use --device auto or cpu)")
    return torch.device(name)


def data_reference(name: str) -> str:
    """--data as recorded in the weights: folders as absolute paths, so eval works from anywhere."""
    return name if name in BUILTIN_DATASETS else str(Path(name).resolve())


def _triple(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --precision (None: plain fp32)."""
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu" and torch.backends.mkldnn.is_available() \
                and getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
            name = "bf16"
        else:
            name = "fp32"
    if name == "fp16" and device.type == "cpu":
        raise TuduiError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _freeze_note(cfg: Config, model: nn.Module) -> str:
    if cfg.train.freeze_backbone:
        return f"; backbone frozen: {trainable_parameters(model):,} parameters train (the head)"
    if cfg.train.freeze_epochs:
        return (f"; the head alone trains for {cfg.train.freeze_epochs} epoch(s), then every layer "
                f"(the backbone at {cfg.optim.backbone_lr_scale:g}x the rate)")
    return ""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def next_run_dir(project: str, name: str) -> Path:
    """runs/exp, runs/exp2, ... (or NAME, NAME2, ...): never reuses a folder, never loses a run."""
    base = Path(project)
    stem = name or "exp"
    for i in range(1, 100_000):
        candidate = base / (stem if i == 1 else f"{stem}{i}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
        except OSError as e:
            raise TuduiError(f"cannot create run directory {candidate}: {e.strerror}") from None
    raise TuduiError(f"too many runs named {stem!r} in {base}")


def train(config: Config | None = None, config_file: str | Path | None = None,
          progress: bool | None = None, resume: str | Path | None = None, **overrides) -> TrainResult:
    """Train a model from settings; returns the run directory, metrics and weight paths.

    Settings are a Config, or a YAML file and/or keywords named like the CLI flags:
    `tudui.train(data="digits", epochs=5, lr=0.05)`. progress=None shows a bar on a
    terminal or notebook and plain lines elsewhere; False prints nothing (logging only).
    resume="runs/exp" continues that run where it stopped (with the tensor loader, exactly:
    the same weights as if it had never stopped).
    """
    state = None
    if resume is not None:
        run_dir, state, cfg = resume_settings(resume, config, config_file, overrides)
    else:
        cfg = config if config is not None else make_config(config_file, **overrides)
    device = resolve_device(cfg.train.device)
    amp_dtype = resolve_precision(cfg.train.precision, device)
    if device.type == "cuda":
        # Batch shapes repeat every step, so let cuDNN time its algorithms once and keep the fastest.
        torch.backends.cudnn.benchmark = True
    seed_everything(cfg.train.seed)
    spec = build_dataset(cfg.data.name, cfg.data.data_dir, cfg.data.val_split, cfg.train.seed,
                         cfg.data.download)
    spec, skipped_images = drop_unreadable(spec, cfg.data.max_bad_share)
    entry = model_entry(cfg.model.name)
    # The model first: a missing weights file should stop the run before any decoding.
    start = build_starting_model(cfg, len(spec.class_names))
    preprocess = preprocess_of(cfg.model.name, cfg.model.input_size)
    input_size = preprocess["input_size"]
    if not cfg.data.normalize:
        mean, std = None, None
    elif preprocess["mean"] is not None:   # torchvision's models: their weights' statistics
        mean, std = preprocess["mean"], preprocess["std"]
    else:
        mean, std = channel_stats(spec.train, seed=cfg.train.seed)
    augment = resolve_augment(cfg.data.augment, spec.kind, input_size)
    train_loader, test_loader, loader_kind = make_loaders(
        spec, input_size, mean, std, device, batch_size=cfg.data.batch_size,
        choice=cfg.data.loader, workers=cfg.data.workers, augment=augment,
        translate=cfg.data.translate, seed=cfg.train.seed, channels_last=cfg.train.channels_last,
        resize_size=preprocess["resize_size"], interpolation=preprocess["interpolation"])

    model, model_options = start.model.to(device), start.options
    if cfg.model.input_size:
        check_input_size(model, input_size, cfg.model.name, entry.input_size)
    if hasattr(model, "init_whitening") and not cfg.model.weights:
        model.init_whitening(sample_inputs(train_loader, 5000, device))
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    frozen = freeze_backbone(model) if cfg.train.freeze_backbone or cfg.train.freeze_epochs else None
    # Under --freeze-epochs the backbone joins the optimizer now (at its lower rate) and gets
    # gradients when FreezeSchedule releases it; under --freeze-backbone it never does.
    optimizer = create_optimizer(cfg.optim, model, set(frozen.parameters) if cfg.train.freeze_epochs else None)
    progress_clock = RunProgress(len(train_loader) * cfg.train.epochs, cfg.train.time_budget,
                                 state.get("elapsed", 0.0) if state else 0.0)
    scheduler = create_scheduler(cfg.optim, optimizer, len(train_loader), cfg.train.epochs, progress_clock)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing, reduction="none")
    averager = Lookahead(model, progress_clock) if cfg.train.lookahead else None
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and device.type == "cuda" else None
    # Compile a wrapper for the steps, keep the plain module for saving (no _orig_mod. prefixes).
    train_model = torch.compile(model) if cfg.train.compile else model

    if state is None:
        run_dir = next_run_dir(cfg.train.project, cfg.train.name)
    dump_yaml(cfg, run_dir / "config.yaml")
    meta = {"model": cfg.model.name, "num_classes": len(spec.class_names),
            "class_names": spec.class_names, "input_size": input_size,
            "resize_size": preprocess["resize_size"], "interpolation": preprocess["interpolation"],
            "model_options": model_options, "mean": mean, "std": std, "tudui_version": __version__,
            "start": start.start, "pretrained": start.pretrained,
            "data": data_reference(cfg.data.name), "data_dir": str(Path(cfg.data.data_dir).resolve()),
            "config": to_dict(cfg)}
    start_epoch = state["epoch"] if state else 0
    tensorboard = TensorBoardHook(run_dir, cfg.train.log_every, state.get("tensorboard_step", 0) if state else 0)

    def extra_state() -> dict:
        return {"averager": averager.state_dict() if averager else None,
                "scaler": scaler.state_dict() if scaler else None,
                "elapsed": progress_clock.elapsed(), "tensorboard_step": tensorboard.step}

    checkpoints = CheckpointHook(run_dir / "weights", model, optimizer, scheduler, meta,
                                 state["best_accuracy"] if state else -1.0, state["best_epoch"] if state else 0,
                                 extra_state)
    hooks = [CSVHook(run_dir / "metrics.csv", append=state is not None, keep_through=start_epoch),
             tensorboard, checkpoints]
    if cfg.train.freeze_epochs:
        hooks.insert(0, FreezeSchedule(frozen, cfg.train.freeze_epochs))
    if progress is not False:
        hooks.insert(0, ProgressHook(bar=progress))
    show = print if progress is not False else log.info
    stats = f"mean {_triple(mean)} std {_triple(std)}" if mean else "off"
    show(f"data: {spec.source}: {len(spec.train):,} train / {len(spec.test):,} test images, "
         f"{len(spec.class_names)} classes; augment {augment}; normalise {stats}")
    if spec.ignored:
        show(f"data: ignored {', '.join(f'{n} {what}' + 's' * (n != 1) for what, n in spec.ignored.items())}")
    resize = f", resize {preprocess['resize_size']} + centre crop" if preprocess["resize_size"] else ""
    show(f"model: {cfg.model.name} ({count_parameters(model):,} parameters, "
         f"{input_size}x{input_size} input{resize}) on {device}, {cfg.train.precision}; "
         f"loader: {loader_kind}; run directory {run_dir}")
    show(f"start: {start.start}{_freeze_note(cfg, model)}")
    if state is not None:
        restore_training(state, model, optimizer, scheduler, averager, scaler)
        show(f"resuming {run_dir} after epoch {start_epoch}"
             + (f" and {state['step_in_epoch']} steps of epoch {start_epoch + 1}" if state["step_in_epoch"] else "")
             + f" (best so far {state['best_accuracy']:.2%})")
    try:
        with StopRequest() as stop:
            if state is None:
                tensorboard.add_images(next(iter(train_loader))[0], mean, std)
            else:
                restore_rng(state["rng"])   # last: building the model drew from the generators
            options = FitOptions(cfg.train.epochs, len(spec.class_names), amp_dtype, cfg.optim.loss_sum,
                                 cfg.train.tta, cfg.train.eval_every, averager, progress_clock, scaler=scaler,
                                 before_epoch=whiten_bias_schedule(model, cfg.train.whiten_bias_epochs), stop=stop)
            try:
                history = fit(train_model, train_loader, test_loader, optimizer, scheduler, loss_fn, device,
                              options, hooks, start_epoch=start_epoch,
                              start_step=state["step_in_epoch"] if state else 0,
                              partial=(state["partial_loss"], state["partial_images"]) if state else (0.0, 0))
            except StoppedMidEpoch as e:
                checkpoints.save_state(e.epoch - 1, e.steps, e.loss_sum, e.images)
                raise TrainingInterrupted(
                    f"stopped in epoch {e.epoch} after {e.steps} of its {len(train_loader)} steps; the "
                    f"state is saved: resume with  tudui train --resume {run_dir}", stop.requested) from None
        report = None
        if cfg.train.report:
            from tudui.evaluation import run_report  # it imports this module's device helpers
            report = run_report(run_dir, checkpoints.best_path, test_loader, device, spec, cfg, amp_dtype,
                                tensorboard.writer, lambda message: _warn(message, progress is not False))
    except FloatingPointError as e:
        kept = (f"the last good weights are {checkpoints.last_path} (epoch {checkpoints.saved_epoch}); "
                f"resume from them with  tudui train --resume {run_dir} --lr SMALLER"
                if checkpoints.saved_epoch else f"no epoch had finished; the run directory is {run_dir}")
        raise TuduiError(f"{e}; lower --lr (now {cfg.optim.lr}). {kept}") from None
    finally:
        call_hooks(hooks, "close")
    if not history:
        raise TuduiError(f"{run_dir}: nothing left to train")
    result = TrainResult(run_dir, checkpoints.best_accuracy, checkpoints.best_epoch,
                         history[-1]["test_accuracy"], history, checkpoints.best_path,
                         checkpoints.last_path, cfg, report)
    show(f"best test accuracy {result.best_accuracy:.2%} (epoch {result.best_epoch}), "
         f"final {result.final_accuracy:.2%}")
    show(f"run directory: {run_dir}  (weights/best.safetensors, metrics.csv; "
         f"view with: tensorboard --logdir {cfg.train.project})")
    if report is not None:
        show(f"report: {report}  (confusion matrix, mistakes, curves; open it in a browser)")
    if skipped_images:
        _warn(f"{len(skipped_images)} unreadable image(s) were skipped (named in the warnings above)",
              progress is not False)
    return result


def _warn(message: str, to_terminal: bool) -> None:
    if to_terminal:
        print(f"warning: {message}", file=sys.stderr, flush=True)
    else:
        log.warning(message)
