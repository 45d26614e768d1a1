"""The val split: held out of the training images (stratified, seeded) when the data has none.

Data sets come with a train split and a test split, a val split, or both. Where there is no
val split, --val-split holds out a share of every class of train as val, chosen by a seeded
shuffle: the same seed gives the same split, so `tudui eval` finds the same val images again.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from torch.utils.data import Dataset

from tudui.data.datasets import ArrayImages, DatasetSpec, FileImages
from tudui.errors import TuduiError

AUTO_VAL_SHARE = 0.2   # --val-split -1 on data that has neither a val nor a test split


def split_indices(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) positions: share of every class held out by a seeded shuffle, each part
    grouped by class in label order and sorted within a class."""
    rng = np.random.default_rng(seed)
    kept, held = [], []
    labels = np.asarray(labels)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        # At least one image of each class in each part, when the class has two or more.
        count = min(len(members) - 1, max(1, round(len(members) * share))) if len(members) > 1 else 0
        held.append(np.sort(members[:count]))
        kept.append(np.sort(members[count:]))
    return np.concatenate(kept).astype(np.int64), np.concatenate(held).astype(np.int64)


def subset(dataset: Dataset, indices: np.ndarray) -> Dataset:
    """The images of dataset at indices, as the same kind of image set."""
    if isinstance(dataset, ArrayImages):
        return ArrayImages(dataset.images[indices], dataset.labels[indices])
    if isinstance(dataset, FileImages):
        return FileImages([dataset.samples[i] for i in indices])
    raise TypeError(f"cannot take a subset of {type(dataset).__name__}")


def relabel(dataset: Dataset, new_labels: np.ndarray) -> Dataset:
    """dataset with each label l replaced by new_labels[l], as the same kind of image set (the
    classes of another data set's numbering: a folder with some of the trained classes)."""
    if isinstance(dataset, ArrayImages):
        return ArrayImages(dataset.images, new_labels[dataset.labels])
    if isinstance(dataset, FileImages):
        return FileImages([(path, int(new_labels[label])) for path, label in dataset.samples])
    raise TypeError(f"cannot relabel {type(dataset).__name__}")


def join_images(datasets: list[Dataset]) -> Dataset:
    """Several image sets of one kind as one (every split of a data set, for `eval --split all`)."""
    if all(isinstance(d, FileImages) for d in datasets):
        return FileImages([sample for d in datasets for sample in d.samples])
    if all(isinstance(d, ArrayImages) for d in datasets):
        return ArrayImages(np.concatenate([d.images for d in datasets]), np.concatenate([d.labels for d in datasets]))
    raise TypeError("cannot join image sets of different kinds")


def held_out_positions(spec: DatasetSpec, val_split: float, seed: int) -> set[int]:
    """Which positions of spec.train hold_out_val moves into val for val_split (none when the
    data set has a val split of its own)."""
    if spec.val is not None:
        return set()
    share = val_share(spec, val_split)
    return set(split_indices(spec.train.labels, share, seed)[1].tolist()) if share > 0 else set()


def val_share(spec: DatasetSpec, val_split: float) -> float:
    """The share of train that --val-split holds out of spec (which has no val split of its own):
    -1 is AUTO_VAL_SHARE without a test split either, none with one."""
    return (AUTO_VAL_SHARE if spec.test is None else 0.0) if val_split < 0 else val_split


def trained_in_val(spec: DatasetSpec, trained_split: float, val_split: float, seed: int) -> tuple[int, int]:
    """(how many of the val images that val_split holds out were training images under
    trained_split, how many it holds out), for a spec without a val split of its own."""
    held = held_out_positions(spec, val_split, seed)
    return len(held - held_out_positions(spec, trained_split, seed)), len(held)


def hold_out_val(spec: DatasetSpec, val_split: float, seed: int) -> DatasetSpec:
    """spec with a val split: its own, or val_split of every training class (-1: AUTO_VAL_SHARE
    when the data has no test split either, none when it has one; 0: none)."""
    if spec.val is None:
        share = val_share(spec, val_split)
        if share > 0:
            kept, held = split_indices(spec.train.labels, share, seed)
            spec = dataclasses.replace(spec, train=subset(spec.train, kept), val=subset(spec.train, held))
    if spec.val is None and spec.test is None:
        raise TuduiError(f"{spec.source} has no val or test split to measure on; hold out a share of it with "
                         f"--val-split 0.2")
    for name, dataset in spec.splits().items():
        if len(dataset) == 0:
            raise TuduiError(f"{spec.source} has no images in its {name} split")
    return spec
