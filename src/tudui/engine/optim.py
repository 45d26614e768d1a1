"""Optimizers and learning-rate schedules from OptimConfig."""
from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.optim.sgd import sgd as sgd_arithmetic

from tudui.config import OptimConfig


def create_optimizer(cfg: OptimConfig, model: nn.Module, backbone: set[nn.Parameter] | None = None,
                     compile: bool = False) -> torch.optim.Optimizer:
    """SGD, AdamW or Muon over model's trainable parameters and those in backbone.

    BatchNorm biases get bias_lr_scale times the rate (airbench's bias_scaler); the
    parameters in backbone (a fine-tune's pretrained layers, frozen for now perhaps) get
    backbone_lr_scale times it. Frozen parameters have no gradient, so steps skip them.
    With muon, convolution filters are trained by Muon and everything else by SGD (compile:
    Muon's Newton-Schulz iteration through torch.compile).
    """
    backbone = backbone or set()
    groups: dict[tuple[bool, bool, bool], list[nn.Parameter]] = {}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.requires_grad or p in backbone:
                is_norm = isinstance(module, nn.modules.batchnorm._NormBase) and name == "bias"
                is_filter = cfg.optimizer == "muon" and p.ndim == 4
                groups.setdefault((is_filter, is_norm, p in backbone), []).append(p)
    param_groups = []
    # Filters, then norm biases, and the backbone before the head, so param_groups[-1] is the
    # head's ordinary group: the rate fit reports.
    for key in sorted(groups, key=lambda k: (not k[0], not k[1], not k[2])):
        is_filter, is_norm, in_backbone = key
        lr, decay, extra = cfg.lr, cfg.weight_decay, {}
        if is_filter:
            lr, decay, extra = cfg.muon_lr, 0.0, {"momentum": cfg.muon_momentum, "muon": True,
                                                  "ns_steps": cfg.muon_steps}
        elif is_norm:
            lr, decay = lr * cfg.bias_lr_scale, decay / cfg.bias_lr_scale
        if in_backbone:
            lr *= cfg.backbone_lr_scale
        param_groups.append({"params": groups[key], "lr": lr, "weight_decay": decay, **extra})
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr)
    nesterov = cfg.nesterov and cfg.momentum > 0
    if cfg.optimizer == "muon":
        return MuonWithSGD([{"momentum": cfg.momentum, **g} for g in param_groups], nesterov=nesterov,
                           compile=compile)
    return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)


def describe_optimizer(cfg: OptimConfig, optimizer: torch.optim.Optimizer, backbone: bool = False) -> str:
    """The optimizer in one line, as create_optimizer made it (backbone: with a backbone group):
    what trains which parameters, at which rate, and the schedule (for the run's first lines)."""
    def count(muon: bool) -> int:
        return sum(p.numel() for g in optimizer.param_groups if bool(g.get("muon")) == muon for p in g["params"])

    momentum = f", {'Nesterov ' if cfg.nesterov else ''}momentum {cfg.momentum:g}" if cfg.momentum else ""
    settings = f"lr {cfg.lr:g}{'' if cfg.optimizer == 'adamw' else momentum}, weight decay {cfg.weight_decay:g}"
    if cfg.bias_lr_scale != 1:
        settings += f", BatchNorm biases at {cfg.bias_lr_scale:g}x the rate"
    if backbone:
        settings += f", the backbone at {cfg.backbone_lr_scale:g}x"
    name = "AdamW" if cfg.optimizer == "adamw" else "SGD"
    line = f"{name} ({settings})"
    if cfg.optimizer == "muon":
        line = (f"Muon for the {count(True):,} weights of the conv filters (lr {cfg.muon_lr:g}, momentum "
                f"{cfg.muon_momentum:g}, {cfg.muon_steps} Newton-Schulz steps); SGD for the other "
                f"{count(False):,} ({settings})")
    warmup = f", warm-up {cfg.warmup_epochs:g} epochs" if cfg.warmup_epochs else ""
    return line + f"; {cfg.schedule} schedule" + warmup


def inverse_frequency(labels, num_classes: int) -> torch.Tensor:
    """A loss weight per class, n / (classes * its count): a rare class weighs as much in total as a
    common one (scikit-learn's class_weight="balanced"); a class without images weighs 0."""
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.int64), minlength=num_classes).double()
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights.float()


NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)   # Muon's quintic coefficients


def orthogonalize(matrices: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to each matrix of a stack (..., rows, cols), roughly:
    their singular values pushed to ~1.

    Quintic Newton-Schulz steps with Muon's coefficients, which trade exactness (the values land
    between about 0.7 and 1.2 after five steps) for speed (Jordan et al. 2024, "Muon: an optimizer
    for hidden layers", kellerjordan.github.io/posts/muon). A stack of same-shaped matrices is done
    in one batched product per step; dtype is the arithmetic's (bfloat16 on GPUs, as the record
    does; float32 by default), the result comes back in the input's dtype.
    """
    a, b, c = NEWTON_SCHULZ
    x = matrices.float()
    x = (x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)).to(dtype or torch.float32)
    tall = x.shape[-2] > x.shape[-1]
    if tall:
        x = x.mT
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if tall else x).to(matrices.dtype)


class MuonWithSGD(torch.optim.Optimizer):
    """Muon for the groups marked "muon", SGD with momentum for the others, in one optimizer
    so that one schedule drives both.

    A Muon step takes the (Nesterov) momentum of a filter bank's gradient, flattened to
    (out_channels, in_channels * kh * kw), orthogonalises it, and moves the filters by lr
    times that; the filters are first rescaled to a fixed norm, sqrt(out_channels), so the
    step size stays relative. This is the record CIFAR-10 recipe's use of Muon (airbench94
    with Muon: 94 % in 2.59 s on an A100). The SGD groups go through torch.optim's own SGD
    arithmetic (decay added to the gradient, no dampening).

    No Python loop over parameters launches work: momentum, rescaling and the step are
    torch._foreach operations over a group, and the filter banks of one shape are stacked and
    orthogonalised together (fastnet's three 256x256 banks in one batched product). Newton-Schulz
    runs in bfloat16 on GPUs (float32 elsewhere), compiled with compile=True.
    """

    def __init__(self, groups: list[dict], nesterov: bool = True, compile: bool = False):
        super().__init__(groups, {"nesterov": nesterov, "momentum": 0.0, "weight_decay": 0.0,
                                  "muon": False, "ns_steps": 5})
        self.orthogonalize = torch.compile(orthogonalize, dynamic=False) if compile else orthogonalize

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["muon"]:
                self._muon_step(group, params)
                continue
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            sgd_arithmetic(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
                           momentum=group["momentum"], lr=group["lr"], dampening=0.0,
                           nesterov=group["nesterov"], maximize=False)
            if group["momentum"]:
                for p, buffer in zip(params, buffers):
                    self.state[p]["momentum_buffer"] = buffer
        return loss

    def _muon_step(self, group: dict, params: list[torch.Tensor]) -> None:
        grads = [p.grad for p in params]
        momentum = group["momentum"]
        if momentum:
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            if any(b is None for b in buffers):   # the first step: the buffer is the gradient
                buffers = [torch.zeros_like(p) if b is None else b for p, b in zip(params, buffers)]
                for p, buffer in zip(params, buffers):
                    self.state[p]["momentum_buffer"] = buffer
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads)
            grads = torch._foreach_add(grads, buffers, alpha=momentum) if group["nesterov"] else buffers
        norms = torch._foreach_norm(params)
        torch._foreach_add_(norms, 1e-12)
        scales = torch._foreach_reciprocal(norms)
        torch._foreach_mul_(scales, [len(p) ** 0.5 for p in params])
        torch._foreach_mul_(params, scales)
        dtype = torch.bfloat16 if params[0].is_cuda else None
        for members in _same_shapes(params):
            shape = params[members[0]].shape
            stacked = torch.stack([grads[i].reshape(shape[0], -1) for i in members])
            steps = self.orthogonalize(stacked, group.get("ns_steps", 5), dtype).view(len(members), *shape)
            torch._foreach_add_([params[i] for i in members], list(steps.unbind(0)), alpha=-group["lr"])


def _same_shapes(params: list[torch.Tensor]) -> list[list[int]]:
    """Indices of params grouped by shape (and dtype and device: what one stack can hold), in order
    of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((tuple(p.shape), p.dtype, p.device), []).append(i)
    return list(groups.values())


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
    """How far through the run a step is: by steps, or under a time budget by whichever of the
    two, wall time or steps, is further on (the schedule ends with the budget, or at the last
    epoch when --epochs comes first)."""

    def __init__(self, total_steps: int, time_budget: float = 0.0, elapsed_before: float = 0.0):
        """elapsed_before: seconds of training an interrupted run had already spent."""
        self.total_steps, self.time_budget = max(total_steps, 1), time_budget
        self.elapsed_before = elapsed_before
        self.started: float | None = None
        self.stopped: float | None = None

    def start(self) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def stop(self) -> None:
        """Training has ended: the clock stands (the final test pass is not training time)."""
        if self.started is not None and self.stopped is None:
            self.stopped = time.perf_counter()

    def elapsed(self) -> float:
        now = self.stopped if self.stopped is not None else time.perf_counter()
        running = now - self.started if self.started is not None else 0.0
        return self.elapsed_before + running

    def __call__(self, step: int) -> float:
        by_steps = min(step / self.total_steps, 1.0)
        if self.time_budget > 0 and self.started is not None:
            return max(min(self.elapsed() / self.time_budget, 1.0), by_steps)
        return by_steps

    def out_of_time(self) -> bool:
        return self.time_budget > 0 and self.started is not None and self.elapsed() >= self.time_budget


def scheduled_rates(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> list[float]:
    """Each parameter group's rate that scheduler gives at step (LambdaLR: base rate x factor)."""
    return [base * rule(step) for base, rule in zip(scheduler.base_lrs, scheduler.lr_lambdas)]


def create_scheduler(cfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                     epochs: int, progress: RunProgress | None = None,
                     window: tuple[int, int] | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule over the whole run (stepped after every optimizer step), or over
    window = (first epoch, epochs) of it: before the window the rate is the schedule's start (0
    with a warm-up), after it the schedule's end (a resumed run that was extended; see
    resume.extended_schedule)."""
    progress = progress or RunProgress(steps_per_epoch * epochs)
    start, length = window or (0, epochs)
    # Warm-up is given in epochs; as a share of the run it is the same under a time budget.
    warmup = min(cfg.warmup_epochs / length, 1.0)

    def through(step: int) -> float:
        if progress.time_budget > 0 or window is None:
            return progress(step)
        return min(max(step - start * steps_per_epoch, 0) / max(length * steps_per_epoch, 1), 1.0)

    def factor(step: int) -> float:
        done = through(step)
        if done < warmup:  # count the step being taken, so the first one is not at rate zero
            done = through(step + 1)
        return lr_factor(done, warmup, cfg.schedule, cfg.final_lr)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
