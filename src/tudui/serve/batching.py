"""Dynamic batching: images of concurrent requests share forward passes, run in one worker thread.

The worker takes every image waiting, up to max_batch, and runs them at once. It waits (at most
timeout after the first of them was queued) for more only while other requests are known to be
on their way, i.e. accepted and still decoding: a lone request never waits. The event loop only
queues and awaits; the model runs in the worker thread alone.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More images would be waiting than the queue holds (or the batcher is stopping)."""


@dataclass
class BatchStats:
    """What the worker has done: forward passes, images through them, the largest batch."""
    passes: int = 0
    images: int = 0
    largest: int = 0


@dataclass
class _Item:
    input: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued: float          # time.monotonic() when it was queued


class Batcher:
    """A queue of inputs and the thread that runs run_batch(list of inputs) -> list of outputs on them."""

    def __init__(self, run_batch: Callable[[list], list], max_batch: int, timeout_s: float, max_queue: int):
        self.run_batch = run_batch
        self.max_batch, self.timeout_s, self.max_queue = max_batch, timeout_s, max_queue
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._waiting: deque[_Item] = deque()
        self._arriving = 0          # requests accepted and still decoding: their images are coming
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def is_full(self) -> bool:
        return len(self._waiting) >= self.max_queue

    def start(self) -> None:
        """Start the worker thread (again after close); nothing when it runs."""
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._closing = False
            self._thread = threading.Thread(target=self._work, name="tudui-serve-model", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Run what is queued, then stop the worker (blocks until it has)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def expect(self) -> None:
        """A request has been accepted and decodes its images: a forming batch may wait for them.
        Ended by its submit(..., expected=True), or by forget() when it fails first."""
        with self._cond:
            self._arriving += 1

    def forget(self) -> None:
        """An expected request will submit nothing after all."""
        with self._cond:
            self._arriving -= 1
            self._cond.notify_all()

    def submit(self, inputs: list, expected: bool = False) -> list[asyncio.Future]:
        """Queue inputs; one future per input, done when its output is. QueueFull when past max_queue
        (a request larger than the whole queue still goes when the queue is empty). expected: the
        request was announced by expect(); it stops being awaited in the same step, so a lone
        request's images never wait on the request itself."""
        loop = asyncio.get_running_loop()
        with self._cond:
            if expected:
                self._arriving -= 1
                self._cond.notify_all()
            if self._closing:
                raise QueueFull("the server is stopping")
            if self._waiting and len(self._waiting) + len(inputs) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} images are waiting for the model already")
            now = time.monotonic()
            items = [_Item(x, loop.create_future(), loop, now) for x in inputs]
            self._waiting.extend(items)
            self._cond.notify_all()
        return [item.future for item in items]

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _next_batch(self) -> list[_Item] | None:
        """The next batch, once there is one; None when closing and nothing is left."""
        with self._cond:
            while not self._waiting and not self._closing:
                self._cond.wait()
            if not self._waiting:
                return None
            deadline = self._waiting[0].queued + self.timeout_s
            while len(self._waiting) < self.max_batch and self._arriving and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [self._waiting.popleft() for _ in range(min(len(self._waiting), self.max_batch))]

    def _run(self, batch: list[_Item]) -> None:
        outputs, error = [None] * len(batch), None
        try:
            outputs = self.run_batch([item.input for item in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"{len(outputs)} outputs for a batch of {len(batch)}")
        except Exception as e:   # noqa: BLE001 - every request of the batch hears of it; the worker goes on
            log.exception("the forward pass of a batch of %d failed", len(batch))
            outputs, error = [None] * len(batch), e
        with self._cond:        # counted before any request hears back, so a reply implies its pass is counted
            self.stats.passes += 1
            self.stats.images += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
        for item, output in zip(batch, outputs):
            _settle(item, output, error)


def _settle(item: _Item, output: Any, error: BaseException | None) -> None:
    """Hand the output (or the error) to the item's event loop; a request gone by then is skipped."""
    def settle() -> None:
        if item.future.done():          # its request was cancelled (the client went away)
            return
        if error is None:
            item.future.set_result(output)
        else:
            item.future.set_exception(error)
    try:
        item.loop.call_soon_threadsafe(settle)
    except RuntimeError:                # the loop is closed: nobody is waiting any more
        pass
