"""Fine-tuning a torchvision model on a folder: accuracy and training speed, frozen backbone vs all layers.

    python benchmarks/finetune.py [--data ../shared/data/cifar10-jpeg.tar.gz] [--model resnet18]
        [--classes cat,dog] [--train-per-class 250] [--test-per-class 100] [--input-size 0]
        [--epochs 2] [--seeds 0,1] [--modes frozen,full,schedule]
        [--pretrained | --weights-file PATH | --weights RUN_OR_STATE_DICT]

The default data is a two-class subset of the CIFAR-10 JPEG copy (the first N images of
each class, linked into a train/ + test/ folder), resized to the weights' input size
(--input-size 0) or the size given. Modes: frozen (--freeze-backbone: only the new head
trains), full (every layer from the start) and schedule (--freeze-epochs 1: the head
first, then every layer with the backbone at 0.1x the rate). Without --pretrained,
--weights-file or --weights the backbone starts from random weights, and the JSON says so.
--weights takes what tudui's --weights takes: e.g. a run trained on other classes, whose
head is replaced for these two.

Prints one JSON line per mode: mean ± std over the seeds of the final test accuracy and of
the training images/s (each run's median epoch: train passes only, no evaluation, no
decoding before the first step), and the mean wall seconds of a whole run (data, model,
epochs, tests, saving).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import CIFAR_COPY, git_commit, machine

import tudui
from tudui.data.folders import resolve_folder
from tudui.files import cache_root
from tudui.models import model_entry
from tudui.runtime import resolve_device

MODES = {"frozen": {"freeze_backbone": True}, "full": {}, "schedule": {"freeze_epochs": 1}}


def class_subset(source: str, classes: list[str], train_per_class: int, test_per_class: int,
                 target: Path) -> Path:
    """target/train/<class>/ and target/test/<class>/ holding links to the first images of each class."""
    root = resolve_folder(source, cache_root() / "extracted")
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in classes:
            files = sorted((root / split / name).glob("*"))[:count]
            if len(files) < count:
                raise SystemExit(f"{root / split / name} has {len(files)} images, {count} asked for")
            (target / split / name).mkdir(parents=True)
            for file in files:
                (target / split / name / file.name).symlink_to(file.resolve())
    return target


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(CIFAR_COPY), help="a CIFAR-10-style train/ + test/ folder or archive")
    parser.add_argument("--classes", default="cat,dog")
    parser.add_argument("--train-per-class", type=int, default=250)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--input-size", type=int, default=0, help="0: the weights' own (224 for resnet18)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--modes", default="frozen,full,schedule")
    parser.add_argument("--pretrained", action="store_true", help="torchvision's ImageNet weights (hub cache)")
    parser.add_argument("--weights-file", default="", help="a local copy of those weights")
    parser.add_argument("--weights", default="", help="start from these weights (tudui's --weights)")
    args = parser.parse_args()
    if not Path(args.data).exists():
        raise SystemExit(f"data not found: {args.data} (the CIFAR-10 JPEG copy is absent; pass --data)")
    classes, seeds = args.classes.split(","), [int(s) for s in args.seeds.split(",")]
    start = ("pretrained: " + (args.weights_file or "torchvision ImageNet weights")) \
        if args.pretrained or args.weights_file else f"weights {args.weights}" if args.weights \
        else "random initial weights (no pretrained weights)"
    input_size = args.input_size or model_entry(args.model).input_size
    device = resolve_device("auto").type
    with tempfile.TemporaryDirectory(prefix="tudui-finetune-") as tmp:
        folder = class_subset(args.data, classes, args.train_per_class, args.test_per_class, Path(tmp) / "data")
        modes = args.modes.split(",")
        runs: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in modes}
        # Modes alternate within each seed, so a busy spell on a shared machine hits them alike.
        for seed in seeds:
            for mode in modes:
                began = time.perf_counter()
                result = tudui.train(data=str(folder), model=args.model, input_size=args.input_size,
                                     epochs=args.epochs, batch_size=args.batch_size, seed=seed,
                                     pretrained=args.pretrained, weights_file=args.weights_file,
                                     weights=args.weights, project=str(Path(tmp) / "runs"),
                                     progress=False, **MODES[mode])
                rate = statistics.median(row["images_per_s"] for row in result.history)
                runs[mode].append((result.test_accuracy, rate, time.perf_counter() - began))
        for mode in modes:
            accuracies, rates, walls = (list(column) for column in zip(*runs[mode]))
            accuracy, accuracy_std = mean_std(accuracies)
            rate, rate_std = mean_std(rates)
            print(json.dumps({
                "benchmark": "finetune", "commit": git_commit(), "machine": machine(device), "device": device,
                "dataset": f"{Path(args.data).name}: {'/'.join(classes)}, {args.train_per_class}+"
                           f"{args.test_per_class} per class", "model": args.model, "input_size": input_size,
                "start": start, "mode": mode, "epochs": args.epochs, "batch_size": args.batch_size,
                "seeds": seeds, "test_accuracy_mean": round(accuracy, 4), "test_accuracy_std": round(accuracy_std, 4),
                "train_images_per_s_mean": round(rate, 1), "train_images_per_s_std": round(rate_std, 1),
                "wall_s_mean": round(statistics.fmean(walls), 1),
                "per_seed_accuracy": [round(a, 4) for a in accuracies]}), flush=True)


if __name__ == "__main__":
    main()
