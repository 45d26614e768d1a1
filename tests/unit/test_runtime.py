"""tudui.runtime: what a command computes in, named as the flags name it."""
import torch

from tudui.runtime import Runtime, create_runtime


def test_precision_names_the_autocast_dtype():
    cpu = torch.device("cpu")
    assert [Runtime(device=cpu, amp_dtype=d).precision for d in (None, torch.bfloat16, torch.float16)] == \
        ["fp32", "bf16", "fp16"]
    chosen = create_runtime("cpu", "auto")
    assert chosen.precision in ("fp32", "bf16") and create_runtime("cpu", "fp32").precision == "fp32"
