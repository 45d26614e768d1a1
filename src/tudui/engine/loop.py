"""One training epoch and one evaluation pass, as functions that return metrics (no I/O)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from tudui.data.transforms import tta_views
from tudui.engine.distributed import sum_across
from tudui.engine.hooks import Hooks
from tudui.runtime import Runtime, autocast
from tudui.scores import class_metrics


@dataclass(kw_only=True)
class TrainStep:
    """What one optimizer step needs: the model, its loss, the optimizer and its schedule.

    With loss_sum the per-image losses are summed, not averaged, as airbench does. scaler
    (float16 training) scales the loss so small gradients survive half precision.
    """
    model: nn.Module
    loss_fn: nn.Module          # per-image losses (reduction="none")
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    runtime: Runtime
    loss_sum: bool = False
    scaler: torch.amp.GradScaler | None = None

    def __call__(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Take one step on a batch; returns (mean loss on the device, the rate the step used)."""
        inputs = inputs.to(self.runtime.device, non_blocking=True)
        targets = targets.to(self.runtime.device, non_blocking=True)
        with self.runtime.autocast():
            losses = self.loss_fn(self.model(inputs), targets)
        loss = losses.sum() if self.loss_sum else losses.mean()
        if self.loss_sum and self.runtime.distributed:
            # DistributedDataParallel averages the processes' gradients: a summed loss becomes the
            # sum over the whole batch again when each process's part counts world_size times.
            loss = loss * self.runtime.world_size
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        lr = self.optimizer.param_groups[-1]["lr"]
        self.scheduler.step()
        return losses.detach().float().mean(), lr


class _LossWindow:
    """Losses kept on the device and read back a window at a time.

    Reading a value from the GPU is a sync point: the host waits for every queued step, so it
    is done for a window of steps at once, not after each one; on_step then hears of each step
    in order.
    """

    def __init__(self, on_step: list[Callable], initial: tuple[float, int]):
        self.on_step = on_step
        self.total_loss, self.images = initial
        self.pending: list[tuple[torch.Tensor, int, float]] = []
        self.steps = 0

    def add(self, loss: torch.Tensor, batch_size: int, lr: float) -> None:
        self.steps += 1
        self.pending.append((loss, batch_size, lr))

    def read_back(self) -> None:
        if not self.pending:
            return
        values = torch.stack([loss for loss, _, _ in self.pending]).tolist()
        first = self.steps - len(self.pending) + 1
        for offset, (value, (_, batch_size, lr)) in enumerate(zip(values, self.pending)):
            if not math.isfinite(value):
                raise FloatingPointError(f"the training loss became {value} at step {first + offset} "
                                         "of this epoch")
            self.total_loss += value * batch_size
            self.images += batch_size
            for handler in self.on_step:
                handler(value, batch_size, lr)
        self.pending.clear()


def train_one_epoch(step: TrainStep, loader: Iterable, hooks: Hooks | None = None,
                    should_stop: Callable[[], bool] | None = None, initial: tuple[float, int] = (0.0, 0),
                    sync_every: int | None = None) -> dict:
    """Train for one pass over loader; returns mean loss, loss sum, image count, steps and seconds.

    Hooks hear on_optimizer_step right after every step and on_step(loss, batch_size, lr) for
    each step when its loss is read back: every sync_every steps (default: every step on a CPU,
    every 32 on a GPU). should_stop() ends the epoch early (a signal, a time budget). initial is
    (loss sum, images) of steps already taken in this epoch before a resume.
    """
    hooks = hooks or Hooks()
    if sync_every is None:
        sync_every = 1 if step.runtime.device.type == "cpu" else 32
    step.model.train()
    after_step = hooks.handlers("on_optimizer_step")
    window, start = _LossWindow(hooks.handlers("on_step"), initial), time.perf_counter()
    for inputs, targets in loader:
        loss, lr = step(inputs, targets)
        for handler in after_step:
            handler()
        window.add(loss, targets.shape[0], lr)
        if len(window.pending) >= sync_every:
            window.read_back()
        if should_stop is not None and should_stop():
            break
    window.read_back()
    return {"loss": window.total_loss / max(window.images, 1), "loss_sum": window.total_loss,
            "images": window.images, "steps": window.steps, "seconds": time.perf_counter() - start}


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor, tta: int = 0,
                   amp_dtype: torch.dtype | None = None, mirror: bool = True) -> torch.Tensor:
    """The model's logits for a batch, averaged over the test-time views of level tta (mirrored
    ones only with mirror: see data.transforms.mirror_suits)."""
    logits = None
    for view, weight in tta_views(inputs, tta, mirror):
        with autocast(inputs.device, amp_dtype):
            out = model(view).float() * weight
        logits = out if logits is None else logits + out
    return logits


def class_balanced(confusion: torch.Tensor) -> dict:
    """Balanced accuracy (the mean recall of the classes present), macro-F1 (the mean F1 of the
    classes present) and each class's accuracy (None for a class without images here: not
    measured, rather than 0 %), from a confusion matrix whose rows are the true classes. Each
    class counts the same, however many images it has: accuracy alone flatters a model that
    ignores a rare class."""
    columns = class_metrics(confusion.cpu().numpy())
    recall = [value for value in columns["recall"] if value is not None]
    f1 = [value for value in columns["f1"] if value is not None]
    return {"balanced_accuracy": sum(recall) / len(recall) if recall else 0.0,
            "macro_f1": sum(f1) / len(f1) if f1 else 0.0,
            "per_class_accuracy": columns["accuracy"]}


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, num_classes: int, tta: int = 0,
             amp_dtype: torch.dtype | None = None, keep_outputs: bool = False, distributed: bool = False,
             mirror: bool = True) -> dict:
    """Loss, top-1 and top-5 accuracy, per-class accuracy and the confusion matrix (rows: true class).

    With keep_outputs the result also holds `probabilities` (N, num_classes) and `targets` (N,),
    CPU tensors in the loader's order, for reports (most confident mistakes, PR curves). With
    distributed, each process measures its share of the split and the counts are summed, so
    every process gets the numbers of the whole split.
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
        logits = predict_logits(model, inputs, tta, amp_dtype, mirror)
        total_loss += loss_fn(logits, targets).item() * targets.shape[0]
        count += targets.shape[0]
        pairs = (targets * num_classes + logits.argmax(dim=1)).cpu()
        confusion += torch.bincount(pairs, minlength=num_classes ** 2).view(num_classes, num_classes)
        # Summed on the device and read once at the end: no extra sync point per batch.
        top_k_correct = top_k_correct + (logits.topk(top_k, dim=1).indices == targets[:, None]).any(dim=1).sum()
        if keep_outputs:
            probabilities.append(torch.softmax(logits, dim=1).cpu())
            all_targets.append(targets.cpu())
    if distributed:
        totals = sum_across(torch.cat([torch.tensor([total_loss, count], dtype=torch.float64),
                                       torch.as_tensor(top_k_correct, dtype=torch.float64).view(1).cpu(),
                                       confusion.double().flatten()]).to(device))
        total_loss, count, top_k_correct = totals[0].item(), int(totals[1].item()), int(totals[2].item())
        confusion = totals[3:].round().long().view(num_classes, num_classes).cpu()
    metrics = {"loss": total_loss / max(count, 1),
               "accuracy": confusion.diag().sum().item() / max(count, 1),
               "top5_accuracy": int(top_k_correct) / max(count, 1),
               **class_balanced(confusion),
               "confusion": confusion.tolist(),
               "count": count}
    if keep_outputs:
        metrics["probabilities"] = (torch.cat(probabilities) if probabilities
                                    else torch.zeros(0, num_classes))
        metrics["targets"] = torch.cat(all_targets) if all_targets else torch.zeros(0, dtype=torch.int64)
    return metrics
