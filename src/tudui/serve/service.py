"""The model behind the app: loaded once, fed by the batcher, its inputs decoded in a thread pool.

Everything a request goes through is `tudui predict`'s: load_model, the weights' eval transform on
an RGB image, top_classes with the weights' test-time augmentation; so the answers equal
`tudui predict`'s on the same files.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from tudui._version import __version__
from tudui.config_commands import ServeConfig
from tudui.prediction import top_classes
from tudui.runtime import resolve_device
from tudui.serve.batching import Batcher, QueueFull
from tudui.serve.limits import (
    Limits,
    Refusal,
    Upload,
    UploadMemory,
    busy,
    check_declared_length,
    decode_image,
    multipart_boundary,
    read_uploads,
)
from tudui.weights import load_model

log = logging.getLogger(__name__)


class Service:
    """One model and what feeds it: the batcher's worker thread and the decoding threads."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.model, self.meta = load_model(cfg.weights, self.device, cfg.model or None, cfg.trust_pickle)
        self.tta = self.meta.config.train.tta if cfg.tta is None else cfg.tta
        if cfg.tta and (note := self.meta.tta_note(cfg.tta)):
            log.warning("%s", note)
        self.topk = min(cfg.topk, self.meta.num_classes)   # a 3-class model answers its 3, not a "top 5"
        self.transform = self.meta.preprocess.eval_transform()
        self.limits = Limits(cfg.max_body, cfg.max_images, cfg.max_pixels)
        self.upload_memory = UploadMemory(cfg.max_upload_memory)
        self.batcher = Batcher(self.run_batch, cfg.max_batch, cfg.batch_timeout / 1000, cfg.max_queue)
        self._decoders: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the threads (at the app's startup, or at the first request of an app mounted in
        another, whose startup is not run); nothing when they run."""
        with self._lock:
            if self._decoders is None:
                self._decoders = ThreadPoolExecutor(self.cfg.decode_workers, thread_name_prefix="tudui-serve-decode")
            self.batcher.start()

    def stop(self) -> None:
        """Answer every image queued, then stop the threads (blocks until they have)."""
        self.batcher.close()
        with self._lock:
            decoders, self._decoders = self._decoders, None
        if decoders is not None:
            decoders.shutdown(wait=True)

    def run_batch(self, inputs: list[torch.Tensor]) -> list[list[dict]]:
        """The top-k classes of each input, best first (in the batcher's worker thread)."""
        return top_classes(self.model, torch.stack(inputs).to(self.device), self.topk, self.tta,
                           self.meta.class_names, self.meta.tta_mirror())

    def prepare(self, upload: Upload) -> torch.Tensor:
        """The model's input for one upload (in a decoding thread)."""
        return self.transform(decode_image(upload, self.cfg.max_pixels, self.meta.preprocess.decode_side))

    async def predict(self, headers: Mapping[str, str], body: AsyncIterator[bytes]) -> dict:
        """{"results": [{"name", "predictions"}, ...]} for the images of one request, or a Refusal."""
        self.start()
        boundary = multipart_boundary(headers.get("content-type"))
        check_declared_length(headers.get("content-length"), self.cfg.max_body)
        if self.batcher.is_full():      # before reading and decoding what would be refused anyway
            raise busy(f"{self.batcher.waiting} images are waiting for the model already")
        with self.upload_memory.lease() as lease:    # the bytes are held until decoded
            try:
                uploads = await asyncio.wait_for(read_uploads(body, boundary, self.limits, lease),
                                                 self.cfg.read_timeout)
            except asyncio.TimeoutError:
                raise Refusal(408, f"the request body did not arrive within {self.cfg.read_timeout:g} s "
                                   f"(--read-timeout)") from None
            prepared = await self._prepare_all(uploads)
            names = [upload.name for upload in uploads]
            del uploads     # the bytes go with the lease
        try:
            futures = self.batcher.submit([p for p in prepared if not isinstance(p, Refusal)], expected=True)
        except QueueFull as e:
            raise busy(str(e)) from None
        try:
            answers = iter(await asyncio.gather(*futures))
        except Exception as e:   # noqa: BLE001 - the batcher logged it; the client gets one line
            raise Refusal(500, f"the model failed on this batch: {type(e).__name__}: {e}") from None
        return {"results": [{"name": name, "error": p.detail} if isinstance(p, Refusal)
                            else {"name": name, "predictions": next(answers)}
                            for name, p in zip(names, prepared)]}

    async def _prepare_all(self, uploads: list[Upload]) -> list[torch.Tensor | Refusal]:
        """Each upload's input, or the Refusal saying why it cannot be read (in the decoding threads;
        the batcher expects the request meanwhile). The request is refused when none can be read
        (one image: its own 400) or on any other failure, and the batcher then forgets it."""
        loop = asyncio.get_running_loop()
        self.batcher.expect()
        try:
            prepared = await asyncio.gather(*(loop.run_in_executor(self._decoders, self.prepare, upload)
                                              for upload in uploads), return_exceptions=True)
            failed = [p for p in prepared if isinstance(p, BaseException)]
            unexpected = next((p for p in failed if not isinstance(p, Refusal)), None)
            if unexpected is not None or len(failed) == len(prepared):
                raise unexpected or failed[0]
        except BaseException:
            self.batcher.forget()
            raise
        return prepared

    def metadata(self) -> dict:
        """What a client needs to know of the model and of the limits in force."""
        meta, cfg, pre = self.meta, self.cfg, self.meta.preprocess
        return {
            "model": meta.model, "classes": list(meta.class_names), "num_classes": meta.num_classes,
            "input_size": pre.input_size, "resize_size": pre.resize_size, "interpolation": pre.interpolation,
            "mean": pre.mean, "std": pre.std, "tta": self.tta,
            "tta_mirror": self.tta > 0 and meta.tta_mirror(), "device": str(self.device),
            "weights": Path(cfg.weights).name,    # the name only: the server's folders are its own business
            "epoch": meta.epoch, "val_accuracy": meta.val_accuracy,
            "trained_with": meta.tudui_version, "tudui_version": __version__,
            "settings": {"topk": self.topk, "max_batch": cfg.max_batch, "batch_timeout_ms": cfg.batch_timeout,
                         "max_body": cfg.max_body, "max_images": cfg.max_images, "max_pixels": cfg.max_pixels,
                         "max_queue": cfg.max_queue, "decode_workers": cfg.decode_workers,
                         "max_upload_memory": cfg.max_upload_memory}}

    def health(self) -> dict:
        stats = self.batcher.stats
        return {"status": "ok", "model": self.meta.model, "waiting": self.batcher.waiting,
                "upload_bytes_held": self.upload_memory.held,
                "forward_passes": stats.passes, "images": stats.images, "largest_batch": stats.largest}

