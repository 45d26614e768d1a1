"""What an evaluation looks like: metrics.json, pictures, report.html and TensorBoard.

The numbers come from scores.py's pure functions (class_metrics, confident_mistakes); each picture is
a matplotlib Figure built without pyplot, so nothing here touches global plotting state or
a notebook's own figures; write_report and write_tensorboard are the only parts with I/O.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter
from PIL import Image

from tudui.drawing import figure_text
from tudui.files import atomic_write
from tudui.report_html import of_split
from tudui.scores import confident_mistakes, present, top5_tells
from tudui.settings import columns, counted, distinct_labels

FIGURE_DPI = 100
PAGE_INCHES = 14.0     # report.html is 1400 px wide: figures up to this width show unscaled
VALUES_SHOWN = 16      # confusion matrices up to this many classes print their numbers
MAX_PR_CURVES = 200    # TensorBoard gets a PR curve per class up to this many classes
MISTAKES_SHOWN = 24
GRID_COLUMNS = 6


@dataclass
class ReportData:
    """One evaluation of a model on one split (metrics["split"]), and where it came from."""
    metrics: dict                    # loss, accuracy, top5_accuracy, split, count, confusion, per_class, ...
    probabilities: torch.Tensor      # (N, num_classes), in the split's order
    targets: torch.Tensor            # (N,)
    class_names: list[str]
    images: Sequence                 # (PIL image, label) pairs in the same order, for the pictures
    title: str
    settings: dict = field(default_factory=dict)   # {section: {name: value}}, as in config.yaml
    paths: dict = field(default_factory=dict)      # what is where: run directory, weights, ...
    history: list[dict] = field(default_factory=list)   # metrics.csv rows, for curves.png
    kept_epoch: int | None = None    # the epoch of the weights measured, marked on curves.png
    meanings: dict = field(default_factory=dict)   # {(section, name): "-1: pick for the data set"}, as config.yaml says


def read_history(path: Path) -> list[dict]:
    """metrics.csv as rows of floats (None where an epoch was not evaluated); [] when it is missing."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return [{key: float(value) if value not in ("", None) else None for key, value in row.items()}
                for row in csv.DictReader(f)]


# ---------------------------------------------------------------- figures

def _thin_ticks(ax, labels: Sequence[str], axis_inches: float, which: str) -> None:
    """Show every k-th class name so that neighbouring labels never overlap (0.17 in a label)."""
    step = max(1, math.ceil(len(labels) / max(1.0, axis_inches / 0.17)))
    ticks = list(range(0, len(labels), step))
    names = [labels[i] for i in ticks]
    if which == "x":
        # digits read best unturned; a name wider than the room between two ticks is turned
        upright = max(columns(name) for name in names) * 0.08 <= 0.9 * axis_inches * step / len(labels)
        ax.set_xticks(ticks, names, rotation=0 if upright else 90, fontsize=8 if len(labels) > 20 else 10)
    else:
        ax.set_yticks(ticks, names, fontsize=8 if len(labels) > 20 else 10)


def plot_confusion(confusion, class_names: Sequence[str], about: str = "") -> Figure:
    """The confusion matrix twice: counts, and each row as a share of that true class; about
    (what was measured: measured_on) above them.

    Up to VALUES_SHOWN classes the two sit side by side with the numbers in the cells;
    beyond, one above the other with colour bars and every k-th class named.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    n = len(class_names)
    labels = distinct_labels(class_names, 16)
    margin = 0.09 * max(columns(label) for label in labels) + 1.0   # room for the class names
    show_values = n <= VALUES_SHOWN
    if show_values:   # two matrices in the page's width
        side = max(4.5, min(0.45 * n + 1.0, (PAGE_INCHES - 0.3) / 2 - margin))
        fig = Figure(figsize=(2 * (side + margin) + 0.3, side + margin + 0.5), dpi=FIGURE_DPI,
                     layout="constrained")
        axes = fig.subplots(1, 2)
    else:
        side = min(0.1 * n + 2.0, PAGE_INCHES - 1.0 - margin)
        fig = Figure(figsize=(side + margin + 1.0, 2 * (side + margin) + 0.8), dpi=FIGURE_DPI,
                     layout="constrained")
        axes = fig.subplots(2, 1)
    from sklearn.metrics import ConfusionMatrixDisplay   # 0.9 s to import: only when a matrix is drawn
    panels = ((counts, "d", "Counts"), (shares, ".2f", "Share of each true class (rows sum to 1)"))
    for ax, (values, fmt, title) in zip(axes, panels):
        display = ConfusionMatrixDisplay(values, display_labels=labels)
        display.plot(ax=ax, include_values=show_values, cmap="Blues", values_format=fmt,
                     colorbar=False, text_kw={"fontsize": 10 if n <= 10 else 8})
        if fmt == ".2f":
            display.im_.set_clim(0, 1)
        if show_values:   # empty cells stay blank, so the mistakes stand out
            for text, value in zip(display.text_.flat, values.flat):
                if value == 0:
                    text.set_text("")
        else:   # colour is the only cue: a square-root scale makes the rare mistakes visible
            display.im_.set_norm(PowerNorm(0.5, vmin=0, vmax=max(1, values.max()) if fmt == "d" else 1))
            fig.colorbar(display.im_, ax=ax, shrink=0.8, aspect=30)
        _thin_ticks(ax, labels, side, "x")
        _thin_ticks(ax, labels, side, "y")
        ax.set_title(title, fontsize=12)
        ax.set_xlabel("Predicted class", fontsize=11)
        ax.set_ylabel("True class", fontsize=11)
    if about:
        fig.suptitle(about, fontsize=12)
    return fig


def plot_image_grid(images: Sequence, captions: Sequence[str], title: str,
                    wrong: Sequence[bool] | None = None) -> Figure:
    """PIL images in a grid, each with a caption (red when wrong[i]), under a title."""
    if not images:
        fig = Figure(figsize=(7, 1.2), dpi=FIGURE_DPI, layout="constrained")
        fig.suptitle(title, fontsize=13)
        return fig
    columns = min(GRID_COLUMNS, len(images))
    rows = math.ceil(len(images) / columns)
    fig = Figure(figsize=(2.1 * columns, 2.5 * rows + 0.5), dpi=FIGURE_DPI, layout="constrained")
    fig.suptitle(title, fontsize=13)
    axes = fig.subplots(rows, columns, squeeze=False).flatten()
    for ax in axes:
        ax.set_axis_off()
    for i, (ax, image, caption) in enumerate(zip(axes, images, captions)):
        image = image.convert("RGB")
        image.thumbnail((256, 256))    # a 2-inch cell shows no more; big photos would only cost time
        pixels = np.asarray(image)
        # Tiny images (8-px digits, 32-px CIFAR) stay sharp blocks instead of a blur.
        ax.imshow(pixels, interpolation="nearest" if max(pixels.shape[:2]) < 128 else "antialiased")
        ax.set_title(caption, fontsize=9, color="#b3261e" if wrong is not None and wrong[i] else "black")
    return fig


def plot_mistakes(data: ReportData, limit: int = MISTAKES_SHOWN) -> Figure:
    """The most confident mistakes, each with its true class, predicted class and probability."""
    mistakes = confident_mistakes(data.probabilities, data.targets, limit)
    names = distinct_labels(data.class_names, 16)
    images = [data.images[i][0] for i, _, _, _ in mistakes]
    captions = [f"true: {names[t]}\npredicted: {names[p]}\nprobability {q:.1%}" for _, t, p, q in mistakes]
    wrong_total = int((data.probabilities.argmax(dim=1) != data.targets).sum()) if len(data.targets) else 0
    split = data.metrics.get("split", "test")
    measured = counted(len(data.targets), of_split(split, "image"))
    title = (f"The {len(mistakes)} most confident mistakes (of {wrong_total:,} in {measured})" if mistakes
             else f"No mistakes in the {measured}")
    return plot_image_grid(images, captions, title)


def plot_samples(data: ReportData, count: int = 18) -> Figure:
    """Images spread evenly over the split, with the prediction (red when wrong)."""
    n = len(data.targets)
    picks = np.linspace(0, n - 1, num=min(count, n)).round().astype(int) if n else []
    confidence, predicted = data.probabilities.max(dim=1) if n else (None, None)
    names = distinct_labels(data.class_names, 16)
    captions, wrong = [], []
    for i in picks:
        p, t = int(predicted[i]), int(data.targets[i])
        captions.append(f"predicted: {names[p]} ({float(confidence[i]):.0%})\ntrue: {names[t]}"
                        + (" (wrong)" if p != t else ""))
        wrong.append(p != t)
    return plot_image_grid([data.images[int(i)][0] for i in picks], captions,
                           "Sample predictions (wrong ones in red)", wrong)


def measured_on(data: ReportData) -> str:
    """What a picture shows, for its title: e.g. "test split, 10,000 images, weights of epoch 8"."""
    split = data.metrics.get("split", "test")
    count = counted(data.metrics["count"], "image")
    which = count if split == "all" else f"{split} split, {count}"
    return which + (f", weights of epoch {data.kept_epoch}" if data.kept_epoch is not None else "")


def plot_per_class(data: ReportData) -> Figure:
    """Per-class recall (bars) and precision (dots), worst recall at the top; a class without
    images in the split (a folder with some of the trained classes) has neither and is left out."""
    table = data.metrics["per_class"]
    order = sorted(present(table), key=lambda i: (-table[i]["recall"], -i))   # drawn bottom-up: ties in class order
    n = len(order)
    labels = distinct_labels([row["class"] for row in table], 20)
    names = [labels[i] for i in order]
    fig = Figure(figsize=(9, max(3.0, 0.22 * n + 1.6)), dpi=FIGURE_DPI, layout="constrained")
    ax = fig.subplots()
    y = np.arange(n)
    bars = ax.barh(y, [table[i]["recall"] for i in order], color="#4a90c2",
                   label="recall (accuracy of the class)")
    # no dot for a class nothing was predicted as: its precision (0/0) is not measured
    dots, = ax.plot([np.nan if table[i]["precision"] is None else table[i]["precision"] for i in order], y, "o",
                    color="#e07b00", markersize=5, label="precision", clip_on=False)
    overall = ax.axvline(data.metrics["accuracy"], color="black", linestyle="--", linewidth=1,
                         label=f"overall accuracy {data.metrics['accuracy']:.1%}")
    ax.set_yticks(y, names, fontsize=10 if n <= 30 else 8)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlim(0, 1.0)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.tick_params(axis="x", labelsize=10)
    absent = len(table) - len(order)
    left_out = f"; {absent} trained class{'es' if absent > 1 else ''} without images left out" if absent else ""
    ax.set_title(f"Per class, weakest at the top\n{measured_on(data)}{left_out}", fontsize=12)
    fig.legend(handles=[bars, dots, overall], loc="outside lower center", ncols=3, fontsize=10,
               frameon=False)
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_curves(history: list[dict], kept_epoch: int | None = None) -> Figure | None:
    """Train/val loss, val accuracy and learning rate per epoch (None without history), with the
    epoch whose weights were kept marked on each."""
    if not history:
        return None
    epochs = [row["epoch"] for row in history]
    evaluated = [row for row in history if row.get("val_accuracy") is not None]
    marker = "o" if len(history) <= 30 else None
    val_marker = "o" if len(evaluated) <= 30 else None
    # Without a val split (no epoch evaluated) there is no val panel to draw: loss and rate only.
    fig = Figure(figsize=(14, 4.2) if evaluated else (10, 4.2), dpi=FIGURE_DPI, layout="constrained")
    if evaluated:
        loss_ax, accuracy_ax, lr_ax = fig.subplots(1, 3)
    else:
        (loss_ax, lr_ax), accuracy_ax = fig.subplots(1, 2), None
    loss_ax.plot(epochs, [row["train_loss"] for row in history], marker=marker, label="train loss")
    if evaluated:
        loss_ax.plot([row["epoch"] for row in evaluated], [row["val_loss"] for row in evaluated],
                     marker=val_marker, label="val loss")
        accuracy_ax.plot([row["epoch"] for row in evaluated], [100 * row["val_accuracy"] for row in evaluated],
                         marker=val_marker, color="#2a9d8f", label="val top-1")
        # A top-5 of 100 % at every epoch (always so with five classes or fewer) says nothing and squeezes top-1.
        if any(row.get("val_top5") is not None and row["val_top5"] < 1.0 for row in evaluated):
            accuracy_ax.plot([row["epoch"] for row in evaluated if row.get("val_top5") is not None],
                             [100 * row["val_top5"] for row in evaluated if row.get("val_top5") is not None],
                             marker=val_marker, color="#8ab17d", linestyle="--", label="val top-5")
        accuracy_ax.set_title("Val accuracy (%)", fontsize=12)
    loss_ax.set_title("Loss" if evaluated else "Training loss (no val split)", fontsize=12)
    lr_ax.plot(epochs, [row["lr"] for row in history], marker=marker, color="#7b5ea7")
    lr_ax.set_title("Learning rate (at the start of each epoch)", fontsize=12)
    for ax in fig.axes:
        if kept_epoch is not None and kept_epoch in epochs:
            ax.axvline(kept_epoch, color="#e76f51", linestyle=":", linewidth=1.5,
                       label=f"kept: epoch {kept_epoch}" if ax is not lr_ax else None)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:   # one point: one tick at its epoch, not fractions around it
            ax.set_xticks(epochs)
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        ax.set_xlabel("epoch", fontsize=11)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=10)
    loss_ax.legend(fontsize=10)
    if evaluated:
        accuracy_ax.legend(fontsize=10)
        low, high = accuracy_ax.get_ylim()   # matplotlib's margin would run a flat 100 % up to 104
        accuracy_ax.set_ylim(max(low, 0), min(high, 100.5))
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=FIGURE_DPI)
    return buffer.getvalue()


# ---------------------------------------------------------------- files

def render_pictures(data: ReportData) -> dict[str, bytes]:
    """The report's pictures as PNG bytes by file name (curves.png only with a training history)."""
    with figure_text(data.class_names):
        found = {"confusion_matrix.png": plot_confusion(data.metrics["confusion"], data.class_names,
                                                        measured_on(data)),
                 "misclassified.png": plot_mistakes(data),
                 "per_class.png": plot_per_class(data),
                 "curves.png": plot_curves(data.history, data.kept_epoch)}
        return {name: png_bytes(fig) for name, fig in found.items() if fig is not None}


def write_report(out_dir: Path, data: ReportData, pictures: dict[str, bytes] | None = None) -> Path:
    """metrics.json, the pictures and report.html in out_dir; returns the page's path.

    pictures: render_pictures(data), when the caller has them already. Every file goes
    through a temporary name, so an interrupted report leaves no half file and never
    touches anything else in out_dir.
    """
    from tudui.report_html import render_page

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_metrics(out_dir, data.metrics)
    pictures = render_pictures(data) if pictures is None else pictures
    for name, content in pictures.items():
        atomic_write(out_dir / name, lambda tmp, content=content: tmp.write_bytes(content))
    page = render_page(data, pictures)
    atomic_write(out_dir / "report.html", lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return out_dir / "report.html"


def write_metrics(out_dir: Path, metrics: dict) -> Path:
    """metrics.json in out_dir (whole or not at all); returns its path."""
    text = json.dumps(metrics, indent=1)
    path = Path(out_dir) / "metrics.json"
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))
    return path


def flat_settings(settings: dict) -> dict:
    """{section: {name: value}} as {"section.name": value} with values TensorBoard's hparams accept."""
    flat = {}
    for section, values in settings.items():
        for name, value in (values or {}).items():
            flat[f"{section}.{name}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def _png_pixels(content: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(content)) as image:
        return np.asarray(image.convert("RGB"))


def write_tensorboard(writer, data: ReportData, pictures: dict[str, bytes] | None = None,
                      model: torch.nn.Module | None = None, example: torch.Tensor | None = None) -> list[str]:
    """The evaluation in TensorBoard; returns what could not be written (the model graph may not trace).

    Adds the report's pictures (confusion matrix, most confident mistakes, per class, curves)
    and sample predictions as figures, a PR curve per class, the model graph and the settings
    as hparams with the final metrics, all at the step of the last epoch trained (so that a
    resumed run's new final pass does not land on the old one's). pictures:
    render_pictures(data), reused rather than drawn again.
    """
    from torch.utils.tensorboard.summary import hparams

    pictures = render_pictures(data) if pictures is None else pictures
    step = int(data.history[-1]["epoch"]) if data.history else (data.kept_epoch or 0)
    skipped = []
    for tag, name in (("eval/confusion_matrix", "confusion_matrix.png"),
                      ("eval/most_confident_mistakes", "misclassified.png"), ("eval/per_class", "per_class.png"),
                      ("eval/curves", "curves.png")):
        if name in pictures:
            writer.add_image(tag, _png_pixels(pictures[name]), step, dataformats="HWC")
    with figure_text(data.class_names):
        writer.add_figure("eval/sample_predictions", plot_samples(data), step, close=False)
    if len(data.class_names) <= MAX_PR_CURVES:
        for k, name in enumerate(data.class_names):
            writer.add_pr_curve(f"pr_curve/{name}", data.targets == k, data.probabilities[:, k], step)
    else:
        skipped.append(f"PR curves (one per class is too many past {MAX_PR_CURVES} classes)")
    if model is not None and example is not None:
        try:
            # add_graph traces with torch.jit, which warns it is old, and prints its failures (with
            # whole tensors) on stdout, where `tudui eval --json` writes its JSON.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                writer.add_graph(model, example)
        except Exception as e:  # noqa: BLE001 - tracing fails on some models; the rest still counts
            skipped.append(f"model graph ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    final = {"hparam/accuracy": data.metrics["accuracy"], "hparam/loss": data.metrics["loss"],
             **{f"hparam/{key}": data.metrics[key] for key in ("balanced_accuracy", "macro_f1") if key in data.metrics}}
    if top5_tells(len(data.class_names)):
        final["hparam/top5_accuracy"] = data.metrics["top5_accuracy"]
    # Written into this writer's own folder (add_hparams would open a sub-folder run of its own).
    for summary in hparams(flat_settings(data.settings), final):
        writer.file_writer.add_summary(summary)
    for tag, value in final.items():
        writer.add_scalar(tag, value, step)
    writer.flush()
    return skipped
