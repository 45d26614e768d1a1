"""fit: epochs of train_one_epoch + evaluate, reporting to hooks (which do all the I/O)."""
from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from tudui.engine.loop import evaluate, train_one_epoch


def call_hooks(hooks: Sequence[object], event: str, *args) -> None:
    """Call hook.event(*args) on every hook that defines it (see tudui.logging.Hook)."""
    for hook in hooks:
        method = getattr(hook, event, None)
        if method is not None:
            method(*args)


def fit(model: nn.Module, train_loader, test_loader, optimizer: torch.optim.Optimizer, scheduler,
        loss_fn: nn.Module, epochs: int, device: torch.device, num_classes: int,
        hooks: Sequence[object] = (), start_epoch: int = 0) -> list[dict]:
    """Train from start_epoch to epochs, evaluating after each; returns one metrics row per epoch."""
    history: list[dict] = []
    steps = len(train_loader)
    for epoch in range(start_epoch + 1, epochs + 1):
        call_hooks(hooks, "on_epoch_start", epoch, epochs, steps)
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch starts at, for the CSV
        start = time.perf_counter()
        train = train_one_epoch(model, train_loader, loss_fn, optimizer, scheduler, device,
                                on_step=lambda loss, n, step_lr: call_hooks(hooks, "on_step", loss, n, step_lr))
        test = evaluate(model, test_loader, device, num_classes, loss_fn)
        row = {"epoch": epoch, "train_loss": train["loss"], "test_loss": test["loss"],
               "test_accuracy": test["accuracy"], "lr": lr,
               "seconds": time.perf_counter() - start,
               "images_per_s": train["images"] / max(train["seconds"], 1e-9)}
        history.append(row)
        call_hooks(hooks, "on_epoch_end", row, test)
    return history
