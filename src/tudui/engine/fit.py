"""fit: epochs of train_one_epoch + evaluate, told to hooks (which do all the I/O)."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tudui.engine.distributed import sum_across
from tudui.engine.hooks import Hooks
from tudui.engine.loop import TrainStep, evaluate, train_one_epoch
from tudui.engine.optim import RunProgress, scheduled_rates
from tudui.scores import top5_tells


@dataclass(frozen=True, kw_only=True)
class FitOptions:
    """How to run the epochs (everything but what is trained and on what)."""
    epochs: int
    num_classes: int
    tta: int = 0
    tta_mirror: bool = True                   # test-time views may mirror (data.transforms.mirror_suits)
    eval_every: int = 1                       # 0: only after the last epoch
    clock: RunProgress | None = None          # its time budget can end the run early
    stop: Callable[[], bool] | None = None    # True once the run must stop at a batch boundary (a signal)
    # With several processes: a flag becomes the same decision in every process (any of them).
    # Every decision to stop goes through it, so that all processes take the same steps.
    agree: Callable[[bool], bool] | None = None


@dataclass(frozen=True, kw_only=True)
class ResumePoint:
    """Where training starts: after `epoch` finished epochs and `step` steps of the next, whose
    losses summed to loss_sum over `images` images in `seconds` of training."""
    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    images: int = 0
    seconds: float = 0.0


class StoppedMidEpoch(Exception):
    """fit stopped on options.stop; `at` is where to resume (in the epoch that was cut short)."""

    def __init__(self, at: ResumePoint):
        super().__init__(f"stopped in epoch {at.epoch + 1} after {at.step} steps")
        self.at = at


def fit(step: TrainStep, train_loader, val_loader, options: FitOptions, hooks: Hooks,
        start: ResumePoint = ResumePoint()) -> list[dict]:
    """Train from start to options.epochs, evaluating on val as asked; one metrics row per epoch.

    Rows of epochs without an evaluation (or of a run without a val split: val_loader None)
    have None for the val metrics. A resumed run's loader skips the steps start says were
    taken. When options.stop() turns true, the epoch ends at the next batch boundary and
    StoppedMidEpoch says where. A hook whose stop_reason() gives a reason (early stopping)
    ends the run after that epoch.
    """
    history: list[dict] = []
    if options.clock is not None:
        options.clock.start()
    out_of_time = options.clock.out_of_time if options.clock is not None else None
    agree = options.agree or (lambda flag: flag)
    checks = [check for check in (options.stop, out_of_time) if check is not None]
    should_stop = (lambda: agree(any(check() for check in checks))) if checks else None
    for epoch in range(start.epoch + 1, options.epochs + 1):
        resumed = start if epoch == start.epoch + 1 else ResumePoint(epoch=epoch - 1)
        train = _train_epoch(step, train_loader, options, hooks, resumed, should_stop)
        if options.agree is not None:   # several processes: the epoch's loss and images of all of them
            loss_sum, images = sum_across(torch.tensor([train["loss_sum"], float(train["images"])],
                                                       dtype=torch.float64, device=step.runtime.device)).tolist()
            train = {**train, "loss_sum": loss_sum, "images": int(images), "loss": loss_sum / max(images, 1)}
        if options.stop is not None and agree(options.stop()):
            raise StoppedMidEpoch(ResumePoint(epoch=epoch - 1, step=resumed.step + train["steps"],
                                              loss_sum=train["loss_sum"], images=train["images"],
                                              seconds=resumed.seconds + train["seconds"]))
        spent = out_of_time is not None and agree(out_of_time())
        last = epoch == options.epochs or spent
        if last:
            hooks("on_train_end")
        val = None
        if val_loader is not None and (last or (options.eval_every and epoch % options.eval_every == 0)):
            val = evaluate(step.model, val_loader, step.runtime.device, options.num_classes, options.tta,
                           step.runtime.amp_dtype, distributed=options.agree is not None, mirror=options.tta_mirror)
        row = {"epoch": epoch, "train_loss": train["loss"],
               "val_loss": val["loss"] if val else None,
               "val_accuracy": val["accuracy"] if val else None,
               "val_top5": val["top5_accuracy"] if val and top5_tells(options.num_classes) else None,
               "val_balanced_accuracy": val["balanced_accuracy"] if val else None,
               "lr": train["lr"],
               # A resumed epoch's times include the part trained before the stop; its rate is this part's.
               "seconds": resumed.seconds + time.perf_counter() - train["started"],
               "train_seconds": resumed.seconds + train["seconds"],
               "images_per_s": _rate(train, resumed),
               "time_budget_spent": spent}
        history.append(row)
        hooks("on_epoch_end", row, val)
        if last or any(reason() for reason in hooks.handlers("stop_reason")):
            break
    if options.clock is not None:
        options.clock.stop()
    return history


def _rate(train: dict, resumed: ResumePoint) -> float:
    """Images per second of this part of the epoch; of the whole epoch when this part trained none
    (stopped after the epoch's last step, resumed only to evaluate and save it)."""
    if train["images"] > resumed.images:
        return (train["images"] - resumed.images) / max(train["seconds"], 1e-9)
    return train["images"] / max(resumed.seconds + train["seconds"], 1e-9)


def _train_epoch(step: TrainStep, train_loader, options: FitOptions, hooks: Hooks, at: ResumePoint,
                 should_stop: Callable[[], bool] | None) -> dict:
    """The training half of epoch at.epoch + 1, from step at.step; adds the rate it started at
    (for the CSV) and when it started to train_one_epoch's result."""
    epoch = at.epoch + 1
    if hasattr(train_loader, "set_epoch"):
        train_loader.set_epoch(epoch - 1)
    if at.step:
        train_loader.skip(at.step)
    hooks("on_epoch_start", epoch, options.epochs, len(train_loader))
    lr = step.optimizer.param_groups[-1]["lr"]
    scheduler = step.scheduler
    if at.step and getattr(options.clock, "time_budget", 0) <= 0 and hasattr(scheduler, "lr_lambdas"):
        # Resumed mid-epoch: the epoch's row gives the rate at its first step, as an uninterrupted run's does.
        lr = scheduled_rates(scheduler, scheduler.last_epoch - at.step)[-1]
    started = time.perf_counter()
    train = train_one_epoch(step, train_loader, hooks, should_stop, initial=(at.loss_sum, at.images))
    return {**train, "lr": lr, "started": started}
