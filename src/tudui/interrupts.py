"""Ctrl-C and SIGTERM during training: finish the batch, save, then stop.

The first signal only sets a flag that the training loop reads at each batch boundary;
the run then writes a resumable checkpoint and exits with 130 (SIGINT) or 143 (SIGTERM).
Further signals while that checkpoint is written are noted and otherwise ignored, so the
save is never cut in half (and it is atomic besides).
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
        speaks = os.environ.get("RANK", "0") == "0"   # under torchrun, every process hears it: one says so
        if self.requested is None:
            self.requested = signum
            if speaks:
                print(f"\n{signal.Signals(signum).name}: stopping after this batch and saving a "
                      "resumable checkpoint", file=sys.stderr, flush=True)
        elif speaks:
            print("already stopping; it exits as soon as the checkpoint is saved",
                  file=sys.stderr, flush=True)

    def __enter__(self) -> StopRequest:
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
