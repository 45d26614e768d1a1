"""Weights from the course's own scripts trained on, evaluated and predicted with."""
import pytest
import torch
import torchvision

from tudui.models import create_model
from tudui.weights import load_model

from helpers import run_cli, write_class_folder


@pytest.fixture
def imagenet_state_dict(tmp_path):
    """mobilenet_v3_small as torchvision builds it, saved the course's way, from a DataParallel run."""
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small()
    path = tmp_path / "mobilenet_method2.pth"
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, path)
    return model, path


def test_training_from_a_course_state_dict_keeps_its_backbone(imagenet_state_dict, tmp_path):
    source, path = imagenet_state_dict
    write_class_folder(tmp_path / "two", ["ants", "bees"], 6)
    result = run_cli("train", "--data", str(tmp_path / "two"), "--model", "mobilenet_v3_small",
                     "--weights", str(path), "--input-size", "32", "--epochs", "1", "--freeze-backbone",
                     cwd=tmp_path, check=True)
    assert "start: weights from" in result.stdout and "head replaced for 2 classes" in result.stdout
    model, meta = load_model(tmp_path / "runs" / "exp")
    assert torch.equal(model.features[0][0].weight, source.features[0][0].weight)   # frozen, unchanged
    assert (meta.preprocess.input_size, meta.preprocess.resize_size) == (32, 37)
    assert meta.model_options == {"head": "replace"}


def test_eval_and_predict_take_a_state_dict_with_its_model_name(imagenet_state_dict, tmp_path):
    _, path = imagenet_state_dict
    write_class_folder(tmp_path / "img", ["a", "b"], 1)
    out = run_cli("predict", str(tmp_path / "img" / "a" / "000.png"), "--weights", str(path),
                  "--model", "mobilenet_v3_small", "--topk", "2", check=True).stdout
    assert out.count("%") == 2   # ImageNet's class names for an unmodified torchvision model
    whole = tmp_path / "whole.pth"
    torch.save(create_model("tudui"), whole)
    result = run_cli("eval", "--weights", str(whole), "--model", "tudui", "--data", str(tmp_path / "img"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("error:") == 1 and "--trust-pickle" in result.stderr
