"""Where and how the numbers are computed: device, precision, seeding, autocast.

A `Runtime` is resolved once per command from its settings and handed down; it is also where
rank and world size will live when a run spans several processes.
"""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from tudui.errors import TuduiError


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """The device a command computes on, its autocast dtype, and its place among processes."""
    device: torch.device
    amp_dtype: torch.dtype | None = None   # None: plain float32
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True for the process that writes files and prints (the only one, for now)."""
        return self.rank == 0

    def autocast(self):
        return autocast(self.device, self.amp_dtype)


def resolve_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is missing is an error."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TuduiError("--device cuda was asked for, but PyTorch sees no CUDA GPU here "
                         "(use --device auto or cpu)")
    if name == "mps" and not has_mps:
        raise TuduiError("--device mps was asked for, but this machine has no Apple GPU "
                         "(use --device auto or cpu)")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for --precision (None: plain fp32)."""
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu" and torch.backends.mkldnn.is_available() \
                and getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
            name = "bf16"
        else:
            name = "fp32"
    if name == "fp16" and device.type == "cpu":
        raise TuduiError("--precision fp16 needs a GPU; on the CPU use bf16 or fp32")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def create_runtime(device: str | torch.device, precision: str, *, for_training: bool = False) -> Runtime:
    """The Runtime for --device (a name, or a device resolved already) and --precision.

    for_training also lets cuDNN time its algorithms once and keep the fastest: a training
    run repeats the same batch shapes every step. Evaluating fp16 weights on a CPU (trained on
    a GPU) falls back to fp32, since the CPU has no fp16 autocast.
    """
    resolved = device if isinstance(device, torch.device) else resolve_device(device)
    if precision == "fp16" and resolved.type == "cpu" and not for_training:
        precision = "fp32"
    amp_dtype = resolve_precision(precision, resolved)
    if for_training and resolved.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Runtime(device=resolved, amp_dtype=amp_dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision for the forward pass when dtype is bfloat16/float16; a no-op for None."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
