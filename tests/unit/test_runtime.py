"""tudui.runtime: what a command computes in, named as the flags name it."""
import os
import platform
import resource
import subprocess
import sys

import pytest
import torch

from tudui.errors import TuduiError
from tudui.runtime import Runtime, create_runtime


def test_precision_names_the_autocast_dtype():
    cpu = torch.device("cpu")
    assert [Runtime(device=cpu, amp_dtype=d).precision for d in (None, torch.bfloat16, torch.float16)] == \
        ["fp32", "bf16", "fp16"]
    chosen = create_runtime("cpu", "auto")
    assert chosen.precision in ("fp32", "bf16") and create_runtime("cpu", "fp32").precision == "fp32"


def test_torchrun_place_counts_torchruns_one_process_and_nothing_else(monkeypatch):
    from tudui.runtime import torchrun_place
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_place() is None                               # a plain process
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torchrun_place() is None                               # WORLD_SIZE=1 alone: still plain
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "run")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert torchrun_place() == (0, 1, 0)                          # torchrun's one process: a group of one
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_place() == (3, 4, 1)
    monkeypatch.setenv("RANK", "three")
    with pytest.raises(TuduiError, match="RANK or LOCAL_RANK is not a number"):
        torchrun_place()


# Page faults of training steps (or forward passes) after a CPU runtime (or predict's device) is
# made: each step's activations are blocks of 32 MiB (256 x 32 x 32 x 32 floats), the size from
# which glibc maps fresh memory for every block.
STEP_FAULTS = """
import resource, sys, torch
from tudui.runtime import create_runtime, inference_device, keep_freed_memory
training = sys.argv[1] == "train"
create_runtime("cpu", "fp32") if training else inference_device("cpu")
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1))
images = torch.randn(256, 3, 32, 32)
def step_faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    if training:
        net(images).square().mean().backward()
    else:
        with torch.inference_mode():
            net(images)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults = [step_faults() for _ in range(20)]
# Whether the setup line applied it (asking keep_freed_memory itself would apply it now).
print(keep_freed_memory.cache_info().currsize > 0 and keep_freed_memory(), *faults)
"""


def step_faults(malloc: str, command: str) -> tuple[bool, list[int]]:
    out = subprocess.run([sys.executable, "-c", STEP_FAULTS, command], env={**os.environ, "TUDUI_MALLOC": malloc},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", [int(n) for n in out[1:]]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize("command", ["train", "predict"])
def test_a_cpu_runtime_reuses_freed_memory_instead_of_faulting_in_new_pages(command):
    block_pages = 256 * 32 * 32 * 32 * 4 // resource.getpagesize()
    tuned, faults = step_faults("system", command)
    assert not tuned                               # TUDUI_MALLOC=system: glibc as it was
    if min(faults[2:]) < block_pages:
        pytest.skip(f"glibc's own malloc faulted only {faults} times a step (transparent huge pages?)")
    tuned, tuned_faults = step_faults("", command)
    assert tuned
    # From the third step on, freed blocks are used again: the heap still finds a new place for a
    # block now and then (the first steps), so the sum is compared, not each step.
    assert sum(tuned_faults[2:]) < sum(faults[2:]) / 10, (tuned_faults, faults)


def test_only_a_failed_collective_is_blamed_on_another_process(monkeypatch):
    import pytest

    from tudui.errors import TuduiError
    from tudui.runner import _another_process_failed
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    with pytest.raises(TuduiError, match=r"rank 1 stops: another process of this run ended or stopped answering"):
        with _another_process_failed():
            raise RuntimeError("[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:2705")
    with pytest.raises(RuntimeError, match="out of memory"):      # its own error, said as itself
        with _another_process_failed():
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.delenv("RANK")
    with pytest.raises(RuntimeError, match="Connection closed"):  # one process: nothing to blame
        with _another_process_failed():
            raise RuntimeError("Connection closed by peer")
