"""The course's CIFAR-10 recipe through tudui, beside the course's own plain loop, on the same data.

    python benchmarks/seed_recipe.py [--data ../shared/data/cifar10-jpeg.tar.gz] [--seeds 0 1] [--epochs 10]

Prints one JSON line per (recipe, seed) and one summary line per recipe: test accuracy after
each epoch, wall seconds of training + evaluation (unpacking the archive is done before timing
starts and reported apart), images/s. The two recipes alternate seed by seed so that both see
the same machine noise; compare their ratio, not absolute times.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from common import CIFAR_COPY, REPO, git_commit, machine
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import tudui
from tudui.data.folders import resolve_folder
from tudui.files import cache_root
from tudui.models import create_model


def course_loop(root: Path, epochs: int, seed: int) -> dict:
    """The course's script, as written there: ImageFolder + ToTensor, SGD 0.01, batch 64."""
    torch.manual_seed(seed)
    train_data = datasets.ImageFolder(str(root / "train"), transform=transforms.ToTensor())
    test_data = datasets.ImageFolder(str(root / "test"), transform=transforms.ToTensor())
    # The course's CIFAR10 arrives shuffled; an ImageFolder is sorted by class, so shuffle here.
    train_loader = DataLoader(train_data, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_data, batch_size=64)
    model = create_model("tudui", num_classes=10)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    accuracy, start = [], time.perf_counter()
    for _ in range(epochs):
        model.train()
        for images, targets in train_loader:
            loss = loss_fn(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, targets in test_loader:
                correct += (model(images).argmax(1) == targets).sum().item()
        accuracy.append(correct / len(test_data))
    seconds = time.perf_counter() - start
    return {"accuracy": accuracy[-1], "accuracy_per_epoch": accuracy, "wall_s": seconds,
            "images_per_s": epochs * len(train_data) / seconds}


def tudui_seed(data: Path, epochs: int, seed: int, project: Path) -> dict:
    start = time.perf_counter()
    result = tudui.train(config_file=REPO / "configs" / "seed.yaml", data=str(data), epochs=epochs,
                         seed=seed, project=str(project), progress=False)
    seconds = time.perf_counter() - start
    # The copy has train/ and test/ and no val split: tudui keeps the last epoch and measures the
    # test split once, at the end (the course's loop measures it after every epoch).
    return {"accuracy": result.test_accuracy, "wall_s": seconds,
            "images_per_s": statistics.mean(row["images_per_s"] for row in result.history)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(CIFAR_COPY))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--recipes", nargs="+", default=["tudui-seed", "course-loop"],
                        choices=["tudui-seed", "course-loop"])
    parser.add_argument("--out", default="bench-out", help="folder for the runs' directories")
    args = parser.parse_args()

    start = time.perf_counter()
    root = resolve_folder(args.data, cache_root() / "extracted")
    unpack_s = time.perf_counter() - start
    common = {"commit": git_commit(), "machine": machine(),
              "device": "cpu", "torch": torch.__version__,
              "dataset": Path(args.data).name, "epochs": args.epochs, "unpack_s": round(unpack_s, 1)}
    results: dict[str, list[dict]] = {r: [] for r in args.recipes}
    for seed in args.seeds:
        for recipe in args.recipes:
            if recipe == "course-loop":
                row = course_loop(root, args.epochs, seed)
            else:
                row = tudui_seed(Path(args.data), args.epochs, seed, Path(args.out))
            results[recipe].append(row)
            print(json.dumps({**common, "recipe": recipe, "seed": seed, **row}), flush=True)
    for recipe, rows in results.items():
        final = [r["accuracy"] for r in rows]
        wall = [r["wall_s"] for r in rows]
        print(json.dumps({**common, "recipe": recipe, "summary": True, "seeds": args.seeds,
                          "timed": "training + test evaluation (per epoch for the course loop, once at the "
                                   "end for tudui), data already unpacked",
                          "accuracy_mean": statistics.mean(final),
                          "accuracy_std": statistics.stdev(final) if len(final) > 1 else 0.0,
                          "wall_s_median": statistics.median(wall),
                          "s_per_epoch_median": statistics.median(wall) / args.epochs}), flush=True)


if __name__ == "__main__":
    main()
