"""The layout of a run directory, known here and nowhere else.

    runs/exp/
      config.yaml               the settings as used
      metrics.csv               one row per epoch
      weights/best.safetensors  the best epoch's weights (what `runs/exp` stands for as --weights)
      weights/last.safetensors  the last epoch's weights
      weights/state.pt          what --resume needs
      eval/, eval2/, ...        what `tudui eval` wrote
      .lock                     held by the process that writes the run (its PID inside)
"""
from __future__ import annotations

import difflib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tudui.errors import TuduiError

try:
    import fcntl
except ImportError:   # Windows: no advisory locks; runs are not guarded there
    fcntl = None

WEIGHTS_FOLDER = "weights"
BEST = "best.safetensors"


def create_numbered(parent: str | Path, stem: str) -> Path:
    """parent/stem, else parent/stem2, stem3, ...: a new folder, never one that already exists."""
    base = Path(parent)
    for i in range(1, 100_000):
        candidate = base / (stem if i == 1 else f"{stem}{i}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
        except OSError as e:
            raise TuduiError(f"cannot create run directory {candidate}: {e.strerror}") from None
    raise TuduiError(f"too many runs named {stem!r} in {base}")


@dataclass(frozen=True)
class RunDir:
    """A run directory: where each of its files is."""
    path: Path

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    def create(cls, project: str | Path, name: str = "") -> RunDir:
        """A new run directory: PROJECT/exp, exp2, ... (or NAME, NAME2, ...); never reuses one."""
        return cls(create_numbered(project, name or "exp"))

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory (as --resume takes it), or a TuduiError saying what it is instead."""
        path = Path(path)
        if path.name == WEIGHTS_FOLDER or path.suffix:
            raise TuduiError(f"--resume takes a run directory (like runs/exp), got {path}")
        run = cls(path)
        if not path.is_dir():
            raise TuduiError(f"no run directory {path} (runs are in runs/ unless --project says otherwise)")
        if not run.config.is_file():
            weights = f"; its weights can start a new run: --weights {run.last}" if run.last.is_file() else ""
            raise TuduiError(f"{path} is not a tudui run directory: it has no config.yaml{weights}")
        return run

    @classmethod
    def find(cls, weights: str | Path) -> RunDir | None:
        """The run directory that holds a weights file (or is given), if it looks like one."""
        path = Path(weights)
        candidate = path if path.is_dir() else path.parent.parent if path.parent.name == WEIGHTS_FOLDER else None
        if candidate is not None and cls(candidate).config.is_file():
            return cls(candidate)
        return None

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def weights_dir(self) -> Path:
        return self.path / WEIGHTS_FOLDER

    @property
    def best(self) -> Path:
        return self.weights_dir / BEST

    @property
    def last(self) -> Path:
        return self.weights_dir / "last.safetensors"

    @property
    def state(self) -> Path:
        return self.weights_dir / "state.pt"

    def weights_bytes(self) -> int:
        """The disk space of weights/, a file of two names (best linked to last) counted once."""
        sizes = {}
        for file in self.weights_dir.iterdir():
            stat = file.stat()
            sizes[stat.st_dev, stat.st_ino] = stat.st_size
        return sum(sizes.values())

    def lock(self) -> RunLock:
        """Hold the run for this process until the lock is released (or the process ends); a run
        another process holds is a TuduiError naming that process."""
        lock = self.path / ".lock"
        try:   # never through a link (a run directory from elsewhere may hold one), never a pipe
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0),
                         0o644)
        except OSError as e:
            why = "it is a link" if lock.is_symlink() else e.strerror or e
            raise TuduiError(f"cannot lock the run directory {self}: {lock.name} cannot be opened ({why}); "
                             f"remove it if no tudui process is writing the run") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise TuduiError(f"cannot lock the run directory {self}: {lock.name} is not a plain file; remove it")
        handle = os.fdopen(fd, "r+")
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read(32).strip() or "unknown"
                handle.close()
                raise TuduiError(f"{self} is being written by another tudui process (PID {holder}); let it "
                                 f"finish or stop it first, or train into a new run directory") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return RunLock(handle)

    def create_eval_dir(self) -> Path:
        """A new RUN/eval, RUN/eval2, ... for one `tudui eval`."""
        return create_numbered(self.path, "eval")


class RunLock:
    """A held run directory; release() (or close(), as a training hook) lets others write it."""

    def __init__(self, handle: IO[str]):
        self.handle: IO[str] | None = handle

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()   # closing the file drops the lock
            self.handle = None

    close = release


def resolve_weights_path(path: str | Path) -> Path:
    """A weights file, or a run directory (its weights/best.safetensors), or a run's weights folder."""
    path = Path(path)
    if path.is_dir():
        best = RunDir(path).best
        if not best.is_file() and (path / BEST).is_file():   # the run's weights/ folder itself
            best = path / BEST
        if not best.is_file():
            try:
                runs = sorted(p.name for p in path.iterdir() if RunDir(p).best.is_file())
            except OSError:   # a folder that cannot be listed: no runs to name
                runs = []
            inside = (f"; the runs in it: {', '.join(runs[:8])}{' ...' if len(runs) > 8 else ''} (pass one, "
                      f"e.g. {path / runs[0]})") if runs else ""
            raise TuduiError(f"{path} is a folder without {WEIGHTS_FOLDER}/{BEST}; pass a run directory, or "
                             f"a weights file (.safetensors, .pth, or an export){inside}")
        return best
    if not path.exists():
        raise weights_not_found(path)
    return path


def weights_not_found(path: str | Path) -> TuduiError:
    """"weights not found", with the file or folder beside it that the name was meant to be, when
    one is close (best.safetensor: best.safetensors)."""
    path = Path(path)
    try:
        beside = [p.name for p in path.parent.iterdir()] if path.parent.is_dir() else []
    except OSError:
        beside = []
    meant = difflib.get_close_matches(path.name, beside, n=1, cutoff=0.85)
    return TuduiError(f"weights not found: {path}" + (f"; did you mean {path.parent / meant[0]}?" if meant else ""))
