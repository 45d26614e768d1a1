"""The model a training run starts from, and fine-tuning: frozen backbones and the head-first schedule.

A run starts from random weights, from torchvision's ImageNet weights (--pretrained,
--weights-file) or from a weights file of the user's (--weights: the course's
`torch.save(model.state_dict(), ...)`, or tudui weights). The head is then made to fit
the data set's classes, so the result always rebuilds with `create_model(name, classes,
**options)`.

The fine-tune schedule follows fastai's `fine_tune` (train the new head alone first, then
every layer, the pretrained ones at a lower rate), inside tudui's one learning-rate schedule.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tudui.config import Config
from tudui.errors import TuduiError
from tudui.models import create_model, model_entry
from tudui.models import torchvision as tv
from tudui.state_dicts import transfer_state_dict
from tudui.weights import model_for_state_dict, read_any_weights


@dataclass(frozen=True, kw_only=True)
class StartingModel:
    model: nn.Module
    options: dict        # the architecture settings to record: create_model(name, n, **options)
    start: str           # where the weights came from, for the run's first lines and the metadata
    pretrained: str | None = None   # torchvision's weights name when they were loaded
    random: bool = False            # no weights loaded: every layer starts at its initialisation


def model_options(cfg: Config) -> dict:
    """The settings that shape the model's layers (recorded in the weights' metadata)."""
    name, settings = cfg.model.arch, cfg.model
    if model_entry(name).family != "torchvision":
        if settings.pretrained or settings.weights_file:
            raise TuduiError(f"{name} has no pretrained weights: --pretrained and --weights-file are for "
                             f"torchvision's models (resnet18, vgg16, ...; `tudui models` lists them)")
        if settings.head != "replace":
            raise TuduiError(f"--head {settings.head} is for torchvision's models; {name} is built "
                             f"for the data set's classes already")
        return {"widths": settings.widths} if settings.widths else {}
    if settings.widths:
        raise TuduiError(f"model {name!r} takes no setting widths (it is fastnet's)")
    pretrained = settings.pretrained or bool(settings.weights_file)
    return tv.architecture_options(name, settings.input_size, pretrained, settings.head)


def build_starting_model(cfg: Config, num_classes: int, trust_pickle: bool = False) -> StartingModel:
    """The model for cfg with a head for num_classes, its starting weights loaded (trust_pickle: a
    whole pickled model may be unpickled, which runs code from the file)."""
    name, settings = cfg.model.arch, cfg.model
    options = model_options(cfg)
    if settings.weights:
        return _from_weights(cfg, num_classes, options, trust_pickle)
    if settings.pretrained or settings.weights_file:
        path = tv.pretrained_file(name, settings.weights_file)
        label = tv.weights_label(name, path, settings.weights_file)
        model = create_model(name, num_classes, weights_file=str(path), **options)
        return StartingModel(model=model, options=options, start=f"pretrained {label} from {path}",
                             pretrained=label)
    return StartingModel(model=create_model(name, num_classes, **options), options=options,
                         start="random initial weights", random=True)


def frozen_at_random(cfg: Config, start: StartingModel) -> str:
    """A warning when the backbone is frozen (for the run or its first epochs) at random weights, else ""."""
    if not (start.random and (cfg.train.freeze_backbone or cfg.train.freeze_epochs)):
        return ""
    learnt = ("--pretrained, --weights-file or --weights (a run's weights)"
              if model_entry(cfg.model.arch).family == "torchvision" else "--weights (a run's weights)")
    return (f"the backbone is frozen at random initial weights, so only the head learns, on features nobody "
            f"trained (it stays near chance on photos); {learnt} gives it learnt ones")


UPSCALE_WARNED = 5   # images this many times smaller than a torchvision model's input, or more, are warned of


def upscaled(cfg: Config, side: int | None, input_size: int) -> str:
    """A warning when the images are much smaller than a torchvision model's own input size (32-px
    images into a 224-px VGG16), which costs time and adds no detail; "" otherwise, or when the input
    size was chosen (--input-size)."""
    if (cfg.model.input_size or side is None or side * UPSCALE_WARNED > input_size
            or model_entry(cfg.model.arch).family != "torchvision"):
        return ""
    smaller = max(64, 2 * side)
    return (f"the images are about {side} px and {cfg.model.arch} takes {input_size}x{input_size}: each is scaled "
            f"up {input_size / side:.0f}x, which costs time and adds no detail; --input-size {smaller} takes about "
            f"{(input_size / smaller) ** 2:.0f}x less compute per image")


def _from_weights(cfg: Config, num_classes: int, options: dict, trust_pickle: bool) -> StartingModel:
    name, path = cfg.model.arch, cfg.model.weights
    state, meta = read_any_weights(path, trust_pickle)
    source_options = options
    if meta is not None:
        if meta.model != name:
            raise TuduiError(f"{path} holds weights of {meta.model!r}, not {name!r}; "
                             f"pass --model {meta.model}")
        source_options = {**options, **meta.model_options}
    fit = model_for_state_dict(name, state, source_options, str(path))
    head = options.get("head")
    if fit.num_classes == num_classes and fit.head == head:
        return StartingModel(model=fit.model, options=options, start=f"all weights from {path}")
    if fit.unmodified:
        # A torchvision model as torchvision builds it (the course's vgg16_method2.pth): new
        # head on top, exactly as create_model does after loading ImageNet weights.
        tv.set_head(fit.model, head, num_classes)
        done = "replaced" if head == "replace" else "appended"
        return StartingModel(model=fit.model, options=options,
                             start=f"weights from {path}, head {done} for {num_classes} classes")
    model = create_model(name, num_classes, **options)
    skip = tuple(set(fit.head_names) | {tv.find_head(model)[0]})
    copied = transfer_state_dict(model, fit.model.state_dict(), skip, str(path), name)
    return StartingModel(model=model, options=options,
                         start=f"{copied} tensors from {path}, new head for {num_classes} classes")


def check_input_size(model: nn.Module, input_size: int, name: str, own_size: int, advice: str = "") -> None:
    """One forward pass at input_size, so a size the model cannot take fails now, in one line."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device))
    except (RuntimeError, ValueError, AssertionError) as e:
        said = str(e).strip().splitlines()[0][:200]
        if not advice and "mat1 and mat2" in said and any(isinstance(m, nn.Flatten) for m in model.modules()):
            # the course's nets: Flatten feeds a Linear whose width is fixed by one input size
            advice = (f"its Linear after Flatten is sized for {own_size}x{own_size} inputs, so only "
                      f"--input-size {own_size} works (fastnet and torchvision's models take other sizes)")
        raise TuduiError(f"{name} cannot take {input_size}x{input_size} inputs ({said}); "
                         f"{advice or f'pick another --input-size (its own is {own_size})'}") from None
    finally:
        model.train(was_training)


class FreezeSchedule:
    """Hook: the backbone stays frozen through epoch freeze_epochs, then every layer trains."""

    def __init__(self, frozen: tv.FrozenBackbone, freeze_epochs: int):
        self.frozen, self.freeze_epochs = frozen, freeze_epochs

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if epoch > self.freeze_epochs:
            self.frozen.release()


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
