"""Numbers named for their split: val picks the epoch, test measures the kept weights once;
early stopping; imbalanced classes seen and handled; eval of what the user points at."""
import csv
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

import tudui
from tudui.errors import TuduiError

from helpers import class_image, run_cli, write_class_folder

CLASSES = ["cat", "dog", "fox"]


@pytest.fixture
def three_splits(tmp_path):
    root = tmp_path / "photos"
    write_class_folder(root / "train", CLASSES, 12, seed=1)
    write_class_folder(root / "val", CLASSES, 4, seed=2)
    write_class_folder(root / "test", CLASSES, 5, seed=3)
    return root


def test_a_train_val_test_folder_uses_all_three_and_names_each_number_for_its_split(three_splits, tmp_path):
    result = run_cli("train", "--data", str(three_splits), "--model", "tudui_relu", "--epochs", "3", "--lr", "0.05",
                     cwd=tmp_path, check=True)
    out = result.stdout
    assert "36 train / 12 val / 15 test images" in out
    assert "val picks the best epoch (by val_accuracy); test is measured once" in out
    assert out.count("val_acc ") == 3 and "test_acc" not in out
    summary = next(line for line in out.splitlines() if line.startswith("test accuracy"))
    assert "the best by val_accuracy" in summary and "balanced" in summary and "macro-F1" in summary
    run = tmp_path / "runs" / "exp"
    assert list(csv.DictReader((run / "metrics.csv").open()))[0].keys() >= {"val_loss", "val_accuracy"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["count"] == 15


def test_the_best_epoch_is_chosen_on_val_and_test_measures_those_weights_once(three_splits, tmp_path):
    # The test split's folders swapped: cat images labelled dog and dog images labelled cat. A
    # test split that picked the epoch would pick a bad one; it may only measure the chosen one.
    (three_splits / "test" / "cat").rename(three_splits / "test" / "tmp")
    (three_splits / "test" / "dog").rename(three_splits / "test" / "cat")
    (three_splits / "test" / "tmp").rename(three_splits / "test" / "dog")
    result = tudui.train(data=str(three_splits), model="tudui_relu", epochs=4, lr=0.05, project=str(tmp_path),
                         progress=False, report=False)
    val = [row["val_accuracy"] for row in result.history]
    # the best val accuracy, and of epochs that tie on it, the lowest val loss
    best = min(result.history, key=lambda row: (-row["val_accuracy"], row["val_loss"]))
    assert result.best_epoch == best["epoch"] and result.val_accuracy == max(val) >= 0.9
    assert result.final_split == "test" and result.test_accuracy <= 0.5
    again = tudui.evaluate(result.best_weights, split="test")
    assert again["accuracy"] == result.test_accuracy and again["split"] == "test"
    assert tudui.evaluate(result.best_weights, split="val")["accuracy"] == result.val_accuracy


def test_without_a_val_split_the_last_epoch_is_kept_and_said_so(tmp_path):
    result = run_cli("train", "--data", "digits", "--epochs", "2", "--no-report", cwd=tmp_path, check=True)
    assert "no val split, so the last epoch is kept" in result.stdout
    assert "(no val split)" in result.stdout
    assert "of the weights of epoch 2, the last (no val split to choose by)" in result.stdout


def test_eval_of_a_folder_without_splits_counts_every_image(three_splits, tmp_path):
    run = tudui.train(data=str(three_splits), epochs=1, project=str(tmp_path), progress=False, report=False)
    whole = write_class_folder(tmp_path / "more", CLASSES, 7, seed=9)
    assert tudui.evaluate(run.run_dir, data=str(whole))["count"] == 21          # not a 20 % holdout of it
    assert tudui.evaluate(run.run_dir, data=str(whole), split="val")["count"] == 3   # asked for: 0.2 held out
    assert tudui.evaluate(run.run_dir, split="all")["count"] == 36 + 12 + 15   # warned: 36 are training images
    with pytest.raises(TuduiError, match="has no test split .*pass another --split"):
        tudui.evaluate(run.run_dir, data=str(whole), split="test")


def test_eval_warns_when_what_it_measures_holds_training_images(tmp_path, caplog):
    data = write_class_folder(tmp_path / "flat", CLASSES, 10)
    run = tudui.train(data=str(data), epochs=1, val_split=0.2, project=str(tmp_path), progress=False, report=False)
    other = write_class_folder(tmp_path / "other", CLASSES, 3, seed=5)
    with caplog.at_level("WARNING", logger="tudui"):
        assert tudui.evaluate(run.run_dir, split="val")["count"] == 6    # the run's own val split
        assert tudui.evaluate(run.run_dir, data=str(other))["count"] == 9
        assert not [r for r in caplog.records if "training images" in r.getMessage()]
        assert tudui.evaluate(run.run_dir, split="val", val_split=0.5)["count"] == 15
        said = caplog.records[-1].getMessage()
        assert re.search(r"--val-split 0.5 is not the share the weights were trained with \(0.2\): \d+ of the 15 "
                         r"images of this val split are training images", said), said
        assert tudui.evaluate(run.run_dir, data=str(data))["count"] == 30
        said = caplog.records[-1].getMessage()
        assert "is the data these weights were trained on: 24 of its 30 images are training images" in said


def test_eval_knows_the_runs_images_by_their_listing_moved_or_changed(tmp_path, caplog):
    flat = write_class_folder(tmp_path / "flat", CLASSES, 10)
    run = tudui.train(data=str(flat), epochs=1, project=str(tmp_path), progress=False, report=False)
    shutil.copytree(flat, tmp_path / "copied")
    caplog.clear()
    with caplog.at_level("WARNING", logger="tudui"):
        assert tudui.evaluate(run.run_dir)["count"] == 6 and not caplog.records      # the run's own val split
        tudui.evaluate(run.run_dir, data=str(tmp_path / "copied"))                # the same images elsewhere
        said = caplog.records[-1].getMessage()
        assert "copied is the data these weights were trained on: 24 of its 30 images are training images" in said
        caplog.clear()
        other = write_class_folder(tmp_path / "same-names", CLASSES, 10, seed=5)   # other images, same names
        tudui.evaluate(run.run_dir, data=str(other))
        assert not caplog.records
        for i in range(3):     # more images: the val split drawn again is not the one the run kept apart
            shutil.copy(flat / CLASSES[0] / "000.png", flat / CLASSES[0] / f"extra{i}.png")
        tudui.evaluate(run.run_dir)
    said = [r.getMessage() for r in caplog.records]
    assert any("have changed since these weights were trained on them, so the val split held out of them is "
               "not the run's own" in line for line in said), said


def test_evals_val_split_warning_names_the_share_training_used_not_its_setting(tmp_path, caplog):
    flat = write_class_folder(tmp_path / "flat", CLASSES, 10)
    auto = tudui.train(data=str(flat), epochs=1, project=str(tmp_path), progress=False, report=False)
    write_class_folder(tmp_path / "tt" / "train", CLASSES, 10)
    write_class_folder(tmp_path / "tt" / "test", CLASSES, 3, seed=4)
    none = tudui.train(data=str(tmp_path / "tt"), epochs=1, project=str(tmp_path), progress=False, report=False)
    with caplog.at_level("WARNING", logger="tudui"):
        tudui.evaluate(auto.run_dir, split="val", val_split=0.5)
        said = caplog.records[-1].getMessage()
        assert "is not the share the weights were trained with (0.2, the automatic one)" in said, said
        assert tudui.evaluate(none.run_dir, split="val", val_split=0.2)["count"] == 6
        said = caplog.records[-1].getMessage()
    assert said == ("--val-split 0.2: the weights were trained without a val split, so all 6 images of this one "
                    "are training images, which flatter the accuracy; --split test measures held-out ones")


def test_early_stopping_ends_a_run_that_stopped_improving_and_composes_with_resume(three_splits, tmp_path):
    settings = dict(data=str(three_splits), lr=1e-9, patience=2, progress=False, report=False)
    first = tudui.train(epochs=2, project=str(tmp_path), **settings)    # nothing learns: epoch 1 stays best
    assert len(first.history) == 2 and first.stopped_early is None
    resumed = tudui.train(resume=first.run_dir, epochs=10, progress=False)
    assert [row["epoch"] for row in resumed.history] == [3]            # 3 - 1 = 2 epochs without improvement
    assert resumed.best_epoch == 1 and resumed.val_accuracy == first.history[0]["val_accuracy"]
    assert resumed.stopped_early == ("stopped early after epoch 3: val_accuracy has not improved for 2 epochs "
                                     "(best in epoch 1)")
    with pytest.raises(TuduiError, match="--patience watches the val split"):
        tudui.train(data="digits", patience=3, project=str(tmp_path), progress=False)


def test_the_loss_can_be_what_picks_the_best_epoch(three_splits, tmp_path):
    result = tudui.train(data=str(three_splits), model="tudui_relu", epochs=3, lr=0.05, monitor="val_loss",
                         project=str(tmp_path), progress=False, report=False)
    losses = [row["val_loss"] for row in result.history]
    assert result.best_epoch == 1 + int(np.argmin(losses))
    from tudui.runner import summary
    assert f"the best by val_loss (val loss {min(losses):.4f})" in summary(result, "val_loss", has_val=True)


def test_imbalanced_classes_are_warned_about_and_class_weights_let_every_class_be_predicted(tmp_path, capsys):
    # 150 / 8 / 60 images of three classes (write_class_folder would draw them all as its class 0).
    root = tmp_path / "bugs"
    for k, (name, count) in enumerate((("ants", 150), ("bees", 8), ("wasps", 60))):
        rng = np.random.default_rng(k)
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(class_image(k, rng)).save(root / name / f"{i:03d}.png")
    tudui.train(data=str(root), epochs=1, project=str(tmp_path / "plain"), progress=True, report=False)
    captured = capsys.readouterr()
    assert "classes (train images): ants 120, bees 6, wasps 48" in captured.out
    assert "the classes are imbalanced (120 vs 6 training images)" in captured.err
    assert "--class-weights auto or --sampler balanced" in captured.err
    weighted = tudui.train(data=str(root), class_weights="auto", epochs=6, lr=0.05, project=str(tmp_path / "w"),
                           progress=False, report=False)
    predicted = np.asarray(tudui.evaluate(weighted.best_weights, split="all")["confusion"]).sum(axis=0)
    assert (predicted > 0).all(), predicted
    assert "balanced_accuracy" in weighted.final and "macro_f1" in weighted.final
    capsys.readouterr()
    tudui.train(data=str(root), class_weights="auto", sampler="balanced", epochs=1, project=str(tmp_path / "both"),
                progress=True, report=False)
    captured = capsys.readouterr()
    assert ("wasps 48; batches drawn evenly over the classes (--sampler balanced) and the loss weighted by "
            "1/class size (--class-weights auto)") in captured.out
    assert "together they correct twice" in captured.err and "imbalanced" not in captured.err


def test_eval_of_a_run_whose_data_moved_asks_for_data(tmp_path):
    data = write_class_folder(tmp_path / "flat", CLASSES, 5)
    run = tudui.train(data=str(data), epochs=1, project=str(tmp_path), progress=False, report=False)
    data.rename(tmp_path / "moved")
    with pytest.raises(TuduiError, match=r"was trained on .*flat, which is not there any more; pass --data"):
        tudui.evaluate(run.run_dir)
    assert tudui.evaluate(run.run_dir, data=str(tmp_path / "moved"), split="val")["count"] == 3
