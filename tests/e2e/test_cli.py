"""The tudui command as a user runs it: subprocesses, exit codes, files, printed text."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tudui.data import build_dataset

from helpers import CIFAR_COPY, CIFAR_SKIP, REPO, run_cli


def test_readme_main_job_reaches_90_percent_on_digits(digits_run):
    lines = digits_run.stdout.splitlines()
    final = float(re.search(r"^test accuracy ([\d.]+)%", digits_run.stdout, re.M).group(1))
    assert final >= 90.0
    assert any("run directory: runs/exp" in line for line in lines)
    assert len([line for line in lines if line.startswith("epoch ")]) == 10
    run_dir = digits_run.run_dir
    for name in ("config.yaml", "metrics.csv", "weights/best.safetensors",
                 "weights/last.safetensors", "weights/state.pt"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["dataset"] == "digits"


@pytest.mark.parametrize("command", ["train", "eval", "predict", "export", "serve", "models", "cache"])
def test_every_command_has_help_with_examples(command):
    result = run_cli(command, "--help", check=True)
    assert "usage: tudui " + command in result.stdout
    if command != "models":
        assert "examples:" in result.stdout and f"tudui {command} " in result.stdout


def test_train_help_lists_every_setting():
    text = run_cli("train", "--help", check=True).stdout
    for flag in ("--data", "--model", "--optimizer", "--lr", "--momentum", "--weight-decay",
                 "--epochs", "--batch-size", "--seed", "--device", "--config", "--name",
                 "--no-normalize", "--augment", "--val-split"):
        assert flag in text, flag


def test_models_lists_names_and_parameter_counts():
    out = run_cli("models", check=True).stdout
    assert re.search(r"^tudui\s+145,578\s", out, re.M)
    assert "tudui_relu" in out


def test_eval_prints_accuracy_and_every_class(digits_run):
    out = run_cli("eval", "--weights", str(digits_run.run_dir), check=True).stdout
    accuracy = float(re.search(r"accuracy ([\d.]+)%", out).group(1))
    assert accuracy >= 90.0
    assert len(re.findall(r"^  \d\s+[\d.]+%", out, re.M)) == 10
    metrics = json.loads(run_cli("eval", "--weights", str(digits_run.run_dir / "weights" /
                                 "last.safetensors"), "--json", check=True).stdout)
    assert metrics["count"] == 360 and len(metrics["confusion"]) == 10


def test_eval_of_a_folder_with_some_of_the_trained_classes(digits_run, tmp_path):
    spec = build_dataset("digits")
    counts = {"3": 0, "7": 0}
    for i in range(len(spec.test)):
        image, label = spec.test[i]
        if spec.class_names[label] in counts:
            counts[spec.class_names[label]] += 1
            (tmp_path / "new" / spec.class_names[label]).mkdir(parents=True, exist_ok=True)
            image.save(tmp_path / "new" / spec.class_names[label] / f"{i:03d}.png")
    result = run_cli("eval", "--weights", str(digits_run.run_dir), "--data", str(tmp_path / "new"), check=True)
    assert "has 2 of the 10 trained classes ('3', '7')" in result.stderr + result.stdout
    assert re.search(rf": {counts['3'] + counts['7']} images$", result.stdout, re.M)   # the folder, not a split of it
    assert len(re.findall(r"^  \d\s+-  \(no images\)$", result.stdout, re.M)) == 8
    for digit, count in counts.items():
        assert re.search(rf"^  {digit}\s+[\d.]+%  \(\d+/{count}\)$", result.stdout, re.M)


def test_eval_writes_a_new_report_folder_and_keeps_the_runs_own_report(digits_run):
    run_page = (digits_run.run_dir / "report.html").read_bytes()
    out = run_cli("eval", "--weights", str(digits_run.run_dir), check=True).stdout
    report = Path(re.search(r"^report: (\S+)", out, re.MULTILINE).group(1))
    assert report.parent.parent == digits_run.run_dir and report.parent.name.startswith("eval")
    for name in ("metrics.json", "confusion_matrix.png", "misclassified.png", "per_class.png", "curves.png"):
        assert (report.parent / name).is_file(), name
    assert list(report.parent.glob("events.out.tfevents.*"))
    printed = float(re.search(r"accuracy ([\d.]+)%", out).group(1))
    assert printed == pytest.approx(100 * json.loads((report.parent / "metrics.json").read_text())["accuracy"],
                                    abs=0.006)
    assert (digits_run.run_dir / "report.html").read_bytes() == run_page


def test_predicting_every_test_image_matches_eval(digits_run, tmp_path):
    spec = build_dataset("digits")
    truth = {}
    for i in range(len(spec.test)):
        image, label = spec.test[i]
        path = tmp_path / f"{i:03d}.png"
        image.save(path)
        truth[str(path)] = spec.class_names[label]
    result = run_cli("predict", str(tmp_path), "--weights", str(digits_run.run_dir), "--json",
                     "--topk", "1", check=True)
    predictions = json.loads(result.stdout)
    assert len(predictions) == 360
    accuracy = np.mean([p["predictions"][0]["class"] == truth[p["path"]] for p in predictions])
    evaluated = json.loads(run_cli("eval", "--weights", str(digits_run.run_dir), "--json",
                                   check=True).stdout)
    assert accuracy == pytest.approx(evaluated["accuracy"])


def test_tta_never_mirrors_digits_that_training_never_mirrored(digits_run, tmp_path):
    plain = json.loads(run_cli("eval", "--weights", str(digits_run.run_dir), "--json", check=True).stdout)
    asked = run_cli("eval", "--weights", str(digits_run.run_dir), "--json", "--tta", "1", check=True)
    assert json.loads(asked.stdout)["confusion"] == plain["confusion"]     # level 1 less the mirror: the image
    assert "--tta 1 without the mirror: digits images change when mirrored" in asked.stderr
    image, _ = build_dataset("digits").test[0]
    image.save(tmp_path / "digit.png")
    answers = [run_cli("predict", str(tmp_path / "digit.png"), "--weights", str(digits_run.run_dir), *tta,
                       check=True) for tta in ([], ["--tta", "1"])]
    assert answers[1].stdout == answers[0].stdout and "without the mirror" in answers[1].stderr


def test_predict_one_image_of_any_size_and_mode(digits_run, tmp_path):
    Image.new("P", (123, 45)).save(tmp_path / "odd.gif")
    out = run_cli("predict", str(tmp_path / "odd.gif"), "--weights", str(digits_run.run_dir),
                  "--topk", "3", check=True).stdout
    assert re.fullmatch(r".*odd\.gif: \d [\d.]+%, \d [\d.]+%, \d [\d.]+%\n", out)


def test_config_file_and_flags_are_resolved_into_the_run(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {name: synthetic}\ntrain: {epochs: 3}\noptim: {lr: 0.02}\n")
    run_cli("train", "--config", "c.yaml", "--epochs", "1", "--name", "mine", cwd=tmp_path, check=True)
    resolved = yaml.safe_load((tmp_path / "runs" / "mine" / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 1 and resolved["optim"]["lr"] == 0.02
    assert resolved["data"]["dataset"] == "synthetic" and resolved["optim"]["momentum"] == 0.9


def test_python_dash_m_and_version():
    assert run_cli("--version", check=True).stdout.startswith("tudui ")


def test_tudui_alone_prints_its_help(capsys):
    from tudui import cli
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tudui") and "train" in out and "predict" in out


@pytest.mark.parametrize("args, message, status", [
    # a setting that cannot be is a usage mistake (argparse's status 2); what goes wrong later exits with 1
    (["train", "--data", "/no/such/dir"], "data set not found", 1),
    (["train", "--data", "digits", "--lr", "-3"], "--lr must be positive", 2),
    (["train", "--config", "/no/such.yaml"], "config file not found", 2),
    (["train", "--data", "digits", "--model", "nope"], "unknown model 'nope'", 1),
    (["train", "--data", "cifar10", "--data-dir", "EMPTY", "--no-download"], "--data digits", 1),
    (["eval", "--weights", "/no/such/weights.safetensors"], "weights not found", 1),
    (["predict", "/no/such.png", "--weights", "RUN"], "error: image or folder not found: /no/such.png", 1),
    (["predict", "/no/such.png", "--weights", "/no/weights"], "weights not found: /no/weights", 1),
    (["predict", "BAD_IMAGE", "--weights", "RUN"], "error: cannot read image ", 1),
    (["predict", "EMPTY", "--weights", "RUN"], "error: no images in folder ", 1),
    (["eval", "--weights", "BAD_IMAGE"], "not a readable safetensors", 1),
    (["eval", "--weights", "RUN", "--out", "BAD_IMAGE"], "is a file", 1),
    (["predict", "BAD_IMAGE", "--weights", "RUN", "--out", "predictions.txt"], "must end in .csv or .json", 2),
])
def test_user_errors_are_one_line_and_a_nonzero_exit(args, message, status, tmp_path, digits_run, capsys,
                                                     monkeypatch):
    from tudui import cli
    (tmp_path / "bad.safetensors").write_text("<html>")
    substitutions = {"EMPTY": str(tmp_path), "RUN": str(digits_run.run_dir),
                     "BAD_IMAGE": str(tmp_path / "bad.safetensors")}
    monkeypatch.chdir(tmp_path)
    # in this process (main catches what a subprocess would print as a traceback: "unexpected ...")
    assert cli.main([substitutions.get(a, a) for a in args]) == status
    err = capsys.readouterr().err
    assert message in err and "unexpected" not in err
    assert len([line for line in err.splitlines() if re.match(r"(tudui \w+: )?error: ", line)]) == 1


def test_bad_flag_type_is_a_usage_error():
    result = run_cli("train", "--epochs", "many")
    assert result.returncode == 2 and "invalid int value" in result.stderr


def test_a_value_outside_its_rule_is_a_usage_error_from_a_flag_or_a_file(tmp_path, capsys):
    from tudui import cli
    assert cli.main(["train", "--optimizer", "mun"]) == 2
    assert capsys.readouterr().err == ("tudui train: error: --optimizer must be one of sgd, adamw, muon, got 'mun'; "
                                       "did you mean muon? (see `tudui train --help`)\n")
    (tmp_path / "c.yaml").write_text("optim:\n  schedule: cosin\n")
    assert cli.main(["train", "--config", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tudui train: error: {tmp_path / 'c.yaml'}: optim.schedule must be one of") and \
        "did you mean cosine?" in err
    assert cli.main(["eval", "--weights", "w.safetensors", "--tta", "9"]) == 2
    assert capsys.readouterr().err.startswith("tudui eval: error: --tta must be")


@pytest.mark.skipif(not CIFAR_COPY.exists(), reason=CIFAR_SKIP)
def test_one_epoch_of_the_seed_recipe_on_the_cifar10_copy(tmp_path):
    result = run_cli("train", "--config", str(REPO / "configs" / "seed.yaml"), "--data",
                     str(CIFAR_COPY), "--epochs", "1", "--val-split", "0.1", cwd=tmp_path, check=True)
    accuracy = float(re.search(r"^test accuracy ([\d.]+)%", result.stdout, re.M).group(1))
    assert accuracy >= 25.0
    assert "45,000 train / 5,000 val / 10,000 test images, 10 classes" in result.stdout
    assert "classes (train images): airplane 4,500," in result.stdout
    assert re.search(r"^epoch 1/1 .* val_acc [\d.]+%", result.stdout, re.M)


def test_a_folder_with_too_many_broken_images_stops_in_one_line_naming_them(tmp_path):
    from helpers import write_class_folder
    write_class_folder(tmp_path / "set", ["a", "b"], 5)
    (tmp_path / "set" / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (tmp_path / "set" / "b" / "empty.png").write_bytes(b"")
    result = run_cli("train", "--data", str(tmp_path / "set"), "--loader", "dataloader", "--workers", "1",
                     "--epochs", "1", "--no-normalize", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: 2 of 12 images are unreadable") and "broken.jpg" in result.stderr
    assert "empty.png" in result.stderr     # both splits' bad files in the one line
    assert len(result.stderr.strip().splitlines()) == 1


def test_tudui_models_lists_torchvision_models_beside_ours():
    out = run_cli("models", check=True).stdout
    assert re.search(r"^tudui\s+145,578\s", out, re.MULTILINE)
    for name in ("resnet18", "vgg16", "vit_b_16", "convnext_tiny"):
        assert re.search(rf"^{name}\s+224px\s", out, re.MULTILINE), name


def test_precision_auto_says_what_it_chose(tmp_path):
    result = run_cli("train", "--data", "digits", "--epochs", "1", "--precision", "auto", "--no-report",
                     cwd=tmp_path, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith("model: "))
    assert re.search(r" on cpu, (fp32|bf16) \(--precision auto\); loader", line), line


@pytest.mark.parametrize("command", [["models"], ["eval", "--json", "--no-report"]])
def test_a_reader_that_closes_the_pipe_gets_no_traceback(command, digits_run):
    """`tudui models | head -1`: the reader is gone before tudui writes; it ends quietly."""
    import subprocess
    import sys
    args = command + (["--weights", str(digits_run.run_dir)] if command[0] == "eval" else [])
    process = subprocess.Popen([sys.executable, "-m", "tudui", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()   # as head does once it has its lines
    stderr = process.stderr.read()
    assert process.wait(timeout=300) in (0, 141)
    assert "Traceback" not in stderr and "Error" not in stderr, stderr


def test_the_first_lines_name_the_time_budget_and_the_last_say_when_it_ended_the_run(tmp_path):
    common = ("train", "--data", "synthetic", "--model", "fastnet", "--widths", "8,8,8", "--batch-size", "32",
              "--project", str(tmp_path), "--no-report")
    cut = run_cli(*common, "--epochs", "1000", "--time-budget", "2", check=True).stdout
    epochs = re.findall(r"^epoch\s+(\d+)/1000", cut, re.M)
    assert 1 <= len(epochs) < 1000
    assert "time budget: 2 s of training, at most 1,000 epochs" in cut
    assert "\noptimizer: SGD (lr 0.01, momentum 0.9, weight decay 0.0005); cosine schedule\n" in cut
    assert f"time budget spent: 2 s of training ended the run in epoch {epochs[-1]} of at most 1000" in cut
    finished = run_cli(*common, "--epochs", "2", "--time-budget", "600", check=True).stdout
    assert "time budget: 600 s of training, at most 2 epochs" in finished and "time budget spent" not in finished
    assert re.search(r"time budget not spent: the run's 2 epochs \(--epochs\) took \d+ s of its 600 s", finished)
    assert "time budget" not in run_cli(*common, "--epochs", "1", check=True).stdout
