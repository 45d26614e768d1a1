"""One training epoch and one evaluation pass, as pure functions that return metrics."""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn

from tudui.data.transforms import tta_views


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision for the forward pass when dtype is bfloat16/float16; a no-op for None."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_one_epoch(model: nn.Module, loader: Iterable, loss_fn: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, device: torch.device,
                    on_step: Callable[[float, int, float], None] | None = None,
                    amp_dtype: torch.dtype | None = None, loss_sum: bool = False,
                    after_step: Callable[[], None] | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    sync_every: int | None = None,
                    scaler: torch.amp.GradScaler | None = None,
                    initial: tuple[float, int] = (0.0, 0)) -> dict:
    """Train for one pass over loader; returns mean loss, image count, steps and seconds.

    on_step(loss, batch_size, lr) is called for every optimizer step, after_step() right
    after each step (weight averaging); should_stop() ends the epoch early (a time budget).
    With loss_sum the per-image losses are summed, not averaged, as airbench does.
    initial is (loss sum, images) of steps already taken in this epoch before a resume.
    scaler (float16 training) scales the loss so small gradients survive half precision.
    The losses are read back from the device every sync_every steps (default: every step on
    a CPU, every 32 on a GPU), and on_step is then called for each of them in order.
    """
    if sync_every is None:
        sync_every = 1 if device.type == "cpu" else 32
    model.train()
    (total_loss, images), step, start = initial, 0, time.perf_counter()
    pending: list[tuple[torch.Tensor, int, float]] = []

    def read_back() -> None:
        # Reading a value from the GPU is a sync point: the host waits for every queued step,
        # so it is done for a window of steps at once, not after each one.
        nonlocal total_loss, images
        values = torch.stack([loss for loss, _, _ in pending]).tolist()
        first = step - len(pending) + 1
        for offset, (value, (_, batch, lr)) in enumerate(zip(values, pending)):
            if not math.isfinite(value):
                raise FloatingPointError(f"the training loss became {value} at step {first + offset} "
                                         "of this epoch")
            total_loss += value * batch
            images += batch
            if on_step is not None:
                on_step(value, batch, lr)
        pending.clear()

    for inputs, targets in loader:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            losses = loss_fn(model(inputs), targets)
        loss = losses.sum() if loss_sum else losses.mean()
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        lr = optimizer.param_groups[-1]["lr"]
        scheduler.step()
        if after_step is not None:
            after_step()
        step += 1
        pending.append((losses.detach().float().mean(), targets.shape[0], lr))
        if len(pending) >= sync_every:
            read_back()
        if should_stop is not None and should_stop():
            break
    if pending:
        read_back()
    return {"loss": total_loss / max(images, 1), "loss_sum": total_loss, "images": images,
            "steps": step, "seconds": time.perf_counter() - start}


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor, tta: int = 0,
                   amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The model's logits for a batch, averaged over the test-time views of level tta."""
    logits = None
    for view, weight in tta_views(inputs, tta):
        with autocast(inputs.device, amp_dtype):
            out = model(view).float() * weight
        logits = out if logits is None else logits + out
    return logits


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, num_classes: int, tta: int = 0,
             amp_dtype: torch.dtype | None = None, keep_outputs: bool = False) -> dict:
    """Loss, top-1 and top-5 accuracy, per-class accuracy and the confusion matrix (rows: true class).

    With keep_outputs the result also holds `probabilities` (N, num_classes) and `targets` (N,),
    CPU tensors in the loader's order, for reports (most confident mistakes, PR curves).
    """
    model.eval()
    loss_fn = nn.CrossEntropyLoss()  # plain mean cross-entropy, whatever smoothing training used
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    top_k = min(5, num_classes)
    total_loss, count, top_k_correct = 0.0, 0, 0
    probabilities, all_targets = [], []
    for inputs, targets in loader:
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        logits = predict_logits(model, inputs, tta, amp_dtype)
        total_loss += loss_fn(logits, targets).item() * targets.shape[0]
        count += targets.shape[0]
        pairs = (targets * num_classes + logits.argmax(dim=1)).cpu()
        confusion += torch.bincount(pairs, minlength=num_classes ** 2).view(num_classes, num_classes)
        # Summed on the device and read once at the end: no extra sync point per batch.
        top_k_correct = top_k_correct + (logits.topk(top_k, dim=1).indices == targets[:, None]).any(dim=1).sum()
        if keep_outputs:
            probabilities.append(torch.softmax(logits, dim=1).cpu())
            all_targets.append(targets.cpu())
    per_class_total = confusion.sum(dim=1).clamp(min=1)
    metrics = {"loss": total_loss / max(count, 1),
               "accuracy": confusion.diag().sum().item() / max(count, 1),
               "top5_accuracy": int(top_k_correct) / max(count, 1),
               "per_class_accuracy": (confusion.diag().double() / per_class_total).tolist(),
               "confusion": confusion.tolist(),
               "count": count}
    if keep_outputs:
        metrics["probabilities"] = (torch.cat(probabilities) if probabilities
                                    else torch.zeros(0, num_classes))
        metrics["targets"] = torch.cat(all_targets) if all_targets else torch.zeros(0, dtype=torch.int64)
    return metrics
