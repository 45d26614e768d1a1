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


def _good_state() -> dict:
    return {"format": 1, "epoch": 1, "step_in_epoch": 0, "partial_loss": 0.0, "partial_images": 0,
            "best_accuracy": 0.5, "best_epoch": 1, "model": {}, "optimizer": {}, "scheduler": {},
            "rng": {"python": (3, (1, 2), None), "numpy": {}, "torch": torch.zeros(1)}}


@pytest.mark.parametrize("change", [{"rng": None}, {"epoch": -1}, {"epoch": "1"}, {"model": [1]},
                                    {"best_epoch": True}, {"rng": {"python": 1}}])
def test_a_state_file_missing_or_mistyping_what_resume_needs_is_one_clear_error(tmp_path, change):
    state = {k: v for k, v in {**_good_state(), **change}.items() if v is not None}
    torch.save(state, tmp_path / "state.pt")
    with pytest.raises(TuduiError, match="state.pt is damaged"):
        load_state(tmp_path / "state.pt")


def test_a_saved_state_that_does_not_fit_the_parts_is_one_error_not_a_traceback():
    from torch import nn

    from tudui.checkpoint import restore_rng, restore_training
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    state = {**_good_state(), "model": model.state_dict(), "optimizer": {"state": {}, "param_groups": []},
             "scheduler": scheduler.state_dict()}
    with pytest.raises(TuduiError, match="does not fit this run"):
        restore_training(state, model, optimizer, scheduler, None, None)
    with pytest.raises(TuduiError, match="random states cannot be restored"):
        restore_rng({"python": (3, (1, 2), None), "numpy": {}, "torch": torch.zeros(1)})


@pytest.mark.parametrize("error", [RuntimeError("PytorchStreamWriter failed writing file data/0"),
                                   ValueError("Error while serializing: IoError(No space left on device)")])
def test_an_error_of_the_writing_library_is_one_line_and_the_old_file_stays(tmp_path, error):
    target = tmp_path / "state.pt"
    target.write_bytes(b"old")

    def fails(tmp):
        tmp.write_bytes(b"half")
        raise error

    with pytest.raises(TuduiError, match=rf"cannot write .*state.pt: {type(error).__name__}: "):
        atomic_write(target, fails)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["state.pt"]


def test_continuing_metrics_csv_keeps_the_epochs_before_the_resume_point(tmp_path):
    from tudui.logging import CSVHook
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train_loss,test_loss,test_accuracy,lr,seconds\n"
                    "1,2.0,1.0,0.5,0.1,3\n2,1.5,0.9,0.6,0.1,3\n3,1.2,0.8,0.7,0.1,3\n")
    CSVHook(path, append=True, keep_through=2).close()
    assert [line.split(",")[0] for line in path.read_text().splitlines()] == ["epoch", "1", "2"]
    path.write_bytes(b"\x00\x01 not,a\ncsv")
    with pytest.raises(TuduiError, match="cannot read .*metrics.csv to continue it"):
        CSVHook(path, append=True, keep_through=2)


def test_a_larger_epochs_stretches_keeps_or_restarts_the_schedule():
    from tudui.checkpoint import extended_schedule
    finished = {"epoch": 4}
    assert extended_schedule(finished, 4, 4, "restart") == ((0, 4), "")    # not extended: nothing changes
    assert extended_schedule(finished, 4, 6, "stretch")[0] == (0, 6)
    assert extended_schedule(finished, 4, 6, "tail")[0] == (0, 4)
    window, words = extended_schedule(finished, 4, 6, "restart")
    assert window == (4, 2) and "new schedule over epochs 5-6" in words
    restarted = {"epoch": 6, "schedule": [4, 2]}   # a window saved by an earlier extension is kept
    assert extended_schedule(restarted, 6, 6, "stretch") == ((4, 2), "")
    assert extended_schedule(restarted, 6, 8, "tail")[0] == (4, 2)
    assert extended_schedule(restarted, 6, 8, "stretch")[0] == (4, 4)
