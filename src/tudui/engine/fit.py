"""fit: epochs of train_one_epoch + evaluate, reporting to hooks (which do all the I/O)."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tudui.engine.loop import evaluate, train_one_epoch


def call_hooks(hooks: Sequence[object], event: str, *args) -> None:
    """Call hook.event(*args) on every hook that defines it (see tudui.logging.Hook)."""
    for hook in hooks:
        method = getattr(hook, event, None)
        if method is not None:
            method(*args)


@dataclass
class FitOptions:
    """How to run the epochs (everything but what is trained and on what)."""
    epochs: int
    num_classes: int
    amp_dtype: torch.dtype | None = None
    loss_sum: bool = False
    tta: int = 0
    eval_every: int = 1          # 0: only after the last epoch
    averager: object | None = None   # Lookahead, or None
    progress: object | None = None   # RunProgress: its time budget can end the run early
    scaler: torch.amp.GradScaler | None = None  # loss scaling for float16 on a GPU
    before_epoch: Callable[[int], None] | None = None  # changes to the model per epoch (freezing)
    stop: Callable[[], bool] | None = None  # True once the run must stop at a batch boundary (a signal)


class StoppedMidEpoch(Exception):
    """fit stopped on options.stop: `epoch` is the epoch cut short after `steps` of its steps."""

    def __init__(self, epoch: int, steps: int, loss_sum: float, images: int):
        super().__init__(f"stopped in epoch {epoch} after {steps} steps")
        self.epoch, self.steps, self.loss_sum, self.images = epoch, steps, loss_sum, images


def fit(model: nn.Module, train_loader, test_loader, optimizer: torch.optim.Optimizer, scheduler,
        loss_fn: nn.Module, device: torch.device, options: FitOptions,
        hooks: Sequence[object] = (), start_epoch: int = 0, start_step: int = 0,
        partial: tuple[float, int] = (0.0, 0)) -> list[dict]:
    """Train from start_epoch to options.epochs, evaluating as asked; one metrics row per epoch.

    Rows of epochs without an evaluation have None for the test metrics. A resumed run
    passes start_step (steps of epoch start_epoch + 1 already taken) and their (loss sum,
    images); the loader then skips those batches. When options.stop() turns true, the epoch
    ends at the next batch boundary and StoppedMidEpoch says where.
    """
    history: list[dict] = []
    steps = len(train_loader)
    if options.progress is not None:
        options.progress.start()
    out_of_time = options.progress.out_of_time if options.progress is not None else None
    checks = [check for check in (options.stop, out_of_time) if check is not None]
    should_stop = (lambda: any(check() for check in checks)) if checks else None
    after_step = options.averager.after_step if options.averager is not None else None
    for epoch in range(start_epoch + 1, options.epochs + 1):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch - 1)
        if options.before_epoch is not None:
            options.before_epoch(epoch)
        resumed = epoch == start_epoch + 1 and start_step > 0
        skip, initial = (start_step, partial) if resumed else (0, (0.0, 0))
        if skip:
            train_loader.skip(skip)
        call_hooks(hooks, "on_epoch_start", epoch, options.epochs, steps)
        lr = optimizer.param_groups[-1]["lr"]  # the rate this epoch starts at, for the CSV
        start = time.perf_counter()
        train = train_one_epoch(model, train_loader, loss_fn, optimizer, scheduler, device,
                                on_step=lambda loss, n, step_lr: call_hooks(hooks, "on_step", loss, n, step_lr),
                                amp_dtype=options.amp_dtype, loss_sum=options.loss_sum,
                                after_step=after_step, should_stop=should_stop, scaler=options.scaler,
                                initial=initial)
        if options.stop is not None and options.stop():
            raise StoppedMidEpoch(epoch, skip + train["steps"], train["loss_sum"], train["images"])
        last = epoch == options.epochs or (out_of_time is not None and out_of_time())
        if last and options.averager is not None:
            options.averager.finish()
        test = None
        if last or (options.eval_every and epoch % options.eval_every == 0):
            test = evaluate(model, test_loader, device, options.num_classes, options.tta, options.amp_dtype)
        row = {"epoch": epoch, "train_loss": train["loss"],
               "test_loss": test["loss"] if test else None,
               "test_accuracy": test["accuracy"] if test else None, "lr": lr,
               "seconds": time.perf_counter() - start, "train_seconds": train["seconds"],
               "images_per_s": (train["images"] - initial[1]) / max(train["seconds"], 1e-9)}
        history.append(row)
        call_hooks(hooks, "on_epoch_end", row, test)
        if last:
            break
    return history
