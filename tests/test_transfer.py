"""Fine-tuning a torchvision model on a folder of photos, as a user runs it."""
import numpy as np
import pytest
import torch
import torchvision
from photos import write_photo_folder
from torch import nn

import tudui
from tudui.weights import load_model
from tudui.config import make_config
from tudui.data import build_dataset, eval_transform
from tudui.engine import create_optimizer
from tudui.errors import TuduiError
from tudui.models import torchvision as tv
from tudui.transfer import FreezeSchedule, check_input_size


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
    assert result.final_accuracy >= 0.85                  # two classes: chance is 50 %
    model, meta = load_model(result.best_weights)
    pre = meta.preprocess
    assert (pre.input_size, pre.resize_size, pre.interpolation) == (64, 73, "bilinear")
    assert pre.mean == (0.485, 0.456, 0.406) and meta.pretrained == "ResNet18_Weights.IMAGENET1K_V1"
    assert not torch.equal(model.layer1[0].conv1.weight, backbone.layer1[0].conv1.weight)  # all layers trained
    metrics = tudui.evaluate(result.run_dir)
    files = [path for path, _ in build_dataset(str(folder)).test.samples]
    predictions = tudui.predict(files, weights=result.best_weights, topk=1)
    correct = [p["predictions"][0]["class"] == f.parent.name for p, f in zip(predictions, files)]
    assert np.mean(correct) == pytest.approx(metrics["accuracy"]) == pytest.approx(result.best_accuracy)


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


def test_the_fine_tune_schedule_unfreezes_after_the_head_epochs_at_a_lower_rate():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 6, 6))
    frozen = tv.freeze_backbone(model)
    cfg = make_config(lr=0.1, backbone_lr_scale=0.1)
    optimizer = create_optimizer(cfg.optim, model, set(frozen.parameters))
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rates[id(model[0].weight)] == pytest.approx(0.01) and rates[id(model[3].weight)] == 0.1
    assert optimizer.param_groups[-1]["lr"] == 0.1                 # the rate the CSV reports: the head's
    schedule = FreezeSchedule(frozen, freeze_epochs=2)
    for epoch in (1, 2):
        schedule.on_epoch_start(epoch, 5, 10)
        assert not model[0].weight.requires_grad
    schedule.on_epoch_start(3, 5, 10)
    assert all(p.requires_grad for p in model.parameters())


def test_pretrained_and_head_flags_are_refused_for_tudui_models(tmp_path):
    with pytest.raises(TuduiError, match="no pretrained weights"):
        tudui.train(data="synthetic", model="tudui", pretrained=True, project=str(tmp_path), progress=False)
    with pytest.raises(TuduiError, match="--head append is for torchvision"):
        tudui.train(data="synthetic", model="tudui", head="append", project=str(tmp_path), progress=False)
    with pytest.raises(TuduiError, match="pick one"):
        make_config(weights="x.pth", pretrained=True)


def test_an_input_size_the_model_cannot_take_is_one_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    check_input_size(model, 32, "fixed", 32)
    with pytest.raises(TuduiError, match=r"fixed cannot take 64x64 inputs .*--input-size \(its own is 32\)"):
        check_input_size(model, 64, "fixed", 32)


def test_the_folder_recipe_is_a_valid_fine_tune_config():
    from conftest import REPO
    cfg = make_config(REPO / "configs" / "folder-resnet18.yaml", data="photos")
    assert (cfg.model.arch, cfg.model.pretrained, cfg.train.freeze_epochs) == ("resnet18", True, 1)
    assert cfg.data.dataset == "photos" and cfg.optim.backbone_lr_scale == 0.1
