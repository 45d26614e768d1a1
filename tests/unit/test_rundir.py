"""RunDir: the one place that knows where a run's files are."""
import os

import pytest

from tudui.errors import TuduiError
from tudui.rundir import RunDir, create_numbered, resolve_weights_path


def test_new_runs_never_reuse_a_folder(tmp_path):
    names = [RunDir.create(tmp_path / "runs").path.name for _ in range(3)]
    assert names == ["exp", "exp2", "exp3"]
    assert RunDir.create(tmp_path / "runs", "adamw").path == tmp_path / "runs" / "adamw"
    assert RunDir.create(tmp_path / "runs", "adamw").path.name == "adamw2"


def test_a_run_directory_names_every_file_inside_it(tmp_path):
    run = RunDir(tmp_path / "exp")
    assert run.config == tmp_path / "exp" / "config.yaml"
    assert run.metrics == tmp_path / "exp" / "metrics.csv"
    assert (run.best, run.last, run.state) == tuple(tmp_path / "exp" / "weights" / name for name in
                                                     ("best.safetensors", "last.safetensors", "state.pt"))
    assert str(run) == str(tmp_path / "exp")


def test_a_run_is_found_from_its_folder_or_any_of_its_weights(tmp_path):
    run = RunDir.create(tmp_path)
    run.config.write_text("{}")
    run.weights_dir.mkdir()
    assert RunDir.find(run.path) == run
    assert RunDir.find(run.best) == run           # the file need not exist yet
    assert RunDir.find(tmp_path / "elsewhere.safetensors") is None
    run.config.unlink()
    assert RunDir.find(run.path) is None          # no config.yaml: not a run


def test_opening_a_run_to_resume_refuses_what_is_not_one(tmp_path):
    with pytest.raises(TuduiError, match="takes a run directory"):
        RunDir.open(tmp_path / "exp" / "weights")
    with pytest.raises(TuduiError, match="takes a run directory"):
        RunDir.open(tmp_path / "best.safetensors")
    with pytest.raises(TuduiError, match="no config.yaml"):
        RunDir.open(tmp_path)


def test_eval_folders_are_numbered_inside_the_run(tmp_path):
    run = RunDir(tmp_path / "exp")
    assert [run.create_eval_dir().name for _ in range(2)] == ["eval", "eval2"]


def test_a_run_directory_stands_for_its_best_weights(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(TuduiError, match="without weights/best.safetensors"):
        resolve_weights_path(tmp_path)
    run.weights_dir.mkdir()
    run.best.write_bytes(b"x")
    assert resolve_weights_path(tmp_path) == run.best
    with pytest.raises(TuduiError, match="weights not found"):
        resolve_weights_path(tmp_path / "nope.safetensors")


def test_a_folder_that_cannot_be_made_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TuduiError, match="cannot create run directory"):
        create_numbered(blocker, "exp")


def test_a_run_is_written_by_one_process_at_a_time(tmp_path):
    run = RunDir.create(tmp_path)
    held = run.lock()
    with pytest.raises(TuduiError, match=rf"being written by another tudui process \(PID {os.getpid()}\)"):
        run.lock()
    held.release()
    run.lock().close()                                   # free again once released


def test_weights_path_takes_a_runs_weights_folder_and_names_the_runs_of_a_project_folder(tmp_path):
    from tudui.rundir import resolve_weights_path
    for name in ("exp", "exp2"):
        (tmp_path / "runs" / name / "weights").mkdir(parents=True)
        (tmp_path / "runs" / name / "weights" / "best.safetensors").write_bytes(b"x")
    assert resolve_weights_path(tmp_path / "runs" / "exp") == tmp_path / "runs" / "exp" / "weights" / "best.safetensors"
    assert resolve_weights_path(tmp_path / "runs" / "exp2" / "weights") == \
        tmp_path / "runs" / "exp2" / "weights" / "best.safetensors"
    with pytest.raises(TuduiError, match=r"runs is a folder without weights/best.safetensors; .*the runs in it: "
                                         r"exp, exp2 \(pass one, e.g. .*exp\)"):
        resolve_weights_path(tmp_path / "runs")


def test_a_lock_that_is_a_link_or_a_pipe_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("the user's own file")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    os.symlink(victim, run.path / ".lock")
    with pytest.raises(TuduiError, match=r"cannot lock the run directory .*\.lock cannot be opened \(it is a link\)"):
        run.lock()
    assert victim.read_text() == "the user's own file"
    (run.path / ".lock").unlink()
    os.mkfifo(run.path / ".lock")
    with pytest.raises(TuduiError, match=r"\.lock is not a plain file"):
        run.lock()
    (run.path / ".lock").unlink()
    run.lock().release()                                   # a plain lock file works as before
    assert (run.path / ".lock").read_text().strip() == str(os.getpid())
