"""build: the parts of a training run, made from its settings (and from its saved state on a resume).

The order matters and is kept on purpose: the random generators are seeded first, the model
is built before any image is decoded (a missing weights file stops the run at once), and a
resumed run puts its saved state back into the freshly built parts last.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tudui.announce import announce
from tudui.checkpoint import CheckpointHook, EarlyStopping
from tudui.config import Config
from tudui.config_files import dump_yaml, start_resolved
from tudui.data import (
    BUILTIN_DATASETS,
    DatasetSpec,
    Preprocess,
    build_dataset,
    channel_stats,
    make_loaders,
    resolve_augment,
)
from tudui.data.loaders import Loaders, sample_inputs
from tudui.data.sources import data_reference
from tudui.data.tensor_loaders import ProgressiveResize
from tudui.data.validate import drop_unreadable
from tudui.engine import (
    Hooks,
    ResumePoint,
    RunProgress,
    TrainStep,
    create_optimizer,
    create_scheduler,
)
from tudui.engine.averaging import Lookahead
from tudui.engine.distributed import from_rank_zero, wrap
from tudui.engine.optim import inverse_frequency, scheduled_rates
from tudui.errors import SettingError, TuduiError
from tudui.logging import CSVHook, ProgressHook, TensorBoardHook
from tudui.models import model_entry, preprocess_of
from tudui.models.fastnet import whiten_bias_schedule
from tudui.models.torchvision import FrozenBackbone, freeze_backbone
from tudui.parts import Parts
from tudui.resume import Resume, check_same_data, restore_training
from tudui.rundir import RunDir, RunLock
from tudui.runtime import Runtime, create_runtime, seed_everything
from tudui.transfer import (
    FreezeSchedule,
    StartingModel,
    build_starting_model,
    check_input_size,
)
from tudui.weights import WeightsMeta, read_meta

log = logging.getLogger(__name__)


def build(cfg: Config, resumed: Resume | None, progress: bool | None, trust_pickle: bool = False) -> Parts:
    """The parts of a run for cfg: data, model, optimizer, schedule, averaging, hooks, run directory."""
    runtime = create_runtime(cfg.train.device, cfg.train.precision, for_training=True)
    _check_distributed(cfg, runtime, resumed)
    seed_everything(cfg.train.seed)
    spec, skipped_images, fingerprint, listed = _data(cfg, resumed)
    if cfg.train.patience and spec.val is None:
        raise TuduiError(f"--patience watches the val split, and {spec.source} has none: hold one out with "
                         f"--val-split 0.1")
    # The model first: a missing weights file should stop the run before any decoding.
    start = build_starting_model(cfg, len(spec.class_names), trust_pickle)
    preprocess = _preprocess(cfg, spec) if resumed is None else _resumed_preprocess(cfg, spec, resumed)
    augment = resolve_augment(cfg.data.augment, spec.kind, preprocess.input_size)
    if cfg.train.progressive_size >= preprocess.input_size:   # before any decoding
        raise TuduiError(f"--progressive-size {cfg.train.progressive_size} must be below the input size "
                         f"({preprocess.input_size}): the first epochs train smaller, the rest at the input size")
    loaders = make_loaders(
        spec, preprocess, runtime.device, cfg.data.batch_size, choice=cfg.data.loader,
        workers=cfg.data.workers, augment=augment, translate=cfg.data.translate, seed=cfg.train.seed,
        channels_last=cfg.train.channels_last, sampler=cfg.data.sampler, rank=runtime.rank,
        world_size=runtime.world_size)
    model, frozen = _prepare_model(cfg, start, preprocess, loaders.train, runtime)
    step, clock, averager = _optimization(cfg, model, frozen, spec, len(loaders.train), runtime, resumed)
    resize = _progressive(cfg, model, preprocess, loaders, clock)
    if resumed is not None:   # before the run directory is written to: a state that does not fit changes nothing
        restore_training(resumed.state, model, step.optimizer, step.scheduler, averager, step.scaler)
        if resize is not None:
            resize.load_state_dict(resumed.state.get("progressive"))
    run, lock = _hold_run_dir(cfg, runtime, resumed)
    hooks = None
    try:   # from here on, a failure lets go of the run directory (and closes what was opened)
        if runtime.is_main:
            dump_yaml(_recorded(cfg), run.config)
        meta = WeightsMeta(model=cfg.model.arch, num_classes=len(spec.class_names),
                           class_names=tuple(spec.class_names), preprocess=preprocess,
                           model_options=start.options, config=cfg, start=start.start, pretrained=start.pretrained,
                           data=data_reference(cfg.data.dataset), data_dir=str(Path(cfg.data.data_dir).resolve()),
                           listed=listed)
        # Under torchrun only rank 0 speaks: the others' lines would repeat its own (their errors still show)
        say, warn = _reporters(progress) if runtime.is_main else (log.debug, log.debug)
        checkpoints, early_stopping, tensorboard, hooks = _hooks(
            cfg, run, model, step, averager, clock, meta, frozen, resumed, progress, lock, loaders.val is not None,
            runtime.is_main, resize, fingerprint)
        parts = Parts(cfg=cfg, runtime=runtime, run=run, resumed=resumed, start_at=_start_at(resumed, runtime.rank),
                      spec=spec, skipped_images=skipped_images, preprocess=preprocess, augment=augment, loaders=loaders,
                      start=start, model=model, step=step, averager=averager, clock=clock, checkpoints=checkpoints,
                      early_stopping=early_stopping, tensorboard=tensorboard, hooks=hooks, say=say, warn=warn)
        announce(parts)
        if resumed is not None:
            if resumed.extension:
                say(f"schedule: {resumed.extension}; the learning rate goes on from {rate_now(step):.3g} "
                    f"(--extend stretch, tail or restart chooses)")
        return parts
    except BaseException:
        if hooks is not None:
            hooks("close")
        elif lock is not None:
            lock.release()
        raise


def _data(cfg: Config, resumed: Resume | None) -> tuple[DatasetSpec, list[tuple[str, str]], dict, dict]:
    """The data set without its unreadable images, those images, its fingerprint (which a resumed
    run's must equal), and the fingerprint of its split as listed, before any image was read (which
    the weights keep, so that eval can tell that it has the run's images: see evaluation)."""
    spec = build_dataset(cfg.data.dataset, cfg.data.data_dir, cfg.data.val_split, cfg.train.seed,
                         cfg.data.download)
    listed = spec.fingerprint(sizes=True)
    spec, skipped_images = drop_unreadable(spec, cfg.data.max_bad_share)
    fingerprint = spec.fingerprint()
    if resumed is not None:
        check_same_data(resumed, fingerprint, spec.class_names, cfg.data.dataset)
    return spec, skipped_images, fingerprint, listed


def rate_now(step: TrainStep) -> float:
    """Set each parameter group's rate to what the (rebuilt) schedule says at the saved step, and
    return the first: the restored optimizer holds the old schedule's rate, which a changed
    schedule would otherwise use for one more step."""
    scheduler = step.scheduler
    rates = scheduled_rates(scheduler, scheduler.last_epoch)
    for group, rate in zip(step.optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates   # what get_last_lr() reports; LambdaLR has no public setter
    return rates[0]


def _check_distributed(cfg: Config, runtime: Runtime, resumed: Resume | None) -> None:
    """Refuse what several processes cannot do (yet), before any work: usage mistakes, the same in
    every process (so said by rank 0 alone). (Resuming with another number of processes is fine:
    the saved position counts steps of the global batch.)"""
    if not runtime.distributed:
        return
    processes, batch = runtime.world_size, cfg.data.batch_size
    if batch % processes:
        fits = ", ".join(str(n) for n in range(1, min(batch, 64) + 1) if batch % n == 0)
        raise SettingError(f"--batch-size {batch} is the batch of all {processes} processes together; "
                           + (f"a resume keeps the run's, so resume with a number of processes that divides it "
                              f"({fits})" if resumed is not None else f"make it a multiple of {processes}"))
    # DistributedDataParallel syncs the parameters that train when it is made: a layer that
    # starts or stops training later would fall out of step between the processes.
    if cfg.train.freeze_epochs or cfg.train.whiten_bias_epochs >= 0:
        raise SettingError("--freeze-epochs and --whiten-bias-epochs change which layers train during the run, "
                           "which several processes cannot follow yet; use --freeze-backbone, or one process")
    # Under a time budget each process would read its own clock at the start of an epoch.
    if cfg.train.progressive_size and cfg.train.time_budget:
        raise SettingError("--progressive-size under --time-budget decides each epoch's size by the time spent, "
                           "which several processes cannot agree on yet; give --epochs instead, or use one process")
    if cfg.train.sync_bn and runtime.device.type != "cuda":
        raise SettingError("--sync-bn needs CUDA GPUs: PyTorch's SyncBatchNorm does not run on the CPU; leave it "
                           "out (each process then normalises by its own share of the batch)")


def _hold_run_dir(cfg: Config, runtime: Runtime, resumed: Resume | None) -> tuple[RunDir, RunLock | None]:
    """The run directory (made and held by rank 0 only, its path then told to every process)."""
    run, lock = (resumed.run if resumed is not None else None), None
    if runtime.is_main:
        run = run or RunDir.create(cfg.train.project, cfg.train.run_name)
        lock = run.lock()
    path = from_rank_zero(str(run.path) if runtime.is_main else "")
    return RunDir(Path(path)), lock


def _preprocess(cfg: Config, spec: DatasetSpec) -> Preprocess:
    """The model's preprocessing, normalised by its weights' statistics (torchvision's models), by
    the training set's (tudui's nets), or not at all (--no-normalize)."""
    preprocess = preprocess_of(cfg.model.arch, cfg.model.input_size)
    if not cfg.data.normalize:
        return dataclasses.replace(preprocess, mean=None, std=None)
    if preprocess.mean is not None:
        return preprocess
    mean, std = channel_stats(spec.train, seed=cfg.train.seed)
    return dataclasses.replace(preprocess, mean=mean, std=std)


def _resumed_preprocess(cfg: Config, spec: DatasetSpec, resumed: Resume) -> Preprocess:
    """A resumed run's preprocessing as its weights record it: the training set's statistics are not
    measured again, so photos edited in place since cannot change the normalisation mid-run."""
    if resumed.run.last.is_file():
        recorded = read_meta(resumed.run.last).preprocess
        if (recorded.mean is not None) == cfg.data.normalize:   # else --normalize changed: measured anew
            return recorded
    return _preprocess(cfg, spec)


def _prepare_model(cfg: Config, start: StartingModel, preprocess: Preprocess, train_loader,
                   runtime: Runtime) -> tuple[nn.Module, FrozenBackbone | None]:
    """The starting model on the device: input size checked, whitened, laid out, frozen as asked."""
    model = start.model.to(runtime.device)
    if cfg.model.input_size:
        check_input_size(model, preprocess.input_size, cfg.model.arch, model_entry(cfg.model.arch).input_size)
    if hasattr(model, "init_whitening") and not cfg.model.weights:
        model.init_whitening(sample_inputs(train_loader, 5000, runtime.device))
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if runtime.distributed and cfg.train.sync_bn:   # keeps the parameters, so the optimizer still has them
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    frozen = freeze_backbone(model) if cfg.train.freeze_backbone or cfg.train.freeze_epochs else None
    return model, frozen


def _progressive(cfg: Config, model: nn.Module, preprocess: Preprocess, loaders: Loaders,
                 clock: RunProgress) -> ProgressiveResize | None:
    """The hook that trains the first epochs smaller (--progressive-size), once the loader and the
    model are seen to allow it; None when the run does not ask for it."""
    size = cfg.train.progressive_size
    if not size:
        return None
    if not hasattr(loaders.train, "set_size"):
        raise TuduiError(f"--progressive-size resizes batches on the tensor path, and this run's training "
                         f"loader is {loaders.kind}: use --loader tensor, or leave --progressive-size out")
    check_input_size(model, size, cfg.model.arch, model_entry(cfg.model.arch).input_size,
                     advice="--progressive-size needs a model that pools globally, as fastnet and torchvision's do")
    return ProgressiveResize(loaders.train, size, cfg.train.progressive_epochs / cfg.train.epochs, clock,
                             len(loaders.train))


def _optimization(cfg: Config, model: nn.Module, frozen: FrozenBackbone | None, spec: DatasetSpec,
                  steps_per_epoch: int, runtime: Runtime,
                  resumed: Resume | None) -> tuple[TrainStep, RunProgress, Lookahead | None]:
    """The optimizer step (loss, optimizer, schedule, loss scaler), the run's clock and the averager."""
    # Under --freeze-epochs the backbone joins the optimizer now (at its lower rate) and gets
    # gradients when FreezeSchedule releases it; under --freeze-backbone it never does.
    optimizer = create_optimizer(cfg.optim, model, set(frozen.parameters) if cfg.train.freeze_epochs else None,
                                 compile=cfg.train.compile)
    clock = RunProgress(steps_per_epoch * cfg.train.epochs, cfg.train.time_budget,
                        resumed.state.get("elapsed", 0.0) if resumed is not None else 0.0)
    scheduler = create_scheduler(cfg.optim, optimizer, steps_per_epoch, cfg.train.epochs, clock,
                                 resumed.schedule if resumed is not None else None)
    averager = Lookahead(model, clock) if cfg.train.lookahead else None
    scaler = torch.amp.GradScaler("cuda") if runtime.amp_dtype == torch.float16 \
        and runtime.device.type == "cuda" else None
    # Compile a wrapper for the steps, keep the plain module for saving (no _orig_mod. prefixes).
    weights = None
    if cfg.optim.class_weights == "auto":
        weights = inverse_frequency(spec.train.labels, len(spec.class_names)).to(runtime.device)
    trained = wrap(model, runtime)   # DistributedDataParallel under torchrun, else the model itself
    if cfg.train.compile:   # progressive resizing gives two input sizes: a graph for each, not one for any shape
        trained = torch.compile(trained, dynamic=False if cfg.train.progressive_size else None)
    step = TrainStep(model=trained,
                     loss_fn=nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.optim.label_smoothing,
                                                 reduction="none"),
                     optimizer=optimizer, scheduler=scheduler, runtime=runtime, loss_sum=cfg.optim.loss_sum,
                     scaler=scaler)
    return step, clock, averager


def _hooks(cfg: Config, run: RunDir, model: nn.Module, step: TrainStep, averager: Lookahead | None,
           clock: RunProgress, meta: WeightsMeta, frozen: FrozenBackbone | None, resumed: Resume | None,
           progress: bool | None, lock: RunLock | None, has_val: bool, writes: bool,
           resize: ProgressiveResize | None,
           fingerprint: dict) -> tuple[CheckpointHook, EarlyStopping | None, TensorBoardHook | None, Hooks]:
    """The checkpoint, early-stopping and TensorBoard hooks, and every hook in the order they hear
    each event. Only the process that writes (rank 0) prints and has the writers; every process
    keeps the choice of the best epoch, so that all of them stop early together."""
    state = resumed.state if resumed is not None else {}
    tensorboard = TensorBoardHook(run.path, cfg.train.log_every, state.get("tensorboard_step", 0)) if writes else None

    def extra_state() -> dict:
        return {"averager": averager.state_dict() if averager else None,
                "scaler": step.scaler.state_dict() if step.scaler else None, "world_size": step.runtime.world_size,
                "elapsed": clock.elapsed(), "tensorboard_step": tensorboard.step if tensorboard else 0,
                "schedule": list(resumed.schedule if resumed is not None else (0, cfg.train.epochs)),
                "epochs": cfg.train.epochs, "data": fingerprint,   # what a resume checks against
                "progressive": resize.state_dict() if resize is not None else None}

    checkpoints = CheckpointHook(run, model, step.optimizer, step.scheduler, meta, monitor=cfg.train.monitor,
                                 has_val=has_val, best_score=state.get("best_score", -math.inf),
                                 best_epoch=state.get("best_epoch", 0), writes=writes,
                                 best_val_accuracy=state.get("best_val_accuracy"), extra_state=extra_state,
                                 best_tiebreak=state.get("best_tiebreak", -math.inf))
    early_stopping = (EarlyStopping(checkpoints, cfg.train.patience, after=cfg.train.freeze_epochs)
                      if cfg.train.patience else None)
    hooks = [
        ProgressHook(bar=progress, has_val=has_val) if progress is not False and writes else None,
        FreezeSchedule(frozen, cfg.train.freeze_epochs) if cfg.train.freeze_epochs else None,
        whiten_bias_schedule(model, cfg.train.whiten_bias_epochs),
        resize,
        averager,   # before the writers: at the end of training it puts the averaged weights in
        CSVHook(run.metrics, append=resumed is not None, keep_through=state.get("epoch", 0)) if writes else None,
        tensorboard,
        checkpoints,
        early_stopping,   # after the checkpoints: it reads which epoch is the best
        lock,       # closed last: the run directory is let go once everything is written
    ]
    return checkpoints, early_stopping, tensorboard, Hooks(hook for hook in hooks if hook is not None)


def _start_at(resumed: Resume | None, rank: int) -> ResumePoint:
    if resumed is None:
        return ResumePoint()
    state = resumed.state
    # The saved partial loss is the sum over every process: one of them carries it on.
    first = rank == 0
    # partial_seconds: absent from state files written before it was recorded; a value that is no duration: 0.
    seconds = state.get("partial_seconds", 0.0)
    seconds = float(seconds) if isinstance(seconds, (int, float)) and 0 <= seconds < math.inf else 0.0
    return ResumePoint(epoch=state["epoch"], step=state["step_in_epoch"],
                       loss_sum=state["partial_loss"] if first else 0.0, images=state["partial_images"] if first else 0,
                       seconds=seconds)


def _recorded(cfg: Config) -> Config:
    """cfg as config.yaml keeps it: a data folder, archive or list, torchvision's data folder and the
    starting weights (--weights, --weights-file) as absolute paths, so that `--config RUN/config.yaml`
    repeats the run from any folder."""
    data, model = cfg.data, cfg.model
    changes = {"dataset": data_reference(data.dataset)}
    if data.dataset in BUILTIN_DATASETS and data.dataset not in ("digits", "synthetic"):
        changes["data_dir"] = str(Path(data.data_dir).resolve())
    return dataclasses.replace(cfg, data=dataclasses.replace(data, **changes), model=start_resolved(model))




def _reporters(progress: bool | None) -> tuple[Callable[[str], None], Callable[[str], None]]:
    """(say, warn): printed on the terminal, or logged when progress is False."""
    if progress is False:
        return log.info, log.warning
    return print, lambda message: print(f"warning: {message}", file=sys.stderr, flush=True)
