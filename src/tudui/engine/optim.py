"""Optimizers and learning-rate schedules from OptimConfig."""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from tudui.config import OptimConfig


def create_optimizer(cfg: OptimConfig, model: nn.Module,
                     backbone: set[nn.Parameter] | None = None) -> torch.optim.Optimizer:
    """SGD or AdamW over model's trainable parameters and those in backbone.

    BatchNorm biases get bias_lr_scale times the rate (airbench's bias_scaler); the
    parameters in backbone (a fine-tune's pretrained layers, frozen for now perhaps) get
    backbone_lr_scale times it. Frozen parameters have no gradient, so steps skip them.
    """
    backbone = backbone or set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad or p in backbone:
                is_norm = isinstance(module, nn.modules.batchnorm._NormBase) and name == "bias"
                groups.setdefault((is_norm, p in backbone), []).append(p)
    param_groups = []
    # Norm biases first and the backbone before the head, so param_groups[-1] is the head's
    # ordinary group: the rate fit reports.
    for is_norm, in_backbone in sorted(groups, key=lambda k: (not k[0], not k[1])):
        lr, decay = cfg.lr, cfg.weight_decay
        if is_norm:
            lr, decay = lr * cfg.bias_lr_scale, decay / cfg.bias_lr_scale
        if in_backbone:
            lr *= cfg.backbone_lr_scale
        param_groups.append({"params": groups[(is_norm, in_backbone)], "lr": lr, "weight_decay": decay})
    if cfg.name == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr)
    return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum,
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
