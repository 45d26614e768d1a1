"""Unreadable images in a folder: skipped with a warning and counted, or the run stops."""
from __future__ import annotations

import logging

import pytest

import tudui
from tudui.errors import TuduiError


def test_training_skips_unreadable_images_naming_each_and_counts_them(folder_with_bad_images, tmp_path, caplog):
    folder, names = folder_with_bad_images
    with caplog.at_level(logging.WARNING):
        result = tudui.train(data=str(folder), epochs=1, batch_size=16, max_bad_share=0.1,
                             project=str(tmp_path / "runs"), progress=False, report=False)
    warned = "\n".join(record.getMessage() for record in caplog.records)
    for name in names:
        assert f"skipping unreadable image {folder}" in warned and name in warned
    assert "4 unreadable images were skipped" in warned
    assert result.final is not None and result.final_split == "val"


def test_too_many_unreadable_images_stop_the_run_with_the_list(folder_with_bad_images, tmp_path):
    folder, names = folder_with_bad_images
    with pytest.raises(TuduiError, match=r"^4 of 104 images are unreadable \(3.8%, more than --max-bad-share 0.01; "
                                         r"--max-bad-share 0.039 would skip them\): ") as error:
        tudui.train(data=str(folder), epochs=1, project=str(tmp_path / "runs"), progress=False)
    assert all(name in str(error.value) for name in names)   # every split's bad files in the one message
    # the value it names is enough, whichever split each bad file lands in
    assert tudui.train(data=str(folder), epochs=1, max_bad_share=0.039, project=str(tmp_path / "runs"),
                       progress=False, report=False).final is not None


def test_one_unreadable_image_in_a_small_folder_is_skipped_unless_the_limit_is_zero(tmp_path, caplog):
    from helpers import write_class_folder
    folder = write_class_folder(tmp_path / "small", ["a", "b"], 10)
    (folder / "a" / "notes.jpg").write_text("not a picture")     # 1 of 21: above 1 %, but alone
    with caplog.at_level(logging.WARNING):
        tudui.train(data=str(folder), epochs=1, project=str(tmp_path / "runs"), progress=False, report=False)
    assert "skipping unreadable image" in caplog.text and "notes.jpg" in caplog.text
    with pytest.raises(TuduiError, match=r"^1 of 21 images are unreadable .*more than --max-bad-share 0;"):
        tudui.train(data=str(folder), epochs=1, max_bad_share=0, project=str(tmp_path / "runs"), progress=False)


def test_eval_skips_the_unreadable_images_that_training_skipped(folder_with_bad_images, tmp_path, caplog):
    folder, names = folder_with_bad_images
    result = tudui.train(data=str(folder), epochs=1, batch_size=16, max_bad_share=0.1,
                         project=str(tmp_path / "runs"), progress=False, report=False)
    counts = {}
    for split, data in (("train", None), ("val", None), ("auto", str(folder))):   # auto, a folder: all of it
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            counts[split] = tudui.evaluate(result.run_dir, split=split, data=data)["count"]
        warned = "\n".join(record.getMessage() for record in caplog.records)
    assert all(name in warned for name in names)    # the whole folder: each broken file named
    assert counts["train"] + counts["val"] == counts["auto"] == 100   # the 100 good images, each once


def test_eval_takes_its_own_max_bad_share_and_the_weights_one_by_default(folder_with_bad_images, tmp_path):
    folder, _ = folder_with_bad_images
    result = tudui.train(data=str(folder), epochs=1, batch_size=16, max_bad_share=0.1,
                         project=str(tmp_path / "runs"), progress=False, report=False)
    assert tudui.evaluate(result.run_dir, data=str(folder))["count"] == 100          # the run's 0.1
    with pytest.raises(TuduiError, match=r"--max-bad-share 0.039 would skip them"):
        tudui.evaluate(result.run_dir, data=str(folder), max_bad_share=0.01)
    assert tudui.evaluate(result.run_dir, data=str(folder), max_bad_share=0.039)["count"] == 100
