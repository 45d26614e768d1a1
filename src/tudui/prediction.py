"""Class probabilities for image files, folders or PIL images, from saved weights."""
from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from tudui.config_commands import PredictConfig
from tudui.data.images import IMAGE_EXTENSIONS, is_image_file, load_image, to_rgb
from tudui.engine.loop import predict_logits
from tudui.errors import SettingError, TuduiError
from tudui.files import atomic_write
from tudui.runtime import inference_device
from tudui.settings import counted, made
from tudui.weights import load_model, with_class_names

log = logging.getLogger(__name__)

OUTPUT_FORMATS = (".csv", ".json")


@torch.no_grad()
def topk_probabilities(model: nn.Module, batch: torch.Tensor, k: int, tta: int = 0,
                       mirror: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, class indices) of the k most likely classes of each image in batch.

    With tta, the logits are averaged over the test-time views first (1: the image and its
    mirror, 2: also shifted by a pixel; no mirror without mirror), as `tudui eval` does.
    """
    probabilities = torch.softmax(predict_logits(model, batch, tta, mirror=mirror).float(), dim=1)
    return probabilities.topk(min(k, probabilities.shape[1]), dim=1)


def top_classes(model: nn.Module, batch: torch.Tensor, k: int, tta: int,
                class_names: Sequence[str], mirror: bool = True) -> list[list[dict]]:
    """For each image of batch, its k most likely classes as [{"class", "probability"}], best first:
    the answer `tudui predict` and `tudui serve` give."""
    probabilities, indices = topk_probabilities(model, batch, k, tta, mirror)
    return [[{"class": class_names[i], "probability": p} for i, p in zip(row_indices, row_probabilities)]
            for row_probabilities, row_indices in zip(probabilities.tolist(), indices.tolist())]


NO_IMAGES = "no images in folder"   # the error of a folder given without images: not an image that failed


def expand_inputs(inputs: Iterable[str | Path | Image.Image]) -> list[Path | Image.Image | dict]:
    """Files and PIL images as given; folders replaced by their image files (sorted, recursive).

    An input that is missing, or a folder without images, becomes its result already: a dict
    with its path and the error, so the other inputs are still predicted.
    """
    items: list = []
    for item in inputs:
        if isinstance(item, Image.Image):
            items.append(item)
            continue
        if not isinstance(item, (str, os.PathLike)):
            kind = f"{type(item).__module__}.{type(item).__name__}".removeprefix("builtins.")
            raise TuduiError(f"predict takes image files, folders and PIL images (got {kind})"
                             + (": PIL.Image.fromarray(pixels) makes an image of a uint8 height x width x 3 array"
                                if hasattr(item, "shape") else ""))
        path = Path(item)
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()
                     and not any(part.startswith(".") for part in p.relative_to(path).parts)]
            found = sorted(p for p in files if is_image_file(p))
            if len(files) > len(found):   # said, as training counts what it skips
                log.info("%s: left out %s whose names are not of images (%s)", path,
                         counted(len(files) - len(found), "file"), ", ".join(sorted(IMAGE_EXTENSIONS)))
            items += found or [{"path": str(path), "error": f"{NO_IMAGES} {path}"}]
        elif path.is_file():
            items.append(path)
        elif path.exists():   # a pipe or a device would block the read, or never end
            items.append({"path": str(path), "error": f"{path} is not a regular file"})
        else:
            items.append({"path": str(path), "error": f"image or folder not found: {path}"})
    return items


def predict(inputs: str | Path | Image.Image | Sequence, weights: str | Path, **settings) -> list[dict]:
    """One dict per image: path, and either `predictions` (class, probability; best first) or `error`.

    settings are `tudui predict`'s, by the same names (topk, tta, device, batch_size, out, model,
    trust_pickle). Preprocessing is read from the weights, so it is exactly the one the test set
    got; so is the test-time augmentation level unless tta is given (0, 1 or 2). A plain
    state_dict file needs model (its name); its classes are then numbered, or ImageNet's for a
    torchvision model with its original head. With out (FILE.csv or FILE.json) the predictions
    are written there too. A large JPEG given by its path is decoded reduced, as evaluation and
    `tudui serve` decode it; a PIL image is taken as it is, so the same photo opened by hand may
    give probabilities a little different in their last digits.
    """
    return predict_images(inputs, made(PredictConfig, "predict", {**settings, "weights": weights}))


def predict_images(inputs: str | Path | Image.Image | Sequence, cfg: PredictConfig) -> list[dict]:
    """predict, for settings made already (the CLI's)."""
    if cfg.out:
        check_output_path(cfg.out)   # before any work, so a bad name costs nothing
    if hasattr(inputs, "shape") and getattr(getattr(inputs, "dtype", None), "kind", "") in ("U", "S", "O"):
        inputs = list(inputs)   # an array or a pandas Series of paths
    elif isinstance(inputs, (str, os.PathLike, Image.Image)) or hasattr(inputs, "shape") or \
            not isinstance(inputs, Iterable):
        inputs = [inputs]   # one input; an array of pixels or a number is then refused by its type
    items = expand_inputs(inputs)
    device = inference_device(cfg.device)
    net, meta = load_model(cfg.weights, device, cfg.model or None, cfg.trust_pickle)
    if cfg.classes:
        meta = _named(meta, cfg.classes)
    tta = meta.config.train.tta if cfg.tta is None else cfg.tta
    if cfg.tta and (note := meta.tta_note(cfg.tta)):
        log.warning("%s", note)
    batch_size = cfg.batch_size or meta.config.data.batch_size
    transform = meta.preprocess.eval_transform()
    results: list[dict] = []
    for start in range(0, len(items), batch_size):
        tensors, rows = [], []
        for item in items[start:start + batch_size]:
            if isinstance(item, dict):   # missing already
                results.append(item)
                continue
            name = "<image>" if isinstance(item, Image.Image) else str(item)
            try:
                image = to_rgb(item) if isinstance(item, Image.Image) else load_image(item, meta.preprocess.decode_side)
            except TuduiError as e:
                results.append({"path": name, "error": str(e)})
                continue
            tensors.append(transform(image))
            rows.append({"path": name})
            results.append(rows[-1])
        if tensors:
            answers = top_classes(net, torch.stack(tensors).to(device), cfg.topk, tta, meta.class_names,
                                  meta.tta_mirror())
            for row, answer in zip(rows, answers):
                row["predictions"] = answer
    if cfg.out:
        write_predictions(results, cfg.out)
    return results


# The classes of CIFAR-10 in the order of its labels (the course's data set): --classes cifar10.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _named(meta, classes: str):
    """meta with the class names --classes gives, for a plain state_dict (whose classes are numbers)."""
    if not meta.imported:
        log.warning("--classes is not used: these weights name their own classes (%s, ...)",
                    ", ".join(meta.class_names[:3]))
        return meta
    names = list(CIFAR10_CLASSES) if classes.strip().lower() == "cifar10" else \
        [name.strip() for name in classes.split(",")]
    if len(names) != meta.num_classes or not all(names):
        raise TuduiError(f"--classes gives {len(names)} names, and the model has {meta.num_classes} outputs: "
                         f"give one name for each, in order, separated by commas")
    return with_class_names(meta, names)


def check_output_path(path: str | Path) -> Path:
    """path, if predictions can be written there (.csv or .json in an existing folder)."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise SettingError(f"--out must end in .csv or .json, got {path.name!r}")
    if not path.parent.is_dir():
        raise TuduiError(f"--out {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise TuduiError(f"--out {path} is a folder; give a file name ending in .csv or .json")
    return path


def prediction_rows(results: list[dict]) -> tuple[list[str], list[dict]]:
    """(columns, rows) of a predictions table: path, class_1, probability_1, ..., error."""
    k = max((len(r.get("predictions", [])) for r in results), default=0)
    columns = ["path"] + [f"{name}_{i}" for i in range(1, k + 1) for name in ("class", "probability")]
    rows = []
    for r in results:
        row = {"path": as_text_cell(r["path"]), "error": as_text_cell(r.get("error", ""))}
        for i, p in enumerate(r.get("predictions", []), start=1):
            row[f"class_{i}"], row[f"probability_{i}"] = as_text_cell(p["class"]), f"{p['probability']:.6f}"
        rows.append(row)
    return columns + ["error"], rows


def as_text_cell(text: str) -> str:
    """text as a spreadsheet shows it, never runs it: a cell starting with =, +, -, @, a tab or a
    carriage return gets a leading ' (OWASP's advice on CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def write_predictions(results: list[dict], path: str | Path) -> Path:
    """The results of predict as FILE.csv (one row per image) or FILE.json (the list as it is)."""
    path = check_output_path(path)

    def write_json(tmp: Path) -> None:
        tmp.write_text(json.dumps(results, indent=1) + "\n")

    def write_csv(tmp: Path) -> None:
        columns, rows = prediction_rows(results)
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
    try:
        atomic_write(path, write_json if path.suffix.lower() == ".json" else write_csv)
    except OSError as e:
        raise TuduiError(f"cannot write {path}: {e.strerror or e}") from None
    return path
