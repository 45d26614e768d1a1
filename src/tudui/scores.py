"""The numbers of an evaluation besides loss and accuracy: per-class precision, recall, F1 and
support from the confusion matrix, the table metrics.json keeps, the most confident mistakes.
Pure functions of arrays; the pictures and pages that show them are report.py's and report_html.py's.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def top5_tells(num_classes: int) -> bool:
    """Whether top-5 accuracy says anything: with five classes or fewer it is always 100 %, and
    tudui neither shows nor logs it."""
    return num_classes > 5


def class_metrics(confusion) -> dict[str, list]:
    """Per-class precision, recall, F1, accuracy and support from a confusion matrix (rows: true).

    A class's accuracy is the share of its images classified correctly (the course's
    "accuracy for class"), which is its recall. What a division by zero would give is None (not
    measured, rather than 0 %): the precision of a class nothing was predicted as, and the recall,
    accuracy and F1 of a class without images in what was measured. A class with images that was
    never predicted has F1 0 (its recall is 0), as scikit-learn's zero_division=0 gives.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    correct = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = np.divide(correct, predicted, out=np.zeros_like(correct), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros_like(correct), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(correct), where=both > 0)
    absent = support == 0

    def listed(values: np.ndarray, unknown: np.ndarray) -> list[float | None]:
        return [None if gone else float(v) for v, gone in zip(values, unknown)]

    return {"precision": listed(precision, predicted == 0), "recall": listed(recall, absent),
            "f1": listed(f1, absent), "accuracy": listed(recall, absent), "support": support.astype(int).tolist()}


def per_class_table(confusion, class_names: Sequence[str]) -> list[dict]:
    """One row per class: class, precision, recall, f1, accuracy, support (metrics.json's `per_class`)."""
    columns = class_metrics(confusion)
    return [{"class": name, **{key: values[i] for key, values in columns.items()}}
            for i, name in enumerate(class_names)]


def confident_mistakes(probabilities: torch.Tensor, targets: torch.Tensor,
                       limit: int) -> list[tuple[int, int, int, float]]:
    """(index, true class, predicted class, probability) of the most confident wrong answers, surest first."""
    if len(targets) == 0:
        return []
    confidence, predicted = probabilities.max(dim=1)
    wrong = (predicted != targets).nonzero().flatten()
    order = wrong[confidence[wrong].argsort(descending=True, stable=True)][:limit]
    return [(int(i), int(targets[i]), int(predicted[i]), float(confidence[i])) for i in order]


def present(table: list[dict]) -> list[int]:
    """The positions of the classes in a per-class table that had images in what was measured
    (a folder or list may hold only some of the trained classes)."""
    return [i for i, row in enumerate(table) if row["support"] > 0]
