"""Folders and archives as data sets: unpacking safely, and folders that cannot be read."""
import os
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

import tudui.data.folders as folders
from tudui.data import build_dataset
from tudui.data.folders import extract_archive
from tudui.errors import TuduiError

from helpers import write_class_folder


def pack(folder: Path, path: Path) -> Path:
    """folder packed as path (.zip or a .tar of any compression), under folder's own name."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
            for file in sorted(folder.rglob("*")):
                zipped.write(file, Path(folder.name) / file.relative_to(folder))
    else:
        with tarfile.open(path, "w:" + {".gz": "gz", ".bz2": "bz2", ".xz": "xz"}.get(path.suffix, "")) as tar:
            tar.add(folder, arcname=folder.name)
    return path


@pytest.fixture(params=["set.tar.gz", "set.zip", "set.tar.bz2", "set.tar.xz"])
def archive(tmp_path, request):
    write_class_folder(tmp_path / "src" / "set", ["cat", "dog"], 6)
    return pack(tmp_path / "src" / "set", tmp_path / request.param)


def test_an_archive_of_any_kind_is_read_as_its_folder_and_macos_leftovers_are_skipped(archive, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setenv("TUDUI_CACHE", str(tmp_path / "cache"))
    spec = build_dataset(str(archive), "unused", 0.25, 0, False)
    assert spec.class_names == ["cat", "dog"] and len(spec.train) + len(spec.val) == 12
    assert spec.source == f"{archive} (one folder of class folders, unpacked in the cache)"   # not the copy
    # a zip made on a Mac: __MACOSX/ beside the data, ._ files beside each image
    write_class_folder(tmp_path / "mac" / "set", ["cat", "dog"], 3)
    (tmp_path / "mac" / "set" / "cat" / "._000.png").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "mac" / "__MACOSX" / "set").mkdir(parents=True)
    zipped = tmp_path / "mac.zip"
    with zipfile.ZipFile(zipped, "w") as out:
        for file in sorted((tmp_path / "mac").rglob("*")):
            out.write(file, file.relative_to(tmp_path / "mac"))
    spec = build_dataset(str(zipped), "unused", 0.5, 0, False)
    assert spec.class_names == ["cat", "dog"] and len(spec.train) + len(spec.val) == 6


def test_a_bad_file_in_an_archive_is_named_by_the_archive_and_its_member(tmp_path, monkeypatch, caplog):
    from tudui.data.validate import drop_unreadable
    monkeypatch.setenv("TUDUI_CACHE", str(tmp_path / "cache"))
    write_class_folder(tmp_path / "src" / "set", ["cat", "dog"], 30)
    (tmp_path / "src" / "set" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    archive = pack(tmp_path / "src" / "set", tmp_path / "set.zip")
    spec = build_dataset(str(archive), "unused", 0.5, 0, False)
    with caplog.at_level("WARNING", logger="tudui"):
        kept, skipped = drop_unreadable(spec, 0.05)
    assert len(kept.train) + len(kept.val) == 60 and len(skipped) == 1
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"skipping unreadable image {archive}: set/dog/broken.jpg:" in warned
    assert "cache" not in warned
    with pytest.raises(TuduiError, match=f"{archive}: set/dog/broken.jpg \\("):
        drop_unreadable(spec, 0)


@pytest.mark.parametrize("name", ["../evil.png", "/etc/evil.png", "a/../../evil.png", "C:/evil.png"])
def test_a_zip_member_outside_its_folder_is_refused_and_nothing_lands_there(tmp_path, name):
    zipped = tmp_path / "bad.zip"
    with zipfile.ZipFile(zipped, "w") as out:
        out.writestr("set/cat/1.png", b"x")
        out.writestr(name, b"x")
    with pytest.raises(TuduiError, match="has a member outside its folder"):
        extract_archive(zipped, tmp_path / "deep" / "cache")
    assert not (tmp_path / "deep" / "evil.png").exists() and not (tmp_path / "evil.png").exists()
    assert list((tmp_path / "deep" / "cache").iterdir()) == []


def test_a_damaged_zip_is_one_clear_error(tmp_path):
    (tmp_path / "cut.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(TuduiError, match="cannot unpack .*cut.zip"):
        extract_archive(tmp_path / "cut.zip", tmp_path / "cache")
    (tmp_path / "not.tar.gz").write_bytes(b"not a gzip at all")   # tarfile's reason ends in ":", its list cut off
    with pytest.raises(TuduiError, match=r"cannot unpack .*not.tar.gz: file could not be opened successfully; the "
                                         r"file is damaged"):
        extract_archive(tmp_path / "not.tar.gz", tmp_path / "cache")


def leftovers(cache):
    return sorted(p.name for p in cache.iterdir() if ".partial-" in p.name)


def test_an_archive_over_the_file_cap_stops_and_leaves_nothing_behind(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(folders, "MAX_UNPACKED_FILES", 5)
    with pytest.raises(TuduiError, match="holds more than 5 files; unpack it yourself"):
        extract_archive(archive, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_an_archive_over_the_byte_cap_stops_and_leaves_nothing_behind(archive, tmp_path, monkeypatch):
    monkeypatch.setattr(folders, "MAX_UNPACKED_BYTES", 2000)      # a few of its 32-px PNGs
    with pytest.raises(TuduiError, match="unpacks to more than 2,000 bytes"):
        extract_archive(archive, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(folders, "MAX_UNPACKED_BYTES", 1 << 40)   # the disk is what is short
    monkeypatch.setattr(folders.shutil, "disk_usage", lambda path: folders.shutil._ntuple_diskusage(
        total=1 << 40, used=(1 << 40) - folders.DISK_MARGIN - 500, free=folders.DISK_MARGIN + 500))
    with pytest.raises(TuduiError, match=r"does not fit in the cache: its disk has .* free and tudui leaves .* of a "
                                         r"disk free; free some space, or point TUDUI_CACHE at another disk"):
        extract_archive(archive, tmp_path / "cache")


def test_two_unpackings_of_one_archive_at_once_both_get_the_whole_copy(archive, tmp_path):
    cache, results, errors = tmp_path / "cache", [], []

    def unpack():
        try:
            results.append(extract_archive(archive, cache))
        except Exception as e:   # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=unpack) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert len(list(results[0].rglob("*.png"))) == 12 and leftovers(cache) == []


def test_half_unpacked_folders_of_dead_processes_are_cleared(archive, tmp_path):
    cache = tmp_path / "cache"
    (cache / ".set-abc.partial-999999999-x").mkdir(parents=True)          # no such process
    (cache / f".set-abc.partial-{os.getpid()}-y").mkdir()                  # this one is alive
    extract_archive(archive, cache)
    assert leftovers(cache) == [f".set-abc.partial-{os.getpid()}-y"]


def test_a_path_that_is_neither_folder_nor_file_is_one_line():
    with pytest.raises(TuduiError, match="/dev/null is neither a folder nor a file"):
        build_dataset("/dev/null")


def test_a_class_folder_that_cannot_be_listed_stops_the_run_instead_of_vanishing(tmp_path, monkeypatch):
    root = write_class_folder(tmp_path / "photos", ["cat", "dog", "fox"], 4)
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(root / "dog"):
            raise PermissionError(13, "Permission denied", str(root / "dog"))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(TuduiError, match=r"cannot read .*photos/dog: Permission denied"):
        build_dataset(str(root))


def test_the_scan_lists_what_a_walk_lists_in_the_same_order(tmp_path):
    """One os.scandir per folder instead of a call per file: the same files, counts and order as
    os.walk with Path sorting (names that sort differently as strings and as paths included)."""
    from collections import Counter
    root = tmp_path / "cls"
    for rel in ["a-b/1.png", "a/b/2.png", "a/3.PNG", "b.png", ".hidden/4.png", "sub/.x.png", "notes.txt",
                "deep/er/5.jpg"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "6.png").write_bytes(b"x")
    os.symlink(outside, root / "linked_folder")          # not followed, as os.walk does
    os.symlink(outside / "6.png", root / "linked.png")   # a linked file counts
    ignored = Counter()
    found = folders._image_files(root, ignored)
    walked = sorted(Path(top, n) for top, _, names in os.walk(root) for n in names)
    expected = [p for p in walked if not any(part.startswith(".") for part in p.relative_to(root).parts)
                and p.suffix.lower() in folders.IMAGE_EXTENSIONS]
    assert found == expected and len(found) == 6
    assert ignored == {"hidden file": 2, "non-image file": 1}


@pytest.mark.parametrize("name", ["set.tar.gz", "set.zip", "set.tar.xz"])   # compressed: checked
def test_an_archive_damaged_in_the_middle_is_one_clear_error_and_nothing_is_kept(tmp_path, name):
    write_class_folder(tmp_path / "src" / "set", ["cat", "dog"], 30, seed=3)
    path = pack(tmp_path / "src" / "set", tmp_path / name)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 300] = bytes(b ^ 0x5A for b in data[middle:middle + 300])
    path.write_bytes(bytes(data))
    with pytest.raises(TuduiError, match=f"cannot unpack {path}: ") as error:
        extract_archive(path, tmp_path / "cache")
    assert "\n" not in str(error.value)
    assert [p for p in (tmp_path / "cache").iterdir()] == []   # no half copy taken for the whole


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_a_tar_with_a_link_is_refused_before_anything_of_it_is_written(tmp_path, kind):
    import io
    target = tmp_path / "victim.txt"
    target.write_text("the user's own file")
    archive = tmp_path / "photos.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("set/cat/escape")
        link.type, link.linkname = kind, str(target) if kind == tarfile.SYMTYPE else "set/cat/0.png"
        tar.addfile(link)
        data = tarfile.TarInfo("set/cat/escape")   # written through the link, were it made
        data.size = 6
        tar.addfile(data, io.BytesIO(b"pwned!"))
    with pytest.raises(TuduiError, match=r"photos.tar.gz holds a link \(set/cat/escape\); .*unpack it yourself"):
        extract_archive(archive, tmp_path / "cache")
    assert target.read_text() == "the user's own file"
    assert not list((tmp_path / "cache").rglob("escape"))


def test_what_follows_a_tar_s_members_is_read_only_so_far(tmp_path, monkeypatch):
    import gzip
    write_class_folder(tmp_path / "src" / "set", ["cat", "dog"], 2)
    plain = pack(tmp_path / "src" / "set", tmp_path / "set.tar")
    monkeypatch.setattr(folders, "MAX_TRAILING", 4 << 20)
    padded = tmp_path / "padded.tar.gz"
    padded.write_bytes(gzip.compress(plain.read_bytes() + bytes(8 << 20)))   # 8 MiB of zeros compress to KBs
    with pytest.raises(TuduiError, match=r"more than 4 MiB follow the end of its members"):
        extract_archive(padded, tmp_path / "cache")
    assert extract_archive(plain, tmp_path / "cache").is_dir()   # tar's own padding is fine


def test_an_archive_of_one_class_is_named_as_the_archive_and_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TUDUI_CACHE", str(tmp_path / "cache"))
    write_class_folder(tmp_path / "src" / "set", ["cat"], 3)
    archive = pack(tmp_path / "src" / "set", tmp_path / "one.tar.gz")
    with pytest.raises(TuduiError, match=rf"^{archive}: set needs at least two classes, each a folder of its images "
                                         rf"\({archive}: set/CLASS/image.jpg\); found one: 'cat'$"):
        build_dataset(str(archive))


def test_images_beside_the_class_folders_are_left_out_and_counted(tmp_path):
    root = write_class_folder(tmp_path / "photos", ["cats", "dogs"], 4)
    for name in ("stray.png", "another.jpg"):    # no class says what they are
        (root / name).write_bytes((root / "cats" / "000.png").read_bytes())
    spec = build_dataset(str(root))
    assert sum(len(d) for d in spec.splits().values()) == 8 and spec.ignored["loose image"] == 2
    assert "2 loose images" in spec.ignored_words()
