"""Training speed of one process against several (torchrun, DistributedDataParallel).

    python benchmarks/distributed.py [--data cifar10-jpeg.tar.gz] [--seeds 0 1] [--epochs 1]

On the CPU it compares, for the fast recipe: one process with one thread, one process with
two threads, and two processes (Gloo) with one thread each. With CUDA GPUs it compares one
process on one GPU with one process per GPU (with one GPU: the overhead of DDP itself, by
running one process under torchrun). Each run is a whole `tudui train` in a subprocess; the
figure is the training images/s of its epochs as tudui prints them (all processes together,
timed by rank 0, evaluation excluded). One JSON line per run, then one summary per setting.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

import torch

from common import CIFAR_COPY, REPO, git_commit, machine


def settings_to_compare(cuda: int) -> dict[str, tuple[list[str], int]]:
    """{name: (launcher arguments before `train`, OMP threads)}."""
    if cuda:
        gpus = max(cuda, 1)
        return {"1 GPU, 1 process": (["-m", "tudui"], 4),
                f"{gpus} GPU(s), torchrun": (["-m", "torch.distributed.run", "--standalone",
                                             f"--nproc-per-node={gpus}", "-m", "tudui"], 4)}
    return {"1 process, 1 thread": (["-m", "tudui"], 1),
            "1 process, 2 threads": (["-m", "tudui"], 2),
            "2 processes (Gloo), 1 thread each": (["-m", "torch.distributed.run", "--standalone",
                                                   "--nproc-per-node=2", "-m", "tudui"], 1)}


def one_run(launcher: list[str], threads: int, data: str, epochs: int, seed: int, out: str, device: str) -> dict:
    command = [sys.executable, *launcher, "train", "--config", str(REPO / "configs" / "cifar10-fast.yaml"),
               "--data", data, "--epochs", str(epochs), "--seed", str(seed), "--project", out, "--no-report",
               "--device", device]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600,
                            env={**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    rates = [float(m.replace(",", "")) for m in re.findall(r"^epoch .* ([\d,]+) img/s$", result.stdout, re.M)]
    accuracy = re.search(r"^test accuracy ([\d.]+)%", result.stdout, re.M)
    return {"images_per_s": statistics.median(rates), "epochs": len(rates),
            "test_accuracy": float(accuracy.group(1)) / 100 if accuracy else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(CIFAR_COPY))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = "cuda" if cuda else "cpu"
    common = {"benchmark": "distributed", "commit": git_commit(), "machine": machine(device), "device": device,
              "dataset": os.path.basename(args.data), "recipe": "configs/cifar10-fast.yaml", "epochs": args.epochs,
              "timed": "training images/s of each epoch as printed (median over epochs), evaluation excluded"}
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as out:
        # Settings alternate within each seed, so a busy spell on a shared machine hits them alike.
        for seed in args.seeds:
            for name, (launcher, threads) in settings_to_compare(cuda).items():
                row = one_run(launcher, threads, args.data, args.epochs, seed, out, device)
                runs.setdefault(name, []).append(row)
                print(json.dumps({**common, "setting": name, "seed": seed, **row}), flush=True)
    for name, rows in runs.items():
        rates = [r["images_per_s"] for r in rows]
        print(json.dumps({**common, "setting": name, "summary": True, "seeds": args.seeds,
                          "images_per_s_mean": round(statistics.mean(rates), 1),
                          "images_per_s_std": round(statistics.stdev(rates), 1) if len(rates) > 1 else 0.0}),
              flush=True)


if __name__ == "__main__":
    main()
