"""tudui predict: tables of predictions and test-time augmentation."""
import csv
import dataclasses
import json

import pytest
from PIL import Image, ImageOps

import tudui
from tudui.data import build_dataset
from tudui.weights import load_model, save_weights

from helpers import run_cli


@pytest.fixture
def digit_files(tmp_path):
    """Six test digits as PNG files in a folder."""
    spec = build_dataset("digits")
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(6):
        spec.test[i * 50][0].save(folder / f"{i}.png")
    return folder


def test_predictions_are_written_as_csv_and_json_with_the_top_k_classes(digit_files, digits_run, tmp_path):
    (digit_files / "broken.png").write_bytes(b"not an image")
    result = run_cli("predict", str(digit_files), "--weights", str(digits_run.run_dir), "--topk", "3",
                     "--out", str(tmp_path / "predictions.csv"))
    assert result.returncode == 1 and "1 of 7 images could not be read" in result.stderr
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert list(rows[0]) == ["path", "class_1", "probability_1", "class_2", "probability_2",
                             "class_3", "probability_3", "error"]
    assert len(rows) == 7
    broken = [row for row in rows if row["path"].endswith("broken.png")]
    assert broken[0]["error"] and not broken[0]["class_1"]
    for row in rows:
        if row["error"]:
            continue
        probabilities = [float(row[f"probability_{k}"]) for k in (1, 2, 3)]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-5
        assert {row["class_1"], row["class_2"], row["class_3"]} <= {str(d) for d in range(10)}
    run_cli("predict", str(digit_files / "0.png"), "--weights", str(digits_run.run_dir), "--json",
            "--out", str(tmp_path / "predictions.json"), check=True)
    saved = json.loads((tmp_path / "predictions.json").read_text())
    assert saved[0]["path"].endswith("0.png") and len(saved[0]["predictions"]) == 5
    assert saved[0]["predictions"][0]["class"] == next(r for r in rows if r["path"].endswith("0.png"))["class_1"]


def test_tta_averages_an_image_with_its_mirror_for_a_model_trained_with_flips(digits_run, digit_files, tmp_path):
    # The README job's weights, recorded as trained with --augment flip: then the mirror is a view
    # (without a flip in training, digits are never mirrored: test_cli's test of --tta).
    model, meta = load_model(digits_run.run_dir)
    flipped = dataclasses.replace(meta.config, data=dataclasses.replace(meta.config.data, augment="flip"))
    save_weights(tmp_path / "flip.safetensors", model, dataclasses.replace(meta, config=flipped))
    image = Image.open(digit_files / "3.png").convert("RGB")
    mirrored = ImageOps.mirror(image)

    def probabilities(picture, tta, weights=tmp_path / "flip.safetensors"):
        (result,) = tudui.predict(picture, weights=weights, topk=10, tta=tta)
        return {p["class"]: p["probability"] for p in result["predictions"]}
    plain, plain_mirrored = probabilities(image, 0), probabilities(mirrored, 0)
    averaged, averaged_mirrored = probabilities(image, 1), probabilities(mirrored, 1)
    assert plain != pytest.approx(plain_mirrored)              # digits are not symmetric
    assert averaged == pytest.approx(averaged_mirrored, abs=1e-5)   # the same two views either way
    assert probabilities(image, 1, digits_run.run_dir) == pytest.approx(plain)   # as trained: no mirror


def test_bad_files_get_an_error_line_while_the_others_are_predicted(digit_files, digits_run, capsys):
    from tudui.cli import main
    (digit_files / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (digit_files / "page.jpg").write_text("<html>not found</html>")
    code = main(["predict", str(digit_files), "--weights", str(digits_run.run_dir)])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert code == 1
    assert len([line for line in lines if ": error: " in line]) == 2
    assert len([line for line in lines if ": error: " not in line and "%" in line]) == 6
    assert "2 of 8 images could not be read" in captured.err


def test_a_missing_path_among_several_is_an_error_line_and_the_others_are_predicted(digit_files, digits_run,
                                                                                       tmp_path, capsys):
    from tudui.cli import main
    (tmp_path / "empty").mkdir()
    code = main(["predict", str(tmp_path / "nope.png"), str(digit_files), str(tmp_path / "empty"),
                 "--weights", str(digits_run.run_dir)])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert code == 1 and "Traceback" not in captured.err
    assert lines[0] == f"{tmp_path / 'nope.png'}: error: image or folder not found: {tmp_path / 'nope.png'}"
    assert lines[-1] == f"{tmp_path / 'empty'}: error: no images in folder {tmp_path / 'empty'}"
    assert len([line for line in lines if "%" in line]) == 6
    assert f"1 of 7 images could not be read; no images in {tmp_path / 'empty'}" in captured.err
