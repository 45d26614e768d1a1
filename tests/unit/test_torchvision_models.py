"""torchvision's models through tudui: heads, freezing, pretrained weights (from local files only)."""
import copy
import functools
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from tudui.errors import TuduiError
from tudui.models import create_model, list_models, model_entry
from tudui.models import torchvision as tv

REPRESENTATIVE = [
    ("vgg16", {}, "classifier.6"),
    ("resnet18", {}, "fc"),
    ("mobilenet_v3_small", {}, "classifier.3"),
    ("efficientnet_b0", {}, "classifier.1"),
    ("vit_b_16", {"image_size": 32}, "heads.head"),
]


NAMES = [name for name, _, _ in REPRESENTATIVE]


SETTINGS = {name: settings for name, settings, _ in REPRESENTATIVE}


@functools.cache
def _base(name: str) -> nn.Module:
    torch.manual_seed(0)
    return tv.base_model(name, SETTINGS[name].get("image_size", 0))


def base(name: str) -> nn.Module:
    """A fresh copy of torchvision's model (ImageNet head, random weights), built once per session."""
    return copy.deepcopy(_base(name))


def linear_layers(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("name, settings, head", REPRESENTATIVE)
def test_the_head_is_found_where_the_course_changes_it(name, settings, head):
    found, layer = tv.find_head(base(name))
    assert found == head and layer.out_features == 1000


@pytest.mark.parametrize("num_classes", [2, 10])
@pytest.mark.parametrize("name", NAMES)
def test_new_head_scores_each_class_forward_and_backward(name, num_classes):
    model = base(name)
    tv.replace_head(model, num_classes)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, num_classes)
    out.logsumexp(dim=1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert tv.find_head(model)[1].out_features == num_classes


def test_create_model_builds_torchvision_models_with_the_head_for_the_data():
    model = create_model("vit_b_16", num_classes=3, image_size=32)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(TuduiError, match="takes no setting widths"):
        create_model("resnet18", widths="8,8,8")


@pytest.mark.parametrize("name", NAMES)
def test_append_adds_exactly_one_layer_after_the_original_head(name):
    model = base(name)
    before = linear_layers(model)
    added = tv.append_head(model, 10)
    after = linear_layers(model)
    assert len(after) == len(before) + 1 and after[-1] == added
    new = model.get_submodule(added)
    assert (new.in_features, new.out_features) == (1000, 10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_append_on_vgg16_is_the_course_add_module_and_resnet_fc_becomes_a_pair():
    vgg = base("vgg16")
    assert tv.append_head(vgg, 10) == "classifier.add_linear"      # classifier.add_module('add_linear', ...)
    assert vgg.classifier[6].out_features == 1000
    resnet = base("resnet18")
    assert tv.append_head(resnet, 10) == "fc.1"
    assert isinstance(resnet.fc, nn.Sequential) and resnet.fc[0].out_features == 1000


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16"])
def test_freezing_leaves_backbone_gradients_empty_and_release_undoes_it(name):
    model = base(name)
    tv.replace_head(model, 2)
    frozen = tv.freeze_backbone(model)
    model.train()
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    head = set(tv.find_head(model)[1].parameters())
    assert all(p.grad is not None for p in head)
    assert all(p.grad is None for p in model.parameters() if p not in head)
    assert all(not norm.training for norm in frozen.norms)   # a frozen backbone is a fixed function
    assert len(frozen.norms) == (20 if name == "resnet18" else 0)
    frozen.release()
    assert all(p.requires_grad for p in model.parameters())
    model.train()
    model(torch.randn(2, 3, 32, 32))
    assert all(m.training for m in model.modules())


def test_squeezenet_scores_come_from_a_1x1_convolution_and_append_is_refused():
    model = create_model("squeezenet1_1", num_classes=3)
    _, layer = tv.find_head(model)
    assert isinstance(layer, nn.Conv2d) and layer.out_channels == 3
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(TuduiError, match="use --head replace"):
        create_model("squeezenet1_1", num_classes=3, head="append")


def test_every_torchvision_classifier_is_listed_with_its_weights_preprocessing():
    names = list_models("torchvision")
    assert {"resnet18", "vgg16", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "vit_b_16"} <= set(names)
    assert list_models() == list_models("tudui") + names
    with pytest.raises(TuduiError, match="family must be 'tudui' or 'torchvision'.*got 'timm'"):
        list_models("timm")                 # not an empty list, which reads as "no models"
    assert not any(n.startswith(("fasterrcnn", "raft", "r3d")) for n in names)   # classification only
    entry = model_entry("resnet18")
    assert entry.family == "torchvision" and entry.input_size == 224
    assert entry.preprocess.resize_size == 256 and entry.preprocess.mean == (0.485, 0.456, 0.406)
    assert model_entry("inception_v3").input_size == 299
    assert model_entry("efficientnet_b0").preprocess.interpolation == "bicubic"


def test_a_misspelt_model_name_gets_a_suggestion():
    with pytest.raises(TuduiError, match="did you mean resnet18"):
        model_entry("resnet-18")


def test_size_bound_models_record_their_input_size():
    assert tv.architecture_options("vit_b_16", 32) == {"head": "replace", "image_size": 32}
    assert tv.architecture_options("resnet18", 64, head="append") == {"head": "append"}
    assert tv.architecture_options("googlenet", pretrained=True)["transform_input"] is True


def _saved_backbone(tmp_path, name="mobilenet_v3_small", seed=1):
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None)
    path = tmp_path / f"{name}-local.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_weights_file_loads_the_backbone_under_a_new_head(tmp_path):
    saved, path = _saved_backbone(tmp_path)
    model = create_model("mobilenet_v3_small", num_classes=2, weights_file=str(path))
    assert torch.equal(model.features[0][0].weight, saved.features[0][0].weight)
    assert torch.equal(model.classifier[0].weight, saved.classifier[0].weight)
    assert model.classifier[3].out_features == 2


def test_pretrained_comes_from_the_torch_hub_cache_without_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(tv, "download", lambda url, path: pytest.fail("tried to download"))
    saved, local = _saved_backbone(tmp_path)
    cached = tv.hub_path(tv.default_weights("mobilenet_v3_small"))
    assert cached.parent == tmp_path / "torch" / "hub" / "checkpoints"
    cached.parent.mkdir(parents=True)
    local.rename(cached)
    model = create_model("mobilenet_v3_small", num_classes=3, pretrained=True)
    assert torch.equal(model.features[1].block[0][0].weight, saved.features[1].block[0][0].weight)


def test_pretrained_offline_says_which_file_where_and_how_to_train_without(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, path):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv, "download", offline)
    with pytest.raises(TuduiError) as err:
        create_model("resnet18", num_classes=2, pretrained=True)
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "--weights-file" in message and "(--no-pretrained)" in message and "\n" not in message


def test_a_weights_file_for_another_model_names_the_keys(tmp_path):
    _, path = _saved_backbone(tmp_path, "resnet18")
    with pytest.raises(TuduiError, match=r"missing keys classifier\.0\.bias.*unexpected keys bn1\.bias"):
        create_model("mobilenet_v3_small", num_classes=2, weights_file=str(path))


def test_densenet_published_key_names_are_renamed():
    state = {"features.denseblock1.denselayer1.norm.1.weight": torch.ones(1),
             "features.denseblock1.denselayer1.conv.2.weight": torch.ones(1), "classifier.bias": torch.ones(1)}
    assert set(tv.normalize_keys("densenet121", state)) == {
        "features.denseblock1.denselayer1.norm1.weight", "features.denseblock1.denselayer1.conv2.weight",
        "classifier.bias"}


def test_a_weights_file_is_called_torchvisions_only_when_its_hash_is(tmp_path):
    import hashlib
    from types import SimpleNamespace

    from tudui.models.torchvision import is_torchvisions_file
    path = tmp_path / "my copy.pth"
    path.write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert is_torchvisions_file(path, SimpleNamespace(url=f"https://download.pytorch.org/models/x-{digest[:8]}.pth"))
    assert not is_torchvisions_file(path, SimpleNamespace(url="https://download.pytorch.org/models/x-00000000.pth"))
