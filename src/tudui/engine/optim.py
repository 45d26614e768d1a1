"""Optimizers and learning-rate schedules from OptimConfig."""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from tudui.config import OptimConfig


def create_optimizer(cfg: OptimConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or AdamW; BatchNorm biases get bias_lr_scale times the rate (airbench's bias_scaler)."""
    norm_biases, others = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad:
                is_norm = isinstance(module, nn.modules.batchnorm._NormBase) and name == "bias"
                (norm_biases if is_norm else others).append(p)
    groups = [{"params": others, "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
    if norm_biases:
        scale = cfg.bias_lr_scale
        groups.insert(0, {"params": norm_biases, "lr": cfg.lr * scale, "weight_decay": cfg.weight_decay / scale})
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_factor(progress: float, warmup: float, schedule: str, final: float = 0.0) -> float:
    """The multiple of the peak learning rate at progress (0 to 1 through the run).

    A linear warm-up over the first `warmup` share of the run, then the schedule down to final.
    """
    if progress < warmup:
        return progress / warmup
    if schedule == "constant":
        return 1.0
    rest = min((progress - warmup) / max(1e-12, 1.0 - warmup), 1.0)
    if schedule == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * rest))
    return 1.0 - (1.0 - final) * rest  # linear


class RunProgress:
    """How far through the run a step is: by steps, or by wall time under a time budget."""

    def __init__(self, total_steps: int, time_budget: float = 0.0):
        self.total_steps, self.time_budget = max(total_steps, 1), time_budget
        self.started: float | None = None

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def __call__(self, step: int) -> float:
        if self.time_budget > 0 and self.started is not None:
            return min((time.perf_counter() - self.started) / self.time_budget, 1.0)
        return min(step / self.total_steps, 1.0)

    def out_of_time(self) -> bool:
        return self.time_budget > 0 and self.started is not None and self(0) >= 1.0


def create_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                     epochs: int, progress: RunProgress | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule over the whole run (stepped after every optimizer step)."""
    progress = progress or RunProgress(steps_per_epoch * epochs)
    # Warm-up is given in epochs; as a share of the run it is the same under a time budget.
    warmup = min(cfg.warmup_epochs / epochs, 1.0)

    def factor(step: int) -> float:
        done = progress(step)
        if done < warmup:  # count the step being taken, so the first one is not at rate zero
            done = progress(step + 1)
        return lr_factor(done, warmup, cfg.schedule, cfg.final_lr)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
