"""Several processes, one run: torchrun on the CPU with Gloo, as CI can run it (2 cores, one thread each)."""
import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import tudui
from tudui.weights import read_weights

from helpers import REPO

SETTINGS = ["--data", "digits", "--batch-size", "32", "--no-report"]


def tudui_cmd(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "tudui", "train", "--nproc", str(nproc), *args]


def run(command: list[str], cwd, env=None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def weights_of(path):
    return read_weights(path)[0]


def max_difference(a, b) -> float:
    first, second = weights_of(a), weights_of(b)
    assert first.keys() == second.keys()
    return max((first[k].double() - second[k].double()).abs().max().item() for k in first)


def test_two_processes_train_one_run_with_the_weights_of_one_process(tmp_path):
    settings = ["--data", "synthetic", "--val-split", "0.25", "--batch-size", "32", "--epochs", "2", "--no-report"]
    two = run(tudui_cmd(*settings, "--project", "two"), tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run([sys.executable, "-m", "tudui", "train", *settings, "--project", "one"], tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["exp"]          # one run, written once
    assert two.stdout.count("test accuracy") == 1 and two.stdout.count("data: ") == 1   # printed once
    assert "data: " not in two.stderr and "final evaluation failed" not in two.stderr  # rank 1 says nothing
    # The same global batch and seed: the same weights, to float tolerance (the gradients are summed
    # in another order); the per-epoch numbers agree to the digits metrics.csv keeps.
    assert max_difference(tmp_path / "two/exp/weights/last.safetensors",
                          tmp_path / "one/exp/weights/last.safetensors") < 1e-5
    rows = [list(csv.DictReader((tmp_path / name / "exp/metrics.csv").open())) for name in ("two", "one")]
    assert [(r["train_loss"], r["val_accuracy"]) for r in rows[0]] == [(r["train_loss"], r["val_accuracy"])
                                                                       for r in rows[1]]
    # The sharded, summed evaluation equals one process's evaluation of the same weights.
    alone = tudui.evaluate(tmp_path / "two/exp/weights/last.safetensors", split="val")
    assert float(rows[0][-1]["val_accuracy"]) == pytest.approx(alone["accuracy"], abs=1e-6)
    assert alone["count"] == 64


def test_one_process_under_torchrun_runs_ddp_with_the_weights_of_a_plain_run(tmp_path):
    # torchrun with one process joins a process group of one: the path of N processes, on one
    # device (a one-GPU machine tests NCCL and times DDP's own cost this way).
    settings = ["--data", "synthetic", "--val-split", "0.25", "--batch-size", "32", "--epochs", "2", "--no-report"]
    ddp = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
               "-m", "tudui", "train", *settings, "--project", "ddp"], tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "on cpu (1 process, DistributedDataParallel over gloo)" in ddp.stdout
    plain = run([sys.executable, "-m", "tudui", "train", *settings, "--project", "plain"], tmp_path)
    assert plain.returncode == 0 and "DistributedDataParallel" not in plain.stdout
    assert max_difference(tmp_path / "ddp/exp/weights/last.safetensors",
                          tmp_path / "plain/exp/weights/last.safetensors") < 1e-6


def test_two_nodes_on_one_machine_finish_one_run(tmp_path):
    port = 29400 + os.getpid() % 500
    launchers = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "tudui-test",
         "-m", "tudui", "train", "--data", "synthetic", "--epochs", "1", "--batch-size", "32", "--no-report"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for _ in range(2)]
    outputs = [launcher.communicate(timeout=300) for launcher in launchers]
    assert [launcher.returncode for launcher in launchers] == [0, 0], outputs
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp"]
    assert sum(out.count("test accuracy") for out, _ in outputs) == 1


def test_sigterm_to_the_launcher_then_resume_gives_the_uninterrupted_weights(tmp_path):
    straight = run(tudui_cmd(*SETTINGS, "--epochs", "4", "--name", "straight"), tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    launcher = subprocess.Popen(tudui_cmd(*SETTINGS, "--epochs", "4", "--name", "stopped"), cwd=tmp_path,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    first_epoch = tmp_path / "runs/stopped/weights/last.safetensors"
    deadline = time.time() + 240
    while not first_epoch.exists() and time.time() < deadline and launcher.poll() is None:
        time.sleep(0.02)
    launcher.send_signal(signal.SIGTERM)                       # mid-epoch 2 (an epoch takes about a second)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 143, err[-3000:]
    assert err.count("interrupted: stopped in epoch 2") == 1   # every process stopped; one said so
    shutil.copytree(tmp_path / "runs/stopped", tmp_path / "runs/alone")
    resumed = run(tudui_cmd("--resume", "runs/stopped"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert max_difference(tmp_path / "runs/stopped/weights/last.safetensors",
                          tmp_path / "runs/straight/weights/last.safetensors") == 0.0
    # The saved position counts steps of the global batch: one process goes on from it as well,
    # with the same images in the same order. Its sums run in another order, so over the ~130 steps
    # left the weights drift apart by float rounding (1e-3 between a whole 1- and 2-process run).
    alone = run([sys.executable, "-m", "tudui", "train", "--resume", "runs/alone"], tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert max_difference(tmp_path / "runs/alone/weights/last.safetensors",
                          tmp_path / "runs/straight/weights/last.safetensors") < 5e-3
    losses = [[float(r["train_loss"]) for r in csv.DictReader((tmp_path / "runs" / name / "metrics.csv").open())]
              for name in ("alone", "straight")]
    assert losses[0] == pytest.approx(losses[1], rel=5e-3)


def test_a_process_that_fails_ends_the_whole_job_with_its_message(tmp_path):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import tudui.engine.loop as loop\n"
        "    from tudui.errors import TuduiError\n"
        "    original, calls = loop.TrainStep.__call__, []\n"
        "    def failing(self, inputs, targets):\n"
        "        calls.append(1)\n"
        "        if len(calls) == 3:\n"
        "            raise TuduiError('rank 1 could not read its batch')\n"
        "        return original(self, inputs, targets)\n"
        "    loop.TrainStep.__call__ = failing\n")
    began = time.time()
    result = run(tudui_cmd(*SETTINGS, "--epochs", "3"), tmp_path, env={"PYTHONPATH": str(inject)})
    assert result.returncode == 1 and time.time() - began < 120
    assert "error: rank 1 could not read its batch" in result.stderr
    assert "error: rank 0 stops: another process of this run ended" in result.stderr
    assert "Traceback" not in "\n".join(line for line in result.stderr.splitlines() if line.startswith("error"))


def test_batch_size_is_the_global_batch_and_must_divide_among_the_processes(tmp_path):
    result = run(tudui_cmd("--data", "synthetic", "--batch-size", "33", "--epochs", "1"), tmp_path)
    assert result.returncode == 2                 # a usage mistake, said once (by rank 0) for both processes
    assert result.stderr.count("--batch-size 33 is the batch of all 2 processes together; make it a multiple "
                               "of 2") == 1


def test_process_counts_the_machine_cannot_hold_are_refused_before_any_starts(tmp_path):
    too_many = (os.cpu_count() or 1) + 1
    result = run(tudui_cmd("--data", "synthetic", nproc=too_many), tmp_path, timeout=60)
    assert result.returncode == 2 and not (tmp_path / "runs").exists()
    if not torch.cuda.is_available():
        assert f"--nproc {too_many} on {os.cpu_count()} CPU core" in result.stderr
    result = run(tudui_cmd("--data", "synthetic", "--device", "cuda:0"), tmp_path, timeout=60)
    assert result.returncode == 2 and "--device cuda:0 names one GPU" in result.stderr and "give --device cuda" in \
        result.stderr


def test_two_processes_train_one_run_with_progressive_resizing(tmp_path):
    # Each epoch's size comes from its number, the same in every process. (fastnet's BatchNorm sees
    # each process's half of the batch, so its weights are not a one-process run's.)
    result = run(tudui_cmd("--data", "synthetic", "--model", "fastnet", "--widths", "8,8,8", "--batch-size", "32",
                           "--epochs", "2", "--progressive-size", "16", "--progressive-epochs", "1", "--no-report",
                           "--project", "two"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "progressive resizing: epoch 1 at 16 px" in result.stdout and result.stdout.count("test accuracy") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["exp"]
    assert len(list(csv.DictReader((tmp_path / "two/exp/metrics.csv").open()))) == 2


def test_progressive_resizing_by_the_clock_is_refused_with_several_processes(tmp_path):
    result = run(tudui_cmd("--data", "synthetic", "--model", "fastnet", "--progressive-size", "16",
                           "--progressive-epochs", "1", "--epochs", "2", "--time-budget", "30"), tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("--progressive-size under --time-budget decides each epoch's size by the time "
                               "spent") == 1
    assert "Traceback" not in result.stderr


def test_the_readme_names_the_torchrun_lines():
    text = (REPO / "README.md").read_text()
    assert "torchrun --nproc-per-node" in text and "--rdzv-endpoint" in text and "srun" in text


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
@pytest.mark.gpu
def test_two_gpus_train_one_run(tmp_path):
    result = run(tudui_cmd("--data", "synthetic", "--epochs", "1", "--batch-size", "32", "--device", "cuda"),
                 tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on cuda:0" in result.stdout
