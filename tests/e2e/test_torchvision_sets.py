"""torchvision's data sets by name, from tiny copies in torchvision's own on-disk formats (offline).

Each copy is written by the test: idx files for the MNIST family, pickled batches for CIFAR-100,
.mat files for SVHN, binaries for STL-10. torchvision checks the CIFAR-100, SVHN and STL-10 files
against the checksums of the published ones, which a tiny copy cannot match; those tests switch
that check off for the test only (tudui keeps it: the CIFAR batches are pickles).
"""
import importlib
import os
import pickle
import struct

import numpy as np
import pytest

import tudui
from tudui.data import build_dataset
from tudui.errors import TuduiError
from tudui.weights import load_model

PER_CLASS = {"train": 6, "test": 3}


def class_images(split: str, classes: int, shape: tuple, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable uint8 images: each class a different brightness, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), PER_CLASS[split])
    images = rng.integers(0, 8, (len(labels), *shape)).astype(np.int64) + (labels * (200 // classes)).reshape(
        -1, *([1] * len(shape)))
    return images.clip(0, 255).astype(np.uint8), labels


def write_idx(root, folder: str):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = class_images(split, 10, (28, 28), seed=len(prefix))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, len(images), 28, 28)
                                                          + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, len(labels))
                                                          + labels.astype(np.uint8).tobytes())


def write_cifar100(root):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        images, labels = class_images(split, 5, (3, 32, 32), seed=3)
        with open(folder / split, "wb") as f:
            pickle.dump({"data": images.reshape(len(images), -1), "fine_labels": labels.tolist()}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": ["apple", "bee", "cup", "dog", "eel"]}, f)


def write_svhn(root):
    from scipy.io import savemat
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        images, labels = class_images(split, 10, (32, 32, 3), seed=5)
        # SVHN's layout: X is (32, 32, 3, N); y counts 1..10, where 10 stands for the digit 0.
        savemat(root / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0),
                                             "y": np.where(labels == 0, 10, labels).reshape(-1, 1)})


def write_stl10(root):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        images, labels = class_images(split, 10, (3, 96, 96), seed=7)
        # STL-10 stores each image column-major: (N, 3, 96, 96) with the last two axes swapped.
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
    (folder / "unlabeled_X.bin").write_bytes(b"")     # torchvision looks for it, and reads it only when asked
    (folder / "class_names.txt").write_text("\n".join(f"class{k}" for k in range(10)) + "\n")


COPIES = {"mnist": (lambda root: write_idx(root, "MNIST"), None, (28, 28), 10),
          "fashion-mnist": (lambda root: write_idx(root, "FashionMNIST"), None, (28, 28), 10),
          "kmnist": (lambda root: write_idx(root, "KMNIST"), None, (28, 28), 10),
          "cifar100": (write_cifar100, "cifar", (32, 32, 3), 5),
          "svhn": (write_svhn, "svhn", (32, 32, 3), 10),
          "stl10": (write_stl10, "stl10", (96, 96, 3), 10)}


@pytest.mark.parametrize("name", list(COPIES))
def test_each_set_is_read_offline_from_its_torchvision_layout(name, tmp_path, monkeypatch):
    write, checked_module, shape, classes = COPIES[name]
    write(tmp_path / "data")
    if checked_module:   # the copy exists; only its checksum cannot be the published one
        module = importlib.import_module(f"torchvision.datasets.{checked_module}")
        monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    spec = build_dataset(name, str(tmp_path / "data"), download=False)
    assert (len(spec.train), len(spec.test), spec.val) == (6 * classes, 3 * classes, None)
    assert spec.train.images.shape[1:] == shape and len(spec.class_names) == classes
    assert np.bincount(spec.train.labels).tolist() == [6] * classes
    image, label = spec.test[0]
    assert image.mode == "RGB" and label == 0
    if name == "svhn":       # torchvision maps the label 10 to the digit 0
        assert spec.class_names == [str(d) for d in range(10)]
    if name == "cifar100":
        assert spec.class_names[:2] == ["apple", "bee"]


def test_mnist_trains_offline_with_the_tensor_loader_and_three_channels(tmp_path, capsys):
    write_idx(tmp_path / "data", "MNIST")
    result = tudui.train(data="mnist", data_dir=str(tmp_path / "data"), download=False, epochs=6, batch_size=12,
                         model="tudui_relu", lr=0.05, project=str(tmp_path / "runs"), progress=True, report=False)
    out = capsys.readouterr().out
    assert "loader: tensor" in out and "augment none" in out           # digits are not mirrored
    assert result.test_accuracy is not None and result.test_accuracy > 0.3   # chance is 10 %
    model, meta = load_model(result.best_weights)
    assert meta.preprocess.input_size == 32 and meta.data == "mnist"


def test_a_set_that_is_neither_here_nor_downloadable_says_what_to_put_where(tmp_path):
    with pytest.raises(TuduiError, match=r"MNIST is not in .*MNIST/raw and download turned off.*ubyte"):
        build_dataset("mnist", str(tmp_path), download=False)
    with pytest.raises(TuduiError, match=r"CIFAR-100 is not in .*cifar-100-python .*cifar-100-python.tar.gz"):
        build_dataset("cifar100", str(tmp_path), download=False)
