"""The layout of a run directory, known here and nowhere else.

    runs/exp/
      config.yaml               the settings as used
      metrics.csv               one row per epoch
      weights/best.safetensors  the best epoch's weights (what `runs/exp` stands for as --weights)
      weights/last.safetensors  the last epoch's weights
      weights/state.pt          what --resume needs
      eval/, eval2/, ...        what `tudui eval` wrote
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tudui.errors import TuduiError

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
        if not run.config.is_file():
            raise TuduiError(f"{path} is not a tudui run directory (no config.yaml in it)")
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

    def create_eval_dir(self) -> Path:
        """A new RUN/eval, RUN/eval2, ... for one `tudui eval`."""
        return create_numbered(self.path, "eval")


def resolve_weights_path(path: str | Path) -> Path:
    """A weights file, or a run directory (its weights/best.safetensors)."""
    path = Path(path)
    if path.is_dir():
        best = RunDir(path).best
        if not best.is_file():
            raise TuduiError(f"{path} is a folder without {WEIGHTS_FOLDER}/{BEST}; "
                             f"pass a run directory or a .safetensors file")
        return best
    if not path.exists():
        raise TuduiError(f"weights not found: {path}")
    return path
