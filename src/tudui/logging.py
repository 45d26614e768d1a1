"""Where training reports go: progress on screen, metrics.csv, TensorBoard.

Each reporter is a hook (see tudui.engine.hooks), called by `tudui.engine.fit` (and `close`
by whoever built it). None of them changes training.
"""
from __future__ import annotations

import csv
import importlib.util
import sys
import time
from pathlib import Path

import torch

from tudui.errors import TuduiError
from tudui.files import atomic_write

CSV_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "val_top5", "val_balanced_accuracy", "lr",
               "seconds")


def interactive() -> bool:
    """True on a terminal, or in a notebook that can draw a bar (tqdm's notebook bar needs
    ipywidgets; without it tqdm warns and writes text bars that the saved notebook keeps)."""
    if "ipykernel" in sys.modules:
        return importlib.util.find_spec("ipywidgets") is not None
    return sys.stderr.isatty()


def format_row(row: dict, epochs: int, has_val: bool = True) -> str:
    width = len(str(epochs))
    val = (f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.2%}"
           if row["val_accuracy"] is not None else "(not evaluated)" if has_val else "(no val split)")
    return (f"epoch {row['epoch']:>{width}}/{epochs}  train_loss {row['train_loss']:.4f}  {val}  "
            f"lr {row['lr']:.3g}  {row['seconds']:.1f}s  {row['images_per_s']:,.0f} img/s")


class ProgressHook:
    """A tqdm bar per epoch (loss, images/s, ETA) on a terminal; a plain line per epoch always."""

    def __init__(self, bar: bool | None = None, has_val: bool = True):
        self.bar_enabled = interactive() if bar is None else bar
        self.has_val = has_val
        self.bar = None
        self.epochs = 0

    def on_epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs = epochs
        if self.bar_enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step",
                            leave=False, dynamic_ncols=True)
            self.started = time.perf_counter()
            self.images = 0

    def on_step(self, loss: float, batch_size: int, lr: float) -> None:
        if self.bar is not None:
            self.images += batch_size
            rate = self.images / max(time.perf_counter() - self.started, 1e-9)
            self.bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:,.0f}", refresh=False)
            self.bar.update(1)

    def on_epoch_end(self, row: dict, val_metrics: dict | None) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        print(format_row(row, self.epochs, self.has_val), flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CSVHook:
    """metrics.csv: one row per epoch, flushed as it is written so a crash loses nothing."""

    def __init__(self, path: Path, append: bool = False, keep_through: int | None = None):
        """append continues a file (a resumed run), first dropping rows after epoch keep_through."""
        self.path = Path(path)
        new = not (append and self.path.exists())
        if not new and keep_through is not None:
            self._keep_rows_through(keep_through)
        self.file = self.path.open("w" if new else "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        if new:
            self.writer.writeheader()
            self.file.flush()

    def _keep_rows_through(self, epoch: int) -> None:
        """Drop the rows of epochs after `epoch` (a resumed run redoes them), rewriting the file
        through a temporary one: a failed write leaves the old file whole."""
        try:
            with self.path.open(newline="") as f:
                rows = [row for row in csv.DictReader(f) if int(row["epoch"]) <= epoch]
        except (OSError, ValueError, KeyError, TypeError, csv.Error) as e:
            raise TuduiError(f"cannot read {self.path} to continue it ({type(e).__name__}: "
                             f"{str(e)[:100]})") from None

        def write(tmp: Path) -> None:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.path, write)

    def on_epoch_end(self, row: dict, val_metrics: dict | None) -> None:
        self.writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else "" if v is None else v)
                              for k, v in row.items()})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorBoardHook:
    """TensorBoard events in the run directory: losses, accuracy, learning rate, an image grid."""

    def __init__(self, run_dir: Path, log_every: int, start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter
        # On a resume, purge_step drops events an interrupted run logged after its checkpoint.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=start_step or None)
        self.log_every = log_every
        self.step = start_step
        self.epoch_loss = 0.0

    def add_images(self, images: torch.Tensor, mean, std, tag: str = "train/images") -> None:
        """A grid of a batch of (normalised) training images, shown as the model sees them."""
        from torchvision.utils import make_grid
        images = images[:64].detach().float().cpu()
        if mean is not None and std is not None:
            images = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
        self.writer.add_image(tag, make_grid(images.clamp(0, 1), nrow=8), 0)

    def on_step(self, loss: float, batch_size: int, lr: float) -> None:
        self.step += 1
        if self.step % self.log_every == 0:
            self.writer.add_scalar("train/loss", loss, self.step)
            self.writer.add_scalar("train/lr", lr, self.step)

    def on_epoch_end(self, row: dict, val_metrics: dict | None) -> None:
        epoch = row["epoch"]
        self.writer.add_scalar("train/epoch_loss", row["train_loss"], epoch)
        if row["val_accuracy"] is not None:
            self.writer.add_scalar("val/loss", row["val_loss"], epoch)
            self.writer.add_scalar("val/accuracy", row["val_accuracy"], epoch)
            if row["val_top5"] is not None:
                self.writer.add_scalar("val/top5_accuracy", row["val_top5"], epoch)
            if row.get("val_balanced_accuracy") is not None:
                self.writer.add_scalar("val/balanced_accuracy", row["val_balanced_accuracy"], epoch)
        self.writer.add_scalar("train/epoch_lr", row["lr"], epoch)    # beside train/lr, logged per step
        self.writer.add_scalar("speed/images_per_s", row["images_per_s"], epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
