"""Data-parallel training across processes with PyTorch's own engine: DistributedDataParallel,
and the few collectives tudui needs (sums of evaluation counts, agreeing to stop, one path)."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from tudui.runtime import Runtime


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def wrap(model: nn.Module, runtime: Runtime) -> nn.Module:
    """model in DistributedDataParallel when the run has several processes (which starts every
    process from rank 0's weights and averages the gradients), else model itself."""
    if not runtime.distributed:
        return model
    device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def described(runtime: Runtime) -> str:
    """Where the run computes, for the model line: the device, and under torchrun the processes."""
    if not runtime.distributed:
        return str(runtime.device)
    count = f"{runtime.world_size} process" + "es" * (runtime.world_size != 1)
    return f"{runtime.device} ({count}, DistributedDataParallel over {dist.get_backend()})"


def sum_across(values: torch.Tensor) -> torch.Tensor:
    """values summed over every process (in place); unchanged in a single process."""
    if active():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_across(flag: bool, device: torch.device) -> bool:
    """True when flag is true in any process: every process then takes the same decision."""
    if not active():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_rank_zero(text: str) -> str:
    """Rank 0's text in every process (the run directory rank 0 made, say)."""
    if not active():
        return text
    box = [text]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if active():
        dist.barrier()


def shut_down() -> None:
    if active():
        dist.destroy_process_group()
