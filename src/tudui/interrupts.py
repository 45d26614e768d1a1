"""Ctrl-C and SIGTERM during training: finish the batch, save, then stop.

The first signal only sets a flag that the training loop reads at each batch boundary;
the run then writes a resumable checkpoint and exits with 130 (SIGINT) or 143 (SIGTERM).
Further signals while that checkpoint is written are noted and otherwise ignored, so the
save is never cut in half (and it is atomic besides).

The reader of the output going away (`tudui train ... | head`) stops a training the same way,
with 141 (SIGPIPE), instead of killing it mid-write: see WatchedOutput.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from tudui.errors import TuduiError

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(TuduiError):
    """The run stopped on a signal after saving where it was; exit_code is 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class StopRequest:
    """Installs the handlers while active (main thread only); `requested` is the signal seen."""

    def __init__(self):
        self.requested: int | None = None
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()

    def __call__(self) -> bool:
        return self.requested is not None

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:
            # A DataLoader worker (forked with this handler) hears Ctrl-C too: the main process
            # stops the run; the workers end with the loader and say nothing.
            return
        self.request(signum)

    def request(self, signum: int) -> None:
        speaks = os.environ.get("RANK", "0") == "0"   # under torchrun, every process hears it: one says so
        if self.requested is None:
            self.requested = signum
            why = "the output's reader went away" if signum == signal.SIGPIPE else signal.Signals(signum).name
            if speaks:
                print(f"\n{why}: stopping after this batch and saving a resumable checkpoint",
                      file=sys.stderr, flush=True)
        elif speaks and signum != signal.SIGPIPE:
            print("already stopping; it exits as soon as the checkpoint is saved",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
            _listening.append(self)
            if _reader_gone:   # gone before training began: it stops at its first batch
                self.request(signal.SIGPIPE)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        if self in _listening:
            _listening.remove(self)


_listening: list[StopRequest] = []   # the StopRequest in force in the main thread, if any
_reader_gone = False


class WatchedOutput:
    """sys.stdout and sys.stderr while `tudui train` runs. When the reader of either goes away
    (`tudui train ... | head`, or `2>&1 | head`), writing raises BrokenPipeError wherever a line
    is printed, and would end the process there: between an epoch's progress line and its
    checkpoint, say. Instead, the rest of that output is dropped, a training in progress stops at
    its next batch boundary with a resumable checkpoint (exit 141, as a process killed by SIGPIPE),
    one not yet begun stops at its first, and one already trained writes its results to the end.
    A stream that is None (no stdout at all, as under pythonw) is left as it is."""

    def __init__(self):
        self.gone = False
        self._saved: dict[str, object] = {}

    def _went_away(self, fd: int | None) -> None:
        global _reader_gone
        if fd is not None:
            silence(fd)
        if self.gone:
            return
        self.gone = _reader_gone = True
        if _listening:
            _listening[-1].request(signal.SIGPIPE)

    def __enter__(self) -> WatchedOutput:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None:
                self._saved[name] = stream
                setattr(sys, name, _Watched(stream, self._went_away))
        return self

    def __exit__(self, *exc) -> None:
        global _reader_gone
        for name, stream in self._saved.items():
            setattr(sys, name, stream)
        _reader_gone = False


class _Watched:
    """A stream whose BrokenPipeError is told to on_gone (with its file descriptor) and swallowed."""

    def __init__(self, stream, on_gone):
        self._stream, self._on_gone = stream, on_gone
        try:
            self._fd = stream.fileno()
        except (OSError, ValueError, AttributeError):   # not a file (a test's capture)
            self._fd = None

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._on_gone(self._fd)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._on_gone(self._fd)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def silence(fd: int = 1) -> None:
    """Point file descriptor fd (stdout's unless told) at the null device: what is still buffered
    for a reader that has gone (and Python's own flush at exit) then goes nowhere instead of
    failing again."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except OSError:
        pass
