"""Whole `tudui train` processes, timed from start to exit: recipes side by side, several seeds.

    python benchmarks/cpu_process.py --recipe "sgd=--config configs/cifar10-fast.yaml --time-budget 200" \\
        --recipe "muon=--config configs/cifar10-fast.yaml --time-budget 200 --optimizer muon" \\
        [--data ../shared/data/cifar10-jpeg.tar.gz] [--seeds 0 1] [--out bench-out] \\
        [--checkout muon=/tmp/before]

Each --recipe is NAME=ARGUMENTS (tudui train's own flags). --checkout NAME=DIR runs that recipe
with the tudui of another checkout (DIR/src: `git worktree add /tmp/before OLD_COMMIT`), so a
before/after pair runs side by side in one call; its rows carry that checkout's commit.

For every seed the recipes run one after the other, so a noisy machine slows them alike. What a user
waits for is timed: `wall_s` is the process from its start to its exit (imports, reading the cached
decoded images, training, the final test pass, the report); `start_s` is the time until the first
training epoch begins (the "start:" line), `summary_s` until the test accuracy is printed. The
images are decoded into the cache once before any timing (`tudui train ... --epochs 1 --time-budget
1`, untimed), as the second run of any user finds them. Prints a JSON line per run and per recipe
(mean +- std).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import CIFAR_COPY, REPO, git_commit, machine

TUDUI = [sys.executable, "-m", "tudui", "train"]


def timed_run(arguments: list[str], cwd: Path, checkout: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")} if checkout else None
    start = time.perf_counter()
    marks: dict[str, float] = {}
    lines: list[str] = []
    with subprocess.Popen(TUDUI + arguments, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env) as process:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            now = time.perf_counter() - start
            if line.startswith("start:"):
                marks.setdefault("start_s", now)
            elif line.startswith("test accuracy"):
                marks.setdefault("summary_s", now)
        code = process.wait()
    wall = time.perf_counter() - start
    text = "\n".join(lines)
    accuracy = re.search(r"^test accuracy ([\d.]+)%", text, re.M)
    epochs = re.findall(r"^epoch\s+(\d+)/", text, re.M)
    if code != 0 or accuracy is None:
        raise SystemExit(f"tudui train {' '.join(arguments)} failed with exit {code}:\n{text[-2000:]}")
    return {"accuracy": float(accuracy.group(1)) / 100, "wall_s": round(wall, 1),
            **{k: round(v, 1) for k, v in marks.items()}, "epochs_run": int(epochs[-1]) if epochs else 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", required=True, metavar="NAME=ARGUMENTS")
    parser.add_argument("--data", default=str(CIFAR_COPY))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", default="bench-out/process")
    parser.add_argument("--checkout", action="append", default=[], metavar="NAME=DIR")
    args = parser.parse_args()
    recipes = {}
    for item in args.recipe:
        name, _, arguments = item.partition("=")
        recipes[name] = shlex.split(arguments)
    checkouts = {name: Path(path).resolve() for name, _, path in (c.partition("=") for c in args.checkout)}
    for name, path in checkouts.items():
        if name not in recipes or not (path / "src" / "tudui").is_dir():
            parser.error(f"--checkout {name}={path}: needs a recipe {name} and a checkout with src/tudui")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = str(Path(args.data).resolve()) if Path(args.data).exists() else args.data   # a path, or a name (digits)
    # Untimed: decode the images into the cache (and check them) as a first run would.
    subprocess.run(TUDUI + ["--config", str(REPO / "configs" / "cifar10-fast.yaml"), "--data", data,
                            "--epochs", "1", "--time-budget", "1", "--tta", "0", "--no-report",
                            "--project", str(out), "--name", "warmup"],
                   cwd=REPO, check=True, capture_output=True)
    common = {"commit": git_commit(), "machine": machine("cpu"), "dataset": Path(data).name}
    commits = {name: git_commit(path) for name, path in checkouts.items()}
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for name, arguments in recipes.items():
            row = timed_run(arguments + ["--data", data, "--seed", str(seed), "--project", str(out),
                                         "--name", f"{name}-seed{seed}"], REPO, checkouts.get(name))
            results.setdefault(name, []).append(row)
            print(json.dumps({**common, "commit": commits.get(name, common["commit"]), "recipe": name,
                              "arguments": " ".join(arguments), "seed": seed, **row}), flush=True)
    for name, rows in results.items():
        accuracy = [r["accuracy"] for r in rows]
        summary = {"recipe": name, "summary": True, "seeds": args.seeds, "arguments": " ".join(recipes[name]),
                   "accuracy_mean": round(statistics.mean(accuracy), 5),
                   "accuracy_std": round(statistics.stdev(accuracy), 5) if len(rows) > 1 else 0.0,
                   **{f"{key}_median": round(statistics.median(r[key] for r in rows if key in r), 2)
                      for key in ("wall_s", "start_s", "summary_s")}}
        print(json.dumps({**common, "commit": commits.get(name, common["commit"]), **summary}), flush=True)


if __name__ == "__main__":
    main()
