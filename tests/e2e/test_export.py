"""`tudui export` as a user runs it: every model family in every format matches the original, and the
exported file answers `tudui eval` and `tudui predict` as the run's own weights do."""
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import run_cli
from tudui.data import Preprocess
from tudui.export import TOLERANCE
from tudui.export import export_model as export
from tudui.models import create_model, preprocess_of
from tudui.weights import WeightsMeta, save_weights

FAMILIES = {   # tudui's course net, the fast recipe's net, a small torchvision model at 32 px
    "tudui": Preprocess(input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3),
    "fastnet": Preprocess(input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3),
    "mobilenet_v3_small": preprocess_of("mobilenet_v3_small", 32),
}


@pytest.fixture(scope="module")
def family_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("families")
    paths = {}
    for name, preprocess in FAMILIES.items():
        torch.manual_seed(0)
        model = create_model(name, num_classes=4)
        meta = WeightsMeta(model=name, num_classes=4, class_names=("a", "b", "c", "d"), preprocess=preprocess)
        paths[name] = folder / name / "best.safetensors"
        paths[name].parent.mkdir()
        save_weights(paths[name], model, meta)
    return paths


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_in_every_format_matches_the_original(family_weights, family, fmt):
    result = export(family_weights[family], format=fmt)
    assert result.path.is_file() and result.images == 64
    assert result.max_difference <= TOLERANCE["float32"]
    assert result.top1_agreement >= 0.98   # ties of an untrained net may break either way


def test_the_exported_run_answers_eval_and_predict_as_the_run_does(digits_run, tmp_path):
    run = digits_run.run_dir
    out = tmp_path / "digits.onnx"
    result = run_cli("export", str(run), "--out", str(out), check=True)
    assert f"exported {out} (onnx" in result.stdout and "top-1 agreement 100.0%" in result.stdout
    assert f"check it with  tudui predict IMAGE --weights {out}  (or tudui eval" in result.stdout
    ours = json.loads(run_cli("eval", "--weights", str(run), "--json", "--no-report", check=True).stdout)
    theirs = json.loads(run_cli("eval", "--weights", str(out), "--json", "--no-report", check=True).stdout)
    assert theirs["confusion"] == ours["confusion"] and theirs["count"] == ours["count"]
    assert theirs["loss"] == pytest.approx(ours["loss"], abs=1e-4)
    images = []
    for i in range(5):
        images.append(tmp_path / f"{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (30 + i, 20 + 3 * i, 3), dtype=np.uint8)
                        ).save(images[-1])
    paths = [str(p) for p in images]
    expected = json.loads(run_cli("predict", *paths, "--weights", str(run), "--json", check=True).stdout)
    got = json.loads(run_cli("predict", *paths, "--weights", str(out), "--json", check=True).stdout)
    for e, g in zip(expected, got):
        assert [p["class"] for p in e["predictions"]] == [p["class"] for p in g["predictions"]]
        assert np.allclose([p["probability"] for p in e["predictions"]],
                           [p["probability"] for p in g["predictions"]], atol=1e-5)


def test_eval_of_an_exported_file_with_a_report_keeps_stdout_for_the_json(digits_run, tmp_path):
    out = tmp_path / "digits.torchscript"   # its tracer failure printed 2 lines, pt2's 680: both were on stdout
    run_cli("export", str(digits_run.run_dir), "--format", "torchscript", "--out", str(out), check=True)
    result = run_cli("eval", "--weights", str(out), "--trust-pickle", "--json", "--out", str(tmp_path / "ev"),
                     check=True)
    metrics = json.loads(result.stdout)   # nothing but the JSON: TensorBoard's tracer is not let at it
    assert metrics["count"] > 0 and (tmp_path / "ev" / "report.html").is_file()


def test_export_errors_are_one_line(digits_run, tmp_path):
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"\x08\x07" + b"\xff" * 500)
    result = run_cli("predict", str(damaged), "--weights", str(damaged))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ") and result.stderr.strip().endswith(
        "damaged.onnx is not a readable ONNX file (DecodeError)")
    result = run_cli("export", str(digits_run.run_dir), "--format", "pt2", "--out", str(tmp_path / "x.onnx"))
    assert result.returncode == 2 and result.stderr.startswith("tudui export: error: --out must end in .pt2")


def test_a_pickled_export_says_how_to_check_it_and_that_command_works(digits_run, tmp_path):
    out = tmp_path / "digits.torchscript"
    result = run_cli("export", str(digits_run.run_dir), "--format", "torchscript", "--out", str(out), check=True)
    hint = re.search(r"check it with  (tudui predict IMAGE --weights \S+ --trust-pickle)", result.stdout)
    assert hint, result.stdout
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "blank.png")
    command = hint.group(1).split()[1:]
    command[command.index("IMAGE")] = str(tmp_path / "blank.png")
    assert run_cli(*command, check=True).stdout.startswith(str(tmp_path / "blank.png"))
    refused = run_cli(*[word for word in command if word != "--trust-pickle"])
    assert refused.returncode == 1 and "pass --trust-pickle if you made it" in refused.stderr


def test_a_resumed_run_warns_of_the_exports_it_made_older(tmp_path, capsys):
    import tudui
    run = tudui.train(data="synthetic", epochs=1, batch_size=32, project=str(tmp_path), progress=True,
                      report=False).run_dir
    best = export(run, format="onnx").path
    last = export(run / "weights" / "last.safetensors", format="onnx", half=True, batch="4").path
    capsys.readouterr()
    tudui.train(resume=run, epochs=2, progress=True)       # no val split: best is the last epoch, both rewritten
    said = capsys.readouterr().err
    assert f"{best} was exported from older weights than best.safetensors now holds: export again with  " \
           f"tudui export {run} --format onnx" in said
    assert f"tudui export {run / 'weights' / 'last.safetensors'} --format onnx --half --batch 4" in said
    export(run, format="onnx")
    from tudui.rundir import RunDir
    from tudui.runner import stale_exports
    assert stale_exports(RunDir(run)) == [last]         # best.onnx made again: only last.onnx is behind
