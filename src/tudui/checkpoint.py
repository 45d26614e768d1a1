"""Weights (safetensors + metadata) and training state, written atomically, read without pickle.

A weights file carries everything needed to rebuild and use the model: its registry name,
class names, input size, resize/crop and normalisation, so `eval` and `predict` never ask
for them. Plain state_dicts from elsewhere (the course's `torch.save(model.state_dict())`)
load too, given the model's name; their preprocessing is the model's own.
"""
from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tudui.config import Config, make_config
from tudui.errors import TuduiError
from tudui.files import atomic_write
from tudui.models import create_model, model_entry, preprocess_of
from tudui.models import torchvision as tv
from tudui.state_dicts import fit_state_dict, read_state_dict

FORMAT_VERSION = 1
META_KEY = "tudui"


def save_weights(path: Path, model: nn.Module, meta: dict) -> None:
    """model's state_dict as safetensors, with meta (JSON) in the file's metadata."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    header = {META_KEY: json.dumps({"format": FORMAT_VERSION, **meta})}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def resolve_weights_path(path: str | Path) -> Path:
    """A weights file, or a run directory (its weights/best.safetensors)."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "weights" / "best.safetensors"
        if not candidate.is_file():
            raise TuduiError(f"{path} is a folder without weights/best.safetensors; "
                             f"pass a run directory or a .safetensors file")
        return candidate
    if not path.exists():
        raise TuduiError(f"weights not found: {path}")
    return path


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict on the CPU, metadata) from a tudui weights file or run directory."""
    path = resolve_weights_path(path)
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise TuduiError(f"{path} is not a readable safetensors weights file ({e})") from None
    if META_KEY not in header:
        raise TuduiError(f"{path} has no tudui metadata (model name, classes, preprocessing); "
                         f"it was not written by tudui")
    try:
        meta = json.loads(header[META_KEY])
    except json.JSONDecodeError:
        raise TuduiError(f"{path} has damaged tudui metadata") from None
    if meta.get("format") != FORMAT_VERSION:
        raise TuduiError(f"{path} has weights format {meta.get('format')!r}; this tudui reads "
                         f"format {FORMAT_VERSION}")
    return state, meta


def is_tudui_weights(path: str | Path) -> bool:
    """True for what tudui writes: a run directory or a .safetensors file."""
    path = Path(path)
    return path.is_dir() or path.suffix == ".safetensors"


def load_model(path: str | Path, device: torch.device | str = "cpu", model_name: str | None = None,
               trust_pickle: bool = False) -> tuple[nn.Module, dict]:
    """The model a weights file describes, with its weights loaded, in eval mode.

    A tudui weights file (or run directory) describes itself. Any other file is read as a
    plain state_dict (see tudui.state_dicts) for the model model_name; its metadata then
    has the model's own preprocessing and `imported: true`.
    """
    if not is_tudui_weights(path):
        return import_model(path, model_name, device, trust_pickle)
    state, meta = load_weights(path)
    model = create_model(meta["model"], num_classes=meta["num_classes"], **meta.get("model_options", {}))
    fit_state_dict(model, state, str(path), f"model {meta['model']!r}")
    return model.to(device).eval(), meta


@dataclass
class StateDictFit:
    """A model built to fit a state_dict exactly, and what the state_dict turned out to be."""
    model: nn.Module
    num_classes: int
    head: str | None            # torchvision models: replace or append; None for tudui's own
    head_names: tuple[str, ...]  # module names that belong to the classifier head, in any form
    unmodified: bool            # a torchvision model with its original (ImageNet) head


def model_for_state_dict(name: str, state: dict[str, torch.Tensor], options: dict | None = None,
                         source: str = "the file") -> StateDictFit:
    """Build model name with the head state_dict has (class count, replaced or appended) and load it.

    options are architecture settings (image_size, widths, ...); a head setting in them is
    ignored, the file decides. Raises TuduiError naming the keys when the file does not fit.
    """
    options = {k: v for k, v in (options or {}).items() if k != "head"}
    entry = model_entry(name)
    if entry.family == "torchvision":
        state = tv.normalize_keys(name, state)
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
        fit_state_dict(model, state, source, f"{name} with a {num_classes}-class head ({head})")
        return StateDictFit(model, num_classes, head, tuple(n for n in (head_name, appended) if n),
                            head == "replace" and num_classes == original_classes)
    probe = create_model(name, 10, **options)
    head_name = tv.find_head(probe)[0]
    key = head_name + ".weight"
    num_classes = state[key].shape[0] if key in state and state[key].ndim >= 1 else 10
    model = probe if num_classes == 10 else create_model(name, num_classes, **options)
    fit_state_dict(model, state, source, f"model {name!r} with {num_classes} classes")
    return StateDictFit(model, num_classes, None, (head_name,), False)


def import_model(path: str | Path, model_name: str | None, device: torch.device | str = "cpu",
                 trust_pickle: bool = False) -> tuple[nn.Module, dict]:
    """A model from a plain state_dict file, with metadata made from the model's defaults."""
    if not model_name:
        raise TuduiError(f"{path} is a plain PyTorch weights file, which does not say which model it "
                         f"is for; pass --model NAME (e.g. --model vgg16)")
    fit = model_for_state_dict(model_name, read_state_dict(path, trust_pickle), {}, str(path))
    weights = tv.default_weights(model_name) if model_entry(model_name).family == "torchvision" else None
    categories = list(weights.meta.get("categories", [])) if weights is not None else []
    class_names = categories if len(categories) == fit.num_classes else [str(i) for i in range(fit.num_classes)]
    meta = {"format": FORMAT_VERSION, "model": model_name, "num_classes": fit.num_classes,
            "class_names": class_names, "model_options": {"head": fit.head} if fit.head else {},
            **preprocess_of(model_name), "imported": True, "source": str(Path(path).resolve())}
    return fit.model.to(device).eval(), meta


def save_state(path: Path, state: dict) -> None:
    """Training state (tensors and plain types only, so weights_only loading can read it)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: str | Path) -> dict:
    """A training state written by save_state, read without unpickling any object."""
    path = Path(path)
    if path.is_dir():
        raise TuduiError(f"{path} is a folder, not a training state file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise TuduiError(f"training state not found: {path}") from None
    except Exception as e:  # the restricted unpickler refuses anything but tensors and plain types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TuduiError(f"cannot read training state {path}: {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise TuduiError(f"{path} has training-state format {found!r}; this tudui reads format "
                         f"{FORMAT_VERSION}")
    return state


def capture_rng() -> dict:
    """Every random state training draws from: Python, NumPy, torch (and CUDA when in use)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
                       "has_gauss": has_gauss, "gauss": gauss},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"],
                         n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point())


class CheckpointHook:
    """After each epoch: weights/last.safetensors, weights/best.safetensors when accuracy
    improves, and weights/state.pt with everything resuming needs.

    extra_state() adds the state of the parts this hook does not own (weight averaging, the
    loss scaler, the time-budget clock, TensorBoard's step). Weights that are not finite are
    never saved: "last" and "best" stay the last good ones.
    """

    def __init__(self, weights_dir: Path, model: nn.Module, optimizer, scheduler, meta: dict,
                 best_accuracy: float = -1.0, best_epoch: int = 0,
                 extra_state: Callable[[], dict] | None = None):
        self.dir = Path(weights_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.meta = meta
        self.best_accuracy, self.best_epoch = best_accuracy, best_epoch
        self.extra_state = extra_state
        self.saved_epoch: int | None = None

    @property
    def best_path(self) -> Path:
        return self.dir / "best.safetensors"

    @property
    def last_path(self) -> Path:
        return self.dir / "last.safetensors"

    @property
    def state_path(self) -> Path:
        return self.dir / "state.pt"

    def save_state(self, epoch: int, step_in_epoch: int = 0, partial_loss: float = 0.0,
                   partial_images: int = 0) -> None:
        """state.pt after `epoch` finished epochs and step_in_epoch steps of the next one."""
        save_state(self.state_path, {
            "format": FORMAT_VERSION, "epoch": epoch, "step_in_epoch": step_in_epoch,
            "partial_loss": partial_loss, "partial_images": partial_images,
            "best_accuracy": self.best_accuracy, "best_epoch": self.best_epoch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": capture_rng(),
            **(self.extra_state() if self.extra_state is not None else {}),
            "meta": self.meta})

    def on_epoch_end(self, row: dict, test_metrics: dict) -> None:
        loss = row["test_loss"]
        if (loss is not None and not math.isfinite(loss)) or not all_finite(self.model):
            raise FloatingPointError(f"the weights stopped being finite numbers in epoch {row['epoch']}")
        meta = {**self.meta, "epoch": row["epoch"], "test_accuracy": row["test_accuracy"],
                "test_loss": row["test_loss"]}
        save_weights(self.last_path, self.model, meta)
        if row["test_accuracy"] is not None and row["test_accuracy"] > self.best_accuracy:
            self.best_accuracy, self.best_epoch = row["test_accuracy"], row["epoch"]
            save_weights(self.best_path, self.model, meta)
        self.save_state(row["epoch"])
        self.saved_epoch = row["epoch"]


# ---------------------------------------------------------------- resuming a run

def resume_settings(resume: str | Path, config: Config | None, config_file, overrides: dict) -> tuple[Path, dict, Config]:
    """(run directory, its training state, the settings to go on with) for --resume RUN_DIR.

    The run's own config.yaml is the base and flags may change it (a larger --epochs extends a
    finished run), but not the model or the data set: the saved weights would not fit them.
    """
    run_dir = Path(resume)
    if run_dir.name == "weights" or run_dir.suffix:
        raise TuduiError(f"--resume takes a run directory (like runs/exp), got {run_dir}")
    if not (run_dir / "config.yaml").is_file():
        raise TuduiError(f"{run_dir} is not a tudui run directory (no config.yaml in it)")
    if config is not None or config_file is not None:
        raise TuduiError("--resume continues with the run's own config.yaml; change settings with "
                         "flags instead of --config")
    state = load_state(run_dir / "weights" / "state.pt")
    before = make_config(run_dir / "config.yaml")
    cfg = make_config(run_dir / "config.yaml", **{k: v for k, v in overrides.items()
                                                   if k not in ("project", "name")})
    for what, old, new in (("model", before.model, cfg.model), ("data set", before.data.name, cfg.data.name),
                           ("--val-split", before.data.val_split, cfg.data.val_split),
                           ("--seed", before.train.seed, cfg.train.seed)):
        if old != new:
            raise TuduiError(f"cannot resume {run_dir} with a different {what} ({old} -> {new}); "
                             f"start a new run instead")
    finished = state["epoch"] >= cfg.train.epochs
    if finished:
        raise TuduiError(f"{run_dir} has finished its {state['epoch']} epochs; pass a larger --epochs "
                         f"to extend it")
    return run_dir, state, cfg


def restore_training(state: dict, model: nn.Module, optimizer, scheduler, averager, scaler) -> None:
    """Put a saved training state back into freshly built parts (the random state comes last)."""
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise TuduiError(f"the saved state does not fit the model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if averager is not None and state.get("averager"):
        averager.load_state_dict(state["averager"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
