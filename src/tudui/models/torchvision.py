"""torchvision's classification models by name: building, a new head, freezing, pretrained weights.

Every name `torchvision.models.list_models(module=torchvision.models)` returns works as a
tudui model. The model is built by `get_model(name, weights=None)`, the ImageNet weights
are loaded (when asked) before the head changes, and then the layer that outputs the class
scores is replaced or followed by a new Linear for the data set's classes. Doing it in that
order for every model keeps the parameter names the same whether or not the run started
from pretrained weights, so a checkpoint always rebuilds with `create_model`.
"""
from __future__ import annotations

import difflib
import functools
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from tudui.config import HEADS
from tudui.data.transforms import Preprocess
from tudui.errors import TuduiError

log = logging.getLogger(__name__)

APPENDED_NAME = "add_linear"   # the name the course gives its extra layer (classifier.add_module)
# Used when a model has no weights to take its preprocessing from: torchvision's usual preset.
IMAGENET_PRESET = Preprocess(input_size=224, resize_size=256, interpolation="bilinear",
                             mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
# Models whose layers are built for one input size; the others take any reasonable size.
SIZE_ARGUMENT = {"vit_": "image_size", "maxvit_": "input_size"}
# Models with auxiliary classifiers: their ImageNet weights include them, tudui trains without.
AUX_MODULES = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}
# DenseNet's published weights use old layer names ("norm.1"); torchvision renames them on load.
DENSENET_OLD_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
                              r"([12]\.(?:weight|bias|running_mean|running_var))$")


@functools.cache
def torchvision_names() -> tuple[str, ...]:
    """The names of torchvision's image classification models (not detection or video)."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


def default_weights(name: str):
    """torchvision's recommended pretrained weights (a WeightsEnum member) for name, or None."""
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


@functools.cache
def preprocess_preset(name: str) -> Preprocess:
    """Input size, resize side, interpolation and mean/std of name's default weights' transforms."""
    weights = default_weights(name)
    if weights is None:
        return IMAGENET_PRESET
    preset = weights.transforms()   # torchvision's ImageClassification: resize, centre crop, normalise
    return Preprocess(input_size=int(preset.crop_size[0]), resize_size=int(preset.resize_size[0]),
                      interpolation=preset.interpolation.value, mean=preset.mean, std=preset.std)


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


# ---------------------------------------------------------------- the classifier head

def find_head(model: nn.Module) -> tuple[str, nn.Module]:
    """(name, layer) of the layer that outputs the class scores.

    That is the last nn.Linear the model registers (VGG's classifier.6, ResNet's fc,
    MobileNet's and EfficientNet's classifier[-1], ViT's heads.head, Swin's head, ...).
    SqueezeNet has no Linear: its scores come from a 1x1 Conv2d, which is taken instead.
    """
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1]
    convs = [(n, m) for n, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    if convs:
        return convs[-1]
    raise TuduiError(f"cannot find the classifier layer of {type(model).__name__} "
                     f"(it has no Linear layer and no 1x1 convolution)")


def _parent(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    parent_name = name.rpartition(".")[0]
    return parent_name, model.get_submodule(parent_name) if parent_name else model


def replace_head(model: nn.Module, num_classes: int) -> str:
    """Swap the class-score layer for a new one with num_classes outputs; returns its name.

    The course's `vgg16.classifier[6] = nn.Linear(4096, 10)`, for any model.
    """
    name, head = find_head(model)
    if isinstance(head, nn.Linear):
        new: nn.Module = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    else:
        new = nn.Conv2d(head.in_channels, num_classes, 1)
    model.set_submodule(name, new)
    return name


def appended_name(model: nn.Module) -> str:
    """The name a layer added by append_head gets (classifier.add_linear, fc.1, ...)."""
    name = find_head(model)[0]
    parent_name, parent = _parent(model, name)
    if isinstance(parent, nn.Sequential):
        return f"{parent_name}.{APPENDED_NAME}" if parent_name else APPENDED_NAME
    return f"{name}.1"


def append_head(model: nn.Module, num_classes: int) -> str:
    """Add a Linear(classes of the old head, num_classes) after the class-score layer; returns its name.

    The course's `vgg16.classifier.add_module('add_linear', nn.Linear(1000, 10))`: inside a
    Sequential the layer is added at its end; a head held as a plain attribute (ResNet's
    fc) becomes Sequential(old head, new layer).
    """
    name, head = find_head(model)
    _, parent = _parent(model, name)
    if not isinstance(head, nn.Linear) or (isinstance(parent, nn.Sequential)
                                           and list(parent.children())[-1] is not head):
        raise TuduiError(f"--head append needs a model that ends in a Linear layer; "
                         f"{type(model).__name__} ends in {type(head).__name__} {name}: use --head replace")
    new = nn.Linear(head.out_features, num_classes)
    if isinstance(parent, nn.Sequential):
        parent.add_module(APPENDED_NAME, new)
    else:
        model.set_submodule(name, nn.Sequential(head, new))
    return find_head(model)[0]


def set_head(model: nn.Module, head: str, num_classes: int) -> str:
    if head not in HEADS:
        raise TuduiError(f"--head must be one of {', '.join(HEADS)}, got {head!r}")
    return replace_head(model, num_classes) if head == "replace" else append_head(model, num_classes)


@dataclass
class FrozenBackbone:
    """What freeze_backbone froze: parameters, and norm layers held in eval mode by a hook."""
    parameters: list[nn.Parameter]
    norms: list[nn.Module]
    hook: object = None

    def release(self) -> None:
        """Let every frozen layer train again."""
        for p in self.parameters:
            p.requires_grad_(True)
        if self.hook is not None:
            self.hook.remove()
        self.parameters, self.norms, self.hook = [], [], None


def freeze_backbone(model: nn.Module) -> FrozenBackbone:
    """Fix every layer but the head: no gradients, and BatchNorm layers kept in eval mode.

    A frozen backbone is then one fixed function: in training mode BatchNorm would normalise
    by each batch and drift its running statistics, so the head would learn on features that
    differ from those it sees at evaluation. Only trainable parameters are frozen, so layers a
    model keeps fixed on purpose stay fixed after release().
    """
    head = set(find_head(model)[1].parameters())
    frozen = [p for p in model.parameters() if p.requires_grad and p not in head]
    for p in frozen:
        p.requires_grad_(False)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and not any(p.requires_grad for p in m.parameters(recurse=False))]

    def hold_norms(module: nn.Module, inputs) -> None:
        if module.training:
            for norm in norms:
                norm.eval()

    hook = model.register_forward_pre_hook(hold_norms) if norms else None
    return FrozenBackbone(frozen, norms, hook)


# ---------------------------------------------------------------- pretrained weights

def hub_path(weights) -> Path:
    """Where torch.hub keeps weights' file: $TORCH_HOME/hub/checkpoints/<file name of its URL>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def download(url: str, path: Path) -> None:
    """Fetch url to path through torch.hub (it checks the hash in the file name, writes atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    match = torch.hub.HASH_REGEX.search(path.name)
    torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=True)


def is_torchvisions_file(path: Path, weights) -> bool:
    """Whether path holds torchvision's own file of weights, by content: the SHA-256 whose start its
    download name carries (resnet18-f37072fd.pth), whatever the copy is called now."""
    expected = torch.hub.HASH_REGEX.search(hub_path(weights).name)
    if expected is None:
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest().startswith(expected.group(1))


def weights_label(name: str, path: Path, weights_file: str = "") -> str:
    """What pretrained_file's file is, as a run records it: torchvision's enum name for the hub's
    copy, and for a --weights-file only when its hash is that copy's; else "weights file"."""
    weights = default_weights(name)
    if weights is None or (weights_file and not is_torchvisions_file(path, weights)):
        return "weights file"
    return str(weights)


def pretrained_file(name: str, weights_file: str = "") -> Path:
    """The path of the ImageNet weights for name: weights_file, else the hub cache, downloading
    into it when the file is missing."""
    weights = default_weights(name)
    if weights_file:
        path = Path(weights_file).expanduser()
        if not path.is_file():
            raise TuduiError(f"--weights-file not found: {path}")
        return path
    if weights is None:
        raise TuduiError(f"torchvision has no pretrained weights for {name}; train from random initial weights "
                         f"(--no-pretrained)")
    path = hub_path(weights)
    if not path.is_file():
        log.info("downloading %s to %s", weights.url, path)
        try:
            download(weights.url, path)
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; a bad hash a RuntimeError
            reason = str(getattr(e, "reason", "") or e).strip().splitlines()
            raise TuduiError(
                f"no pretrained weights for {name} here: {path.name} is not in {path.parent} and "
                f"downloading {weights.url} failed ({reason[0] if reason else type(e).__name__}); "
                f"put that file in {path.parent}/ (or pass --weights-file PATH), or train from random "
                f"initial weights (--no-pretrained)") from None
    return path


def normalize_keys(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of torchvision's published weights as today's modules name them; auxiliary heads dropped."""
    if name.startswith("densenet"):
        state = {(DENSENET_OLD_KEY.sub(r"\1\2", k)): v for k, v in state.items()}
    for prefix in AUX_MODULES.get(name, ()):
        state = {k: v for k, v in state.items() if not k.startswith(prefix + ".")}
    return state


# ---------------------------------------------------------------- building

def architecture_options(name: str, input_size: int = 0, pretrained: bool = False,
                         head: str = "replace") -> dict:
    """The options that shape name's layers, to record so the model rebuilds identically."""
    options: dict = {"head": head}
    preset_size = preprocess_preset(name).input_size
    for prefix in SIZE_ARGUMENT:
        if name.startswith(prefix) and input_size and input_size != preset_size:
            options["image_size"] = input_size
    if name in AUX_MODULES and pretrained:
        # Their ImageNet weights expect inputs re-normalised inside the model, as torchvision does.
        options["transform_input"] = True
    return options


def _builder_kwargs(name: str, image_size: int, transform_input: bool) -> dict:
    kwargs: dict = {}
    for prefix, argument in SIZE_ARGUMENT.items():
        if name.startswith(prefix) and image_size:
            kwargs[argument] = image_size if argument == "image_size" else (image_size, image_size)
    if name in AUX_MODULES:
        kwargs.update(aux_logits=False, init_weights=True, transform_input=transform_input)
    return kwargs


def base_model(name: str, image_size: int = 0, transform_input: bool = False) -> nn.Module:
    """torchvision's model name with its ImageNet head and random weights."""
    try:
        return torchvision.models.get_model(name, weights=None, **_builder_kwargs(name, image_size, transform_input))
    except (ValueError, TypeError, AssertionError) as e:
        raise TuduiError(f"torchvision cannot build {name}: {str(e).splitlines()[0]}") from None


def create_torchvision_model(name: str, num_classes: int, head: str = "replace", pretrained: bool = False,
                             weights_file: str = "", image_size: int = 0,
                             transform_input: bool = False) -> nn.Module:
    """torchvision's model name, ImageNet weights loaded when asked, with a head for num_classes."""
    from tudui.state_dicts import fit_state_dict, read_state_dict

    model = base_model(name, image_size, transform_input)
    if pretrained or weights_file:
        path = pretrained_file(name, weights_file)
        state = normalize_keys(name, read_state_dict(path))
        fit_state_dict(model, state, str(path), f"torchvision's {name}")
    set_head(model, head, num_classes)
    return model


def model_summary(name: str) -> str:
    weights = default_weights(name)
    if weights is None:
        return "torchvision (no pretrained weights)"
    return (f"torchvision: {weights.meta.get('num_params', 0) / 1e6:.1f} M parameters with ImageNet's "
            f"1000-class head; weights {weights.name}")
