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


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("num_classes", [2, 10])
def test_every_model_runs_forward_and_backward(name, num_classes):
    model = create_model(name, num_classes=num_classes)
    size = model_entry(name).input_size
    out = model(torch.randn(3, 3, size, size))
    assert out.shape == (3, num_classes)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(TuduiError, match="tudui_relu"):
        create_model("resnet9000")
