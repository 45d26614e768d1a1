"""`tudui models`: the table built once per installation, then read back without importing torch."""
import os
import subprocess
import sys

from tudui import model_listing

from helpers import REPO


def _models_in_subprocess(cache) -> subprocess.CompletedProcess:
    code = ("import sys; from tudui.cli import main; code = main(['models']); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)")
    env = {**os.environ, "TUDUI_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300, check=True)


def test_models_table_is_built_once_then_read_without_torch(tmp_path):
    first = _models_in_subprocess(tmp_path)
    assert first.stdout.rstrip().endswith("TORCH 0")         # built: torch imported
    cached = list((tmp_path / "models").glob("listing-*.txt"))
    assert len(cached) == 1
    second = _models_in_subprocess(tmp_path)
    assert second.stdout.rstrip().endswith("NO-TORCH 0")     # read back: torch never imported
    assert second.stdout.replace("NO-TORCH", "TORCH") == first.stdout
    assert cached[0].read_text() == model_listing.build_listing()


def test_a_new_version_or_changed_model_source_names_another_file(monkeypatch):
    key = model_listing.listing_key()
    assert model_listing.listing_key() == key
    monkeypatch.setattr(model_listing._version, "__version__", "0.0.0-other")
    assert model_listing.listing_key() != key


def test_a_cache_file_that_is_not_ours_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("TUDUI_CACHE", str(tmp_path))
    monkeypatch.setattr(model_listing, "build_listing", lambda: "the table\n")
    path = tmp_path / "models" / f"listing-{model_listing.listing_key()}.txt"
    path.parent.mkdir()
    path.write_bytes(b"x" * (model_listing.MAX_TEXT + 1))   # too large to be a table
    assert model_listing.model_listing() == "the table\n"
    assert path.read_text() == "the table\n"
    path.write_bytes(b"\xff\xfe not utf-8")
    assert model_listing.model_listing() == "the table\n"


def test_an_unwritable_cache_still_prints_the_table(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TUDUI_CACHE", str(blocker))            # a file where the folder would go
    monkeypatch.setattr(model_listing, "build_listing", lambda: "the table\n")
    assert model_listing.model_listing() == "the table\n"
