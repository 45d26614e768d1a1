"""tudui.runtime: what a command computes in, named as the flags name it."""
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
