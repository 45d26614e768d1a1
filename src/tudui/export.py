"""`tudui export`: a model as an ONNX, TorchScript or pt2 file that needs nothing of tudui, checked
against the original before it is kept.

The graph takes images as they are stored (uint8, or float in [0, 1]; RGB, N x 3 x H x W at the
trained input size), normalises them itself and answers class probabilities. Resizing stays
outside, because it depends on the image's size; how to do it (the resize side, the crop, the
interpolation) is in the file's metadata with the class names and tudui's version, the same
record as in a .safetensors header (see tudui.exported for how it is stored and read).

The file is written under a temporary name, loaded back the way `tudui eval` and `predict` load
it, and run on a batch of images beside the original model; only if the probabilities agree
within the tolerance is it renamed into place.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import tudui.exported as exported
from tudui.config_commands import ExportConfig
from tudui.errors import SettingError, TuduiError
from tudui.files import give_usual_mode, new_file_beside
from tudui.rundir import resolve_weights_path, weights_not_found
from tudui.settings import counted, made, shown_path
from tudui.weights import WeightsMeta, load_model

# float16 keeps about three decimal digits: fastnet drifts by 1.5e-2 on the check's noise images
TOLERANCE = {"float32": 1e-4, "float16": 2e-2}
SUFFIX = {fmt: suffix for suffix, fmt in exported.SUFFIXES.items()}


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_difference: float    # largest absolute difference of a class probability, export vs original
    top1_agreement: float    # share of the check's images with the same most likely class
    images: int              # images in the check
    tolerance: float


class Deployable(nn.Module):
    """model with its input scaling and normalisation in front and a softmax behind."""

    def __init__(self, model: nn.Module, meta: WeightsMeta, pixels: str):
        super().__init__()
        self.model = model
        pre = meta.preprocess
        mean = torch.tensor(pre.mean if pre.mean is not None else (0.0, 0.0, 0.0))
        std = torch.tensor(pre.std if pre.std is not None else (1.0, 1.0, 1.0))
        scale = 1 / 255 if pixels == "uint8" else 1.0
        # (x * scale - mean) / std as one multiply and one add per pixel
        self.register_buffer("gain", (scale / std).view(1, 3, 1, 1))
        self.register_buffer("offset", (-mean / std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.gain.dtype) * self.gain + self.offset
        return torch.softmax(self.model(x).float(), dim=1)


def export_model(weights: str | Path, **settings) -> ExportResult:
    """Write weights as an exported file; settings are `tudui export`'s by the same names (format,
    out, batch, half, pixels, tolerance, check_images, model, trust_pickle)."""
    return export_weights(made(ExportConfig, "export", {**settings, "weights": str(weights)}))


def export_weights(cfg: ExportConfig, say: Callable[[str], None] = lambda line: None) -> ExportResult:
    """export, for settings made already (the CLI's); say gets the lines to print."""
    if exported.is_exported(cfg.weights):
        raise TuduiError(f"{shown_path(cfg.weights)} is exported already; export the .safetensors file or the "
                         f"run directory it came from")
    out = _output_path(cfg)
    model, meta = load_model(cfg.weights, "cpu", cfg.model or None, cfg.trust_pickle, layout=False)
    info = exported.ExportInfo(cfg.format, cfg.pixels, "float16" if cfg.half else "float32",
                               None if cfg.batch == "dynamic" else int(cfg.batch))
    reference = Deployable(model, meta, cfg.pixels).eval()
    deployable = _half_copy(model, meta, cfg.pixels) if cfg.half else reference
    images = parity_images(cfg.check_images, meta.preprocess.input_size)
    tmp = _partial_file(out)
    try:
        WRITERS[cfg.format](deployable, _example(images, info), tmp, info, meta.to_json())
        tolerance = TOLERANCE[info.dtype] if cfg.tolerance is None else cfg.tolerance
        result = check_parity(reference, tmp, info, images, tolerance, out)
        give_usual_mode(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    size = out.stat().st_size / 1e6
    batch = "any batch" if info.batch is None else f"batch {info.batch}"
    say(f"exported {out} ({cfg.format}, {size:.1f} MB): {cfg.pixels} images 3x{meta.preprocess.input_size}x"
        f"{meta.preprocess.input_size} ({batch}) in, probabilities of {meta.num_classes} classes out")
    say(f"parity on {counted(result.images, 'image')}: largest probability difference {result.max_difference:.1e} "
        f"(tolerance {result.tolerance:.0e}), top-1 agreement {result.top1_agreement:.1%}")
    if cfg.format == "onnx":
        say(f"check it with  tudui predict IMAGE --weights {out}  (or tudui eval --weights {out})")
    else:   # the first `tudui predict --weights` of it would be refused without the flag
        say(f"check it with  tudui predict IMAGE --weights {out} --trust-pickle  (loading a {cfg.format} file "
            f"unpickles parts of it: pass --trust-pickle for files you made)")
    return result


def _partial_file(out: Path) -> Path:
    """A new file beside out to export into before the parity check (files.new_file_beside), with
    out's suffix, which torch.export.load wants."""
    try:
        return new_file_beside(out, f".{out.stem}.partial-")
    except OSError as e:
        raise TuduiError(f"cannot write beside {out}: {e.strerror or e}") from None


def _output_path(cfg: ExportConfig) -> Path:
    """--out, or the weights' own name with the format's suffix beside them; checked before any work."""
    suffix = SUFFIX[cfg.format]
    if cfg.out:
        out = Path(cfg.out)
        if out.suffix.lower() != suffix:
            raise SettingError(f"--out must end in {suffix} for --format {cfg.format} (tudui eval and predict "
                             f"recognise the format by it), got {shown_path(out.name)}")
    else:
        if not Path(cfg.weights).exists():
            raise weights_not_found(cfg.weights)
        source = resolve_weights_path(cfg.weights) if Path(cfg.weights).is_dir() else Path(cfg.weights)
        out = source.with_suffix(suffix)
    if not out.parent.is_dir():
        raise TuduiError(f"cannot write {shown_path(out)}: folder {shown_path(out.parent)} does not exist")
    if out.is_dir():
        raise TuduiError(f"--out {shown_path(out)} is a folder; give a file name ending in {suffix}")
    return out


def _half_copy(model: nn.Module, meta: WeightsMeta, pixels: str) -> nn.Module:
    """A float16 Deployable of a copy of model (the original stays float32 for the reference)."""
    import copy
    return Deployable(copy.deepcopy(model), meta, pixels).half().eval()


def parity_images(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """count uint8 RGB images of size x size: half smooth random shapes (like photos at low
    resolution), half noise (the extremes of every channel), the same each time."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.rand(count, 3, 4, 4, generator=g)
    smooth = nn.functional.interpolate(smooth, size=(size, size), mode="bicubic", align_corners=False)
    noise = torch.rand(count, 3, size, size, generator=g)
    images = torch.where(torch.arange(count).view(-1, 1, 1, 1) % 2 == 0, smooth, noise)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _example(images: torch.Tensor, info: exported.ExportInfo) -> torch.Tensor:
    """An input to trace with: the fixed batch, or two images (a batch of one would fix the size to 1)."""
    n = info.batch or 2
    x = images[:n] if len(images) >= n else images[:1].expand(n, *images.shape[1:]).clone()
    return x if info.pixels == "uint8" else (x.float() / 255).to(torch.float16 if info.dtype == "float16"
                                                                   else torch.float32)


@torch.no_grad()
def check_parity(reference: nn.Module, path: Path, info: exported.ExportInfo, images: torch.Tensor,
                 tolerance: float, shown_as: Path) -> ExportResult:
    """The exported file at path, loaded as eval and predict load it, against reference on images;
    TuduiError when a probability differs by more than tolerance."""
    graph = exported.load_graph(path, info, torch.device("cpu"), trust_pickle=True)   # we just wrote it
    floats = images.float() / 255
    expected = reference(images if info.pixels == "uint8" else floats)
    # a batch of one, then the rest: a dynamic batch must take any size
    parts = [floats[:1], floats[1:]] if info.batch is None and len(floats) > 1 else [floats]
    got = torch.cat([graph(part).exp() for part in parts])
    difference = (got - expected).abs().max().item()
    agreement = (got.argmax(1) == expected.argmax(1)).float().mean().item()
    result = ExportResult(shown_as, info.format, difference, agreement, len(images), tolerance)
    if not difference <= tolerance:   # also refuses NaN
        raise TuduiError(f"the {info.format} export differs from the original model: largest probability "
                         f"difference {difference:.2e} over the tolerance {tolerance:.0e} (top-1 agreement "
                         f"{agreement:.1%} on {counted(len(images), 'image')}); nothing was written")
    return result


# ---------------------------------------------------------------- the three formats

def _write_onnx(model: nn.Module, example: torch.Tensor, path: Path, info: exported.ExportInfo,
                record: str) -> None:
    exported._needs("onnx")
    exported._needs("onnxscript")
    quiet = logging.getLogger("torch.onnx")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=_batch_axis(info),
                                        verbose=False, input_names=["images"], output_names=["probabilities"])
    except Exception as e:  # noqa: BLE001 - the exporter fails in many ways on an operator it lacks
        raise TuduiError(f"torch.onnx could not export the model: {type(e).__name__}: {str(e)[:300]}") from None
    finally:
        quiet.level = level
    program.model.metadata_props.update({exported.META_KEY: record, exported.EXPORT_KEY: info.to_json()})
    program.save(str(path))


def _write_torchscript(model: nn.Module, example: torch.Tensor, path: Path, info: exported.ExportInfo,
                       record: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.jit is deprecated (torch.export is its successor); still works
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path), _extra_files=_extra_files(record, info))


def _write_pt2(model: nn.Module, example: torch.Tensor, path: Path, info: exported.ExportInfo,
               record: str) -> None:
    try:
        program = torch.export.export(model, (example,), dynamic_shapes=_batch_axis(info))
    except Exception as e:  # noqa: BLE001 - torch.export refuses some Python in forward()
        raise TuduiError(f"torch.export could not export the model: {type(e).__name__}: {str(e)[:300]}") from None
    torch.export.save(program, str(path), extra_files=_extra_files(record, info))


def _batch_axis(info: exported.ExportInfo) -> tuple[dict, ...] | None:
    """The graph's first axis as torch.export's dynamic dimension, or None for a fixed batch."""
    return None if info.batch is not None else ({0: torch.export.Dim("batch", min=1, max=4096)},)


def _extra_files(record: str, info: exported.ExportInfo) -> dict[str, str]:
    return {exported.EXTRA_FILES[exported.META_KEY]: record, exported.EXTRA_FILES[exported.EXPORT_KEY]: info.to_json()}


WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript, "pt2": _write_pt2}
