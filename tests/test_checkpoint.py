import json
import os

import pytest
import torch
from safetensors.torch import save_file

from pathlib import Path

from PIL import Image

from tudui.checkpoint import load_model, load_state, load_weights, save_weights
from tudui.files import atomic_write
from tudui.errors import TuduiError
from tudui.models import create_model

META = {"model": "tudui", "num_classes": 3, "class_names": ["a", "b", "c"], "input_size": 32,
        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "tudui_version": "test"}


def test_weights_round_trip_with_metadata(tmp_path):
    model = create_model("tudui", num_classes=3)
    save_weights(tmp_path / "w.safetensors", model, META)
    loaded, meta = load_model(tmp_path / "w.safetensors")
    assert meta["class_names"] == ["a", "b", "c"] and meta["std"] == [0.25] * 3
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert not loaded.training


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"old")

    def crash(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(TuduiError, match="cannot write .*w.safetensors: disk full"):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["w.safetensors"]


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, os.urandom(300), b"<html>not weights</html>"])
def test_unreadable_weights_are_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(TuduiError, match="not a readable safetensors"):
        load_weights(path)


def test_safetensors_without_our_metadata_is_refused(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(TuduiError, match="no tudui metadata"):
        load_weights(tmp_path / "plain.safetensors")


def test_weights_of_another_shape_are_refused(tmp_path):
    save_weights(tmp_path / "w.safetensors", create_model("tudui", num_classes=3),
                 {**META, "num_classes": 5})
    with pytest.raises(TuduiError, match="do not fit"):
        load_model(tmp_path / "w.safetensors")


def test_weights_of_another_architecture_name_the_keys(tmp_path):
    save_weights(tmp_path / "w.safetensors", create_model("tudui", num_classes=3),
                 {**META, "model": "tudui_relu"})
    with pytest.raises(TuduiError, match="missing"):
        load_model(tmp_path / "w.safetensors")


def test_unknown_format_version_is_refused(tmp_path):
    model = create_model("tudui", num_classes=3)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp_path / "w.safetensors"), metadata={"tudui": json.dumps({**META, "format": 99})})
    with pytest.raises(TuduiError, match="format 99"):
        load_weights(tmp_path / "w.safetensors")


def test_a_run_directory_stands_for_its_best_weights(tmp_path):
    (tmp_path / "run" / "weights").mkdir(parents=True)
    save_weights(tmp_path / "run" / "weights" / "best.safetensors", create_model("tudui", 3), META)
    assert load_weights(tmp_path / "run")[1]["model"] == "tudui"
    with pytest.raises(TuduiError, match="without weights"):
        load_weights(tmp_path)


class PlantsAFile:
    """A pickle that, if unpickled, would create a file: what a malicious checkpoint does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "payload": PlantsAFile(marker)}, tmp_path / "state.pt")
    with pytest.raises(TuduiError, match="cannot read training state"):
        load_state(tmp_path / "state.pt")
    assert not marker.exists()


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
        save_file({"x": torch.zeros(1)}, str(path), metadata={"tudui": json.dumps({**META, "format": 99})})
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
