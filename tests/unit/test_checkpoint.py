"""Training state (weights/state.pt) and atomic files: read without unpickling, never half written."""
import os
from pathlib import Path

import pytest
import torch

from tudui.checkpoint import load_state
from tudui.errors import TuduiError
from tudui.files import atomic_write


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"old")

    def crash(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(TuduiError, match="cannot write .*w.safetensors: disk full"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["w.safetensors"]


class PlantsAFile:
    """A pickle that, if unpickled, would create a file: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "payload": PlantsAFile(marker)}, tmp_path / "state.pt")
    with pytest.raises(TuduiError, match="cannot read training state"):
        load_state(tmp_path / "state.pt")
    assert not marker.exists()
