"""The speed record and tudui's fast recipe, side by side on one GPU, on the same CIFAR-10 copy.

    python benchmarks/record_race.py --record path/to/airbench94_muon.py [--runs 5]
        [--data ../shared/data/cifar10-jpeg.tar.gz] [--config configs/cifar10-fast.yaml]
        [--seeds 0 1 2 3 4] [--set KEY=VALUE ...] [--candidate "KEY=VALUE ..." ...]
        [--work /tmp/record-race]

The record (KellerJordan/cifar10-airbench on GitHub) is a yardstick, never part of tudui: bring
your own copy of airbench94_muon.py (git-ignored). This script
1. writes the copy's images as the record reads them: cifar10/train.pt and test.pt under --work,
   {"images": uint8 N x 32 x 32 x 3, "labels": int64, "classes": names}, the training set
   shuffled once with a fixed seed (its whitening layer is fitted on the first 5,000 images, which
   would otherwise all be airplanes);
2. runs a copy of the record's script there with its 200 timed runs cut to --runs (its own
   warm-up run first, as it does), and reads each run's final row: TTA accuracy and seconds
   (training + the final TTA pass); if it fails, its output is shown and tudui's side still runs;
3. runs tudui's recipe through time_to_accuracy.py's run() on the same GPU, once per candidate
   (the settings file with --set, then each --candidate's settings on top; one candidate, the file
   as it is, when none is given): one untimed one-epoch warm-up run, then --seeds runs, reading the
   same two numbers (fit_s: training + the final test pass, TTA included);
4. prints a JSON line per run and a summary line per side as soon as that side is done: mean +-
   std accuracy, median seconds, and for each candidate whether it beat the record (a mean
   accuracy at least the record's and a lower median time, issue 15's first target).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from common import CIFAR_COPY, REPO, git_commit, machine
from time_to_accuracy import parse_sets, run

from tudui.data import build_dataset, decode_to_tensor
from tudui.files import cache_root

SHUFFLE_SEED = 0
RUN_COUNT = re.compile(r"range\(200\)")


def write_record_data(data: str, folder: Path) -> None:
    """The copy's train and test splits as the record's CifarLoader loads them."""
    spec = build_dataset(data)
    folder.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", spec.train), ("test", spec.test)):
        images, labels = decode_to_tensor(split, 32, cache_root() / "tensors")
        if name == "train":
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SHUFFLE_SEED))
            images, labels = images[order], labels[order]
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous(), "labels": labels.long(),
                    "classes": list(spec.class_names)}, folder / f"{name}.pt")


def record_script(source: Path, work: Path, runs: int) -> Path:
    """A copy of the record's script with its number of timed runs set to runs."""
    text = source.read_text()
    if len(RUN_COUNT.findall(text)) != 1:
        raise SystemExit(f"{source}: expected one 'range(200)' (its timed runs) to shorten; is it airbench94_muon.py?")
    script = work / source.name
    script.write_text(RUN_COUNT.sub(f"range({runs})", text))
    return script


def parse_record(output: str) -> list[dict]:
    """The final row of each run: |  run  |  eval  |  train_acc  |  val_acc  |  tta_val_acc  |  seconds  |."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[1] == "eval":
            rows.append({"accuracy": float(cells[4]), "seconds": float(cells[5])})
    return rows


def summary(rows: list[dict], key: str) -> dict:
    accuracy = [r["accuracy"] for r in rows]
    return {"runs": len(rows), "accuracy_mean": round(statistics.mean(accuracy), 5),
            "accuracy_std": round(statistics.stdev(accuracy), 5) if len(rows) > 1 else 0.0,
            "seconds_median": round(statistics.median(r[key] for r in rows), 3),
            "seconds_min": round(min(r[key] for r in rows), 3), "seconds_max": round(max(r[key] for r in rows), 3)}


def beats(ours: dict, record: dict | None) -> bool | None:
    """Whether a candidate's summary beats the record's: at least its mean accuracy, in less median time."""
    if record is None:
        return None
    return ours["accuracy_mean"] >= record["accuracy_mean"] and ours["seconds_median"] < record["seconds_median"]


def race_record(args: argparse.Namespace, work: Path, common: dict) -> dict | None:
    """The record's runs (one JSON line each) and their summary, or None (with its output shown) if it failed."""
    script = record_script(args.record, work, args.runs)
    done = subprocess.run([sys.executable, script.name], cwd=work, capture_output=True, text=True)
    rows = parse_record(done.stdout)
    if done.returncode != 0 or len(rows) != args.runs + 1:
        print(f"the record's script failed (exit {done.returncode}); tudui's side runs without it:\n"
              f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}", file=sys.stderr, flush=True)
        return None
    rows = rows[1:]   # its first run is the warm-up of the compiled model
    for i, row in enumerate(rows):
        print(json.dumps({**common, "side": "record", "run": i, **row}), flush=True)
    result = summary(rows, "seconds")
    print(json.dumps({**common, "side": "record", "summary": True, **result}), flush=True)
    print(f"record: {result['accuracy_mean']:.2%} +- {result['accuracy_std']:.2%} over {result['runs']} runs, "
          f"{result['seconds_median']:.3f} s (median)", file=sys.stderr, flush=True)
    return result


def race_candidate(args: argparse.Namespace, work: Path, common: dict, candidate: list[str],
                   record: dict | None) -> None:
    """tudui's runs of one candidate (its settings over --set): warm-up, seeds, summary."""
    settings = args.set + candidate
    extra = parse_sets(settings)
    run("fast", args.data, 1000, args.device, None, work / "runs", {**extra, "epochs": 1}, config=args.config)
    rows = []
    for seed in args.seeds:
        row = run("fast", args.data, seed, args.device, None, work / "runs", extra, config=args.config)
        rows.append(row)
        print(json.dumps({**common, "side": "tudui", "seed": seed, "settings": settings, **row}), flush=True)
    result = summary(rows, "fit_s")
    verdict = beats(result, record)
    print(json.dumps({**common, "side": "tudui", "summary": True, "config": Path(args.config).name,
                      "settings": settings, **result, "beats_record": verdict}), flush=True)
    print(f"tudui {Path(args.config).name} {' '.join(settings)}: {result['accuracy_mean']:.2%} +- "
          f"{result['accuracy_std']:.2%} over {result['runs']} seeds, {result['seconds_median']:.3f} s (median)"
          + ("" if verdict is None else "; beats the record" if verdict else "; does not beat the record"),
          file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", type=Path, required=True, help="your copy of airbench94_muon.py")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data", default=str(CIFAR_COPY))
    parser.add_argument("--config", default=str(REPO / "configs" / "cifar10-fast.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="settings of every candidate")
    parser.add_argument("--candidate", action="append", default=[], metavar='"KEY=VALUE ..."',
                        help="one of tudui's sides, raced in the order given (default: the settings file as it is)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/record-race"))
    parser.add_argument("--device", default="cuda", help="tudui's side (cuda; cpu only to try the script out)")
    parser.add_argument("--only-data", action="store_true", help="write the record's data files and stop")
    args = parser.parse_args()
    work = args.work.resolve()
    write_record_data(args.data, work / "cifar10")
    if args.only_data:
        return
    common = {"commit": git_commit(), "machine": machine(args.device), "torch": torch.__version__,
              "dataset": Path(args.data).name}
    record = race_record(args, work, common)
    for candidate in args.candidate or [""]:
        race_candidate(args, work, common, candidate.split(), record)


if __name__ == "__main__":
    main()
