"""The cache folder kept in bounds: records of where entries came from, what prune removes and
keeps, entries in use, and `tudui cache`."""
import logging
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run_cli
from tudui import caches
from tudui.data.cache import decode_to_tensor
from tudui.data.datasets import FileImages
from tudui.errors import TuduiError

DAY = 86400


@pytest.fixture()
def root(tmp_path, monkeypatch):
    folder = tmp_path / "tudui-cache"
    monkeypatch.setenv("TUDUI_CACHE", str(folder))
    return folder


def make_entry(root: Path, area: str, name: str, source=None, stamp=None, size: int = 5000) -> Path:
    """A folder entry (extracted) or a file entry of size bytes, with its record when source is given."""
    path = root / area / name
    if area == "extracted":
        (path / "train").mkdir(parents=True)
        (path / "train" / "a.bin").write_bytes(b"x" * size)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    if source is not None:
        caches.note_use(path, source, stamp=stamp)
    return path


def age(path: Path, days: float) -> None:
    """Make path, and its record where it has one, last used days ago."""
    then = time.time() - days * DAY
    for p in (path, caches.record_path(path)):
        if p.exists():
            os.utime(p, (then, then))


def names(root: Path) -> list[str]:
    return sorted(f"{e.area}/{e.path.name}" for e in caches.entries(root))


def test_an_entry_whose_folder_is_gone_is_removed_with_its_record(root, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    gone = make_entry(root, "tensors", "a.safetensors", source=photos / "old")   # never existed
    kept = make_entry(root, "tensors", "b.safetensors", source=photos)
    assert {e.path.name: e.reachable for e in caches.entries(root)} == {"a.safetensors": False,
                                                                        "b.safetensors": True}
    count, freed = caches.prune(root)
    assert count == 1 and freed >= 5000
    assert not gone.exists() and not caches.record_path(gone).exists()
    assert kept.exists() and caches.record_path(kept).exists()


def test_an_unpacked_archive_goes_when_the_archive_changes_or_moves(root, tmp_path):
    archive = tmp_path / "set.tar.gz"
    archive.write_bytes(b"first")
    entry = make_entry(root, "extracted", "set-1", source=archive, stamp=archive.stat())
    assert [e.reachable for e in caches.entries(root)] == [True]
    assert caches.prune(root) == (0, 0)
    archive.write_bytes(b"second, longer")                 # a new download under the same name
    assert [e.reachable for e in caches.entries(root)] == [False]
    count, freed = caches.prune(root)
    assert count == 1 and freed > 5000 and not entry.exists()
    assert list((root / "extracted").iterdir()) == []      # no record, no half-deleted folder left


def test_decoded_copies_of_a_removed_archive_go_in_the_same_prune(root, tmp_path):
    archive = tmp_path / "set.tar"
    archive.write_bytes(b"data")
    unpacked = make_entry(root, "extracted", "set-1", source=archive, stamp=archive.stat())
    make_entry(root, "tensors", "t.safetensors", source=unpacked / "train")
    archive.write_bytes(b"new data")
    assert [e.reachable for e in caches.entries(root)] == [False, True]   # the copy's folder is still there
    assert caches.prune(root)[0] == 2 and caches.entries(root) == []


def test_entries_unused_for_the_idle_limit_go_and_recent_ones_stay(root, tmp_path):
    old = make_entry(root, "tensors", "old.safetensors", source=tmp_path)
    recent = make_entry(root, "tensors", "recent.safetensors", source=tmp_path)
    unrecorded_old = make_entry(root, "checked", "c1.json")            # an image check: no record
    unrecorded_new = make_entry(root, "checked", "c2.json")
    age(old, 31)
    age(recent, 29)
    age(unrecorded_old, 40)
    assert caches.prune(root)[0] == 2
    assert names(root) == ["checked/c2.json", "tensors/recent.safetensors"]
    assert caches.prune(root, max_idle_days=28)[0] == 1                # a shorter limit takes the 29-day one
    assert names(root) == ["checked/c2.json"] and unrecorded_new.exists()


def test_using_an_entry_again_keeps_it(root, tmp_path):
    entry = make_entry(root, "tensors", "t.safetensors", source=tmp_path)
    age(entry, 45)
    caches.note_use(entry, source=tmp_path)                          # a run reads it today
    assert caches.prune(root) == (0, 0) and entry.exists()


@pytest.mark.skipif(caches.fcntl is None, reason="shared locks need fcntl (not on Windows)")
def test_an_unpacked_archive_in_use_is_never_removed(root, tmp_path):
    archive = tmp_path / "set.tar"
    archive.write_bytes(b"data")
    entry = make_entry(root, "extracted", "set-1", source=archive, stamp=archive.stat())
    archive.unlink()                                        # unreachable now, but a process still reads it
    code = ("import sys, time; from pathlib import Path; from tudui import caches; "
            "caches.hold(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(entry)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert caches.prune(root, everything=True) == (0, 0) and entry.is_dir()
    finally:
        holder.kill()
        holder.wait()
    assert caches.prune(root)[0] == 1 and not entry.exists()       # its process has ended


def test_half_written_files_and_records_are_not_entries(root, tmp_path):
    make_entry(root, "tensors", "t.safetensors", source=tmp_path)
    (root / "tensors" / ".t2.safetensors.tmp-123").write_bytes(b"partial")
    (root / "extracted").mkdir()
    (root / "extracted" / ".set-1.partial-123-abc").mkdir()
    assert names(root) == ["tensors/t.safetensors"]
    assert caches.prune(root, everything=True)[0] == 1
    assert (root / "tensors" / ".t2.safetensors.tmp-123").exists()  # another process is writing it


def test_a_broken_or_foreign_record_counts_as_no_record(root, tmp_path):
    entry = make_entry(root, "tensors", "t.safetensors")
    caches.record_path(entry).write_text("not json {")
    other = make_entry(root, "tensors", "u.safetensors")
    caches.record_path(other).write_text('["a list"]')
    assert [(e.source, e.reachable) for e in caches.entries(root)] == [(None, None), (None, None)]
    assert caches.prune(root) == (0, 0)


def write_pngs(folder: Path, count: int) -> list[tuple[Path, int]]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        samples.append((folder / f"{i}.png", i % 2))
    return samples


def test_decoded_images_record_their_folder_and_go_when_it_goes(root, tmp_path):
    photos = tmp_path / "photos"
    decode_to_tensor(FileImages(write_pngs(photos / "cats", 3)), 8, root / "tensors")
    [entry] = caches.entries(root)
    assert entry.source == str(photos / "cats") and entry.reachable
    for path in (photos / "cats").iterdir():
        path.unlink()
    (photos / "cats").rmdir()
    assert caches.prune(root)[0] == 1 and caches.entries(root) == []


def test_a_changed_archive_leaves_one_unpacked_copy(root, tmp_path):
    """Two processes, as two runs of a user: the second unpacks the new archive and removes the old copy."""
    source = tmp_path / "src"
    write_pngs(source / "train" / "a", 2)
    archive = tmp_path / "set.tar.gz"

    def pack(extra: str) -> None:
        (source / "note.txt").write_text(extra)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(source, arcname="set")

    code = ("import logging, sys; from pathlib import Path; from tudui.data.folders import extract_archive; "
            "logging.basicConfig(level=logging.INFO); "
            "print(extract_archive(Path(sys.argv[1]), Path(sys.argv[2])).name)")
    run = [sys.executable, "-c", code, str(archive), str(root / "extracted")]
    pack("one")
    first = subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip()
    pack("two, longer")
    result = subprocess.run(run, capture_output=True, text=True, check=True)
    second = result.stdout.strip()
    assert first != second
    assert [p.name for p in (root / "extracted").iterdir() if not p.name.endswith((caches.RECORD,))] == [second]
    assert "cache: removed 1 entry" in result.stderr


def test_tudui_cache_lists_prunes_and_clears(root, tmp_path):
    make_entry(root, "tensors", "gone.safetensors", source=tmp_path / "nowhere", size=2_000_000)
    make_entry(root, "tensors", "kept.safetensors", source=tmp_path, size=1_000_000)
    make_entry(root, "checked", "c.json", size=10)
    listing = run_cli("cache", check=True).stdout
    assert f"cache folder: {root}" in listing and "in 3 entries" in listing
    lines = {word: line for line in listing.splitlines() for word in line.split() if word.startswith("tensors/")}
    assert "[can go: its source changed or is gone]" in lines["tensors/gone.safetensors"]
    assert "can go" not in lines["tensors/kept.safetensors"] and f"from {tmp_path}" in lines["tensors/kept.safetensors"]
    assert "1 image check" in listing and "1 of them (2.0 MB) can go: `tudui cache --prune` removes" in listing
    said = []   # with another idle limit, the command that removes them names it too
    caches.cache_command("list", 0, say=said.append)
    assert "3 of them (3.0 MB) can go: `tudui cache --prune --max-idle-days 0` removes them" in said[-1]
    pruned = run_cli("cache", "--prune", check=True).stdout
    assert pruned.startswith("removed 1 entry (2.0 MB)") and "2 left" in pruned
    cleared = run_cli("cache", "--clear", check=True).stdout
    assert cleared.startswith("removed 2 entries") and "0 left" in cleared
    assert caches.entries(root) == []
    bad = run_cli("cache", "--prune", "--max-idle-days", "-1")
    assert bad.returncode == 2 and bad.stderr.startswith("tudui cache: error: --max-idle-days")
    assert "Traceback" not in bad.stderr


def test_the_idle_limit_must_be_a_number_of_days(root):
    for value in (-1, float("nan"), float("inf")):
        with pytest.raises(TuduiError, match="--max-idle-days"):
            caches.cache_command("prune", value, say=lambda line: None)


def test_checking_and_decoding_many_images_says_so_once(root, tmp_path, monkeypatch, caplog):
    from tudui.data.validate import find_unreadable
    monkeypatch.setattr(caches, "SAY_FROM_FILES", 3)
    many, few = FileImages(write_pngs(tmp_path / "many", 3)), FileImages(write_pngs(tmp_path / "few", 2))
    with caplog.at_level(logging.INFO, logger="tudui"):
        for files in (many, few, many):                     # the second time, the cache answers
            find_unreadable(files)
            decode_to_tensor(files, 8, root / "tensors")
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert said == ["checking 3 images for unreadable files (once)", "decoding 3 images at 8 px into the cache (once)"]


def test_the_listing_says_how_many_images_a_decoded_copy_holds_and_at_what_size(root, tmp_path):
    files = FileImages(write_pngs(tmp_path / "pics", 3))
    for side in (8, 16):
        decode_to_tensor(files, side, root / "tensors")
    make_entry(root, "tensors", "foreign.safetensors", source=tmp_path, size=100)   # not a safetensors file
    listing = run_cli("cache", check=True).stdout
    assert f"3 images at 8 px, from {tmp_path / 'pics'}" in listing
    assert f"3 images at 16 px, from {tmp_path / 'pics'}" in listing
    foreign = next(line for line in listing.splitlines() if "foreign.safetensors" in line)
    assert foreign.endswith(f"foreign.safetensors  from {tmp_path}")


def test_files_tudui_did_not_make_are_never_entries_and_a_linked_area_is_not_looked_into(root, tmp_path):
    kept = make_entry(root, "tensors", "t.safetensors", source=tmp_path)
    for area, name in (("models", "resnet_final.pth"), ("checked", "todo.txt"), ("extracted", "holiday")):
        (root / area).mkdir(parents=True, exist_ok=True)
        (root / area / name).write_text("the user's own")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "photo.json").write_text("the user's own")
    os.symlink(outside, root / "checked2")
    (root / "checked").rename(root / "checked.real")
    os.symlink(outside, root / "checked")
    assert names(root) == ["tensors/t.safetensors"]
    assert caches.prune(root, everything=True)[0] == 1 and not kept.exists()
    assert (root / "models" / "resnet_final.pth").exists() and (root / "extracted" / "holiday").exists()
    assert (outside / "photo.json").exists()


def test_a_cache_folder_that_holds_other_things_is_never_pruned_or_cleared(root, tmp_path, monkeypatch):
    entry = make_entry(root, "tensors", "t.safetensors", source=tmp_path / "gone")   # stale: its source is gone
    (root / "data" / "cat").mkdir(parents=True)            # TUDUI_CACHE set to a project's folder
    caches._pruned.discard(root)
    caches.prune_once(root)
    assert entry.exists()
    with pytest.raises(TuduiError, match=r"holds more than tudui's cache \(data\), so tudui removes nothing"):
        caches.cache_command("clear", say=lambda line: None)
    assert entry.exists()
    monkeypatch.setenv("TUDUI_CACHE", "")                  # empty: the default folder, not the current one
    from tudui.files import cache_root
    assert cache_root() == Path.home() / ".cache" / "tudui"
