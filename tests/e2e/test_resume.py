"""Resume, interrupts and faults: a stopped run continues exactly; nothing good is lost."""
from __future__ import annotations

import csv
import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

import tudui
from tudui.checkpoint import load_state
from tudui.data import TensorLoader
from tudui.errors import TuduiError
from tudui.interrupts import TrainingInterrupted
from tudui.logging import CSVHook, TensorBoardHook
from tudui.rundir import RunDir
from tudui.weights import read_weights

from helpers import REPO, write_class_folder

RECIPES = {
    "seed": dict(config_file=REPO / "configs" / "seed.yaml", data="synthetic", epochs=4, batch_size=32),
    "fast": dict(config_file=REPO / "configs" / "cifar10-fast.yaml", data="synthetic", epochs=4,
                 batch_size=32, widths="8,8,8", precision="fp32"),
    # stopped in epoch 2, the last of the two at 16 px: the resumed rest of it is trained at 16 px too
    "progressive": dict(config_file=REPO / "configs" / "cifar10-fast.yaml", data="synthetic", epochs=4,
                        batch_size=32, widths="8,8,8", precision="fp32", progressive_size=16, progressive_epochs=2),
}


def train(project, **settings):
    return tudui.train(project=str(project), progress=False, report=False, **settings)


def signal_at_step(monkeypatch, step: int, signum=signal.SIGINT):
    """Send ourselves signum right after global training step `step`, as Ctrl-C would."""
    original = TensorBoardHook.on_step

    def on_step(self, loss, batch_size, lr):
        original(self, loss, batch_size, lr)
        if self.step == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(TensorBoardHook, "on_step", on_step)


def losses(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        # The rate too: an epoch resumed mid-way gives the rate at its first step, as a straight run does.
        return [(row["epoch"], row["train_loss"], row["val_accuracy"], row["lr"]) for row in csv.DictReader(f)]


def assert_same_weights(a, b):
    first, second = read_weights(a)[0], read_weights(b)[0]
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


@pytest.mark.parametrize("recipe", ["seed", "fast", "progressive"])
def test_resume_after_ctrl_c_mid_epoch_gives_the_same_weights_and_losses(recipe, tmp_path, monkeypatch):
    straight = train(tmp_path / "straight", **RECIPES[recipe])
    signal_at_step(monkeypatch, 13)             # 8 steps per epoch: 5 steps into epoch 2
    with pytest.raises(TrainingInterrupted) as stopped:
        train(tmp_path / "stopped", **RECIPES[recipe])
    assert stopped.value.exit_code == 130 and "resume with" in str(stopped.value)
    run_dir = tmp_path / "stopped" / "exp"
    state = load_state(run_dir / "weights" / "state.pt")
    assert (state["epoch"], state["step_in_epoch"]) == (1, 5)
    monkeypatch.undo()
    resumed = tudui.train(resume=run_dir, progress=False)
    assert resumed.run_dir == run_dir
    assert losses(run_dir) == losses(straight.run_dir)
    assert_same_weights(run_dir / "weights" / "last.safetensors", straight.last_weights)
    assert resumed.test_accuracy == straight.test_accuracy and resumed.best_epoch == straight.best_epoch


def test_sigterm_saves_and_exits_143(tmp_path, monkeypatch):
    signal_at_step(monkeypatch, 3, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(tmp_path, data="synthetic", epochs=2, batch_size=32)
    assert stopped.value.exit_code == 143
    assert load_state(tmp_path / "exp" / "weights" / "state.pt")["step_in_epoch"] == 3


def test_a_resumed_epochs_seconds_include_the_part_before_the_stop(tmp_path, monkeypatch):
    signal_at_step(monkeypatch, 3)
    with pytest.raises(TrainingInterrupted):
        train(tmp_path, data="synthetic", epochs=1, batch_size=32)
    monkeypatch.undo()
    path = tmp_path / "exp" / "weights" / "state.pt"
    state = load_state(path)
    assert 0 < state["partial_seconds"] < 60
    torch.save({**state, "partial_seconds": 1000.0}, path)     # as if the first part had taken 1,000 s
    rows, write_row = [], CSVHook.on_epoch_end
    monkeypatch.setattr(CSVHook, "on_epoch_end", lambda self, row, val: (rows.append(row), write_row(self, row, val)))
    tudui.train(resume=tmp_path / "exp", progress=False, report=False)
    monkeypatch.undo()
    with open(tmp_path / "exp" / "metrics.csv", newline="") as f:
        assert 1000 < float(next(csv.DictReader(f))["seconds"]) < 1060
    assert 1000 < rows[0]["train_seconds"] < rows[0]["seconds"] < 1060
    assert rows[0]["images_per_s"] > 10            # the resumed part's own rate, not diluted by the 1,000 s
    # A state file from before partial_seconds was kept resumes too (that time then is not counted).
    signal_at_step(monkeypatch, 3)
    with pytest.raises(TrainingInterrupted):
        train(tmp_path / "old", data="synthetic", epochs=1, batch_size=32)
    monkeypatch.undo()
    path = tmp_path / "old" / "exp" / "weights" / "state.pt"
    torch.save({k: v for k, v in load_state(path).items() if k != "partial_seconds"}, path)
    assert tudui.train(resume=tmp_path / "old" / "exp", progress=False, report=False).best_epoch == 1


def test_a_run_stopped_after_an_epochs_last_step_resumes_with_that_epochs_rate_not_zero(tmp_path, monkeypatch):
    signal_at_step(monkeypatch, 8)      # synthetic: 256 training images, 8 steps of 32
    with pytest.raises(TrainingInterrupted):
        train(tmp_path, data="synthetic", epochs=2, batch_size=32)
    monkeypatch.undo()
    assert load_state(tmp_path / "exp" / "weights" / "state.pt")["step_in_epoch"] == 8
    result = tudui.train(resume=tmp_path / "exp", progress=False, report=False)
    assert result.history[0]["epoch"] == 1 and result.history[0]["images_per_s"] > 10


def test_a_second_ctrl_c_during_the_save_does_not_corrupt_it(tmp_path, monkeypatch):
    import tudui.checkpoint as checkpoint
    signal_at_step(monkeypatch, 3)
    original = checkpoint.save_state

    def save_twice_interrupted(path, state):
        os.kill(os.getpid(), signal.SIGINT)     # the impatient second Ctrl-C, mid-save
        original(path, state)

    monkeypatch.setattr(checkpoint, "save_state", save_twice_interrupted)
    with pytest.raises(TrainingInterrupted):
        train(tmp_path, data="synthetic", epochs=2, batch_size=32)
    state = load_state(tmp_path / "exp" / "weights" / "state.pt")
    assert state["step_in_epoch"] == 3
    assert [p.name for p in (tmp_path / "exp" / "weights").iterdir() if ".tmp" in p.name] == []


def test_a_larger_epochs_extends_a_finished_run_as_if_it_had_run_longer(tmp_path):
    settings = dict(data="synthetic", batch_size=32, schedule="constant")
    straight = train(tmp_path / "straight", epochs=3, **settings)
    short = train(tmp_path / "short", epochs=2, **settings)
    with pytest.raises(TuduiError, match="has finished its 2 epochs; pass a larger --epochs"):
        tudui.train(resume=short.run_dir, progress=False)
    extended = tudui.train(resume=short.run_dir, epochs=3, progress=False)
    assert losses(extended.run_dir) == losses(straight.run_dir)
    assert_same_weights(extended.last_weights, straight.last_weights)


def test_extending_a_cosine_run_says_what_the_schedule_does_and_offers_tail_and_restart(tmp_path, capsys):
    settings = dict(data="synthetic", batch_size=32, schedule="cosine", lr=0.02)
    six = train(tmp_path / "six", epochs=6, **settings)
    four = train(tmp_path / "four", epochs=4, **settings).run_dir
    rates = {}
    for extend in ("stretch", "tail", "restart"):
        short = shutil.copytree(four, tmp_path / extend)     # the same finished 4-epoch run, three times
        capsys.readouterr()
        tudui.train(resume=short, epochs=6, extend=extend)
        said = capsys.readouterr().out
        assert f"--epochs 4 -> 6 with --extend {extend}" in said and "the learning rate goes on from" in said
        rates[extend] = [row["lr"] for row in csv.DictReader((short / "metrics.csv").open())]
    # stretch: epochs 5 and 6 at the rates a 6-epoch run has there
    assert rates["stretch"][4:] == [row["lr"] for row in csv.DictReader((six.run_dir / "metrics.csv").open())][4:]
    assert rates["tail"][4:] == ["0", "0"]               # the 4-epoch cosine has ended at 0, and stays
    assert float(rates["restart"][4]) == 0.02 and float(rates["restart"][5]) == pytest.approx(0.01)
    assert rates["tail"][:4] == rates["restart"][:4] == rates["stretch"][:4]   # the 4-epoch run's own


def test_resuming_with_another_model_or_data_set_is_refused(tmp_path):
    run = train(tmp_path, data="synthetic", epochs=1, batch_size=32)
    with pytest.raises(TuduiError, match=r"different model \(--model tudui -> tudui_relu\); start a new run") as error:
        tudui.train(resume=run.run_dir, model="tudui_relu", epochs=2, progress=False)
    assert "ModelConfig" not in str(error.value)   # the setting that changed, not the whole section
    with pytest.raises(TuduiError, match="different data set"):
        tudui.train(resume=run.run_dir, data="digits", epochs=2, progress=False)
    with pytest.raises(TuduiError, match=r"different --val-split \(auto -> 0.1\)"):   # -1 means auto
        tudui.train(resume=run.run_dir, val_split=0.1, epochs=2, progress=False)
    with pytest.raises(TuduiError, match=r"different --batch-size \(32 -> 16\)"):
        tudui.train(resume=run.run_dir, batch_size=16, epochs=2, progress=False)
    with pytest.raises(TuduiError, match=r"other optimizer settings \(--lr 0.01 -> 0.001\).*--weights .*last"):
        tudui.train(resume=run.run_dir, lr=0.001, epochs=2, progress=False)
    with pytest.raises(TuduiError, match="not a tudui run directory: it has no config.yaml$"):
        tudui.train(resume=tmp_path, epochs=2, progress=False)
    with pytest.raises(TuduiError, match="no run directory .*nowhere"):
        tudui.train(resume=tmp_path / "nowhere", epochs=2, progress=False)
    run.run_dir.joinpath("config.yaml").unlink()
    with pytest.raises(TuduiError, match=r"no config.yaml; its weights can start a new run: --weights .*last"):
        tudui.train(resume=run.run_dir, epochs=2, progress=False)


def test_a_longer_epochs_written_into_config_yaml_extends_the_run_as_the_flag_does(tmp_path, capsys):
    settings = dict(data="synthetic", batch_size=32, schedule="cosine", lr=0.02)
    straight = train(tmp_path / "straight", epochs=3, **settings)
    short = train(tmp_path / "short", epochs=2, **settings)
    config = short.run_dir / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 2", "epochs: 3"))
    capsys.readouterr()
    tudui.train(resume=short.run_dir)
    assert "--epochs 2 -> 3 with --extend stretch" in capsys.readouterr().out
    rates = [row["lr"] for row in csv.DictReader((short.run_dir / "metrics.csv").open())]
    # the third epoch at the rate a 3-epoch run has there, not at the finished 2-epoch schedule's 0
    assert rates[2] == [row["lr"] for row in csv.DictReader((straight.run_dir / "metrics.csv").open())][2]
    assert float(rates[2]) > 0


def test_a_run_that_patience_stopped_is_not_trained_on_unless_patience_grows(tmp_path):
    run = train(tmp_path, data="synthetic", val_split=0.25, epochs=3, batch_size=32, patience=5)
    state_path = run.run_dir / "weights" / "state.pt"
    state = load_state(state_path)
    state["best_epoch"] = 1                  # as if epochs 2 and 3 had not improved
    torch.save(state, state_path)
    with pytest.raises(TuduiError, match=r"has gone 2 epochs, to epoch 3, without its val_accuracy improving "
                                         r"\(best in epoch 1\): --patience 2 would stop it again; .*larger "
                                         r"--patience"):
        tudui.train(resume=run.run_dir, epochs=6, patience=2, progress=False)
    with pytest.raises(TuduiError, match=r"different --monitor \(val_accuracy -> val_loss\)"):
        tudui.train(resume=run.run_dir, epochs=6, monitor="val_loss", progress=False)
    resumed = tudui.train(resume=run.run_dir, epochs=4, patience=3, progress=False)
    assert [row["epoch"] for row in resumed.history] == [4]


def test_resuming_after_the_images_changed_is_refused_until_they_are_back(tmp_path):
    data = write_class_folder(tmp_path / "data", ["a", "b"], 10)
    run = train(tmp_path / "runs", data=str(data), val_split=0.2, epochs=1, batch_size=8)
    extra = data / "a" / "extra.png"
    extra.write_bytes((data / "a" / "000.png").read_bytes())
    with pytest.raises(TuduiError, match=r"its images have changed since it started \(train 16 -> 17 images"
                                         r"(, other val images, as many)?\), so the val split .*--weights"):
        tudui.train(resume=run.run_dir, epochs=2, progress=False)
    assert [row["epoch"] for row in csv.DictReader((run.run_dir / "metrics.csv").open())] == ["1"]
    extra.unlink()
    assert len(tudui.train(resume=run.run_dir, epochs=2, progress=False).history) == 1
    # moved: refused where it was, resumed where it is now (the same images), and recorded there
    moved = data.rename(tmp_path / "elsewhere")
    with pytest.raises(TuduiError, match=r"its data set .*data is not there any more; if it moved, give its new "
                                         r"place with --data"):
        tudui.train(resume=run.run_dir, epochs=3, progress=False)
    assert len(tudui.train(resume=run.run_dir, data=str(moved), epochs=3, progress=False).history) == 1
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["data"]["dataset"] == str(moved)
    other = write_class_folder(tmp_path / "other", ["a", "b"], 11)
    with pytest.raises(TuduiError, match=r"its images have changed since it started \(train"):
        tudui.train(resume=run.run_dir, data=str(other), epochs=4, progress=False)
    shapes = write_class_folder(tmp_path / "shapes", ["circle", "square"], 10)   # another data set
    with pytest.raises(TuduiError, match=r"on .*shapes: its classes \(circle, square\) are not the run's \(a, b\); "
                                         r"to train on it .*tudui train --data .*shapes --weights .*last"):
        tudui.train(resume=run.run_dir, data=str(shapes), epochs=4, progress=False)


def test_best_is_not_overwritten_by_a_worse_model_after_a_resume(tmp_path):
    run = train(tmp_path, data="synthetic", val_split=0.25, epochs=1, batch_size=32)
    state_path = run.run_dir / "weights" / "state.pt"
    state = load_state(state_path)
    state["best_score"] = 1.01               # no later epoch can beat the recorded best val accuracy
    torch.save(state, state_path)
    best = run.best_weights.read_bytes()
    resumed = tudui.train(resume=run.run_dir, epochs=3, progress=False)
    assert run.best_weights.read_bytes() == best and resumed.best_epoch == 1


def test_a_nan_loss_stops_with_the_step_and_the_last_good_weights(tmp_path, monkeypatch):
    original = TensorLoader._batch

    def poisoned(self, *args):
        x, y = original(self, *args)
        return (torch.full_like(x, float("nan")) if self.shuffle and self.epoch == 1 else x), y

    monkeypatch.setattr(TensorLoader, "_batch", poisoned)
    with pytest.raises(TuduiError, match=r"nan at step 1 of this epoch.*last good weights .*last.safetensors "
                                         r"\(epoch 1\)"):
        train(tmp_path, data="synthetic", epochs=3, batch_size=32)
    weights, meta = read_weights(tmp_path / "exp" / "weights" / "best.safetensors")
    assert meta.epoch == 1 and all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


def test_a_full_disk_fails_clearly_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import tudui.weights as weights_module
    original, calls = weights_module.save_file, []

    def fills_the_disk(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) > 1:                    # epoch 1 wrote last (best is linked to it); epoch 2 finds the disk full
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(tensors, path, metadata=metadata)

    monkeypatch.setattr(weights_module, "save_file", fills_the_disk)
    with pytest.raises(TuduiError, match="cannot write .*last.safetensors: No space left on device"):
        train(tmp_path, data="synthetic", epochs=3, batch_size=32)
    weights = tmp_path / "exp" / "weights"
    assert read_weights(weights / "last.safetensors")[1].epoch == 1
    assert sorted(p.name for p in weights.iterdir()) == ["best.safetensors", "last.safetensors", "state.pt"]


def test_an_unwritable_run_directory_is_one_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the project folder should be")
    with pytest.raises(TuduiError, match="cannot create run directory"):
        train(blocker, data="synthetic", epochs=1)


def test_an_exception_in_a_dataloader_worker_ends_the_run_instead_of_hanging(tmp_path, monkeypatch):
    from tudui.data.datasets import FileImages
    folder = write_class_folder(tmp_path / "data", ["a", "b"], 12)

    def broken(self, i):
        raise RuntimeError("decoder crashed")

    monkeypatch.setattr(FileImages, "__getitem__", broken)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="decoder crashed"):
        train(tmp_path / "runs", data=str(folder), loader="dataloader", workers=2, epochs=1, batch_size=4)
    assert time.monotonic() - start < 120


def test_ctrl_c_from_the_terminal_saves_and_resume_finishes(tmp_path):
    """The CLI as a user runs it: Ctrl-C mid-run exits 130 with a resumable state, then --resume."""
    args = [sys.executable, "-m", "tudui", "train", "--data", "synthetic", "--epochs", "400",
            "--batch-size", "16", "--no-report"]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs" / "exp" / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "resume with" in err and "Traceback" not in err
    state = load_state(tmp_path / "runs" / "exp" / "weights" / "state.pt")
    assert state["epoch"] >= 2
    done = subprocess.run([sys.executable, "-m", "tudui", "train", "--resume", "runs/exp", "--epochs",
                           str(state["epoch"] + 1), "--no-report"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"start: resuming runs/exp after epoch {state['epoch']}" in done.stdout
    assert "random initial weights" not in done.stdout   # where the run first started is no longer true
    rows = list(csv.DictReader(metrics.open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, state["epoch"] + 2))


def test_train_piped_into_a_reader_that_leaves_keeps_every_epoch_and_resumes(tmp_path):
    """`tudui train ... | head`: the epoch whose line found the pipe closed is still saved, the run
    stops with 141 and a resumable state (before, BrokenPipeError ended it between the epoch's
    progress line and its checkpoint)."""
    args = [sys.executable, "-m", "tudui", "train", "--data", "synthetic", "--epochs", "400",
            "--batch-size", "16", "--no-report"]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stdout:
        if line.split()[:2] == ["epoch", "1/400"]:
            break
    process.stdout.close()      # the reader leaves, as head does after its lines
    err = process.stderr.read()
    assert process.wait(timeout=120) == 141, err
    assert "the output's reader went away" in err and "resume with" in err and "Traceback" not in err
    state = load_state(tmp_path / "runs" / "exp" / "weights" / "state.pt")
    rows = list(csv.DictReader((tmp_path / "runs" / "exp" / "metrics.csv").open()))
    assert state["epoch"] >= 2 and [int(r["epoch"]) for r in rows] == list(range(1, state["epoch"] + 1))
    done = subprocess.run([sys.executable, "-m", "tudui", "train", "--resume", "runs/exp", "--epochs",
                           str(state["epoch"] + 1), "--no-report"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "runs" / "exp" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, state["epoch"] + 2))


def test_resuming_a_run_another_process_holds_changes_nothing_in_it(tmp_path):
    result = tudui.train(data="synthetic", epochs=1, project=str(tmp_path), progress=False, report=False)
    before = {p.name: p.read_bytes() for p in result.run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    held = RunDir(result.run_dir).lock()
    with pytest.raises(TuduiError, match="being written by another tudui process"):
        tudui.train(resume=result.run_dir, epochs=2, progress=False)
    held.release()
    after = {p.name: p.read_bytes() for p in result.run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    assert tudui.train(resume=result.run_dir, epochs=2, progress=False, report=False).history[-1]["epoch"] == 2


def test_a_run_without_a_training_state_says_there_is_nothing_to_resume(tmp_path):
    run = train(tmp_path, data="synthetic", epochs=1, batch_size=32)
    (run.run_dir / "weights" / "state.pt").unlink()   # as a run killed in its first epoch leaves it
    with pytest.raises(TuduiError, match="training state not found: .*state.pt .*start it again without --resume"):
        tudui.train(resume=run.run_dir, epochs=2, progress=False)


def test_a_tampered_state_file_is_refused_before_the_run_changes(tmp_path):
    run = train(tmp_path, data="synthetic", epochs=1, batch_size=32)
    state_path = run.run_dir / "weights" / "state.pt"
    good = state_path.read_bytes()
    before = {name: (run.run_dir / name).read_bytes() for name in ("config.yaml", "metrics.csv")}
    state = load_state(state_path)
    first = next(iter(state["optimizer"]["state"]))
    for tamper, message in ((lambda b: torch.zeros(1).expand(10 ** 9), r"holds 4 bytes of data"),
                            (lambda b: torch.zeros(7), r"momentum_buffer' of parameter 0 has the shape \(7,\)")):
        changed = load_state(state_path) if state_path.read_bytes() == good else torch.load(state_path)
        changed["optimizer"]["state"][first]["momentum_buffer"] = tamper(None)
        torch.save(changed, state_path)
        with pytest.raises(TuduiError, match=message):
            tudui.train(resume=run.run_dir, epochs=2, progress=False, report=False)
        assert {name: (run.run_dir / name).read_bytes() for name in before} == before
        state_path.write_bytes(good)
    for key, value in (("elapsed", "x"), ("schedule", [0]), ("data", {"train": 5}),   # were errors mid-run
                       ("best_tiebreak", float("nan"))):
        changed = torch.load(state_path)
        changed[key] = value
        torch.save(changed, state_path)
        with pytest.raises(TuduiError, match=rf"state.pt is damaged: {key} is "):
            tudui.train(resume=run.run_dir, epochs=2, progress=False, report=False)
        assert {name: (run.run_dir / name).read_bytes() for name in before} == before
        state_path.write_bytes(good)
    state_path.unlink()
    os.mkfifo(state_path)                                  # would be read forever
    with pytest.raises(TuduiError, match="is not a plain file"):
        tudui.train(resume=run.run_dir, epochs=2, progress=False, report=False)
    state_path.unlink()
    state_path.write_bytes(good)
    assert len(tudui.train(resume=run.run_dir, epochs=2, progress=False, report=False).history) == 1


def test_a_resumed_run_keeps_its_normalisation_when_photos_were_edited_in_place(tmp_path):
    folder = write_class_folder(tmp_path / "photos", ["a", "b"], 12)
    first = train(tmp_path / "runs", data=str(folder), epochs=1, batch_size=8)
    measured = read_weights(first.run_dir / "weights" / "last.safetensors")[1].preprocess
    write_class_folder(folder, ["a", "b"], 12, seed=5)      # the same names, other pixels
    tudui.train(resume=first.run_dir, epochs=2, progress=False)
    kept = read_weights(first.run_dir / "weights" / "last.safetensors")[1]
    assert kept.epoch == 2 and (kept.preprocess.mean, kept.preprocess.std) == (measured.mean, measured.std)
