"""tudui.weights: weights files with their metadata, read back exactly or refused in one line."""
import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from tudui.data import Preprocess
from tudui.errors import TuduiError
from tudui.models import create_model
from tudui.weights import WeightsMeta, load_model, read_weights, save_weights

RAW_META = {"model": "tudui", "num_classes": 3, "class_names": ["a", "b", "c"], "input_size": 32,
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "tudui_version": "test"}
META = WeightsMeta(model="tudui", num_classes=3, class_names=("a", "b", "c"), tudui_version="test",
                   preprocess=Preprocess(input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3))


def test_weights_round_trip_with_metadata(tmp_path):
    model = create_model("tudui", num_classes=3)
    save_weights(tmp_path / "w.safetensors", model, META)
    loaded, meta = load_model(tmp_path / "w.safetensors")
    assert meta.class_names == ("a", "b", "c") and meta.preprocess.std == (0.25,) * 3
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert not loaded.training


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, os.urandom(300), b"<html>not weights</html>"])
def test_unreadable_weights_are_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(TuduiError, match="not a readable safetensors"):
        read_weights(path)


def test_safetensors_without_our_metadata_is_refused(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(TuduiError, match="no tudui metadata"):
        read_weights(tmp_path / "plain.safetensors")


def test_weights_of_another_shape_are_refused(tmp_path):
    save_weights(tmp_path / "w.safetensors", create_model("tudui", num_classes=3),
                 dataclasses.replace(META, num_classes=5, class_names=tuple("abcde")))
    with pytest.raises(TuduiError, match="do not fit"):
        load_model(tmp_path / "w.safetensors")


def test_weights_of_another_architecture_name_the_keys(tmp_path):
    save_weights(tmp_path / "w.safetensors", create_model("tudui", num_classes=3),
                 dataclasses.replace(META, model="tudui_relu"))
    with pytest.raises(TuduiError, match="missing"):
        load_model(tmp_path / "w.safetensors")


def test_unknown_format_version_is_refused(tmp_path):
    model = create_model("tudui", num_classes=3)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp_path / "w.safetensors"), metadata={"tudui": json.dumps({**RAW_META, "format": 99})})
    with pytest.raises(TuduiError, match="format 99"):
        read_weights(tmp_path / "w.safetensors")


class PlantsAFile:
    """A pickle that, if unpickled, would create a file: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad_weights(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "w.safetensors"
    good = tmp_path / "good.safetensors"
    save_weights(good, create_model("tudui", num_classes=3), META)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "directory":
        path.mkdir()
    elif kind == "missing":
        pass
    elif kind == "broken-header":
        data = bytearray(good.read_bytes())
        data[8:20] = b"{not json!!!"
        path.write_bytes(bytes(data))
    elif kind == "architecture":
        save_weights(path, create_model("fastnet", num_classes=3, widths="8,8,8"), META)
    elif kind == "class-count":
        save_weights(path, create_model("tudui", num_classes=7), META)
    elif kind == "format":
        save_file({"x": torch.zeros(1)}, str(path), metadata={"tudui": json.dumps({**RAW_META, "format": 99})})
    elif kind == "pickle":
        path = tmp_path / "w.pt"
        torch.save({"m": PlantsAFile(tmp_path / "pwned")}, path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("empty", "not a readable safetensors"), ("truncated", "not a readable safetensors"),
    ("random", "not a readable safetensors"), ("directory", "without weights/best.safetensors"),
    ("missing", "weights not found"), ("broken-header", "not a readable safetensors"),
    ("architecture", "do not fit"), ("class-count", "do not fit"), ("format", "format 99"),
    ("pickle", "pickle"),
])
def test_every_bad_weights_file_is_one_line_and_exit_1(kind, message, tmp_path, capsys):
    from tudui.cli import main
    path = _bad_weights(kind, tmp_path)
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    model = ["--model", "tudui"] if kind == "pickle" else []   # a .pt file says no model of its own
    assert main(["predict", str(image), "--weights", str(path), *model]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("error:")
    assert not (tmp_path / "pwned").exists()


def test_a_run_directory_stands_for_its_best_weights(tmp_path):
    (tmp_path / "run" / "weights").mkdir(parents=True)
    save_weights(tmp_path / "run" / "weights" / "best.safetensors", create_model("tudui", 3), META)
    assert read_weights(tmp_path / "run")[1].model == "tudui"
    with pytest.raises(TuduiError, match="without weights"):
        read_weights(tmp_path)


def test_a_model_name_that_tudui_weights_overrule_is_warned_about(tmp_path, caplog):
    save_weights(tmp_path / "w.safetensors", create_model("tudui", 3), META)
    with caplog.at_level("WARNING", logger="tudui"):
        assert load_model(tmp_path / "w.safetensors", model_name="tudui")[1].model == "tudui"
        assert caplog.text == ""                                    # the same name: nothing to say
        assert load_model(tmp_path / "w.safetensors", model_name="vgg16")[1].model == "tudui"
    assert "--model vgg16 is not used: " in caplog.text and "weights of a tudui model" in caplog.text


def test_the_metadata_reads_back_equal_with_the_settings_of_the_run(tmp_path):
    from tudui.config_files import make_config
    cfg = make_config(data="digits", model="tudui_relu", lr=0.3, optimizer="adamw", name="mine", tta=2)
    meta = dataclasses.replace(META, model="tudui_relu", config=cfg, data="digits", epoch=4,
                               val_accuracy=0.5, val_loss=1.25, pretrained=None, start="random",
                               listed={"train": [1437, "0123456789abcdef"], "test": [360, "fedcba9876543210"]})
    save_weights(tmp_path / "w.safetensors", create_model("tudui_relu", 3), meta)
    again = read_weights(tmp_path / "w.safetensors")[1]
    assert again == meta
    assert again.config.model.arch == "tudui_relu" and again.config.train.run_name == "mine"


def _write_raw(path: Path, meta: dict, model_classes: int = 3) -> Path:
    tensors = {k: v.contiguous() for k, v in create_model("tudui", model_classes).state_dict().items()}
    save_file(tensors, str(path), metadata={"tudui": json.dumps({"format": 1, **meta})})
    return path


def test_weights_written_before_the_settings_were_renamed_still_load(tmp_path):
    old_config = {"data": {"name": "digits", "batch_size": 32}, "model": {"name": "tudui"},
                  "optim": {"name": "adamw"}, "train": {"name": "old", "tta": 1}}
    path = _write_raw(tmp_path / "old.safetensors", {**RAW_META, "config": old_config, "data": "digits"})
    model, meta = load_model(path)
    config = meta.config
    assert (config.data.dataset, config.data.batch_size, config.model.arch) == ("digits", 32, "tudui")
    assert (config.optim.optimizer, config.optim.lr, config.train.run_name) == ("adamw", 1e-3, "old")
    assert meta.preprocess.resize_size is None and meta.preprocess.interpolation == "bilinear"


@pytest.mark.parametrize("change", [
    {"num_classes": "3"}, {"num_classes": True}, {"class_names": [1, 2, 3]}, {"class_names": ["a"]},
    {"input_size": [32]}, {"mean": "grey"}, {"mean": [0.5, "x", 0.5]}, {"model_options": [1]},
    {"config": {"data": {"bogus": 1}}}, {"config": {"train": {"epochs": "many"}}}, {"model": None},
])
def test_metadata_of_the_wrong_shape_is_one_clear_error(tmp_path, change):
    path = _write_raw(tmp_path / "w.safetensors", {**RAW_META, **change})
    with pytest.raises(TuduiError, match="damaged tudui metadata"):
        read_weights(path)


def test_an_integer_too_long_for_python_to_read_is_damaged_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    tensors = {k: v.contiguous() for k, v in create_model("tudui", 3).state_dict().items()}
    save_file(tensors, str(path), metadata={"tudui": '{"format": 1, "epoch": ' + "9" * 5000 + "}"})
    with pytest.raises(TuduiError, match="damaged tudui metadata"):
        read_weights(path)


def test_deeply_nested_metadata_is_refused_without_a_recursion_error(tmp_path):
    path = tmp_path / "w.safetensors"
    tensors = {k: v.contiguous() for k, v in create_model("tudui", 3).state_dict().items()}
    save_file(tensors, str(path), metadata={"tudui": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(TuduiError, match="damaged tudui metadata"):
        read_weights(path)


@pytest.mark.parametrize("change, field", [
    ({"num_classes": 10 ** 12, "class_names": ["a"] * 3}, "num_classes"), ({"input_size": 200_000}, "input_size"),
    ({"resize_size": 10 ** 9}, "resize_size"), ({"interpolation": "magic"}, "interpolation"),
    ({"mean": [0.5, 0.5]}, "mean"), ({"std": [0.5, 0.0, 0.5]}, "std"),
    ({"model_options": {"evil": 1}}, "model_options"), ({"model_options": {"widths": "9" * 500}}, "model_options"),
    ({"class_names": ["a", "b", "x" * 5000]}, "class_names"),
    ({"epoch": -3}, "epoch"), ({"val_accuracy": 7.5}, "val_accuracy"),
    ({"listed": {"train": [1, "x" * 10 ** 5]}}, "listed"), ({"listed": {"evil": [1, "ab"]}}, "listed"),
    ({"listed": {"train": [True, "ab"]}}, "listed"), ({"listed": {"train": [1, "ab", 3]}}, "listed"),
])
def test_metadata_that_would_make_tudui_allocate_or_misbehave_is_refused_naming_the_field(tmp_path, change, field):
    path = _write_raw(tmp_path / "w.safetensors", {**RAW_META, **change})
    with pytest.raises(TuduiError, match=f"damaged tudui metadata: {field} is") as error:
        read_weights(path)
    assert len(str(error.value)) < 400


def test_weights_that_are_not_finite_numbers_are_refused_wherever_they_are_read(tmp_path):
    model = create_model("tudui", num_classes=3)
    with torch.no_grad():
        model.model[0].weight[0, 0, 0, 0] = float("nan")
    save_weights(tmp_path / "nan.safetensors", model, META)
    with pytest.raises(TuduiError, match="model.0.weight holds values that are not finite"):
        load_model(tmp_path / "nan.safetensors")
    torch.save(model.state_dict(), tmp_path / "nan.pth")
    with pytest.raises(TuduiError, match="not finite numbers"):
        load_model(tmp_path / "nan.pth", model_name="tudui")


def test_a_model_trained_channels_last_is_loaded_channels_last_except_for_export(tmp_path):
    from tudui.config_files import make_config

    def is_channels_last(model):
        convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        return all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)

    model = create_model("tudui", num_classes=3)
    x = torch.randn(4, 3, 32, 32)
    for channels_last in (True, False):
        meta = dataclasses.replace(META, config=make_config(data="digits", channels_last=channels_last))
        save_weights(tmp_path / f"{channels_last}.safetensors", model, meta)
        loaded = load_model(tmp_path / f"{channels_last}.safetensors")[0]
        assert is_channels_last(loaded) == channels_last
        assert not is_channels_last(load_model(tmp_path / f"{channels_last}.safetensors", layout=False)[0])
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=1e-4, atol=1e-5)   # same numbers


def test_a_weights_argument_that_is_no_weights_says_what_it_takes(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "seven.png")
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.9}')
    with pytest.raises(TuduiError, match=r"seven.png is an image, not weights; weights are a run directory, "
                                         r"a tudui .safetensors file, an export \(.onnx, .pt2, .torchscript\)"):
        load_model(tmp_path / "seven.png")
    with pytest.raises(TuduiError, match=r"metrics.json is not a PyTorch weights file \(torch.load cannot read it\); "
                                         r"weights are a run directory"):
        load_model(tmp_path / "metrics.json", model_name="tudui")
    save_weights(tmp_path / "best.safetensors", create_model("tudui", 3), META)
    with pytest.raises(TuduiError, match=r"weights not found: .*best.safetensor; did you mean .*best.safetensors\?$"):
        load_model(tmp_path / "best.safetensor")
    with pytest.raises(TuduiError, match=r"weights not found: .*elsewhere.safetensors$"):   # nothing close
        load_model(tmp_path / "elsewhere.safetensors")


def test_weights_whose_metadata_names_a_huge_model_are_refused_before_it_is_built(tmp_path):
    import dataclasses
    import time
    meta = dataclasses.replace(META, model="vit_h_14", num_classes=3)    # 630M parameters, 2.5 GB to build
    save_weights(tmp_path / "w.safetensors", create_model("tudui", 3), meta)
    began = time.perf_counter()
    with pytest.raises(TuduiError, match=r"do not fit model 'vit_h_14': missing keys"):
        load_model(tmp_path / "w.safetensors")
    assert time.perf_counter() - began < 5


def test_a_state_dict_of_another_model_is_refused_naming_the_model_its_keys_are_from(tmp_path):
    import torchvision
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=10).state_dict(), tmp_path / "mnet.pth")
    torch.save(create_model("tudui", 10).state_dict(), tmp_path / "course.pth")
    with pytest.raises(TuduiError) as refused:
        load_model(tmp_path / "mnet.pth", model_name="resnet18")
    message = str(refused.value)
    # The file has no fc.weight: the message claims no class count for resnet18's head.
    assert message.startswith(f"weights {tmp_path / 'mnet.pth'} do not fit resnet18: missing keys")
    assert message.endswith("its keys are those of mobilenet_v3_small: try --model mobilenet_v3_small")
    from tudui.models.layouts import model_with_keys
    # shufflenet_v2_x0_5 and x1_5 have the same keys: the shapes tell them apart
    wider = torchvision.models.shufflenet_v2_x1_5(num_classes=3).state_dict()
    assert model_with_keys(wider, "resnet18") == "shufflenet_v2_x1_5"
    with pytest.raises(TuduiError, match="its keys are those of tudui: try --model tudui$"):
        load_model(tmp_path / "course.pth", model_name="fastnet")
    garbled = {k + "_x": v for k, v in torch.load(tmp_path / "course.pth").items()}
    torch.save(garbled, tmp_path / "garbled.pth")
    with pytest.raises(TuduiError) as refused:
        load_model(tmp_path / "garbled.pth", model_name="tudui")
    assert "do not fit model 'tudui': missing keys" in str(refused.value)
    assert "its keys are those of" not in str(refused.value)
