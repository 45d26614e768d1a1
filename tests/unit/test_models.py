import pytest
import torch

from tudui.errors import TuduiError
from tudui.models import count_parameters, create_model, list_models, model_entry


def test_tudui_net_has_the_course_parameter_count():
    assert count_parameters(create_model("tudui", num_classes=10)) == 145_578


def test_tudui_net_is_the_course_layer_stack():
    kinds = [type(m).__name__ for m in create_model("tudui").model]
    assert kinds == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d",
                     "Flatten", "Linear", "Linear"]


@pytest.mark.parametrize("name", list_models("tudui"))
@pytest.mark.parametrize("num_classes", [2, 10])
def test_every_model_runs_forward_and_backward(name, num_classes):
    model = create_model(name, num_classes=num_classes)
    size = model_entry(name).input_size
    out = model(torch.randn(3, 3, size, size))
    assert out.shape == (3, num_classes)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(TuduiError, match="tudui_relu"):
        create_model("resnet9000")


@pytest.mark.parametrize("widths", ["8,16,16", "32,64,128", "64,256,256"])
def test_fastnet_runs_at_several_widths(widths):
    model = create_model("fastnet", num_classes=10, widths=widths)
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 10)
    out.square().mean().backward()
    assert model.groups[2].conv2.weight.shape[0] == int(widths.split(",")[2])
    assert model.whiten.weight.grad is None          # the whitening stem is frozen
    bn = model.groups[0].norm1
    assert bn.bias.grad is not None and not bn.weight.requires_grad


def test_fastnet_convolutions_start_as_identity():
    conv = create_model("fastnet", widths="8,16,16").groups[0].conv2
    x = torch.randn(1, 8, 6, 6)
    assert torch.allclose(conv(x), x)


def test_whitening_stem_decorrelates_patches():
    torch.manual_seed(0)
    # strongly correlated inputs: smooth images with channels that share most of their signal
    base = torch.nn.functional.avg_pool2d(torch.randn(400, 1, 36, 36), 5, stride=1)
    images = base.repeat(1, 3, 1, 1) + 0.1 * torch.randn(400, 3, 32, 32)
    model = create_model("fastnet", widths="8,8,8")
    model.init_whitening(images)
    out = model.whiten(images) - model.whiten.bias.view(1, -1, 1, 1)
    features = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)     # the 12 eigen-directions
    covariance = features.T @ features / len(features)
    off_diagonal = covariance - torch.diag(covariance.diag())
    assert off_diagonal.abs().max() < 0.02 * covariance.diag().max()
    assert torch.allclose(covariance.diag(), torch.ones(12), atol=0.05)  # unit variance too


def test_bf16_autocast_gives_finite_losses_close_to_fp32():
    from tudui.runtime import autocast
    torch.manual_seed(0)
    model = create_model("fastnet", widths="16,32,32")
    model.init_whitening(torch.randn(64, 3, 32, 32))
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    loss32 = torch.nn.functional.cross_entropy(model(x), y)
    with autocast(torch.device("cpu"), torch.bfloat16):
        loss16 = torch.nn.functional.cross_entropy(model(x).float(), y)
    assert torch.isfinite(loss16) and abs(loss16.item() - loss32.item()) < 0.05 * loss32.item()


def test_model_settings_reach_only_models_that_take_them():
    with pytest.raises(TuduiError, match="takes no setting widths"):
        create_model("tudui", widths="8,8,8")
    with pytest.raises(TuduiError, match="three widths from 1 to 4096"):
        create_model("fastnet", widths="8,8")


@pytest.mark.parametrize("widths", ["100000,100000,100000", "8,8", "a,b,c", "0,8,8"])
def test_fastnet_widths_that_cannot_be_built_are_refused_before_allocating(widths):
    with pytest.raises(TuduiError, match="three widths from 1 to 4096"):
        create_model("fastnet", num_classes=10, widths=widths)
