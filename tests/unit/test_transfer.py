"""Fine-tuning: the starting model, frozen backbones, the head-first schedule, input sizes."""
import pytest
import torch
from torch import nn

import tudui
from tudui.config_files import make_config
from tudui.engine import create_optimizer
from tudui.errors import TuduiError
from tudui.models import torchvision as tv
from tudui.transfer import FreezeSchedule, check_input_size


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


def test_starting_weights_given_as_a_flag_replace_those_of_the_settings_file(tmp_path):
    # a transfer run's config.yaml, given again with --weights of that run (what a refused resume suggests)
    (tmp_path / "config.yaml").write_text("model:\n  arch: resnet18\n  pretrained: true\n  weights_file: r.pth\n")
    cfg = make_config(tmp_path / "config.yaml", weights="runs/exp/weights/last.safetensors")
    assert (cfg.model.weights, cfg.model.pretrained, cfg.model.weights_file) == (
        "runs/exp/weights/last.safetensors", False, "")
    (tmp_path / "run.yaml").write_text("model:\n  arch: resnet18\n  weights: runs/exp\n")
    cfg = make_config(tmp_path / "run.yaml", pretrained=True)
    assert (cfg.model.weights, cfg.model.pretrained) == ("", True)
    (tmp_path / "both.yaml").write_text("model:\n  arch: resnet18\n  weights: runs/exp\n  pretrained: true\n")
    with pytest.raises(TuduiError, match="pick one"):     # a file that says both is still refused
        make_config(tmp_path / "both.yaml")


def test_a_weights_file_is_recorded_as_pretrained_however_it_was_given(tmp_path):
    # --weights-file implies --pretrained: config.yaml says so whether the flag or a settings file gave it
    assert make_config(model="resnet18", weights_file="r.pth").model.pretrained
    (tmp_path / "file.yaml").write_text("model:\n  arch: resnet18\n  weights_file: r.pth\n")
    assert make_config(tmp_path / "file.yaml").model.pretrained
    assert not make_config(model="resnet18").model.pretrained


def test_an_input_size_the_model_cannot_take_is_one_error():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    check_input_size(model, 32, "fixed", 32)
    with pytest.raises(TuduiError, match=r"fixed cannot take 64x64 inputs .*sized for 32x32 inputs, so only "
                                         r"--input-size 32 works"):
        check_input_size(model, 64, "fixed", 32)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    check_input_size(conv, 64, "pooled", 32)      # pools globally: any size that survives the convs


def test_the_course_nets_are_said_to_take_only_their_own_size():
    from tudui.models import create_model
    with pytest.raises(TuduiError, match=r"tudui cannot take 16x16 .*only --input-size 32 works"):
        check_input_size(create_model("tudui", num_classes=10), 16, "tudui", 32)
    with pytest.raises(TuduiError, match=r"cannot take 2x2 .*pick another --input-size \(its own is 32\)"):
        check_input_size(create_model("fastnet", num_classes=10), 2, "fastnet", 32)


def test_the_folder_recipe_is_a_valid_fine_tune_config():
    from helpers import REPO
    cfg = make_config(REPO / "configs" / "folder-resnet18.yaml", data="photos")
    assert (cfg.model.arch, cfg.model.pretrained, cfg.train.freeze_epochs) == ("resnet18", True, 1)
    assert cfg.data.dataset == "photos" and cfg.optim.backbone_lr_scale == 0.1


def test_images_much_smaller_than_a_torchvision_models_input_are_warned_of(tmp_path):
    from tudui.data import build_dataset
    from tudui.data.datasets import typical_side
    from tudui.transfer import upscaled

    from helpers import write_class_folder
    folder = build_dataset(str(write_class_folder(tmp_path / "small", ["a", "b"], 3, size=40)))
    assert typical_side(folder.train) == 40 and typical_side(build_dataset("digits").train) == 8
    warning = upscaled(make_config(model="resnet18"), 40, 224)
    assert warning.startswith("the images are about 40 px and resnet18 takes 224x224: each is scaled up 6x")
    assert warning.endswith("--input-size 80 takes about 8x less compute per image")
    assert upscaled(make_config(model="resnet18"), 64, 224) == ""             # 3.5x: not worth a word
    assert upscaled(make_config(model="resnet18", input_size=224), 32, 224) == ""   # chosen: no advice
    assert upscaled(make_config(model="tudui"), 6, 32) == ""                  # ours take one size
    assert upscaled(make_config(model="resnet18"), None, 224) == ""


def test_weights_of_a_run_start_its_own_model_unless_another_is_named(tmp_path):
    first = tudui.train(data="synthetic", model="tudui_relu", epochs=1, batch_size=32, project=str(tmp_path),
                        progress=False, report=False)
    again = tudui.train(data="synthetic", weights=str(first.run_dir), epochs=1, batch_size=32,
                        project=str(tmp_path), progress=False, report=False)
    assert again.config.model.arch == "tudui_relu"
    with pytest.raises(TuduiError, match=r"holds weights of 'tudui_relu', not 'tudui'; pass --model tudui_relu"):
        tudui.train(data="synthetic", model="tudui", weights=str(first.run_dir), epochs=1, project=str(tmp_path),
                    progress=False)
