"""Images per second of the data path alone: tudui's tensor loader against the course's DataLoader.

    python benchmarks/loader_speed.py [--data ../shared/data/cifar10-jpeg.tar.gz] [--repeats 3]

The course's path is ImageFolder + ToTensor + DataLoader(batch_size=64), as written there
(no worker processes). The tensor path is one epoch of TensorLoader with random crops,
flips and normalisation, on the CPU, from the decoded cache (decoding is timed apart).
Prints one JSON line per loader with the median over --repeats epochs, and their ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import CIFAR_COPY, git_commit, machine
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from tudui.data import TensorLoader, build_dataset, decode_to_tensor
from tudui.data.folders import resolve_folder
from tudui.files import cache_root


def epoch_rate(loader) -> float:
    start, count = time.perf_counter(), 0
    for images, labels in loader:
        count += len(labels)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(CIFAR_COPY))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = resolve_folder(args.data, cache_root() / "extracted")
    start = time.perf_counter()
    spec = build_dataset(args.data)
    images, labels = decode_to_tensor(spec.train, 32, cache_root() / "tensors")
    decode_s = time.perf_counter() - start
    common = {"commit": git_commit(), "machine": machine(), "dataset": Path(args.data).name,
              "images": len(labels), "decode_or_cache_s": round(decode_s, 1)}

    course = DataLoader(datasets.ImageFolder(str(root / "train"), transform=transforms.ToTensor()),
                        batch_size=64, shuffle=True)
    course_rates = [epoch_rate(course) for _ in range(args.repeats)]
    print(json.dumps({**common, "loader": "course DataLoader + ToTensor (0 workers)",
                      "images_per_s_median": statistics.median(course_rates)}), flush=True)

    tensor = TensorLoader(images, labels, 512, True, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26],
                          augment="crop-flip", translate=4)
    tensor_rates = []
    for epoch in range(args.repeats):
        tensor.set_epoch(epoch)
        tensor_rates.append(epoch_rate(tensor))
    print(json.dumps({**common, "loader": "tudui TensorLoader (crop + flip + normalise, CPU)",
                      "images_per_s_median": statistics.median(tensor_rates),
                      "speedup": statistics.median(tensor_rates) / statistics.median(course_rates)}),
          flush=True)


if __name__ == "__main__":
    main()
