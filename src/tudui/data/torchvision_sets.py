"""torchvision's image data sets by name: cifar10, cifar100, mnist, fashion-mnist, kmnist, svhn, stl10.

Each is read by torchvision's own class from --data-dir in torchvision's layout, and downloaded
there when missing (and --download is on), as the course does with CIFAR-10. Their files are
checked against torchvision's published checksums where torchvision keeps them (the CIFAR sets
are Python pickles: only the published files are ever unpickled). Every set becomes uint8 arrays
with its train and test splits; greyscale sets (the MNIST family) stay one channel here and
become three equal channels when decoded, so every model takes them unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tudui.data.datasets import ArrayImages, DatasetSpec
from tudui.errors import TuduiError


@dataclass(frozen=True)
class TorchvisionSet:
    title: str                  # its name in messages
    cls: str                    # the torchvision.datasets class
    folder: str                 # where torchvision keeps it under --data-dir
    files: str                  # what to put there by hand, offline
    url: str
    by_split: bool = False      # the class takes split="train"/"test" rather than train=True/False


SETS: dict[str, TorchvisionSet] = {
    "cifar10": TorchvisionSet("CIFAR-10", "CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                              "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": TorchvisionSet("CIFAR-100", "CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz",
                               "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
    "mnist": TorchvisionSet("MNIST", "MNIST", "MNIST/raw", "the four *-ubyte.gz files (into MNIST/raw/)",
                            "https://ossci-datasets.s3.amazonaws.com/mnist/"),
    "fashion-mnist": TorchvisionSet("Fashion-MNIST", "FashionMNIST", "FashionMNIST/raw",
                                    "the four *-ubyte.gz files (into FashionMNIST/raw/)",
                                    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "kmnist": TorchvisionSet("KMNIST", "KMNIST", "KMNIST/raw", "the four *-ubyte.gz files (into KMNIST/raw/)",
                             "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
    "svhn": TorchvisionSet("SVHN", "SVHN", ".", "train_32x32.mat and test_32x32.mat",
                           "http://ufldl.stanford.edu/housenumbers/", by_split=True),
    "stl10": TorchvisionSet("STL-10", "STL10", "stl10_binary", "stl10_binary.tar.gz",
                            "http://ai.stanford.edu/~acoates/stl10/", by_split=True),
}


def torchvision_set(name: str, data_dir: str, download: bool) -> DatasetSpec:
    """The set `name` (a key of SETS) under data_dir, downloaded when missing and download is on."""
    import torchvision.datasets

    info, root = SETS[name], Path(data_dir)
    cls = getattr(torchvision.datasets, info.cls)
    try:
        if info.by_split:
            train, test = (cls(str(root), split=split, download=download) for split in ("train", "test"))
        else:
            train, test = (cls(str(root), train=flag, download=download) for flag in (True, False))
    except Exception as e:  # network errors, missing files, bad checksums: all mean "not here"
        reason = "download turned off (--no-download)" if not download else \
            f"download failed ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'no detail'})"
        there = root / info.folder
        state = (f"is not whole in {there} (files missing or damaged)" if info.folder != "." and there.is_dir()
                 else f"is not in {there}")
        raise TuduiError(
            f"{info.title} {state} and {reason}; download {info.files} from {info.url} "
            f"into {root}/ (unpack an archive there) or pass --data-dir, or run offline with --data digits") from None
    images, labels = _arrays(train)
    return DatasetSpec(train=ArrayImages(images, labels), test=ArrayImages(*_arrays(test)),
                       class_names=_class_names(train, labels), kind=name, source=f"{info.title} in {root}",
                       in_memory=True)


def _arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, H, W) or (N, H, W, 3), int64 labels) of a torchvision set, whatever its layout."""
    data = dataset.data
    data = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
    if data.ndim == 4 and data.shape[1] == 3:   # SVHN and STL-10 keep channels first
        data = data.transpose(0, 2, 3, 1)
    labels = getattr(dataset, "targets", None)
    labels = getattr(dataset, "labels", None) if labels is None else labels
    labels = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
    return np.ascontiguousarray(data, dtype=np.uint8), labels.astype(np.int64)


def _class_names(dataset, labels: np.ndarray) -> list[str]:
    names = list(getattr(dataset, "classes", None) or [])
    count = int(labels.max()) + 1 if len(labels) else 0
    return names if len(names) >= count and names else [str(i) for i in range(max(count, 2))]
