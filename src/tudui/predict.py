"""Class probabilities for image files, folders or PIL images, from saved weights."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from tudui.checkpoint import load_model
from tudui.data import eval_transform, load_image
from tudui.data.datasets import is_image_file, to_rgb
from tudui.errors import TuduiError


@torch.no_grad()
def topk_probabilities(model: nn.Module, batch: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, class indices) of the k most likely classes of each image in batch."""
    probabilities = torch.softmax(model(batch).float(), dim=1)
    return probabilities.topk(min(k, probabilities.shape[1]), dim=1)


def expand_inputs(inputs: Iterable[str | Path | Image.Image]) -> list[str | Path | Image.Image]:
    """Files and PIL images as given; folders replaced by their image files (sorted, recursive)."""
    items: list = []
    for item in inputs:
        if isinstance(item, Image.Image):
            items.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise TuduiError(f"no images in folder {path}")
            items += found
        elif path.exists():
            items.append(path)
        else:
            raise TuduiError(f"image or folder not found: {path}")
    return items


def predict(inputs: str | Path | Image.Image | Sequence, weights: str | Path, topk: int = 5,
            device: str = "auto", batch_size: int = 64, model: str | None = None,
            trust_pickle: bool = False) -> list[dict]:
    """One dict per image: path, and either `predictions` (class, probability; best first) or `error`.

    Preprocessing is read from the weights, so it is exactly the one the test set got. A
    plain state_dict file needs model (its name); its classes are then numbered, or
    ImageNet's for a torchvision model with its original head.
    """
    from tudui.runner import resolve_device

    if topk < 1:
        raise TuduiError(f"--topk must be at least 1, got {topk}")
    if isinstance(inputs, (str, Path, Image.Image)):
        inputs = [inputs]
    dev = resolve_device(device)
    net, meta = load_model(weights, dev, model, trust_pickle)
    transform = eval_transform(meta["input_size"], meta["mean"], meta["std"], meta.get("resize_size"),
                               meta.get("interpolation", "bilinear"))
    class_names = meta["class_names"]
    results: list[dict] = []
    items = expand_inputs(inputs)
    for start in range(0, len(items), batch_size):
        chunk, tensors, rows = items[start:start + batch_size], [], []
        for item in chunk:
            name = "<image>" if isinstance(item, Image.Image) else str(item)
            try:
                image = to_rgb(item) if isinstance(item, Image.Image) else load_image(item)
            except TuduiError as e:
                results.append({"path": name, "error": str(e)})
                continue
            tensors.append(transform(image))
            rows.append({"path": name})
            results.append(rows[-1])
        if tensors:
            probs, indices = topk_probabilities(net, torch.stack(tensors).to(dev), topk)
            for row, p, idx in zip(rows, probs.tolist(), indices.tolist()):
                row["predictions"] = [{"class": class_names[i], "probability": q}
                                      for i, q in zip(idx, p)]
    return results
