"""Writing files so that a crash never leaves a half-written one under the final name."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tudui.errors import TuduiError


def human_bytes(n: float) -> str:
    """A size for people: 512 B, 1.5 KB, 537.0 MB, 1.1 GB (powers of 1,000)."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("KB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            break
    return f"{n:.1f} {unit}"


def cache_root() -> Path:
    """Where tudui keeps what it can make again: unpacked archives, decoded tensors, image checks,
    the model list."""
    # an empty TUDUI_CACHE (`TUDUI_CACHE= tudui ...`) is no folder: it would be the current one
    return Path(os.environ.get("TUDUI_CACHE") or Path.home() / ".cache" / "tudui")


def new_file_beside(path: Path, prefix: str) -> Path:
    """An empty file made new in path's folder (O_EXCL, under prefix and a part nobody can guess,
    with path's suffix), so that a link planted there is never written through; OSError when the
    folder refuses."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=path.suffix)
    os.close(handle)
    return Path(name)


def give_usual_mode(path: Path) -> None:
    """The mode a file made with open() would have (0666 less the umask): mkstemp and some writers
    (safetensors) make 0600 files, which another user, or a server running as one, cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename over path.

    A crash mid-write leaves the old file whole and no partial file under the final name;
    a full disk, an unwritable folder or any error of the library that writes is a TuduiError
    naming the file. The temporary file is made new (O_EXCL, under a name nobody can guess), so a
    link planted in the folder is never written through.
    """
    path = Path(path)
    try:
        tmp = new_file_beside(path, f".{path.name}.tmp-{os.getpid()}-")
    except OSError as e:
        raise TuduiError(f"cannot write {path}: {e.strerror or e}; the previous file, if any, "
                         "is unchanged") from None
    try:
        write(tmp)
        give_usual_mode(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except TuduiError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise TuduiError(f"cannot write {path}: {e.strerror or e}; the previous file, if any, "
                         "is unchanged") from None
    except Exception as e:  # noqa: BLE001 - the writing library's own errors (a full disk inside safetensors)
        tmp.unlink(missing_ok=True)
        reason = (str(e).strip().splitlines() or [""])[0][:200]
        raise TuduiError(f"cannot write {path}: {type(e).__name__}: {reason}; the previous file, if any, "
                         "is unchanged") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def same_file_as(path: Path, source: Path) -> None:
    """path becomes what source is now, atomically: a hard link where the file system allows one (no
    second copy on disk; source written again later, by a rename, leaves path as it was), else a copy."""
    def write(tmp: Path) -> None:
        tmp.unlink()   # atomic_write made it; the link takes its (unguessable) name
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
    atomic_write(path, write)
