"""Fine-tuning a torchvision model on a folder of photos, as a user runs it."""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import tudui
from tudui.data import build_dataset, eval_transform
from tudui.models import torchvision as tv
from tudui.weights import load_model

from photos import write_photo_folder


def calibrated_backbone(folder, input_size: int, path, seed: int = 0):
    """Stand-in for ImageNet weights (not downloadable here): random resnet18 weights whose
    BatchNorm statistics are measured on the folder, as a pretrained model's are on its data."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None          # a plain average over the batch below
    spec = build_dataset(str(folder))
    preset = tv.preprocess_preset("resnet18")
    transform = eval_transform(input_size, preset.mean, preset.std, round(256 * input_size / 224))
    with torch.no_grad():
        model.train()(torch.stack([transform(spec.train[i][0]) for i in range(len(spec.train))]))
    torch.save(model.state_dict(), path)
    return model


def test_fine_tuning_a_photo_folder_learns_and_records_its_preprocessing(tmp_path):
    folder = write_photo_folder(tmp_path / "photos", 40, seed=3)
    backbone = calibrated_backbone(folder, 64, tmp_path / "resnet18-local.pth")
    result = tudui.train(data=str(folder), model="resnet18", weights_file=str(tmp_path / "resnet18-local.pth"),
                         input_size=64, epochs=4, freeze_epochs=1, batch_size=16, project=str(tmp_path / "runs"),
                         progress=False)
    # One folder of class folders: val is held out of it and there is no test split.
    assert result.final_split == "val" and result.final["accuracy"] >= 0.85   # two classes: chance is 50 %
    model, meta = load_model(result.best_weights)
    pre = meta.preprocess
    assert (pre.input_size, pre.resize_size, pre.interpolation) == (64, 73, "bilinear")
    assert pre.mean == (0.485, 0.456, 0.406)
    assert meta.pretrained == "weights file"    # a file of our own making: not called torchvision's ImageNet weights
    assert not torch.equal(model.layer1[0].conv1.weight, backbone.layer1[0].conv1.weight)  # all layers trained
    metrics = tudui.evaluate(result.run_dir)
    files = [path for path, _ in build_dataset(str(folder)).val.samples]
    predictions = tudui.predict(files, weights=result.best_weights, topk=1)
    correct = [p["predictions"][0]["class"] == f.parent.name for p, f in zip(predictions, files)]
    assert metrics["split"] == "val"
    assert np.mean(correct) == pytest.approx(metrics["accuracy"]) == pytest.approx(result.final["accuracy"])


def test_freeze_backbone_trains_the_head_alone(tmp_path):
    folder = write_photo_folder(tmp_path / "photos", 4)
    torch.manual_seed(0)
    saved = torchvision.models.mobilenet_v3_small()
    torch.save(saved.state_dict(), tmp_path / "local.pth")
    result = tudui.train(data=str(folder), model="mobilenet_v3_small", weights_file=str(tmp_path / "local.pth"),
                         input_size=32, epochs=1, freeze_backbone=True, project=str(tmp_path / "runs"),
                         progress=False, head="append")
    model, meta = load_model(result.last_weights)
    trained, original = model.state_dict(), saved.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in original.items())   # running stats included
    assert meta.model_options == {"head": "append"}
    assert not torch.equal(model.classifier.add_linear.weight, torch.zeros_like(model.classifier.add_linear.weight))


@pytest.mark.parametrize("model", ["mobilenet_v3_small", "tudui"])
def test_a_backbone_frozen_at_random_weights_is_warned_of(tmp_path, caplog, model):
    folder = write_photo_folder(tmp_path / "photos", 4)
    settings = dict(data=str(folder), model=model, input_size=32, epochs=1, project=str(tmp_path / "runs"),
                    progress=False)
    with caplog.at_level("WARNING", logger="tudui"):
        tudui.train(**settings, freeze_backbone=True)
    warned = [r.getMessage() for r in caplog.records if "frozen at random initial weights" in r.getMessage()]
    assert len(warned) == 1
    assert ("--pretrained" in warned[0]) == (model != "tudui") and "--weights (a run's weights)" in warned[0]
    caplog.clear()
    first = tudui.train(**settings)   # not frozen: nothing to say; then frozen, from a run's weights
    with caplog.at_level("WARNING", logger="tudui"):
        tudui.train(**settings, freeze_epochs=0, freeze_backbone=True, weights=str(first.last_weights))
    assert not [r for r in caplog.records if "frozen at random" in r.getMessage()]
