"""A weights path in, a model and its metadata out, whatever the format; and saving weights.

tudui's own files are safetensors with a `WeightsMeta` in the header: everything that rebuilds
and uses the model (its registry name and options, the class names, the preprocessing, the full
settings of the run), so `eval` and `predict` never ask for them. A run directory stands for
its best weights. A plain state_dict from elsewhere (the course's
`torch.save(model.state_dict(), ...)`) loads too, given the model's name: its metadata is then
made from the model's defaults. The files are written and read here and nowhere else; what their
metadata may hold is tudui.weights_meta.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tudui.config import Config, ModelConfig
from tudui.data.images import IMAGE_EXTENSIONS
import tudui.exported as exported
from tudui.errors import TuduiError
from tudui.files import atomic_write
from tudui.models import create_model, model_entry, preprocess_of
from tudui.models import torchvision as tv
from tudui.models.layouts import model_with_keys
from tudui.rundir import resolve_weights_path, weights_not_found
from tudui.state_dicts import (
    KeysDiffer,
    NotWeights,
    check_finite,
    check_fits,
    fit_state_dict,
    read_state_dict,
    renamed_container,
)
from tudui.weights_meta import WeightsMeta

log = logging.getLogger(__name__)

META_KEY = "tudui"


# ---------------------------------------------------------------- tudui's files

def save_weights(path: Path, model: nn.Module, meta: WeightsMeta) -> None:
    """model's state_dict as safetensors, with meta in the file's header."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={META_KEY: meta.to_json()}))


def is_tudui_weights(path: str | Path) -> bool:
    """True for what tudui writes: a run directory or a .safetensors file."""
    path = Path(path)
    return path.is_dir() or path.suffix == ".safetensors"


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], WeightsMeta]:
    """(state_dict on the CPU, metadata) from a tudui weights file or run directory."""
    path = resolve_weights_path(path)
    meta = read_meta(path)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise TuduiError(f"{path} is not a readable safetensors weights file ({e})") from None
    check_finite(state, str(path))
    return state, meta


def model_of_weights(path: str | Path) -> str | None:
    """The model a run directory or tudui weights file is of, or None (another kind of file, or none:
    loading it later says what is wrong)."""
    try:
        return read_meta(resolve_weights_path(path)).model if is_tudui_weights(path) else None
    except TuduiError:
        return None


def read_meta(path: Path) -> WeightsMeta:
    """The metadata of a tudui weights file, without reading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise TuduiError(f"{path} is not a readable safetensors weights file ({e})") from None
    if META_KEY not in header:
        raise TuduiError(f"{path} has no tudui metadata (model name, classes, preprocessing); "
                         f"it was not written by tudui")
    return WeightsMeta.from_json(header[META_KEY], str(path))


def read_any_weights(path: str | Path, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor],
                                                                             WeightsMeta | None]:
    """(state_dict, metadata) of tudui weights, or (state_dict, None) of a plain state_dict file."""
    if exported.is_exported(path):
        raise TuduiError(f"{path} is an exported graph, which has no weights to train from; give the "
                         f".safetensors file (or the run directory) it was exported from")
    if is_tudui_weights(path):
        return read_weights(path)
    return read_state_dict(path, trust_pickle), None


WEIGHTS_TAKEN = ("weights are a run directory, a tudui .safetensors file, an export (.onnx, .pt2, .torchscript) "
                 "or a PyTorch state_dict file (.pth, .pt; with --model)")


def load_model(path: str | Path, device: torch.device | str = "cpu", model_name: str | None = None,
               trust_pickle: bool = False, layout: bool = True) -> tuple[nn.Module, WeightsMeta]:
    """The model a weights file describes, with its weights loaded, in eval mode.

    With layout (the default) a model whose run trained channels-last is loaded channels-last
    too: its convolutions run 1.5-1.8x faster so (fastnet on a CPU) than the same weights in the
    default layout, whatever the layout of the images fed to it. export asks for the default
    layout (layout=False).

    A tudui weights file (or run directory) describes itself. Any other file is read as a
    plain state_dict (see tudui.state_dicts) for the model model_name; its metadata then has
    the model's own preprocessing and `imported` set. An exported .onnx, .pt2 or .torchscript
    file runs its graph (see tudui.exported); its metadata says so in `exported`.
    """
    if not Path(path).exists():
        raise weights_not_found(path)
    if exported.is_exported(path) and Path(path).is_file():
        if model_name:
            log.warning("--model %s is not used: %s is an exported model, which holds its own graph", model_name, path)
        return load_exported(path, torch.device(device), trust_pickle)
    if is_tudui_weights(path):
        state, meta = read_weights(path)
        _check_before_building(meta, state, str(path))
        if model_name and model_name != meta.model:
            log.warning("--model %s is not used: %s holds tudui weights of a %s model, which say so themselves "
                        "(--model is for a plain state_dict .pth)", model_name, path, meta.model)
        model = create_model(meta.model, num_classes=meta.num_classes, **meta.model_options)
        fit_state_dict(model, state, str(path), f"model {meta.model!r}")
        if layout and meta.config.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
    elif Path(path).suffix.lower() in IMAGE_EXTENSIONS:   # predict's arguments swapped, most often
        raise TuduiError(f"{path} is an image, not weights; {WEIGHTS_TAKEN}")
    else:
        try:
            model, meta = _import_model(path, model_name, trust_pickle)
        except NotWeights as e:
            raise TuduiError(f"{e}; {WEIGHTS_TAKEN}") from None
    return model.to(device).eval(), meta


def _check_before_building(meta: "WeightsMeta", state: dict, source: str) -> None:
    """Refuse weights that do not fit the model their metadata names before that model is built:
    the metadata could name a model of billions of parameters for a file of a few tensors. The
    model is laid out on the "meta" device (shapes, no memory); one that cannot be is checked
    when built, as before."""
    try:
        with torch.device("meta"):
            skeleton = create_model(meta.model, num_classes=meta.num_classes, **meta.model_options)
    except TuduiError:
        raise
    except Exception:  # noqa: BLE001 - a model whose construction needs real numbers: checked once built
        return
    check_fits(skeleton.state_dict(), state, source, f"model {meta.model!r}")


def load_exported(path: str | Path, device: torch.device, trust_pickle: bool = False) -> tuple[nn.Module,
                                                                                               WeightsMeta]:
    """An exported file's graph and metadata. The graph normalises by itself, so the metadata's
    preprocessing stops at floats in [0, 1]."""
    source = exported.ExportedFile.open(path)
    meta = WeightsMeta.from_json(source.record, str(path))   # checked before the graph is loaded
    meta = dataclasses.replace(meta, exported=source.info.format,
                               preprocess=dataclasses.replace(meta.preprocess, mean=None, std=None))
    return source.load(device, trust_pickle), meta


# ---------------------------------------------------------------- state_dicts from elsewhere

@dataclass(frozen=True, kw_only=True)
class StateDictFit:
    """A model built to fit a state_dict exactly, and what the state_dict turned out to be."""
    model: nn.Module
    num_classes: int
    head: str | None             # torchvision models: replace or append; None for tudui's own
    head_names: tuple[str, ...]  # module names that belong to the classifier head, in any form
    unmodified: bool             # a torchvision model with its original (ImageNet) head


def model_for_state_dict(name: str, state: dict[str, torch.Tensor], options: dict | None = None,
                         source: str = "the file") -> StateDictFit:
    """Build model name with the head state_dict has (class count, replaced or appended) and load it.

    options are architecture settings (image_size, widths, ...); a head setting in them is
    ignored, the file decides. Raises TuduiError naming the keys when the file does not fit.
    """
    options = {k: v for k, v in (options or {}).items() if k != "head"}
    if model_entry(name).family == "torchvision":
        return _torchvision_for_state_dict(name, tv.normalize_keys(name, state), options, source)
    probe = create_model(name, 10, **options)
    state = renamed_container(state, probe.state_dict(), source)
    head_name = tv.find_head(probe)[0]
    key = head_name + ".weight"
    num_classes = state[key].shape[0] if key in state and state[key].ndim >= 1 else 10
    model = probe if num_classes == 10 else create_model(name, num_classes, **options)
    fit_state_dict(model, state, source, f"model {name!r}" + (f" with {num_classes} classes" if key in state else ""))
    return StateDictFit(model=model, num_classes=num_classes, head=None, head_names=(head_name,),
                        unmodified=False)


def _torchvision_for_state_dict(name: str, state: dict[str, torch.Tensor], options: dict,
                                source: str) -> StateDictFit:
    model = tv.base_model(name, options.get("image_size", 0), options.get("transform_input", False))
    head_name, head_layer = tv.find_head(model)
    original_classes = getattr(head_layer, "out_features", getattr(head_layer, "out_channels", 0))
    appended = tv.appended_name(model) if isinstance(head_layer, nn.Linear) else ""
    if appended and appended + ".weight" in state:
        head, num_classes = "append", state[appended + ".weight"].shape[0]
    else:
        head = "replace"
        key = head_name + ".weight"
        num_classes = state[key].shape[0] if key in state else original_classes
    tv.set_head(model, head, num_classes)
    # Without the head's key the class count is a guess: the message then names the model alone.
    has_head = any(n + ".weight" in state for n in (head_name, appended) if n)
    fit_state_dict(model, state, source, f"{name} with a {num_classes}-class head ({head})" if has_head else name)
    return StateDictFit(model=model, num_classes=num_classes, head=head,
                        head_names=tuple(n for n in (head_name, appended) if n),
                        unmodified=head == "replace" and num_classes == original_classes)


def _import_model(path: str | Path, model_name: str | None, trust_pickle: bool) -> tuple[nn.Module, WeightsMeta]:
    """A model from a plain state_dict file, with metadata made from the model's defaults."""
    state = read_state_dict(path, trust_pickle)   # first: a file that is no state_dict says so
    if not model_name:
        raise TuduiError(f"{path} is a plain PyTorch weights file, which does not say which model it "
                         f"is for; pass --model NAME (--model tudui for the course's net; `tudui models` "
                         f"lists the others)")
    try:
        fit = model_for_state_dict(model_name, state, {}, str(path))
    except KeysDiffer as e:
        meant = model_with_keys(state, model_name)
        raise TuduiError(f"{e}; its keys are those of {meant}: try --model {meant}" if meant else str(e)) from None
    weights = tv.default_weights(model_name) if model_entry(model_name).family == "torchvision" else None
    categories = list(weights.meta.get("categories", [])) if weights is not None else []
    class_names = categories if len(categories) == fit.num_classes else [str(i) for i in range(fit.num_classes)]
    model_config = ModelConfig(arch=model_name, **({"head": fit.head} if fit.head else {}))
    meta = WeightsMeta(model=model_name, num_classes=fit.num_classes, class_names=tuple(class_names),
                       preprocess=preprocess_of(model_name),
                       model_options={"head": fit.head} if fit.head else {},
                       config=Config(model=model_config), imported=True, source=str(Path(path).resolve()))
    return fit.model, meta


def with_class_names(meta: WeightsMeta, class_names: list[str]) -> WeightsMeta:
    """meta with its classes named (an imported state_dict's classes are the data set's)."""
    return dataclasses.replace(meta, class_names=tuple(class_names))
