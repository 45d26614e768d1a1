"""Folders of large photos: the photo preset (random resized crops + flips) on the tensor path
against the DataLoader path that decodes every photo each epoch, and the tensor loader's crop-flip.

    python benchmarks/photo_loader.py [--data ../shared/data/cifar10-jpeg.tar.gz] [--model resnet18]
        [--input-size 96] [--photos 120] [--epochs 4] [--acc-train 100] [--acc-test 50]
        [--acc-epochs 5] [--seeds 0,1,2] [--skip-accuracy]

The photos are real CIFAR-10 images (the first of four classes) upscaled (bicubic) to 1-5 MP
JPEGs of mixed aspect ratios, with a little noise so that they decode like photos, written to a
temporary folder (train/, and 16 in test/ that a run measures once at its end); without the
CIFAR copy, smooth random images. Three loaders, all at the
model's default settings otherwise:
  dataloader    --loader dataloader: PIL decode + RandomResizedCrop + flip each epoch (today's default)
  crop-flip     --loader tensor --augment crop-flip: decoded once at the input size, pad-and-shift crops
  photo-tensor  the new default: decoded once at twice the input size, random resized crops + flips
Prints JSON lines:
  - "train": images/s of train_one_epoch with a TrainStep (model + data, SGD), one model per
    loader, mean ± std and median over --epochs epochs after a warm-up one, the three loaders'
    epochs interleaved so that a machine busy with other work slows them alike; and the model
    alone (the same steps on one batch held in memory), the ceiling;
  - "data": the loader alone (no model): images/s of an epoch, median over 3 epochs after a warm-up;
    the decode (or cache read) before the first epoch is timed apart (decode_s);
  - "accuracy": test accuracy after --acc-epochs of training on --acc-train / --acc-test photos
    per class, dataloader against photo-tensor, mean ± std over --seeds, and the wall seconds of
    a whole run (data, model, epochs, test).
The decode cache ($TUDUI_CACHE) is a temporary folder: the first photo-tensor build decodes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import CIFAR_COPY, git_commit, machine
from PIL import Image

CLASSES = ["airplane", "automobile", "frog", "ship"]
LOADERS = {"dataloader": {"loader": "dataloader"},
           "crop-flip": {"loader": "tensor", "augment": "crop-flip"},
           "photo-tensor": {}}
ASPECTS = (4 / 3, 3 / 2, 1.0, 3 / 4, 2 / 3)


def source_images(data: str, split: str, per_class: int, skip: int = 0) -> list[tuple[Image.Image | None, str]]:
    """(small image, class) pairs: CIFAR-10's from the copy when it exists, else None (random)."""
    if not Path(data).exists():
        return [(None, name) for name in CLASSES for _ in range(per_class)]
    from tudui.data.folders import resolve_folder
    root = resolve_folder(data, _extracted())
    return [(Image.open(path).convert("RGB"), name) for name in CLASSES
            for path in sorted((root / split / name).glob("*"))[skip:skip + per_class]]


def _extracted() -> Path:
    """Where the CIFAR copy is unpacked: the user's tudui cache, not the benchmark's temporary one."""
    return Path(os.environ.get("TUDUI_BENCH_EXTRACTED", Path.home() / ".cache" / "tudui" / "extracted"))


def write_photos(target: Path, images: list[tuple[Image.Image | None, str]], megapixels: tuple[float, float],
                 seed: int) -> Path:
    """target/<class>/<i>.jpg: each image upscaled to a random size of megapixels, noised, JPEG 90."""
    rng = np.random.default_rng(seed)
    for i, (image, name) in enumerate(images):
        aspect = ASPECTS[rng.integers(len(ASPECTS))]
        pixels = rng.uniform(*megapixels) * 1e6
        width, height = round((pixels * aspect) ** 0.5), round((pixels / aspect) ** 0.5)
        if image is None:   # smooth random: a 6x6 random image upscaled
            image = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        array = np.asarray(image.resize((width, height), Image.BICUBIC), dtype=np.float32)
        array += rng.normal(0, 4, array.shape).astype(np.float32)
        (target / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array.clip(0, 255).astype(np.uint8)).save(target / name / f"{i:04d}.jpg", quality=90)
    return target


def mean_std(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.stdev(values), 4)
            if len(values) > 1 else 0.0, "median": round(statistics.median(values), 4)}


def make_step(model_name: str, num_classes: int, seed: int):
    """A fresh model and its optimizer step, as a run's defaults make them (SGD 0.01, momentum 0.9)."""
    from torch import nn

    from tudui.engine import TrainStep
    from tudui.models import create_model
    from tudui.runtime import create_runtime
    torch.manual_seed(seed)
    model = create_model(model_name, num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    return TrainStep(model=model, loss_fn=nn.CrossEntropyLoss(reduction="none"), optimizer=optimizer,
                     scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
                     runtime=create_runtime("cpu", "fp32", for_training=True))


def train_speed(folder: Path, args, common: dict, built: dict) -> None:
    """Training images/s (model + data) per loader: one model each, their epochs interleaved (a
    round = one epoch of each), so that a machine busy with other work slows them alike."""
    from tudui.engine import train_one_epoch
    steps = {name: make_step(args.model, len(CLASSES), 0) for name in LOADERS}
    rates = {name: [] for name in LOADERS}
    for round_ in range(args.epochs + 1):                     # round 0: the warm-up, not counted
        for name, loaders in built.items():
            loaders.train.set_epoch(round_)
            result = train_one_epoch(steps[name], loaders.train)
            if round_:
                rates[name].append(result["images"] / result["seconds"])
    model_rate = model_alone(steps["crop-flip"], built["crop-flip"].train, args.epochs)
    for name in LOADERS:
        print(json.dumps({**common, "what": "train", "loader": name, "kind": built[name].kind,
                          "timed": f"train_one_epoch (model + data), {args.epochs} epochs after a warm-up",
                          "images_per_s": mean_std(rates[name]), "load_1min": os.getloadavg()[0]}), flush=True)
    print(json.dumps({**common, "what": "train", "loader": "model alone", "images_per_s": mean_std(model_rate),
                      "timed": "the same steps on one batch held in memory: the model's own speed"}), flush=True)
    for base in ("dataloader", "crop-flip"):
        ratio = statistics.median(rates["photo-tensor"]) / statistics.median(rates[base])
        print(json.dumps({**common, "what": "train ratio", "photo-tensor_over": base, "median_ratio": round(ratio, 3)}),
              flush=True)


def model_alone(step, loader, epochs: int) -> list[float]:
    """images/s of train steps on one batch, repeated as many times as an epoch has batches."""
    images, labels = next(iter(loader))
    rates = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _ in range(len(loader)):
            step(images, labels)
        rates.append(len(loader) * len(labels) / (time.perf_counter() - start))
    return rates


def data_speed(folder: Path, args, common: dict) -> dict:
    """The loaders alone: images/s of an epoch (median of 3 after a warm-up), decode timed apart;
    returns each loader's Loaders (as build makes them: its resolved augment, 64 a batch)."""
    from tudui.data import build_dataset, make_loaders, resolve_augment
    from tudui.models import preprocess_of
    spec = build_dataset(str(folder))
    preprocess = preprocess_of(args.model, args.input_size)
    built = {}
    for name, settings in LOADERS.items():
        augment = resolve_augment(settings.get("augment", "auto"), spec.kind, preprocess.input_size)
        start = time.perf_counter()
        loaders = make_loaders(spec, preprocess, torch.device("cpu"), 64, choice=settings.get("loader", "auto"),
                               augment=augment)
        decode_s = time.perf_counter() - start
        rates = []
        for epoch in range(4):
            loaders.train.set_epoch(epoch)
            start, count = time.perf_counter(), 0
            for images, _ in loaders.train:
                count += len(images)
            rates.append(count / (time.perf_counter() - start))
        print(json.dumps({**common, "what": "data", "loader": name, "kind": loaders.kind,
                          "timed": "one epoch of the train loader, no model; median of epochs 2-4",
                          "images_per_s_median": round(statistics.median(rates[1:]), 1),
                          "decode_s": round(decode_s, 2), "load_1min": os.getloadavg()[0]}), flush=True)
        built[name] = loaders
    return built


def accuracy(args, common: dict) -> None:
    """Test accuracy, dataloader against photo-tensor, over seeds."""
    import tudui
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        for split, count, skip in (("train", args.acc_train, 1000), ("test", args.acc_test, 0)):
            write_photos(root / split, source_images(args.data, split, count, skip), (1.0, 2.0),
                         seed=1 if split == "train" else 2)
        for name in ("dataloader", "photo-tensor"):
            scores, walls = [], []
            for seed in args.seeds:
                start = time.perf_counter()
                result = tudui.train(data=str(root), model=args.model, input_size=args.input_size,
                                     epochs=args.acc_epochs, project=str(Path(tmp) / "runs"), progress=False,
                                     report=False, seed=seed, **LOADERS[name])
                walls.append(time.perf_counter() - start)
                scores.append(result.test_accuracy)
            print(json.dumps({**common, "what": "accuracy", "loader": name, "seeds": args.seeds,
                              "recipe": f"{args.model} {args.input_size} px, {args.acc_epochs} epochs, defaults",
                              "photos": f"{len(CLASSES)} classes x {args.acc_train} train / {args.acc_test} test, "
                                        "1-2 MP", "test_accuracy": mean_std(scores),
                              "wall_s_mean": round(statistics.fmean(walls), 1),
                              "load_1min": os.getloadavg()[0]}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(CIFAR_COPY))
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--acc-train", type=int, default=100)
    parser.add_argument("--acc-test", type=int, default=50)
    parser.add_argument("--acc-epochs", type=int, default=5)
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TUDUI_CACHE"] = str(Path(tmp) / "cache")
        start = time.perf_counter()
        # train/: the photos timed; test/: a few more, as a run needs a split to measure on
        folder = Path(tmp) / "photos"
        write_photos(folder / "train", source_images(args.data, "train", args.photos // len(CLASSES)), (1.0, 5.0),
                     seed=0)
        write_photos(folder / "test", source_images(args.data, "test", 4), (1.0, 5.0), seed=3)
        common = {"commit": git_commit(), "machine": machine(), "device": "cpu",
                  "dataset": f"{args.photos} photos of 1-5 MP ("
                             + ("CIFAR-10 upscaled" if Path(args.data).exists() else "smooth random") + ")",
                  "model": f"{args.model} at {args.input_size} px"}
        print(json.dumps({**common, "what": "setup", "photos_written_s": round(time.perf_counter() - start, 1)}),
              flush=True)
        built = data_speed(folder, args, common)
        train_speed(folder, args, common, built)
        if not args.skip_accuracy:
            accuracy(args, common)


if __name__ == "__main__":
    main()
