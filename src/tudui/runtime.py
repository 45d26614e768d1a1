"""Where and how the numbers are computed: device, precision, seeding, autocast, and the place of
this process among several.

A `Runtime` is resolved once per command from its settings and handed down. Under torchrun
(WORLD_SIZE > 1 in the environment) training joins PyTorch's process group: NCCL on CUDA, one
GPU per local rank, Gloo on the CPU, with a timeout so that a rank that died never leaves the
others waiting for ever. `tudui train --nproc N` starts torchrun here (launch_torchrun), once
check_process_count has seen that the machine can hold N processes.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from tudui.errors import SettingError, TuduiError
from tudui.settings import counted


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """The device a command computes on, its autocast dtype, and its place among processes."""
    device: torch.device
    amp_dtype: torch.dtype | None = None   # None: plain float32
    rank: int = 0
    world_size: int = 1
    joined: bool = False                   # in torchrun's process group (also as its only process)

    @property
    def is_main(self) -> bool:
        """True for the process that writes files and prints: rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Under torchrun: DistributedDataParallel and the collectives, even for one process (so a
        one-GPU machine runs, and can time, the same path as eight)."""
        return self.world_size > 1 or self.joined

    @property
    def precision(self) -> str:
        """What the model computes in: fp32, or autocast's bf16 or fp16 (what --precision auto chose)."""
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "fp32")

    def autocast(self):
        return autocast(self.device, self.amp_dtype)


def resolve_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. An explicit device that is missing is an error."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if (match := re.fullmatch(r"cuda:(\d+)", name)) is not None:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(match.group(1)) >= count:
            raise TuduiError(f"--device {name} was asked for, but PyTorch sees {counted(count, 'CUDA GPU')} here "
                             f"(numbered from 0; use --device auto or cpu)")
    if name == "cuda" and not torch.cuda.is_available():
        raise TuduiError("--device cuda was asked for, but PyTorch sees no CUDA GPU here "
                         "(use --device auto or cpu)")
    if name == "mps" and not has_mps:
        raise TuduiError("--device mps was asked for, but this machine has no Apple GPU "
                         "(use --device auto or cpu)")
    return torch.device(name)


def inference_device(name: str) -> torch.device:
    """resolve_device for a command that runs a model there (predict, serve); on the CPU, freed memory
    is kept for reuse, as in training (keep_freed_memory): a batch's activations over 32 MiB (resnet18,
    32 images at 224 px) otherwise come from fresh pages every forward pass."""
    device = resolve_device(name)
    if device.type == "cpu":
        keep_freed_memory()
    return device


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
    run repeats the same batch shapes every step; and under torchrun it joins the process group
    (see join_process_group). Evaluating fp16 weights on a CPU (trained on a GPU) falls back to
    fp32, since the CPU has no fp16 autocast.
    """
    place = torchrun_place() if for_training else None
    if place is not None:
        resolved = join_process_group(device, *place)
    else:
        resolved = device if isinstance(device, torch.device) else resolve_device(device)
    if precision == "fp16" and resolved.type == "cpu" and not for_training:
        precision = "fp32"
    amp_dtype = resolve_precision(precision, resolved)
    if for_training and resolved.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if resolved.type == "cpu":
        keep_freed_memory()
    rank, world_size = (place[0], place[1]) if place is not None else (0, 1)
    return Runtime(device=resolved, amp_dtype=amp_dtype, rank=rank, world_size=world_size, joined=place is not None)


@functools.cache   # once per process
def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc serves every block over 32 MiB (one layer's activations for a batch) with a
    fresh mmap and unmaps it on free, so each training step touches new pages and the kernel
    zero-fills them on first touch: on a 2-core CPU, 10-20 % of a fastnet step (page faults inside
    max-pool's backward and the convolutions). Without mmap for large blocks and with a 2 GiB trim
    threshold, freed blocks are reused after the first few steps; the process keeps its peak
    memory. PyTorch's CPU tuning guides preload jemalloc or tcmalloc for the same reason; this
    uses the C library already loaded. Only on Linux with glibc; TUDUI_MALLOC=system leaves malloc
    as it is. True when the settings were applied (in this call or an earlier one).
    """
    if os.environ.get("TUDUI_MALLOC", "") == "system" or platform.libc_ver()[0] != "glibc":
        return False
    m_trim_threshold, m_mmap_max = -1, -4   # from glibc's malloc.h
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(m_mmap_max, 0) == 1 and mallopt(m_trim_threshold, 2**31 - 1) == 1


# Seconds a collective waits for the other ranks before it fails (a dead or stuck rank).
PROCESS_GROUP_TIMEOUT = float(os.environ.get("TUDUI_DIST_TIMEOUT", "120"))


def torchrun_place() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when torchrun started this process (its one process too), or
    when WORLD_SIZE says there are several; else None."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
            return None
        return int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise TuduiError("WORLD_SIZE is set but RANK or LOCAL_RANK is not a number: start distributed runs "
                         "with torchrun (or tudui train --nproc N)") from None


def check_process_count(nproc: int, device: str) -> None:
    """Refuse, before any process starts, an --nproc this machine cannot hold: one GPU per process
    on CUDA; on the CPU no more processes than cores (each holds the model and its data)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.startswith("cuda:"):
        raise SettingError(f"--device {device} names one GPU, and --nproc {nproc} processes each take their "
                           f"own (cuda:0 to cuda:{nproc - 1}): give --device cuda")
    if device == "cuda" and not gpus:
        raise SettingError("--device cuda: PyTorch sees no CUDA GPU here (use --device auto or cpu)")
    if device in ("cuda", "auto") and gpus:
        if nproc > gpus:
            raise SettingError(f"--nproc {nproc} needs a GPU for each process; PyTorch sees {counted(gpus, 'GPU')} "
                               f"here")
        return
    cores = os.cpu_count() or 1
    if nproc > cores:
        raise SettingError(f"--nproc {nproc} on {counted(cores, 'CPU core')}: each process holds the model and its "
                           f"data and takes a core, so at most {cores} here")


def launch_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Run this same command under torchrun with nproc processes on this machine: PyTorch's own
    launcher, in this process, which forwards Ctrl-C and SIGTERM to every process and ends all of
    them when one fails. Returns its exit status (128 + the signal when stopped by one)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    rest, skip = [], False
    for arg in argv:   # the same arguments without --nproc
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", "tudui", *rest])
    except SignalException as e:   # Ctrl-C or SIGTERM: the processes saved and said so
        return 128 + int(e.sigval)
    except ChildFailedError as e:  # a process failed and said why on its own stderr
        first = next(iter(e.failures.values()), None)
        return first.exitcode if first is not None and first.exitcode > 0 else 1
    return 0


def join_process_group(device: str | torch.device, rank: int, world_size: int, local_rank: int) -> torch.device:
    """This process's device (cuda:LOCAL_RANK on GPUs, else the CPU), once the process group is up."""
    import torch.distributed as dist

    name = str(device)
    if name.startswith("cuda:"):
        raise SettingError(f"--device {name} names one GPU, but under torchrun each process takes the GPU of its "
                           f"local rank: give --device cuda")
    use_cuda = name.startswith("cuda") or (name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise TuduiError(f"rank {rank} is local rank {local_rank}, but PyTorch sees "
                             f"{counted(torch.cuda.device_count() if torch.cuda.is_available() else 0, 'CUDA GPU')} "
                             f"here; "
                             f"start at most one process per GPU (--nproc-per-node)")
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    elif name not in ("auto", "cpu"):
        raise TuduiError(f"--device {name} cannot be shared by {world_size} processes; use --device cuda or cpu")
    else:
        resolved = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=timedelta(seconds=PROCESS_GROUP_TIMEOUT))
    return resolved


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision for the forward pass when dtype is bfloat16/float16; a no-op for None."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
