"""tudui.evaluate and the eval report, on weights written by the test (no training)."""

import pytest
import torch

import tudui
from tudui.config_files import make_config
from tudui.data import Preprocess, build_dataset
from tudui.data.loaders import make_eval_loader
from tudui.engine import evaluate as evaluate_model
from tudui.errors import TuduiError
from tudui.evaluation import eval_output_dir, final_measure, final_report
from tudui.models import create_model
from tudui.rundir import RunDir
from tudui.runtime import Runtime
from tudui.weights import WeightsMeta, load_model, save_weights

from helpers import write_class_folder

CLASSES = ("class0", "class1", "class2", "class3")   # the synthetic set's


def make_run(root, tta=1, data="synthetic", class_names=CLASSES, seed=3) -> RunDir:
    """A run directory holding random tudui weights for the synthetic set, as training leaves it."""
    torch.manual_seed(seed)
    run = RunDir(root)
    run.weights_dir.mkdir(parents=True)
    cfg = make_config(data="synthetic", tta=tta, batch_size=16)
    meta = WeightsMeta(model="tudui", num_classes=len(class_names), class_names=class_names, data=data,
                       preprocess=Preprocess(input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3), config=cfg)
    save_weights(run.best, create_model("tudui", len(class_names)), meta)
    run.config.write_text("{}\n")
    return run


def direct_metrics(run: RunDir, tta: int, mirror: bool = False) -> dict:
    """The engine's numbers; synthetic stripes are never mirrored unless trained so (mirror_suits)."""
    model, meta = load_model(run.best)
    loader = make_eval_loader(build_dataset("synthetic").test, meta.preprocess, torch.device("cpu"), 64)
    return evaluate_model(model, loader, torch.device("cpu"), 4, tta, mirror=mirror)


@pytest.mark.parametrize("tta", [1, 2])
def test_evaluate_measures_what_the_engine_does_with_the_recorded_settings(tmp_path, tta):
    run = make_run(tmp_path / "run", tta=tta)
    metrics = tudui.evaluate(run.path)
    expected = direct_metrics(run, tta=tta)
    assert metrics["tta"] == tta and metrics["count"] == 64 and metrics["class_names"] == list(CLASSES)
    assert metrics["tta_mirror"] is False
    assert metrics["top5_accuracy"] is None      # four classes: always 100 %, so not a number worth keeping
    assert metrics["loss"] != pytest.approx(direct_metrics(run, tta=tta, mirror=True)["loss"])   # not mirrored
    assert metrics["confusion"] == expected["confusion"]
    assert metrics["loss"] == pytest.approx(expected["loss"])
    assert [row["class"] for row in metrics["per_class"]] == list(CLASSES)


def test_settings_given_win_over_the_recorded_ones(tmp_path):
    run = make_run(tmp_path / "run", tta=1)
    plain = tudui.evaluate(run.path, tta=0, batch_size=7)
    assert plain["tta"] == 0 and plain["confusion"] == direct_metrics(run, tta=0)["confusion"]


def test_from_python_nothing_is_written_unless_a_report_is_asked_for(tmp_path):
    run = make_run(tmp_path / "run")
    tudui.evaluate(run.path)
    assert not (run.path / "eval").exists()
    first = tudui.evaluate(run.path, report=True)
    second = tudui.evaluate(run.path, report=True)
    assert first["report"] == str(run.path / "eval" / "report.html")
    assert second["report"] == str(run.path / "eval2" / "report.html")
    out = tudui.evaluate(run.best, out=tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "metrics.json").is_file() and "report" in out


def test_a_bare_weights_file_gets_its_eval_folder_beside_it(tmp_path):
    run = make_run(tmp_path / "run")
    bare = tmp_path / "kept" / "w.safetensors"
    bare.parent.mkdir()
    bare.write_bytes(run.best.read_bytes())
    assert eval_output_dir(bare, "") == tmp_path / "kept" / "eval"
    assert eval_output_dir(run.best, "") == run.path / "eval"
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(TuduiError, match="is a file; give a folder"):
        eval_output_dir(run.best, str(tmp_path / "a-file"))
    with pytest.raises(TuduiError, match=r"names the report's folder .*not a file: give a folder such as .*mine$"):
        eval_output_dir(run.best, str(tmp_path / "mine.html"))
    assert not (tmp_path / "mine.html").exists()


def test_weights_that_record_no_data_set_need_one(tmp_path):
    run = make_run(tmp_path / "run", data=None)
    with pytest.raises(TuduiError, match="does not record its data set; pass --data"):
        tudui.evaluate(run.path)
    assert tudui.evaluate(run.path, data="synthetic")["count"] == 64


def test_classes_other_than_the_weights_are_refused(tmp_path):
    run = make_run(tmp_path / "run", class_names=("class0", "dog", "class2", "owl"))
    with pytest.raises(TuduiError, match=r"synthetic has 2 classes the weights were not trained on: 'class1', "
                                         r"'class3' \(they know 'class0', 'dog', 'class2', 'owl'\)$"):
        tudui.evaluate(run.path)


def test_a_data_set_with_some_of_the_trained_classes_is_measured_in_the_trained_numbering(tmp_path):
    trained = ("extra", "class3", "class0", "class1", "class2")   # the synthetic set's four, another order
    run = make_run(tmp_path / "run", class_names=trained)
    metrics = tudui.evaluate(run.path, tta=0)
    model, meta = load_model(run.best)
    test = build_dataset("synthetic").test
    logits = torch.cat([model(x) for x, _ in make_eval_loader(test, meta.preprocess, torch.device("cpu"), 64)])
    expected = torch.zeros(5, 5, dtype=torch.int64)
    for label, predicted in zip(test.labels, logits.argmax(dim=1)):
        expected[trained.index(CLASSES[label]), predicted] += 1
    assert metrics["class_names"] == list(trained) and metrics["count"] == 64
    assert metrics["confusion"] == expected.tolist()
    assert [row["support"] for row in metrics["per_class"]] == [0, 16, 16, 16, 16]
    assert metrics["accuracy"] == pytest.approx(expected.diag().sum().item() / 64)


def test_a_new_folder_with_one_of_the_trained_classes_is_evaluated(tmp_path):
    write_class_folder(tmp_path / "new", ["ship"], 3)
    run = make_run(tmp_path / "run", class_names=("cat", "dog", "ship"))
    metrics = tudui.evaluate(run.path, data=str(tmp_path / "new"))
    assert metrics["split"] == "all" and metrics["count"] == 3
    assert [row["support"] for row in metrics["per_class"]] == [0, 0, 3]
    write_class_folder(tmp_path / "new", ["horse"], 1)
    with pytest.raises(TuduiError, match=r"has 1 class the weights were not trained on: 'horse' \(they know "
                                         r"'cat', 'dog', 'ship'\)$"):
        tudui.evaluate(run.path, data=str(tmp_path / "new"))
    write_class_folder(tmp_path / "cased", ["Cat", "dogs", "ship"], 1)
    with pytest.raises(TuduiError, match=r"has 2 classes the weights were not trained on: 'Cat', 'dogs' .*; "
                                         r"did you mean 'cat' for 'Cat', 'dog' for 'dogs'\?$"):
        tudui.evaluate(run.path, data=str(tmp_path / "cased"))


def test_a_plain_state_dict_takes_the_class_names_of_the_data_set(tmp_path):
    torch.manual_seed(0)
    torch.save(create_model("tudui", 4).state_dict(), tmp_path / "four.pth")
    metrics = tudui.evaluate(tmp_path / "four.pth", model="tudui", data="synthetic")
    assert metrics["class_names"] == list(CLASSES) and metrics["count"] == 64
    torch.save(create_model("tudui", 10).state_dict(), tmp_path / "ten.pth")
    with pytest.raises(TuduiError, match="has 10 outputs but synthetic has 4 classes"):
        tudui.evaluate(tmp_path / "ten.pth", model="tudui", data="synthetic")


def test_a_report_that_fails_is_a_warning_and_the_run_stands(tmp_path):
    run = make_run(tmp_path / "run")
    run.best.unlink()
    warnings = []
    spec = build_dataset("synthetic")
    loader = make_eval_loader(spec.test, Preprocess(input_size=32), torch.device("cpu"), 64)
    cfg = make_config(data="synthetic")
    measured = final_measure(run, "test", loader, Runtime(device=torch.device("cpu")), spec.source, cfg,
                             warnings.append)
    assert measured is None and len(warnings) == 1
    assert "could not be made" in warnings[0] and str(run) in warnings[0]


def test_a_report_that_fails_after_the_numbers_is_a_warning(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    spec = build_dataset("synthetic")
    loader = make_eval_loader(spec.test, Preprocess(input_size=32), torch.device("cpu"), 64)
    cfg = make_config(data="synthetic")
    warnings = []
    measured = final_measure(run, "test", loader, Runtime(device=torch.device("cpu")), spec.source, cfg,
                             warnings.append)
    assert measured is not None and measured.metrics["count"] == len(spec.test) and not warnings

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("tudui.report.write_report", full_disk)
    assert final_report(run, "test", measured, spec.test, cfg, None, warnings.append) is None
    assert len(warnings) == 1 and "No space left on device" in warnings[0] and "report" in warnings[0]


def test_an_imported_state_dict_evaluated_on_digits_is_never_mirrored(tmp_path, caplog):
    torch.manual_seed(0)
    torch.save(create_model("tudui", 10).state_dict(), tmp_path / "course.pth")
    measured = {tta: tudui.evaluate(tmp_path / "course.pth", model="tudui", data="digits", tta=tta) for tta in (0, 1)}
    assert measured[1]["confusion"] == measured[0]["confusion"] and measured[1]["tta_mirror"] is False
    assert "--tta 1 without the mirror: digits images change when mirrored" in caplog.text
