"""One training epoch and one evaluation pass, as pure functions that return metrics."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
from torch import nn


def train_one_epoch(model: nn.Module, loader: Iterable, loss_fn: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, device: torch.device,
                    on_step: Callable[[float, int, float], None] | None = None) -> dict:
    """Train for one pass over loader; returns mean loss, image count and seconds.

    on_step(loss, batch_size, lr) is called after every optimizer step.
    """
    model.train()
    total_loss, images, start = 0.0, 0, time.perf_counter()
    for inputs, targets in loader:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        loss = loss_fn(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        # .item() is a CPU-GPU sync point; the progress bar needs the value every step anyway.
        value = loss.item()
        if value != value or value in (float("inf"), float("-inf")):
            raise FloatingPointError(f"the training loss became {value}")
        batch = targets.shape[0]
        total_loss += value * batch
        images += batch
        if on_step is not None:
            on_step(value, batch, lr)
    return {"loss": total_loss / max(images, 1), "images": images,
            "seconds": time.perf_counter() - start}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, num_classes: int,
             loss_fn: nn.Module | None = None) -> dict:
    """Loss, top-1 accuracy, per-class accuracy and the confusion matrix (rows: true class)."""
    model.eval()
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    total_loss, count = 0.0, 0
    for inputs, targets in loader:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        logits = model(inputs)
        total_loss += loss_fn(logits, targets).item() * targets.shape[0]
        count += targets.shape[0]
        pairs = (targets * num_classes + logits.argmax(dim=1)).cpu()
        confusion += torch.bincount(pairs, minlength=num_classes ** 2).view(num_classes, num_classes)
    per_class_total = confusion.sum(dim=1).clamp(min=1)
    return {"loss": total_loss / max(count, 1),
            "accuracy": confusion.diag().sum().item() / max(count, 1),
            "per_class_accuracy": (confusion.diag().double() / per_class_total).tolist(),
            "confusion": confusion.tolist(),
            "count": count}
