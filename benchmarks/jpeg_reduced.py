"""Large JPEGs decoded whole against decoded reduced (the JPEG decoder's own 1/2, 1/4, 1/8 scaling,
`tudui.data.images.reduce_while_decoding`), each followed by the evaluation transform of a model.

    python benchmarks/jpeg_reduced.py [--data ../shared/data/cifar10-jpeg.tar.gz] [--photos 40]
        [--repeats 3] [--models fastnet,resnet18]

The photos are photo_loader.py's: CIFAR-10 images upscaled to 1-5 MP JPEGs of mixed aspect
ratios with a little noise (smooth random ones without the copy). For each model, one JSON line:
milliseconds per photo (file to input tensor, median over photos of the best of --repeats) whole
and reduced, their ratio, and how far apart the two input tensors are (largest and mean absolute
difference, in the model's input units after normalisation, over all photos).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import CIFAR_COPY, git_commit, machine
from photo_loader import source_images, write_photos

from tudui.data.images import load_image
from tudui.models import preprocess_of


def best_of(repeats: int, action) -> tuple[float, torch.Tensor]:
    """The shortest of repeats timings of action() in seconds, and its result."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - began)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(CIFAR_COPY))
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="fastnet,resnet18")
    args = parser.parse_args()
    torch.set_num_threads(1)       # one decode per core, as a DataLoader worker or serve's decode thread has
    common = {"commit": git_commit(), "machine": machine("cpu"), "photos": args.photos,
              "sizes": "1-5 MP JPEG quality 90", "torch_threads": 1}
    with tempfile.TemporaryDirectory() as folder:
        write_photos(Path(folder), source_images(args.data, "train", args.photos // 4), (1.0, 5.0), seed=0)
        paths = sorted(Path(folder).rglob("*.jpg"))
        for name in args.models.split(","):
            preprocess = preprocess_of(name)
            transform = preprocess.eval_transform()
            whole_ms, reduced_ms, largest, means = [], [], 0.0, []
            for path in paths:
                seconds, whole = best_of(args.repeats, lambda: transform(load_image(path)))
                whole_ms.append(1000 * seconds)
                seconds, reduced = best_of(args.repeats, lambda: transform(load_image(path, preprocess.decode_side)))
                reduced_ms.append(1000 * seconds)
                gap = (whole - reduced).abs()
                largest, means = max(largest, float(gap.max())), means + [float(gap.mean())]
            whole_med, reduced_med = statistics.median(whole_ms), statistics.median(reduced_ms)
            print(json.dumps({**common, "model": name, "input": preprocess.input_size,
                              "decode_side": preprocess.decode_side,
                              "ms_per_photo": {"whole": round(whole_med, 2), "reduced": round(reduced_med, 2)},
                              "speedup": round(whole_med / reduced_med, 2),
                              "input_difference": {"max": round(largest, 4),
                                                   "mean": round(statistics.fmean(means), 5)}}),
                  flush=True)


if __name__ == "__main__":
    main()
