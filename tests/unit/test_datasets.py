import tarfile
import urllib.error

import numpy as np
import pytest
from PIL import Image

from tudui.data import build_dataset, channel_stats
from tudui.data.folders import extract_archive
from tudui.data.images import load_image, to_rgb
from tudui.errors import TuduiError

from helpers import write_class_folder


def test_digits_is_a_fixed_stratified_split():
    spec = build_dataset("digits")
    assert (len(spec.train), len(spec.test)) == (1437, 360)
    assert spec.class_names == [str(d) for d in range(10)]
    counts = np.bincount(spec.test.labels)
    assert counts.min() >= 35 and counts.max() <= 37          # every digit ~20 % held out
    again = build_dataset("digits", seed=7)
    assert np.array_equal(spec.test.images, again.test.images)  # not moved by the seed
    image, label = spec.train[0]
    assert image.mode == "RGB" and image.size == (8, 8)


def test_synthetic_is_generated_and_repeatable():
    a, b = build_dataset("synthetic", seed=3), build_dataset("synthetic", seed=3)
    assert np.array_equal(a.train.images, b.train.images)
    assert len(a.class_names) == 4 and len(a.train) == 4 * 64


def test_image_folder_with_train_and_val(split_folder):
    spec = build_dataset(str(split_folder))
    assert spec.class_names == ["cat", "dog", "fox"]
    assert (len(spec.train), len(spec.val), spec.test) == (36, 12, None)
    image, label = spec.val[5]
    assert image.mode == "RGB" and label == 1


def test_image_folder_with_test_instead_of_val(split_folder):
    (split_folder / "val").rename(split_folder / "test")
    spec = build_dataset(str(split_folder))
    assert len(spec.test) == 12 and spec.val is None          # no val held out beside a test split


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_a_folder_with_train_val_and_test_keeps_all_three_apart(split_folder, val_name):
    write_class_folder(split_folder / "test", ["cat", "dog", "fox"], 5, seed=3)
    (split_folder / "val").rename(split_folder / val_name)
    spec = build_dataset(str(split_folder))
    assert (len(spec.train), len(spec.val), len(spec.test)) == (36, 12, 15)
    assert {p.parent.parent.name for p, _ in spec.test.samples} == {"test"}
    assert spec.sizes() == "36 train / 12 val / 15 test images"
    assert f"train/ and {val_name}/ and test/" in spec.source


def test_single_folder_is_split_by_class_and_seed(tmp_path):
    write_class_folder(tmp_path / "one", ["a", "b"], 10)
    first = build_dataset(str(tmp_path / "one"), val_split=0.2, seed=0)
    again = build_dataset(str(tmp_path / "one"), val_split=0.2, seed=0)
    other = build_dataset(str(tmp_path / "one"), val_split=0.2, seed=1)
    assert first.val.samples == again.val.samples != other.val.samples
    assert np.bincount(first.val.labels).tolist() == [2, 2] and first.test is None
    assert not set(first.val.samples) & set(first.train.samples)


def test_paired_image_and_label_folders(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for name in ("ants", "bees"):
            (tmp_path / split / f"{name}_image").mkdir(parents=True)
            (tmp_path / split / f"{name}_label").mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
                    tmp_path / split / f"{name}_image" / f"{i}.jpg")
                (tmp_path / split / f"{name}_label" / f"{i}.txt").write_text(name + "\n")
    spec = build_dataset(str(tmp_path))
    assert spec.class_names == ["ants", "bees"]
    assert (len(spec.train), len(spec.val)) == (12, 4)
    assert [label for _, label in spec.val.samples] == [0, 0, 1, 1]


def test_paired_layout_names_a_missing_label_file(tmp_path):
    for name in ("ants", "bees"):
        (tmp_path / f"{name}_image").mkdir()
        (tmp_path / f"{name}_label").mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / f"{name}_image" / "x.png")
    with pytest.raises(TuduiError, match="no label file"):
        build_dataset(str(tmp_path))
    (tmp_path / "ants_label" / "x.txt").write_bytes(b"ants\xff")
    (tmp_path / "bees_label" / "x.txt").write_text("bees")
    with pytest.raises(TuduiError, match=r"ants_label/x.txt is not UTF-8 text"):
        build_dataset(str(tmp_path))
    (tmp_path / "ants_label" / "x.txt").write_text("ants" * 1000)
    with pytest.raises(TuduiError, match=r"ants_label/x.txt is over 1,000 bytes; a label is one line"):
        build_dataset(str(tmp_path))


def test_tar_gz_archive_is_unpacked_once_and_reused(split_folder, tmp_path):
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(split_folder, arcname="myset")
    spec = build_dataset(str(archive))
    assert spec.class_names == ["cat", "dog", "fox"] and len(spec.train) == 36
    cache = tmp_path / "cache"
    first = extract_archive(archive, cache)
    marker = first / "marker"
    marker.write_text("kept")
    assert extract_archive(archive, cache) == first and marker.exists()


def test_test_split_with_unknown_class_is_refused(split_folder):
    write_class_folder(split_folder / "val", ["emu"], 1)
    with pytest.raises(TuduiError, match="emu"):
        build_dataset(str(split_folder))


@pytest.mark.parametrize("path, message", [
    ("/no/such/folder", r"data set not found: /no/such/folder \(expected a built-in one: digits, synthetic, "
                        r"cifar10, .*stl10; or a folder"),
    ("digit", r"data set not found: digit; did you mean digits\? \(expected a built-in one"),
    ("CIFAR-10", r"did you mean cifar10\?"),
])
def test_missing_data_is_one_error(path, message):
    with pytest.raises(TuduiError, match=message):
        build_dataset(path)


def test_a_folder_with_one_class_is_refused(tmp_path):
    write_class_folder(tmp_path / "solo", ["only"], 4)
    with pytest.raises(TuduiError, match="at least two classes, each a folder of its images .*; found one: 'only'$"):
        build_dataset(str(tmp_path / "solo"))


def test_evaluation_may_read_a_folder_of_one_class_but_not_of_none(tmp_path):
    from tudui.data.sources import read_dataset
    write_class_folder(tmp_path / "solo", ["only"], 4)
    spec = read_dataset(str(tmp_path / "solo"), min_classes=1)
    assert spec.class_names == ["only"] and len(spec.train) == 4
    (tmp_path / "none" / "empty").mkdir(parents=True)
    with pytest.raises(TuduiError, match="needs at least one class, each a folder of its images .*; found none"):
        read_dataset(str(tmp_path / "none"), min_classes=1)


def test_a_folder_of_images_without_class_folders_says_so(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(TuduiError, match=r"flat/CLASS/image.jpg\); found none \(images directly in it\?\)$"):
        build_dataset(str(tmp_path / "flat"))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "1"])
def test_every_mode_becomes_rgb(mode):
    image = Image.new("RGB", (10, 6), (200, 100, 50)).convert(mode)
    out = to_rgb(image)
    assert out.mode == "RGB" and out.size == (10, 6)


def test_16_bit_images_are_scaled_not_clamped():
    image = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert to_rgb(image).getpixel((0, 0))[0] == 127


def test_unreadable_image_is_named_once_with_the_reason(tmp_path):
    (tmp_path / "x.jpg").write_text("<html>")
    with pytest.raises(TuduiError, match="x.jpg: not in an image format tudui reads") as error:
        load_image(tmp_path / "x.jpg")
    assert str(error.value).count("x.jpg") == 1


def test_cifar10_offline_says_what_is_missing_and_how_to_run_offline(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    with pytest.raises(TuduiError) as err:
        build_dataset("cifar10", data_dir=str(tmp_path), download=True)
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and str(tmp_path) in message
    assert "--data digits" in message and "download failed" in message
    assert "\n" not in message


def test_the_course_s_dataset_folder_is_named_as_the_torchvision_set_it_holds(tmp_path):
    # the course: torchvision.datasets.CIFAR10(root="./dataset", download=True), its batches damaged here
    (tmp_path / "dataset" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "dataset" / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"cut short")
    with pytest.raises(TuduiError, match=r"found none .*; it holds torchvision's CIFAR-10 \(cifar-10-batches-py/\): "
                                         r"train on that with --data cifar10 --data-dir .*dataset$"):
        build_dataset(str(tmp_path / "dataset"))
    with pytest.raises(TuduiError, match=r"CIFAR-10 is not whole in .*cifar-10-batches-py \(files missing or "
                                         r"damaged\) and download turned off"):
        build_dataset("cifar10", data_dir=str(tmp_path / "dataset"), download=False)


def test_channel_stats_of_arrays_and_files(split_folder):
    spec = build_dataset(str(split_folder))
    mean, std = channel_stats(spec.train)
    assert len(mean) == 3 and all(0 <= m <= 1 for m in mean) and all(s > 0 for s in std)
    digits_mean, _ = channel_stats(build_dataset("digits").train)
    assert digits_mean[0] == digits_mean[1] == digits_mean[2]


# ---------------------------------------------------------------- folders as people have them

def test_a_messy_folder_keeps_its_images_and_counts_what_it_ignores(tmp_path):
    from photos import add_messy_files, write_photo_folder
    root = write_photo_folder(tmp_path / "photos", 3)
    expected_ignored = add_messy_files(root)
    spec = build_dataset(str(root), val_split=0.2)
    assert spec.class_names == ["ants", "bees"]                     # the empty "wasps" is not a class
    assert spec.ignored == expected_ignored
    assert len(spec.train) + len(spec.val) == 2 * (3 + 8)          # 3 photos + 8 odd files per class
    names = {path.name for path, _ in spec.train.samples + spec.val.samples}
    assert {"mode_CMYK.jpg", "mode_P_transparent.png", "mode_I16.png", "exif_rotated.jpg"} <= names
    for dataset in (spec.train, spec.val):
        for i in range(len(dataset)):
            assert dataset[i][0].mode == "RGB"


def test_exif_orientation_is_applied(tmp_path):
    from photos import write_rotated_jpeg
    upright = Image.new("RGB", (60, 20), (255, 255, 255))
    upright.paste((0, 0, 0), (0, 0, 10, 20))                        # black band on the left
    write_rotated_jpeg(tmp_path / "r.jpg", upright)
    with Image.open(tmp_path / "r.jpg") as stored:
        assert stored.size == (20, 60)
    image = load_image(tmp_path / "r.jpg")
    assert image.size == (60, 20)
    assert image.getpixel((3, 10))[0] < 40 and image.getpixel((55, 10))[0] > 215


def test_palette_transparency_becomes_white_and_16_bit_keeps_its_range():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([10, 20, 30] + [200, 0, 0] * 255)
    image.info["transparency"] = 0
    assert to_rgb(image).getpixel((0, 0)) == (255, 255, 255)
    ramp = Image.fromarray(np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369)   # 0 .. 65535
    values = np.asarray(to_rgb(ramp))[..., 0]
    assert values.min() == 0 and values.max() == 255 and len(np.unique(values)) == 16


def test_class_order_is_sorted_whatever_the_creation_order(tmp_path):
    for name in ("zebra", "bee", "Ant", "ant"):
        write_class_folder(tmp_path / "set", [name], 2)
    assert build_dataset(str(tmp_path / "set")).class_names == ["Ant", "ant", "bee", "zebra"]


def _write_csv(path, rows):
    path.write_text("\n".join(",".join(row) for row in rows) + "\n")


def test_csv_list_with_relative_paths_is_split_by_class(tmp_path):
    write_class_folder(tmp_path / "imgs", ["cat", "dog"], 5)
    rows = [["path", "label"]] + [[f"imgs/{c}/{i:03d}.png", c] for c in ("dog", "cat") for i in range(5)]
    rows.append(["imgs/readme.txt", "cat"])
    _write_csv(tmp_path / "list.csv", rows)
    spec = build_dataset(str(tmp_path / "list.csv"), val_split=0.2, seed=0)
    assert spec.class_names == ["cat", "dog"]
    assert (len(spec.train), len(spec.val)) == (8, 2) and spec.ignored == {"non-image file": 1}
    assert spec.val[0][0].mode == "RGB"


def test_csv_split_column_and_a_headerless_list(tmp_path):
    write_class_folder(tmp_path, ["a", "b"], 3)
    rows = [["label", "path", "split"]] + [[c, str(tmp_path / c / f"{i:03d}.png"), "val" if i == 0 else "train"]
                                            for c in ("a", "b") for i in range(3)]
    _write_csv(tmp_path / "split.csv", rows)
    spec = build_dataset(str(tmp_path / "split.csv"))
    assert (len(spec.train), len(spec.val), spec.test) == (4, 2, None)
    _write_csv(tmp_path / "plain.csv", [[f"{c}/{i:03d}.png", c] for c in ("a", "b") for i in range(3)])
    assert build_dataset(str(tmp_path / "plain.csv")).class_names == ["a", "b"]


def test_csv_naming_missing_files_is_one_error(tmp_path):
    _write_csv(tmp_path / "list.csv", [["path", "label"], ["gone.jpg", "a"], ["also_gone.jpg", "b"]])
    with pytest.raises(TuduiError, match=r"lists 2 files that do not exist, first .*gone\.jpg \(line 2\)"):
        build_dataset(str(tmp_path / "list.csv"))
    _write_csv(tmp_path / "wide.csv", [["path", "label"], ["a.jpg", "a", *[""] * 1000]])
    with pytest.raises(TuduiError, match=r"wide.csv has more than 64 cells in line 2"):
        build_dataset(str(tmp_path / "wide.csv"))
    _write_csv(tmp_path / "home.csv", [["path", "label"], ["~nobody_here_at_all/a.jpg", "a"]])
    with pytest.raises(TuduiError, match=r"home.csv line 2: '~nobody_here_at_all/a.jpg' names a home folder"):
        build_dataset(str(tmp_path / "home.csv"))


def test_channel_stats_of_photos_weigh_each_image_alike_whatever_its_size(tmp_path):
    from tudui.data.datasets import FileImages
    Image.new("RGB", (3000, 2000), (255, 255, 255)).save(tmp_path / "big.png")     # 6 MP of white
    Image.new("RGB", (40, 40), (0, 0, 0)).save(tmp_path / "small.png")            # a black thumbnail
    mean, std = channel_stats(FileImages([(tmp_path / "big.png", 0), (tmp_path / "small.png", 1)]))
    assert mean == pytest.approx([0.5] * 3, abs=0.01)       # at full size the white photo would give 0.9997
    assert std == pytest.approx([0.5] * 3, abs=0.01)


def test_trained_in_val_counts_training_images_a_larger_val_split_takes_in():
    from tudui.data.datasets import ArrayImages, DatasetSpec
    from tudui.data.splits import hold_out_val, trained_in_val
    labels = np.repeat(np.arange(2), 20)
    spec = DatasetSpec(train=ArrayImages(np.zeros((40, 4, 4), np.uint8), labels), class_names=["a", "b"],
                       kind="synthetic", source="test", in_memory=True)
    seen, held = trained_in_val(spec, 0.2, 0.5, seed=0)
    assert held == len(hold_out_val(spec, 0.5, 0).val) == 20 and seen == 20 - 8   # all but the old 8 val images
    assert trained_in_val(spec, 0.2, 0.2, seed=0) == (0, 8)
    with_val = DatasetSpec(train=spec.train, val=spec.train, class_names=["a", "b"], kind="synthetic",
                           source="test", in_memory=True)
    assert trained_in_val(with_val, 0.2, 0.5, seed=0) == (0, 0)   # its own val split: nothing held out


def test_only_the_formats_of_image_files_are_decoded_whatever_a_file_is_called(tmp_path):
    from tudui.data.validate import check_image
    eps = tmp_path / "holiday.png"   # PostScript, which Pillow would hand to Ghostscript
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto showpage\n")
    with pytest.raises(TuduiError, match="not in an image format tudui reads"):
        load_image(eps)
    assert check_image(eps) is not None
    Image.new("RGB", (4, 4)).save(tmp_path / "sgi.png", format="SGI")   # a format Pillow reads, not for data sets
    with pytest.raises(TuduiError, match="not in an image format tudui reads"):
        load_image(tmp_path / "sgi.png")
    for suffix in (".webp", ".tif", ".gif", ".bmp", ".ppm", ".jpg"):
        Image.new("RGB", (4, 4)).save(tmp_path / f"ok{suffix}")
        assert load_image(tmp_path / f"ok{suffix}").size == (4, 4)


def test_split_sizes_say_image_for_one_and_images_for_more():
    from tudui.data.datasets import ArrayImages, DatasetSpec
    one = ArrayImages(np.zeros((1, 4, 4), np.uint8), np.zeros(1))
    two = ArrayImages(np.zeros((2, 4, 4), np.uint8), np.zeros(2))
    spec = DatasetSpec(train=one, class_names=["a"], kind="folder", source="test", in_memory=True)
    assert spec.sizes() == "1 train image"
    spec = DatasetSpec(train=two, test=one, class_names=["a"], kind="folder", source="test", in_memory=True)
    assert spec.sizes() == "2 train / 1 test images"


def test_a_val_split_asked_of_a_folder_with_its_own_val_is_said_to_be_unused(tmp_path, caplog):
    from tudui.data import build_dataset
    for split in ("train", "val"):
        write_class_folder(tmp_path / "data" / split, ["a", "b"], 4)
    with caplog.at_level("WARNING", logger="tudui.data.sources"):
        spec = build_dataset(str(tmp_path / "data"), val_split=0.2)
    assert len(spec.val) == 8 and "--val-split 0.2 is not used" in caplog.text and "val split of its own" in caplog.text
