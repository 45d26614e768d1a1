"""The GPU session's plumbing, tried on the CPU: benchmarks/gpu.sh and record_race.py with a stand-in
for the record's script, on a small generated data set (a lent GPU machine has minutes, not time to
find a broken script)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from helpers import REPO, write_class_folder

# Reads the files the record reads, as it reads them, and prints its final rows as it does (with its
# own `range(200)` of timed runs after one warm-up); its "model" is the nearest class mean.
STAND_IN = '''
import sys, torch

def load(name):
    data = torch.load(f"cifar10/{name}.pt")
    images, labels = data["images"], data["labels"]
    assert images.dtype == torch.uint8 and images.shape[1:] == (32, 32, 3), images.shape
    assert labels.dtype == torch.int64 and len(labels) == len(images) and len(data["classes"]) == 3
    return images.float().flatten(1), labels

def main(run):
    (x, y), (tx, ty) = load("train"), load("test")
    assert len(set(y[:10].tolist())) > 1, "the training set is not shuffled"
    means = torch.stack([x[y == k].mean(0) for k in range(3)])
    accuracy = (torch.cdist(tx, means).argmin(1) == ty).float().mean().item()
    # as good as instant: never beaten
    print(f"|  {run}  |  eval  |  0.0  |  {accuracy:.4f}  |  {accuracy:.4f}  |  0.0001  |")
    return accuracy

FAIL
print("|  run  |  epoch  |  train_acc  |  val_acc  |  tta_val_acc  |  time_seconds  |")
main("warmup")
accs = [main(run) for run in range(200)]
'''
TINY = "batch_size=16 widths=8,16,16"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("race-data")
    write_class_folder(root / "train", ["cat", "dog", "fox"], 30, seed=1)
    write_class_folder(root / "test", ["cat", "dog", "fox"], 10, seed=2)
    return root


def stand_in(folder: Path, fail: bool = False) -> Path:
    path = folder / "airbench94_muon.py"
    path.write_text(STAND_IN.replace("FAIL", "sys.exit('no CUDA here')" if fail else ""))
    return path


def gpu_sh(tmp_path: Path, data: Path, record: Path, **env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEVICE": "cpu", "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "LOGS": str(tmp_path / "logs"), "SEEDS": "0 1", "RUNS": "2", **env}
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), str(data), str(record)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_gpu_sh_races_the_record_against_each_candidate_and_packs_its_logs_in_one_file(tmp_path, data):
    done = gpu_sh(tmp_path, data, stand_in(tmp_path), STEPS="race", RACE_SET=TINY,
                  RACE="epochs=1\noptimizer=muon epochs=2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "record: 100.00% +- 0.00% over 2 runs" in done.stdout, done.stdout
    assert done.stdout.count("does not beat the record") == 2, done.stdout   # it takes no time at all
    with tarfile.open(tmp_path / "out" / "gpu-logs.tgz") as tar:   # one file back from a lent machine
        lines = [json.loads(line) for line in tar.extractfile("logs/race.jsonl").read().decode().splitlines()]
        assert {"logs/machine.txt", "logs/race.err"} <= set(tar.getnames())
    assert [r["run"] for r in lines if r["side"] == "record" and "run" in r] == [0, 1]
    ours = [r for r in lines if r["side"] == "tudui" and not r.get("summary")]
    assert [(r["seed"], r["settings"][-1], r["epochs_run"]) for r in ours] == [
        (0, "epochs=1", 1), (1, "epochs=1", 1), (0, "epochs=2", 2), (1, "epochs=2", 2)]
    summaries = [r for r in lines if r.get("summary")]
    assert [(r["side"], r.get("beats_record")) for r in summaries] == [
        ("record", None), ("tudui", False), ("tudui", False)]
    assert summaries[2]["settings"] == TINY.split() + ["optimizer=muon", "epochs=2"]


def test_tudui_side_still_runs_when_the_record_fails(tmp_path, data):
    done = subprocess.run([sys.executable, "record_race.py", "--record", str(stand_in(tmp_path, fail=True)),
                           "--data", str(data), "--device", "cpu", "--seeds", "0", "--work", str(tmp_path / "w"),
                           "--set", *TINY.split(), "epochs=1"], cwd=REPO / "benchmarks",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "the record's script failed (exit 1)" in done.stderr and "no CUDA here" in done.stderr
    summary = [json.loads(line) for line in done.stdout.splitlines() if '"summary"' in line]
    assert [(r["side"], r["beats_record"]) for r in summary] == [("tudui", None)]


def test_gpu_sh_skips_the_parts_that_no_longer_fit_its_budget(tmp_path, data):
    done = gpu_sh(tmp_path, data, stand_in(tmp_path), STEPS="race start nonsense", BUDGET="50")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "=== race skipped" in done.stdout and "it needs 150" in done.stdout
    assert "=== start skipped" in done.stdout and "=== nonsense: no such part" in done.stdout
    assert (tmp_path / "out" / "gpu-logs.tgz").is_file()


def test_jpeg_reduced_prints_a_line_per_model_with_both_timings_and_a_small_difference(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "jpeg_reduced.py"), "--photos", "4",
                             "--repeats", "1", "--models", "fastnet", "--data", str(tmp_path / "none")],
                            cwd=REPO / "benchmarks", capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["model"] == "fastnet" and line["decode_side"] == 32 and line["photos"] == 4
    assert line["ms_per_photo"]["whole"] > 0 and line["ms_per_photo"]["reduced"] > 0
    assert line["input_difference"]["mean"] < 0.02
