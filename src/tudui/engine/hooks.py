"""Hooks: objects with any of the methods of `Hook`, told what training is doing.

Everything around the loop that is not the loop's own arithmetic is a hook: progress on
screen, metrics.csv, TensorBoard, checkpoints, weight averaging, freezing schedules. The
loop calls events by name; a hook defines the events it cares about and nothing else.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol


class Hook(Protocol):
    """The events a hook may handle; every method is optional."""

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def on_optimizer_step(self) -> None: ...   # right after each step, before the next (changes weights)
    def on_step(self, loss: float, batch_size: int, lr: float) -> None: ...   # read back in windows
    def on_train_end(self) -> None: ...        # the last epoch's training is done, its test is next
    def on_epoch_end(self, row: dict, val_metrics: dict | None) -> None: ...
    def stop_reason(self) -> str | None: ...   # after an epoch: why the run should end now (or None)
    def close(self) -> None: ...


class Hooks:
    """A list of hooks called by event; the handlers of each event are looked up once."""

    def __init__(self, hooks: Iterable[object] = ()):
        self.hooks = list(hooks)
        self._handlers: dict[str, list[Callable]] = {}

    def handlers(self, event: str) -> list[Callable]:
        """The bound methods that handle event, in the hooks' order."""
        if event not in self._handlers:
            self._handlers[event] = [getattr(h, event) for h in self.hooks if hasattr(h, event)]
        return self._handlers[event]

    def __call__(self, event: str, *args) -> None:
        for handler in self.handlers(event):
            handler(*args)
