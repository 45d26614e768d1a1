"""Hundreds of mutated weights headers, exported files, training states, settings files, CSV lists, data set
archives and images: each loads or is one line."""
import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO

DRIVER = Path(__file__).with_name("fuzz_loaders.py")


def test_mutated_files_are_loaded_or_refused_in_one_line_within_bounded_memory(tmp_path):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    repo_before = sorted(p.name for p in REPO.iterdir())
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp_path), "TUDUI_CACHE": str(tmp_path / "cache"),
           "MPLCONFIGDIR": str(home / "mpl")}
    # 6 GiB of address space: importing torch takes about 3.5; a loader that allocates what a
    # hostile file asks for fails the run.
    result = subprocess.run([sys.executable, str(DRIVER), str(work), "0", "150", "6"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAILURE")]
    assert summary["failures"] == 0, "\n".join(failures) + result.stdout[-3000:]
    assert summary["cases"] >= 1000
    for kind, counts in summary["outcomes"].items():   # the mutations reach both ends of every reader
        assert counts.get("ok", 0) > 0 and counts.get("refused", 0) > 0, (kind, counts)
    assert sorted(p.name for p in REPO.iterdir()) == repo_before      # nothing written beside the code
