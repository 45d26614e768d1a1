"""tudui.prediction's pieces: the inputs it expands and the tables it writes."""
import numpy as np
import pytest
import torch

import tudui
from tudui.errors import TuduiError
from tudui.prediction import expand_inputs


def test_missing_inputs_and_empty_folders_become_error_results_in_place(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "b.png").write_bytes(b"")
    (tmp_path / "photos" / "a.jpg").write_bytes(b"")
    (tmp_path / "photos" / ".hidden.png").write_bytes(b"")
    (tmp_path / "photos" / "notes.txt").write_bytes(b"")
    with caplog.at_level("INFO", logger="tudui"):
        items = expand_inputs([tmp_path / "nope.png", tmp_path / "photos", tmp_path / "empty"])
    assert f"{tmp_path / 'photos'}: left out 1 file whose names are not of images" in caplog.text   # not .hidden
    assert items[0] == {"path": str(tmp_path / "nope.png"),
                        "error": f"image or folder not found: {tmp_path / 'nope.png'}"}
    assert items[1:3] == [tmp_path / "photos" / "a.jpg", tmp_path / "photos" / "b.png"]
    assert items[3]["error"] == f"no images in folder {tmp_path / 'empty'}"


@pytest.mark.parametrize("inputs, kind", [
    (lambda: np.zeros((32, 32, 3), np.uint8), r"numpy.ndarray\): PIL.Image.fromarray"),
    (lambda: torch.zeros(3, 32, 32), r"torch.Tensor\): PIL.Image.fromarray"),
    (lambda: [np.zeros((8, 8, 3), np.uint8)], r"numpy.ndarray\)"),
    (lambda: 7, r"int\)$"),
])
def test_pixels_or_numbers_as_inputs_are_one_error_before_the_weights_are_read(inputs, kind, tmp_path):
    with pytest.raises(TuduiError, match=r"predict takes image files, folders and PIL images \(got " + kind):
        tudui.predict(inputs(), weights=tmp_path / "not-read.safetensors")


def test_an_array_of_paths_is_a_list_of_inputs(tmp_path):
    with pytest.raises(TuduiError, match="weights not found"):    # past the inputs: they were taken
        tudui.predict(np.array(["a.png", "b.png"]), weights=tmp_path / "not-read.safetensors")


def test_cells_that_a_spreadsheet_would_run_are_written_as_text(tmp_path):
    from tudui.prediction import write_predictions
    results = [{"path": "=cmd|' /C calc'!A0.png", "predictions": [{"class": "+SUM(A1)", "probability": 0.9},
                                                                 {"class": "-1", "probability": 0.1}]},
               {"path": "@evil.png", "error": "=HYPERLINK(\"x\")"}, {"path": "plain.png", "error": "-"}]
    write_predictions(results, tmp_path / "p.csv")
    text = (tmp_path / "p.csv").read_text()
    assert "'=cmd" in text and "'+SUM(A1)" in text and "'-1" in text and "'@evil.png" in text
    assert "'=HYPERLINK" in text and "plain.png" in text
    assert all(not cell.startswith(("=", "+", "@")) for line in text.splitlines() for cell in line.split(","))


def test_a_pipe_or_a_dangling_link_is_an_error_result_not_a_read_that_never_ends(tmp_path):
    import os
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    items = expand_inputs([tmp_path / "pipe.png", tmp_path / "dangling.png"])
    assert items[0]["error"] == f"{tmp_path / 'pipe.png'} is not a regular file"
    assert items[1]["error"].startswith("image or folder not found")


@pytest.mark.parametrize("side", [10_000, 30_000])   # above Pillow's limit, and above twice it (its error)
def test_an_image_over_the_pixel_limit_is_refused_in_our_words_either_way(tmp_path, side):
    import struct
    import zlib

    from PIL import Image

    from tudui.data.images import load_image
    from tudui.errors import TuduiError

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    with pytest.raises(TuduiError) as error:
        load_image(path)
    limit = Image.MAX_IMAGE_PIXELS
    assert str(error.value) == f"cannot read image {path}: larger than Pillow's limit of {limit:,} pixels"


def test_classes_name_the_outputs_of_a_plain_state_dict_and_only_of_one(tmp_path, caplog):
    import torch
    from PIL import Image

    from tudui.config_commands import PredictConfig
    from tudui.errors import TuduiError
    from tudui.models import create_model
    from tudui.prediction import CIFAR10_CLASSES, predict_images
    from tudui.weights import WeightsMeta, save_weights
    from tudui.data import Preprocess
    model = create_model("tudui", num_classes=10)
    torch.save(model.state_dict(), tmp_path / "tudui_29.pth")          # the course's own file
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    numbered = predict_images(tmp_path / "red.png", PredictConfig(weights=str(tmp_path / "tudui_29.pth"),
                                                                  model="tudui", topk=10))
    named = predict_images(tmp_path / "red.png", PredictConfig(weights=str(tmp_path / "tudui_29.pth"),
                                                               model="tudui", topk=10, classes="cifar10"))
    assert [p["class"] for p in named[0]["predictions"]] == \
        [CIFAR10_CLASSES[int(p["class"])] for p in numbered[0]["predictions"]]
    assert [p["probability"] for p in named[0]["predictions"]] == [p["probability"] for p in numbered[0]["predictions"]]
    with pytest.raises(TuduiError, match="--classes gives 2 names, and the model has 10 outputs"):
        predict_images(tmp_path / "red.png", PredictConfig(weights=str(tmp_path / "tudui_29.pth"), model="tudui",
                                                           classes="cat,dog"))
    meta = WeightsMeta(model="tudui", num_classes=10, class_names=tuple("abcdefghij"),
                       preprocess=Preprocess(input_size=32))
    save_weights(tmp_path / "own.safetensors", model, meta)
    with caplog.at_level("WARNING", logger="tudui"):
        own = predict_images(tmp_path / "red.png", PredictConfig(weights=str(tmp_path / "own.safetensors"),
                                                                 classes="cifar10"))
    assert own[0]["predictions"][0]["class"] in "abcdefghij" and "--classes is not used" in caplog.text
