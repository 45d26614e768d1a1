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



def test_a_state_file_cut_short_is_one_sentence_and_points_at_the_weights(tmp_path):
    torch.save({"format": 1, "model": {"w": torch.zeros(1000)}}, tmp_path / "state.pt")
    data = (tmp_path / "state.pt").read_bytes()
    (tmp_path / "state.pt").write_bytes(data[:len(data) // 2])
    with pytest.raises(TuduiError) as error:
        load_state(tmp_path / "state.pt")
    message = str(error.value)
    assert message.startswith(f"cannot read training state {tmp_path / 'state.pt'} (")
    assert "damaged, cut short or not tudui's" in message and f"--weights {tmp_path / 'last.safetensors'}" in message
    assert "If you are seeing this error" not in message and "\n" not in message


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

    from tudui.checkpoint import restore_rng
    from tudui.resume import restore_training
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
    from tudui.resume import extended_schedule
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


def test_best_is_a_link_to_last_when_chosen_and_keeps_its_weights_when_last_moves_on(tmp_path, monkeypatch):
    from tudui.checkpoint import CheckpointHook
    from tudui.models import create_model
    from tudui.rundir import RunDir
    from tudui.data import Preprocess
    from tudui.weights import WeightsMeta, read_weights

    torch.manual_seed(0)
    model = create_model("tudui", 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    meta = WeightsMeta(model="tudui", num_classes=3, class_names=("a", "b", "c"), preprocess=Preprocess(input_size=32))
    run = RunDir(tmp_path / "run")
    hook = CheckpointHook(run, model, optimizer, scheduler, meta, monitor="val_accuracy", has_val=True)

    def epoch(number: int, accuracy: float) -> dict:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
        hook.on_epoch_end({"epoch": number, "val_accuracy": accuracy, "val_loss": 1.0}, None)
        return {k: v.clone() for k, v in model.state_dict().items()}

    first = epoch(1, 0.5)
    assert run.best.stat().st_ino == run.last.stat().st_ino                 # one copy on disk
    assert run.weights_bytes() == run.last.stat().st_size + run.state.stat().st_size
    second = epoch(2, 0.4)                                                 # worse: best stays epoch 1
    best, best_meta = read_weights(run.best)
    last, _ = read_weights(run.last)
    assert best_meta.epoch == 1 and all(torch.equal(best[k], first[k]) for k in first)
    assert all(torch.equal(last[k], second[k]) for k in second)
    assert run.best.stat().st_ino != run.last.stat().st_ino
    # Where the file system has no hard links, best is a copy.
    def no_links(*args):
        raise OSError("links not supported")
    monkeypatch.setattr(os, "link", no_links)
    third = epoch(3, 0.9)
    best, best_meta = read_weights(run.best)
    assert best_meta.epoch == 3 and all(torch.equal(best[k], third[k]) for k in third)
    assert run.best.stat().st_ino != run.last.stat().st_ino


@pytest.mark.parametrize("monitor", ["val_accuracy", "val_loss"])
def test_epochs_that_tie_on_the_monitored_metric_are_told_apart_by_the_other(tmp_path, monitor):
    from tudui.checkpoint import CheckpointHook, load_state
    from tudui.data import Preprocess
    from tudui.models import create_model
    from tudui.rundir import RunDir
    from tudui.weights import WeightsMeta

    model = create_model("tudui", 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    meta = WeightsMeta(model="tudui", num_classes=3, class_names=("a", "b", "c"), preprocess=Preprocess(input_size=32))
    run = RunDir(tmp_path / "run")
    hook = CheckpointHook(run, model, optimizer, scheduler, meta, monitor=monitor, has_val=True)
    # epoch 2 ties epoch 1 on the monitored metric and is better on the other; epoch 3 ties and is worse
    rows = {"val_accuracy": [(1.0, 0.5), (1.0, 0.4), (1.0, 0.45)], "val_loss": [(0.5, 0.3), (0.6, 0.3), (0.4, 0.3)]}
    for epoch, (accuracy, loss) in enumerate(rows[monitor], start=1):
        hook.on_epoch_end({"epoch": epoch, "val_accuracy": accuracy, "val_loss": loss}, None)
    assert hook.best_epoch == 2
    saved = load_state(run.state)
    assert saved["best_epoch"] == 2 and saved["best_tiebreak"] == hook.best_tiebreak
    again = CheckpointHook(run, model, optimizer, scheduler, meta, monitor=monitor, has_val=True,
                           best_score=saved["best_score"], best_epoch=2, best_tiebreak=saved["best_tiebreak"])
    again.on_epoch_end({"epoch": 4, "val_accuracy": rows[monitor][2][0], "val_loss": rows[monitor][2][1]}, None)
    assert again.best_epoch == 2                                 # resumed, the saved tie-break still counts


def test_the_end_of_a_run_says_how_much_disk_large_weights_take(tmp_path, monkeypatch, capsys):
    import tudui
    import tudui.runner
    from tudui.rundir import RunDir

    tudui.train(data="synthetic", epochs=1, report=False, project=str(tmp_path), name="small")
    assert "of disk" not in capsys.readouterr().out                        # 1.7 MB: nothing to say
    monkeypatch.setattr(tudui.runner, "LARGE_WEIGHTS", 1_000_000)
    tudui.train(data="synthetic", epochs=1, report=False, project=str(tmp_path), name="large")
    run = RunDir(tmp_path / "large")
    size = run.last.stat().st_size + run.state.stat().st_size             # best is last, linked
    assert run.weights_bytes() == size
    line = next(line for line in capsys.readouterr().out.splitlines() if "of disk" in line)
    assert line == (f"{run.weights_dir} takes {size / 1e6:.1f} MB of disk, {run.state.stat().st_size / 1e6:.1f} MB "
                    f"of it state.pt, which only --resume needs (to continue or extend this run)")


def test_a_link_planted_where_the_temporary_file_used_to_go_is_not_written_through(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("the user's own file")
    target = tmp_path / "run" / "config.yaml"
    target.parent.mkdir()
    for pid in {os.getpid(), *range(1, 200)}:   # the old names were .NAME.tmp-PID
        os.symlink(victim, target.with_name(f".config.yaml.tmp-{pid}"))
    atomic_write(target, lambda tmp: tmp.write_text("epochs: 2\n"))
    assert victim.read_text() == "the user's own file"
    assert target.read_text() == "epochs: 2\n" and not target.is_symlink()


def test_patience_counts_from_the_end_of_the_frozen_epochs():
    from types import SimpleNamespace

    from tudui.checkpoint import EarlyStopping
    checkpoints = SimpleNamespace(best_epoch=1, monitor="val_accuracy")
    plain, fine_tune = EarlyStopping(checkpoints, patience=1), EarlyStopping(checkpoints, patience=1, after=2)
    for stopper in (plain, fine_tune):
        stopper.on_epoch_end({"epoch": 2}, None)
    assert plain.stop_reason() == ("stopped early after epoch 2: val_accuracy has not improved for 1 epoch "
                                   "(best in epoch 1)")
    assert fine_tune.stop_reason() is None            # the backbone has trained for no epoch yet
    fine_tune.on_epoch_end({"epoch": 3}, None)
    assert fine_tune.stop_reason() == ("stopped early after epoch 3: val_accuracy has not improved for 1 epoch "
                                       "since the backbone was unfrozen after epoch 2 (best in epoch 1)")


def test_each_monitor_scores_its_own_column_higher_is_better():
    from types import SimpleNamespace

    from tudui.checkpoint import CheckpointHook
    from tudui.config import MONITORS
    row = {"val_accuracy": 0.9, "val_loss": 0.3, "val_balanced_accuracy": 0.6}   # a rare class missed
    scores = {monitor: CheckpointHook.score(SimpleNamespace(monitor=monitor), row) for monitor in MONITORS}
    assert scores == {"val_accuracy": 0.9, "val_loss": -0.3, "val_balanced_accuracy": 0.6}


@pytest.mark.parametrize("kernel, widgets, tty, bar", [
    (True, False, False, False),     # a notebook without ipywidgets: plain lines, no TqdmWarning and text bars
    (True, True, False, True),
    (False, False, True, True),      # a terminal
    (False, False, False, False),    # a pipe or a file
])
def test_the_progress_bar_is_drawn_where_it_can_be(kernel, widgets, tty, bar, monkeypatch):
    import importlib.util
    import sys

    from tudui import logging as reports
    if kernel:
        monkeypatch.setitem(sys.modules, "ipykernel", object())
    else:
        monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (object() if widgets else None) if name == "ipywidgets" else real(name, *a))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    assert reports.interactive() is bar
