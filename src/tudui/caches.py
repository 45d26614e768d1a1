"""What tudui keeps in its cache folder (cache_root()), and keeping that folder from growing forever.

Four areas: `extracted` (unpacked archives), `tensors` (decoded images), `checked` (which images
are unreadable) and `models` (the `tudui models` table). The two large ones record beside each
entry where it came from, in `<entry>.source.json`, whose modification time is the entry's last
use. An entry nothing can reach again (its archive changed, moved or was deleted; its image folder
is gone) or unused for MAX_IDLE_DAYS is removed the next time tudui writes a new entry, once per
process; `tudui cache` lists the folder and can empty it.

An unpacked archive may be read for hours after it was opened (the DataLoader decodes files as it
goes), so every process using one holds a shared lock on its record until it exits; an entry whose
lock cannot be taken exclusively is in use and is never removed. The decoded tensors are read whole
at the start, so removing them under a running process costs it nothing.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tudui.errors import SettingError, TuduiError
from tudui.files import atomic_write, cache_root, human_bytes
from tudui.settings import counted

try:
    import fcntl
except ImportError:   # Windows: no shared locks; unpacked archives then go only when long unused
    fcntl = None

log = logging.getLogger(__name__)

AREAS = ("extracted", "tensors", "checked", "models")
RECORD = ".source.json"
MAX_IDLE_DAYS = 30
SAY_FROM_FILES = 1000            # checking or decoding this many files once takes long enough to say so
_held: dict[Path, int] = {}      # the entries this process holds, with their lock descriptors
_pruned: set[Path] = set()       # the cache folders this process has pruned


def record_path(entry: Path) -> Path:
    return entry.with_name(entry.name + RECORD)


def note_use(entry: Path, source: Path | str | Callable[[], str | None] | None = None,
             stamp: os.stat_result | None = None) -> None:
    """Say that entry is being used: write its record (source, or a function giving it, with the
    source's size and time when it is a file such as an archive) when it has none, else mark it used
    now. A cache that cannot be written only loses this bookkeeping."""
    record = record_path(entry)
    try:
        if record.is_file():
            os.utime(record)
            return
        if callable(source):
            source = source()
        fields = {"source": str(source) if source is not None else None}
        if stamp is not None:
            fields.update(size=stamp.st_size, mtime_ns=stamp.st_mtime_ns)
        atomic_write(record, lambda tmp: tmp.write_text(json.dumps(fields)))
    except (OSError, TuduiError) as e:   # bookkeeping only
        log.debug("cache record %s not written: %s", record, e)


def touch(path: Path) -> None:
    """Mark a small entry without a record (an image check) used now, where the folder allows."""
    try:
        os.utime(path)
    except OSError:
        pass


def hold(entry: Path) -> None:
    """Keep entry from being removed by any process while this one runs (a shared lock on its
    record, let go at exit). Call after note_use."""
    if fcntl is None:
        return
    try:
        fd = os.open(record_path(entry), os.O_RDONLY)
    except OSError:
        return
    old = _held.pop(entry, None)
    if old is not None:   # held already: keep that lock unless its record was removed and made again
        if os.fstat(old).st_ino == os.fstat(fd).st_ino:
            _held[entry] = old
            os.close(fd)
            return
        os.close(old)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return
    _held[entry] = fd


@dataclass
class Entry:
    path: Path
    area: str
    last_used: float              # seconds since the epoch
    source: str | None            # what it was made from, where recorded
    reachable: bool | None        # False: nothing can use it again; None: not known
    nbytes: int | None = None     # what it takes on disk, once measure_bytes has worked it out

    def idle_days(self, now: float | None = None) -> float:
        return ((now if now is not None else time.time()) - self.last_used) / 86400

    def measure_bytes(self) -> int:
        if self.nbytes is None:
            self.nbytes = _tree_bytes(self.path)
        return self.nbytes


def _disk_bytes(stat: os.stat_result) -> int:
    """What a file takes on its disk (whole blocks, as du counts), where the system says."""
    blocks = getattr(stat, "st_blocks", None)
    return blocks * 512 if blocks is not None else stat.st_size


def _tree_bytes(path: Path) -> int:
    try:
        stat = os.stat(path, follow_symlinks=False)
    except OSError:
        return 0
    total = _disk_bytes(stat)
    if not path.is_dir() or path.is_symlink():
        return total
    for folder, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                total += _disk_bytes(os.stat(os.path.join(folder, name), follow_symlinks=False))
            except OSError:
                pass
    return total


def _read_record(entry: Path) -> tuple[dict, float | None]:
    record = record_path(entry)
    try:
        stat = record.stat()
        if stat.st_size > 64 * 1024:   # not ours: a record is a few hundred bytes
            return {}, None
        fields = json.loads(record.read_text(encoding="utf-8"))
        return (fields if isinstance(fields, dict) else {}), stat.st_mtime
    except (OSError, ValueError, UnicodeDecodeError):
        return {}, None


def _reachable(fields: dict) -> bool | None:
    source = fields.get("source")
    if not isinstance(source, str):
        return None
    try:
        stat = os.stat(source)
    except OSError:
        return False          # moved or deleted
    if "size" in fields:      # a file (an archive): the entry's name was made from its size and time
        return stat.st_size == fields.get("size") and stat.st_mtime_ns == fields.get("mtime_ns")
    return True


# What tudui itself writes in each area: anything else there is not an entry, and is never removed.
ENTRY_NAMES = {"extracted": re.compile(r"[^/]+-[0-9a-f]{12}"), "tensors": re.compile(r"[^/]+\.safetensors"),
               "checked": re.compile(r"[^/]+\.json"), "models": re.compile(r"listing-[0-9a-f]+\.txt")}


def entries(root: Path | None = None, areas: tuple[str, ...] = AREAS) -> list[Entry]:
    """Every entry of the cache folder (of those areas), oldest use first (records, locks and
    half-written files aside). An entry is what tudui writes there (ENTRY_NAMES; an unpacked
    archive may also be a folder with its record); an area that is a link is not looked into."""
    root = root or cache_root()
    found = []
    for area in areas:
        if (root / area).is_symlink():
            continue
        try:
            names = sorted(os.listdir(root / area))
        except OSError:
            continue
        for name in names:
            if name.startswith(".") or name.endswith(RECORD):
                continue
            path = root / area / name
            if not (ENTRY_NAMES[area].fullmatch(name) or (area == "extracted" and record_path(path).is_file())):
                continue
            fields, used = _read_record(path)
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            source = fields.get("source")
            found.append(Entry(path, area, max(mtime, used or 0.0), source if isinstance(source, str) else None,
                               _reachable(fields)))
    return sorted(found, key=lambda e: e.last_used)


def stale(entry: Entry, max_idle_days: float = MAX_IDLE_DAYS, now: float | None = None) -> bool:
    """Whether prune removes entry: nothing can reach it again, or it has not been used for max_idle_days."""
    return entry.reachable is False or entry.idle_days(now) > max_idle_days


def remove(entry: Entry) -> bool:
    """Delete entry and its record unless a process holds it; True when it is gone."""
    record = record_path(entry.path)
    fd = None
    if entry.area == "extracted":
        if fcntl is None and entry.idle_days() <= MAX_IDLE_DAYS:
            return False      # without locks, an archive in use cannot be told from one that is not
        try:
            fd = os.open(record, os.O_RDONLY)
        except OSError:
            fd = None         # no record (an older tudui's entry): nothing holds it
        if fd is not None and fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False  # in use
            _, used = _read_record(entry.path)
            if used is not None and used > entry.last_used:
                os.close(fd)
                return False  # used again since it was listed
    try:
        if entry.path.is_dir() and not entry.path.is_symlink():
            # Out of sight first, in one rename, so nothing ever finds half a folder under its name;
            # a crash while deleting leaves a partial that the next unpacking clears (folders.py).
            doomed = entry.path.with_name(f".{entry.path.name}.partial-{os.getpid()}-removing")
            os.replace(entry.path, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        else:
            entry.path.unlink(missing_ok=True)
        record.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        if fd is not None:
            os.close(fd)
    return not entry.path.exists()


def prune(root: Path | None = None, everything: bool = False,
          max_idle_days: float = MAX_IDLE_DAYS) -> tuple[int, int]:
    """Remove the stale entries (every entry with everything), except those in use;
    (entries removed, bytes freed)."""
    count = freed = 0
    now = time.time()
    for area in AREAS:   # unpacked archives first: the decoded copies of one removed go with it
        for entry in entries(root, (area,)):
            if everything or stale(entry, max_idle_days, now):
                nbytes = entry.measure_bytes()
                if remove(entry):
                    count += 1
                    freed += nbytes
    return count, freed


def others_in(root: Path) -> list[str]:
    """What the folder root holds besides tudui's cache areas: a folder that holds anything else
    ($TUDUI_CACHE set to a project's folder) is not pruned or cleared, whatever its areas hold."""
    try:
        return sorted(name for name in os.listdir(root) if name not in AREAS and not name.startswith("."))
    except OSError:
        return []


def prune_once(root: Path | None = None) -> None:
    """Prune the cache folder root (cache_root()) the first time this process adds an entry to it."""
    root = root or cache_root()
    if root in _pruned:
        return
    _pruned.add(root)
    if others_in(root):
        log.debug("cache %s not pruned: it holds more than tudui's cache", root)
        return
    try:
        count, freed = prune(root)
    except OSError as e:
        log.debug("cache %s not pruned: %s", root, e)
        return
    if count:
        log.info("cache: removed %s no longer used (%s); `tudui cache` lists what is kept",
                 _entries(count), human_bytes(freed))


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _decoded(entry: Entry) -> str:
    """What a decoded copy holds, from its header ("50,000 images at 32 px, "), or ""."""
    if entry.area != "tensors":
        return ""
    from safetensors import safe_open
    try:
        with safe_open(str(entry.path), framework="pt") as f:
            shape = f.get_slice("images").get_shape()
    except Exception:  # noqa: BLE001 - a damaged or foreign file: listed without it
        return ""
    if len(shape) != 4:
        return ""
    side = f"{shape[2]} px" if shape[2] == shape[3] else f"{shape[3]}x{shape[2]} px"
    return f"{counted(shape[0], 'image')} at {side}, "


def _why_stale(entry: Entry, max_idle_days: float, now: float) -> str:
    if entry.reachable is False:
        return "its source changed or is gone"
    idle = entry.idle_days(now)
    return f"unused for {idle:.0f} days" if idle > max_idle_days else ""


def _when(entry: Entry, now: float) -> str:
    days = int(entry.idle_days(now))
    return "today" if days < 1 else "yesterday" if days == 1 else f"{days} days ago"


def cache_command(action: str = "list", max_idle_days: float | None = None,
                  say: Callable[[str], None] = print) -> None:
    """`tudui cache`: list the cache folder ("list"), or remove its stale entries ("prune") or all of
    them ("clear")."""
    idle = MAX_IDLE_DAYS if max_idle_days is None else max_idle_days
    if not (0 <= idle < float("inf")):
        raise SettingError(f"--max-idle-days must be a number of days from 0 up, got {max_idle_days}")
    root = cache_root()
    if action in ("prune", "clear"):
        others = others_in(root)
        if others:
            raise TuduiError(f"{root} holds more than tudui's cache ({', '.join(others[:5])}"
                             f"{' ...' if len(others) > 5 else ''}), so tudui removes nothing from it; point "
                             f"TUDUI_CACHE at a folder of its own")
        count, freed = prune(root, everything=action == "clear", max_idle_days=idle)
        left = entries(root)
        say(f"removed {_entries(count)} ({human_bytes(freed)}) from {root}; "
            f"{len(left)} left ({human_bytes(sum(e.measure_bytes() for e in left))})")
        return
    found, now = entries(root), time.time()
    total = sum(e.measure_bytes() for e in found)
    say(f"cache folder: {root} ($TUDUI_CACHE moves it): {human_bytes(total)} in {_entries(len(found))}")
    large = [e for e in found if e.area in ("extracted", "tensors")]
    for e in sorted(large, key=lambda e: -e.last_used):
        why = _why_stale(e, idle, now)
        say(f"  {_when(e, now):>12}  {human_bytes(e.measure_bytes()):>8}  {e.area}/{e.path.name}  "
            f"{_decoded(e)}from {e.source or '(not recorded: made by an older tudui)'}"
            + (f"  [can go: {why}]" if why else ""))
    for area, what in (("checked", "image check"), ("models", "model list")):
        small = [e for e in found if e.area == area]
        if small:
            say(f"  {len(small)} {what}{'s' if len(small) != 1 else ''} "
                f"({human_bytes(sum(e.measure_bytes() for e in small))}) in {area}/")
    can_go = [e for e in found if stale(e, idle, now)]
    if can_go:
        say(f"{len(can_go)} of them ({human_bytes(sum(e.measure_bytes() for e in can_go))}) can go: "
            f"`tudui cache --prune{'' if idle == MAX_IDLE_DAYS else f' --max-idle-days {idle:g}'}` removes them; "
            f"`tudui cache --clear` removes everything")
    elif found:
        say("nothing unused; `tudui cache --clear` removes everything (the next runs unpack and decode again)")
