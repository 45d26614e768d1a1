"""Time to accuracy on CIFAR-10: recipes side by side on the same data, several seeds.

    python benchmarks/time_to_accuracy.py [--data ../shared/data/cifar10-jpeg.tar.gz]
        [--recipes seed fast fast-budget] [--seeds 0 1] [--budget SECONDS] [--device auto]
        [--set KEY=VALUE ...] [--warmup N]

Recipes: `seed` is configs/seed.yaml (the course), `fast` is configs/cifar10-fast.yaml, and
`fast-budget` is the fast recipe with --time-budget set to the seed recipe's median wall
time measured in this same invocation (or --budget). Each (recipe, seed) prints a JSON line;
each recipe then prints a summary line with mean ± std test accuracy.

Timing: `train_s` is the training steps alone (what airbench times); `fit_s` adds the test
evaluations inside the run, the final TTA pass included (what --time-budget bounds, plus
that final pass); `wall_s` is the whole tudui.train call, which adds setup
(reading the decoded tensors, channel statistics, writing files), but not the report of
pictures a run writes at its end (runs here use --no-report). Decoding the images once
into the on-disk cache is done before any timing and reported as `decode_s`. On a GPU, one
untimed warm-up run of the first recipe (--warmup, one epoch) comes first, so CUDA's and
cuDNN's one-time set-up (and torch.compile's, with --set compile=true) is not counted in
the first seed's time; airbench times its runs the same way.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml
from common import CIFAR_COPY, REPO, git_commit, machine

import tudui
from tudui.data import build_dataset, decode_to_tensor
from tudui.files import cache_root
from tudui.runtime import resolve_device

CONFIGS = {"seed": REPO / "configs" / "seed.yaml", "fast": REPO / "configs" / "cifar10-fast.yaml",
           "fast-budget": REPO / "configs" / "cifar10-fast.yaml"}


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key.replace("-", "_")] = yaml.safe_load(value)
    return out


def run(recipe: str, data: str, seed: int, device: str, budget: float | None, out: Path,
        extra: dict, config: str | Path | None = None) -> dict:
    """One tudui.train of recipe (or of the settings file config), timed."""
    overrides = {"data": data, "seed": seed, "device": device, "project": str(out), "report": False, **extra}
    if recipe == "fast-budget":
        overrides.update(time_budget=budget, epochs=1000)
    start = time.perf_counter()
    result = tudui.train(config_file=config or CONFIGS[recipe], progress=False, **overrides)
    wall = time.perf_counter() - start
    fit_s = sum(row["seconds"] for row in result.history)
    train_s = sum(row["train_seconds"] for row in result.history)
    # fit_s: the epochs; wall_s adds the one test pass of the kept weights, reading data and the run directory.
    return {"accuracy": result.test_accuracy, "epochs_run": len(result.history),
            "tta": result.config.train.tta, "train_s": train_s, "fit_s": fit_s, "wall_s": wall,
            "images_per_s": statistics.mean(row["images_per_s"] for row in result.history),
            "epoch_s": [round(row["seconds"], 3) for row in result.history],
            "time_budget": result.config.train.time_budget or None, "run_dir": str(result.run_dir)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(CIFAR_COPY))
    parser.add_argument("--recipes", nargs="+", default=["seed", "fast", "fast-budget"], choices=list(CONFIGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--budget", type=float, help="seconds for fast-budget (default: the seed recipe's median)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra settings for every recipe, named like the flags (e.g. widths=32,64,128)")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed one-epoch runs first (default: 1 on a GPU, 0 on a CPU)")
    args = parser.parse_args()

    start = time.perf_counter()
    spec = build_dataset(args.data)
    for split in (spec.train, spec.test):
        decode_to_tensor(split, 32, cache_root() / "tensors")
    decode_s = time.perf_counter() - start
    common = {"commit": git_commit(), "machine": machine(args.device), "device": args.device,
              "torch": torch.__version__, "dataset": Path(args.data).name, "decode_s": round(decode_s, 1),
              "settings": args.set}
    extra = parse_sets(args.set)
    warmup = args.warmup if args.warmup is not None else int(resolve_device(args.device).type == "cuda")
    for i in range(warmup):
        row = run(args.recipes[0] if args.recipes[0] != "fast-budget" else "fast", args.data, 1000 + i,
                  args.device, None, Path(args.out), {**extra, "epochs": 1})
        print(json.dumps({**common, "warmup": True, "epoch_s": row["epoch_s"]}), flush=True)
    results: dict[str, list[dict]] = {}
    budget = args.budget
    # Recipes run in the order given for each seed; fast-budget needs the seed recipe's time first.
    for seed in args.seeds:
        for recipe in args.recipes:
            if recipe == "fast-budget" and budget is None:
                seed_times = [r["wall_s"] for r in results.get("seed", [])]
                if not seed_times:
                    parser.error("fast-budget needs --budget or the seed recipe before it")
                budget = statistics.median(seed_times)
            row = run(recipe, args.data, seed, args.device, budget, Path(args.out), extra)
            results.setdefault(recipe, []).append(row)
            print(json.dumps({**common, "recipe": recipe, "seed": seed,
                              **row}), flush=True)
    for recipe, rows in results.items():
        accuracy = [r["accuracy"] for r in rows]
        summary = {"recipe": recipe, "summary": True, "seeds": args.seeds, "tta": rows[0]["tta"],
                   "accuracy_mean": statistics.mean(accuracy),
                   "accuracy_std": statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
                   "train_s_median": statistics.median(r["train_s"] for r in rows),
                   "fit_s_median": statistics.median(r["fit_s"] for r in rows),
                   "wall_s_median": statistics.median(r["wall_s"] for r in rows),
                   "images_per_s_median": statistics.median(r["images_per_s"] for r in rows),
                   "time_budget": rows[0]["time_budget"]}
        print(json.dumps({**common, **summary}), flush=True)
        print(f"{recipe} {' '.join(args.set)} on {common['machine']}: accuracy "
              f"{summary['accuracy_mean']:.2%} +- {summary['accuracy_std']:.2%} over {len(rows)} seeds "
              f"(TTA {summary['tta']}), training {summary['train_s_median']:.2f} s, with the final "
              f"evaluation {summary['fit_s_median']:.2f} s, whole call "
              f"{summary['wall_s_median']:.1f} s (medians)", file=sys.stderr)

if __name__ == "__main__":
    main()
