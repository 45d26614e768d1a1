"""CSV lists: csv_dataset(csv_path), then the val split held out as build_dataset does, on files the test writes."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tudui.data.csvlist import csv_dataset
from tudui.data.splits import hold_out_val
from tudui.errors import TuduiError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUDUI_CACHE", str(tmp_path / "tudui-cache"))


def image(path: Path, value: int = 0) -> Path:
    """A 4x4 PNG of one grey value (its value tells images apart after loading)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)
    return path


def read(csv_path, val_split: float = -1, seed: int = 0):
    """The list as build_dataset gives it: its own splits, and val held out of train where it has none."""
    return hold_out_val(csv_dataset(csv_path), val_split, seed)


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def names(split) -> list[str]:
    return [p.name for p, _ in split.samples]


def labelled(spec, split) -> dict[str, str]:
    """file name -> class name, for one split."""
    return {p.name: spec.class_names[label] for p, label in split.samples}


def test_a_header_in_any_order_and_case_names_the_columns(tmp_path):
    for name in ("a1", "a2", "b1", "b2"):
        image(tmp_path / f"{name}.png")
    write_csv(tmp_path / "list.csv", "Split,LABEL,Path\n"
                                     "train,ant,a1.png\nval,ant,a2.png\ntrain,bee,b1.png\ntest,bee,b2.png\n")
    spec = read(tmp_path / "list.csv", 0.5, 0)
    assert spec.class_names == ["ant", "bee"]
    assert labelled(spec, spec.train) == {"a1.png": "ant", "b1.png": "bee"}
    assert labelled(spec, spec.val) == {"a2.png": "ant"} and labelled(spec, spec.test) == {"b2.png": "bee"}
    assert spec.ignored == {}


def test_without_a_header_the_first_two_columns_are_path_and_label_and_the_rest_is_ignored(tmp_path):
    for name in ("a1", "a2", "b1", "b2"):
        image(tmp_path / f"{name}.png")
    write_csv(tmp_path / "list.csv", "a1.png,ant,big\na2.png,ant,small\nb1.png,bee,big\nb2.png,bee,\n")
    spec = read(tmp_path / "list.csv", 0.5, 0)
    assert spec.class_names == ["ant", "bee"]
    assert len(spec.train) == 2 and len(spec.val) == 2          # val held out by class, one of each
    assert spec.test is None and sorted(labelled(spec, spec.val).values()) == ["ant", "bee"]
    assert spec.ignored == {}                                  # the first row is data, not a header


@pytest.mark.parametrize("text, said", [
    # a split column tudui would not read: its test rows would be trained on without a word
    ("a1.png,ant,train\na2.png,ant,test\nb1.png,bee,train\nb2.png,bee,test\n",
     "column 3 of the CSV list .* holds only train, val and test, .*: add a header row path,label,split"),
    ("path,label,subset\na1.png,ant,train\na2.png,ant,test\nb1.png,bee,train\nb2.png,bee,Valid\n",
     "column 'subset' of the CSV list .* holds only train, val and test, .*: name it split to split"),
    # a header whose names tudui does not know is not an image row to skip
    ("file,class,split\na1.png,ant,train\na2.png,ant,test\nb1.png,bee,train\nb2.png,bee,test\n",
     r"the first row of the CSV list .* looks like a header \('file,class,split'\) but names no path and label"),
])
def test_a_split_column_tudui_would_not_read_is_refused_not_trained_on(tmp_path, text, said):
    for name in ("a1", "a2", "b1", "b2"):
        image(tmp_path / f"{name}.png")
    with pytest.raises(TuduiError, match=said):
        read(write_csv(tmp_path / "list.csv", text))


def test_a_utf8_byte_order_mark_does_not_hide_the_header(tmp_path):
    for name in ("x1", "x2", "y1", "y2"):
        image(tmp_path / f"{name}.png")
    write_csv(tmp_path / "list.csv", "\ufeffpath,label\nx1.png,café\nx2.png,café\ny1.png,thé\ny2.png,thé\n")
    spec = read(tmp_path / "list.csv", 0.5, 0)
    assert spec.class_names == ["café", "thé"]
    assert spec.ignored == {}                     # "\ufeffpath" was not read as a (non-image) data row
    assert len(spec.train) + len(spec.val) == 4


def test_relative_paths_are_resolved_against_the_csv_folder_not_the_working_directory(tmp_path, monkeypatch):
    a = image(tmp_path / "images" / "a" / "1.png", 10)
    b = image(tmp_path / "images" / "b" / "1.png", 20)
    b2 = image(tmp_path / "images" / "b" / "2.png", 30)
    write_csv(tmp_path / "lists" / "deep" / "list.csv", "path,label,split\n../../images/a/1.png,a,train\n"
              "../../images/b/1.png,b,val\n../../images/b/2.png,b,train\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = read(Path("..") / "lists" / "deep" / "list.csv")
    assert [p.resolve() for p, _ in spec.train.samples] == [a.resolve(), b2.resolve()]
    assert [p.resolve() for p, _ in spec.val.samples] == [b.resolve()]
    assert int(np.asarray(spec.val[0][0])[0, 0, 0]) == 20     # the file really opens from there


def test_absolute_and_home_relative_paths_are_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    a = image(tmp_path / "anywhere" / "a.png")
    b = image(tmp_path / "home" / "pics" / "b.png")
    write_csv(tmp_path / "lists" / "list.csv", f"path,label,split\n{a},a,train\n~/pics/b.png,a,test\n"
              f"{a.parent / 'c.png'},b,train\n")
    image(tmp_path / "anywhere" / "c.png")
    spec = read(tmp_path / "lists" / "list.csv")
    assert [p for p, _ in spec.train.samples] == [a, a.parent / "c.png"]
    assert [p.resolve() for p, _ in spec.test.samples] == [b.resolve()]


@pytest.mark.parametrize("value, split", [("val", "val"), ("valid", "val"), ("validation", "val"), ("VAL", "val"),
                                          (" Validation ", "val"), ("test", "test"), ("Test", "test")])
def test_every_name_of_a_split_puts_the_row_in_that_split_and_val_and_test_stay_apart(tmp_path, value, split):
    for name in ("a1", "a2", "b1", "b2", "b3"):
        image(tmp_path / f"{name}.png")
    write_csv(tmp_path / "list.csv", f"path,label,split\na1.png,a,Train\na2.png,a,{value}\nb1.png,b,TRAIN\n"
                                     f"b2.png,b,test\nb3.png,b,val\n")
    spec = read(tmp_path / "list.csv")
    assert sorted(names(spec.train)) == ["a1.png", "b1.png"]
    expected = {"val": ["b3.png"], "test": ["b2.png"]}
    expected[split] = sorted(expected[split] + ["a2.png"])
    assert sorted(names(spec.val)) == expected["val"] and sorted(names(spec.test)) == expected["test"]


def test_a_bad_split_value_names_its_line(tmp_path):
    for name in ("a1", "a2", "b1"):
        image(tmp_path / f"{name}.png")
    write_csv(tmp_path / "list.csv", "path,label,split\na1.png,a,train\n\nb1.png,b,train\na2.png,a,dev\n")
    with pytest.raises(TuduiError, match=r"line 5: split must be train, val or test, got 'dev'"):
        read(tmp_path / "list.csv")


def test_a_short_row_names_its_line_and_what_it_expected(tmp_path):
    image(tmp_path / "a.png")
    write_csv(tmp_path / "list.csv", "path,label\na.png,a\nb.png\n")
    with pytest.raises(TuduiError, match=r"line 3: expected path,label, got 'b.png'"):
        read(tmp_path / "list.csv")


def test_an_empty_label_is_refused_with_its_line(tmp_path):
    image(tmp_path / "a.png")
    write_csv(tmp_path / "list.csv", "path,label,split\na.png,,train\n")
    with pytest.raises(TuduiError, match=r"line 2: expected path,label,split"):
        read(tmp_path / "list.csv")


def test_missing_files_are_counted_and_the_first_is_named_with_its_line(tmp_path):
    image(tmp_path / "here.png")
    write_csv(tmp_path / "list.csv", "path,label\nhere.png,a\n\n\nsub/gone.png,b\nalso-gone.jpg,b\n")
    with pytest.raises(TuduiError) as error:
        read(tmp_path / "list.csv")
    message = str(error.value)
    assert "lists 2 files that do not exist" in message
    assert "/sub/gone.png (line 5)" in message          # the path's end: where it looked, for which file
    assert "relative to the CSV file's folder" in message


def test_rows_that_are_not_images_are_counted_as_ignored_even_when_they_do_not_exist(tmp_path):
    for name in ("a1", "a2", "b1", "b2"):
        image(tmp_path / f"{name}.PNG")
    (tmp_path / "notes.txt").write_text("not a picture")
    write_csv(tmp_path / "list.csv", "path,label\na1.PNG,a\na2.PNG,a\nb1.PNG,b\nb2.PNG,b\n"
                                     "notes.txt,a\nlabels.json,b\nnothing-here.doc,b\n")
    spec = read(tmp_path / "list.csv", 0.5, 0)
    assert spec.ignored == {"non-image file": 3}
    assert sorted(names(spec.train) + names(spec.val)) == ["a1.PNG", "a2.PNG", "b1.PNG", "b2.PNG"]


@pytest.mark.parametrize("labels", [["a", "a", "a"], ["only", "only"]])
def test_fewer_than_two_labels_is_refused(tmp_path, labels):
    rows = "".join(f"{i}.png,{label}\n" for i, label in enumerate(labels))
    for i in range(len(labels)):
        image(tmp_path / f"{i}.png")
    write_csv(tmp_path / "list.csv", "path,label\n" + rows)
    with pytest.raises(TuduiError, match=r"needs at least two labels, found 1"):
        read(tmp_path / "list.csv")


def test_labels_of_only_non_image_rows_do_not_count_as_classes(tmp_path):
    image(tmp_path / "a1.png")
    image(tmp_path / "a2.png")
    write_csv(tmp_path / "list.csv", "path,label\na1.png,a\na2.png,a\nreadme.txt,b\n")
    with pytest.raises(TuduiError, match=r"needs at least two labels, found 1"):
        read(tmp_path / "list.csv")


@pytest.mark.parametrize("text", ["", "\n\n  \n", " , \n"])
def test_an_empty_list_is_refused(tmp_path, text):
    write_csv(tmp_path / "list.csv", text)
    with pytest.raises(TuduiError, match=r"is empty"):
        read(tmp_path / "list.csv")


def test_a_list_that_is_not_there_is_data_set_not_found(tmp_path):
    with pytest.raises(TuduiError, match=r"data set not found: .*nothing\.csv"):
        read(tmp_path / "nothing.csv")


def test_a_list_that_is_not_utf8_is_one_clear_error(tmp_path):
    image(tmp_path / "a.png")
    write_csv(tmp_path / "list.csv", "path,label\na.png,a\n", encoding="utf-16")
    with pytest.raises(TuduiError, match=r"cannot read the CSV list"):
        read(tmp_path / "list.csv")


@pytest.mark.parametrize(("splits", "message"), [
    (["train", "train", "train", "train"], "has no val or test split to measure on; hold out a share of it"),
    (["val", "test", "valid", "test"], "has no images in its train split")])
def test_a_split_column_that_leaves_nothing_to_train_or_measure_on_is_refused(tmp_path, splits, message):
    rows = "".join(f"{name}.png,{name[0]},{split}\n" for name, split in zip(("a1", "a2", "b1", "b2"), splits))
    for name in ("a1", "a2", "b1", "b2"):
        image(tmp_path / f"{name}.png")
    write_csv(tmp_path / "list.csv", "path,label,split\n" + rows)
    with pytest.raises(TuduiError, match=message):
        read(tmp_path / "list.csv", 0, 0)        # --val-split 0: no val held out either
    if splits[0] == "train":
        assert len(read(tmp_path / "list.csv").val) == 2   # the automatic val split: 0.2 of each class


def test_quoted_paths_with_commas_and_spaces_are_read_whole(tmp_path):
    for name in ("one, two.png", "three.png", "four, five.png", "six.png"):
        image(tmp_path / name)
    write_csv(tmp_path / "list.csv", 'path,label,split\n"one, two.png",x,train\n  three.png  ,  y  , val \n'
                                     '"four, five.png",y,train\nsix.png,x,val\n')
    spec = read(tmp_path / "list.csv", 0.5, 0)
    assert spec.class_names == ["x", "y"]
    # Rows keep the list's order within a split; cells lose their surrounding spaces.
    assert [(p.name, spec.class_names[k]) for p, k in spec.train.samples] == [("one, two.png", "x"),
                                                                             ("four, five.png", "y")]
    assert [(p.name, spec.class_names[k]) for p, k in spec.val.samples] == [("three.png", "y"), ("six.png", "x")]


def class_list(tmp_path: Path, per_class: int = 8) -> Path:
    """A headerless list of three classes, interleaved, each image a distinct grey value."""
    rows = []
    for i in range(per_class):
        for k, name in enumerate(("cat", "dog", "eel")):
            image(tmp_path / name / f"{i}.png", 10 * k + i)
            rows.append(f"{name}/{i}.png,{name}\n")
    return write_csv(tmp_path / "list.csv", "".join(rows))


def test_without_a_split_column_every_class_is_held_out_by_val_split(tmp_path):
    spec = read(class_list(tmp_path), 0.25, 0)
    assert spec.class_names == ["cat", "dog", "eel"] and spec.test is None
    for split, share in ((spec.val, 2), (spec.train, 6)):       # 25 % of 8 per class
        assert sorted(np.bincount(split.labels, minlength=3).tolist()) == [share] * 3
    train, test = set(spec.train.samples), set(spec.val.samples)
    assert not train & test and len(train | test) == 24
    assert all(p.parent.name == spec.class_names[label] for p, label in train | test)   # labels follow files


def test_the_same_seed_gives_the_same_split_and_other_seeds_other_ones(tmp_path):
    csv_path = class_list(tmp_path)
    first = read(csv_path, 0.25, 7)
    again = read(csv_path, 0.25, 7)
    assert first.val.samples == again.val.samples and first.train.samples == again.train.samples
    # 28 ways to hold out 2 of 8 per class: ten seeds all picking the same ones is not chance.
    held_out = {tuple(read(csv_path, 0.25, seed).val.samples) for seed in range(10)}
    assert len(held_out) > 1


def test_every_class_keeps_an_image_on_each_side_even_with_a_tiny_val_split(tmp_path):
    spec = read(class_list(tmp_path, per_class=3), 0.01, 0)
    assert np.bincount(spec.val.labels, minlength=3).tolist() == [1, 1, 1]
    assert np.bincount(spec.train.labels, minlength=3).tolist() == [2, 2, 2]


def test_the_spec_is_a_file_based_folder_kind_data_set(tmp_path):
    spec = read(class_list(tmp_path, per_class=2), 0.5, 0)
    assert spec.kind == "folder" and spec.in_memory is False
    assert str(tmp_path / "list.csv") in spec.source
    image_, label = spec.train[0]
    assert image_.mode == "RGB" and image_.size == (4, 4) and label in (0, 1, 2)


def test_an_error_names_the_line_its_row_starts_on_after_a_cell_that_spans_lines(tmp_path):
    image(tmp_path / "a1.png")
    image(tmp_path / "a2.png")
    write_csv(tmp_path / "list.csv", 'path,label\na1.png,"a\nnote on two lines"\na2.png,a\nbad.png\n')
    with pytest.raises(TuduiError, match=r"line 5: expected path,label"):
        read(tmp_path / "list.csv")


@pytest.mark.parametrize("second", ["a1.png,b", "./a1.png,a", "sub/../a1.png,a,"])
def test_an_image_listed_twice_is_refused_naming_both_lines(tmp_path, second):
    for name in ("a1.png", "a2.png", "b1.png"):
        image(tmp_path / name)
    (tmp_path / "sub").mkdir()
    write_csv(tmp_path / "list.csv", f"a1.png,a\na2.png,a\nb1.png,b\n{second}\n")
    with pytest.raises(TuduiError, match=r"lists .*a1.png twice \(lines 1 and 4\)"):
        read(tmp_path / "list.csv")


def test_a_list_longer_than_any_real_data_set_is_refused_while_it_is_read(tmp_path, monkeypatch):
    import tudui.data.csvlist as csvlist
    monkeypatch.setattr(csvlist, "MAX_ROWS", 5)
    write_csv(tmp_path / "list.csv", "".join(f"x{i}.png,a\n" for i in range(50)))
    with pytest.raises(TuduiError, match="has more than 5 rows"):
        read(tmp_path / "list.csv")


def test_a_label_without_train_rows_is_refused_with_its_line(tmp_path):
    for i, name in enumerate(["a.png", "b.png", "c.png", "d.png"]):
        image(tmp_path / name, i)
    listing = write_csv(tmp_path / "list.csv",
                        "path,label,split\na.png,blue,train\nb.png,red,train\nc.png,red,test\nd.png,bleu,test\n")
    with pytest.raises(TuduiError, match=r"has labels that no train row has: 'bleu' \(line 5, test\); the model "
                                         r"could never predict them"):
        csv_dataset(listing)
    assert csv_dataset(listing, min_classes=1).class_names == ["bleu", "blue", "red"]   # eval: measured as named


def test_a_named_split_column_beside_another_of_split_names_is_read(tmp_path):
    for name in ("a1", "a2", "b1", "b2"):
        image(tmp_path / f"{name}.png")
    spec = read(write_csv(tmp_path / "list.csv", "path,label,split,original_split\na1.png,ant,train,test\n"
                          "a2.png,ant,test,train\nb1.png,bee,train,train\nb2.png,bee,test,test\n"))
    assert len(spec.train) == 2 and len(spec.test) == 2       # by the column named split
