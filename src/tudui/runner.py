"""tudui.train: the whole training job as one story, settings -> build -> fit -> finish.

`build` (tudui.build) turns the settings into the parts of a run; `run_epochs` trains them
and saves where a signal stopped it; `finish` writes the report and returns the results.
The CLI is a thin layer over `train` and a notebook calls it directly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tudui.build import build
from tudui.checkpoint import restore_rng
from tudui.config import Config
from tudui.config_files import make_config
from tudui.data.loaders import make_eval_loader
from tudui.data.transforms import mirror_suits
from tudui.engine import FitOptions, StoppedMidEpoch, fit
from tudui.engine.distributed import any_across, barrier, shut_down
from tudui.errors import TuduiError
from tudui.evaluation import Measured, final_measure, final_report
from tudui.exported import format_of, is_exported, read_metadata
from tudui.files import human_bytes
from tudui.interrupts import StopRequest, TrainingInterrupted
from tudui.parts import Parts
from tudui.resume import Resume, resume_settings
from tudui.rundir import RunDir
from tudui.runtime import PROCESS_GROUP_TIMEOUT, torchrun_place
from tudui.settings import counted
from tudui.weights import model_of_weights

LARGE_WEIGHTS = 100_000_000   # bytes of weights/ from which the end of a run says how much it takes


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a finished training run produced, each number named for the split it comes from.

    best_epoch is the epoch of the weights kept (weights/best): the best by the monitored val
    metric, or the last without a val split. final is the one evaluation of those weights on
    the test split (on val when there is no test split: final_split says which).
    """
    run_dir: Path
    best_epoch: int
    val_accuracy: float | None        # the kept epoch's, None without a val split
    final_split: str                  # "test", or "val" when the data has no test split
    final: dict | None                # loss, accuracy, balanced_accuracy, macro_f1, per class, ...
    stopped_early: str | None = None  # why training ended before --epochs, if it did
    history: list[dict] = field(default_factory=list)
    best_weights: Path | None = None
    last_weights: Path | None = None
    config: Config | None = None
    report: Path | None = None       # report.html, when it was written

    @property
    def test_accuracy(self) -> float | None:
        """Accuracy of the kept weights on the test split (None without one, or if it failed)."""
        return self.final["accuracy"] if self.final and self.final_split == "test" else None


def train(config: Config | None = None, config_file: str | Path | None = None,
          progress: bool | None = None, resume: str | Path | None = None, trust_pickle: bool = False,
          **overrides) -> TrainResult:
    """Train a model from settings; returns the run directory, metrics and weight paths.

    Settings are a Config, or a YAML file and/or keywords named like the CLI flags:
    `tudui.train(data="digits", epochs=5, lr=0.05)`. progress=None shows a bar on a
    terminal or notebook and plain lines elsewhere; False prints nothing (logging only).
    resume="runs/exp" continues that run where it stopped (with the tensor loader, exactly:
    the same weights as if it had never stopped). trust_pickle lets the weights it starts from
    be a whole pickled model (this runs code from that file); it is never a setting of a file.
    """
    cfg, resumed = settings(config, config_file, resume, overrides)
    with _another_process_failed():
        parts = build(cfg, resumed, progress, trust_pickle)
    try:
        with _another_process_failed():
            history = run_epochs(parts)
        return finish(parts, history)
    except FloatingPointError as e:
        checkpoints, run = parts.checkpoints, parts.run
        kept = (f"the last good weights are {run.last} (epoch {checkpoints.saved_epoch}); start a new run "
                f"from them with  tudui train --config {run.config} --weights {run.last} --lr SMALLER"
                if checkpoints.saved_epoch else f"no epoch had finished; the run directory is {run}")
        raise TuduiError(f"{e}; lower --lr (now {cfg.optim.lr}). {kept}") from None
    finally:
        parts.hooks("close")
        shut_down()   # the process group, under torchrun


def settings(config: Config | None, config_file: str | Path | None, resume: str | Path | None,
             overrides: dict) -> tuple[Config, Resume | None]:
    """The settings to train with, and the run to resume (None for a new run)."""
    extend = overrides.pop("extend", None) or "stretch"   # a flag of --resume, not a setting of the run
    if resume is not None:
        resumed = resume_settings(resume, config, config_file, overrides, extend)
        return resumed.config, resumed
    if config is None and config_file is None and overrides.get("weights") and not overrides.get("model"):
        overrides["model"] = model_of_weights(overrides["weights"])   # `--weights RUN` names its own model
    return (config if config is not None else make_config(config_file, **overrides)), None


def run_epochs(parts: Parts) -> list[dict]:
    """fit, with Ctrl-C and SIGTERM ending the epoch at a batch boundary: the state is then saved
    (a second signal cannot cut the save short) and TrainingInterrupted raised."""
    cfg, runtime = parts.cfg, parts.runtime
    with StopRequest() as stop:
        if parts.resumed is None:
            if parts.tensorboard is not None:
                parts.tensorboard.add_images(next(iter(parts.loaders.train))[0], parts.preprocess.mean,
                                             parts.preprocess.std)
        else:
            restore_rng(parts.resumed.state["rng"])   # last: building the model drew from the generators
        agree = (lambda flag: any_across(flag, runtime.device)) if runtime.distributed else None
        options = FitOptions(epochs=cfg.train.epochs, num_classes=len(parts.spec.class_names),
                             tta=cfg.train.tta, tta_mirror=mirror_suits(cfg.data.dataset, cfg.data.augment),
                             eval_every=cfg.train.eval_every, clock=parts.clock, stop=stop,
                             agree=agree)
        try:
            return fit(parts.step, parts.loaders.train, parts.loaders.val, options, parts.hooks, parts.start_at)
        except StoppedMidEpoch as e:
            at = e.at
            if parts.checkpoints.writes:
                parts.checkpoints.save_state(at.epoch, at.step, at.loss_sum, at.images, at.seconds)
            barrier()   # every process leaves once the state is written
            raise TrainingInterrupted(
                f"stopped in epoch {at.epoch + 1} after {at.step} of its {len(parts.loaders.train)} steps; "
                f"the state is saved: resume with  tudui train --resume {parts.run}",
                stop.requested or signal.SIGTERM) from None


def finish(parts: Parts, history: list[dict]) -> TrainResult:
    """The one evaluation of the kept weights on test (val without a test split), with the report
    when asked; the summary lines and the result."""
    cfg, run = parts.cfg, parts.run
    if not history:
        raise TuduiError(f"{run}: nothing left to train")
    split = "test" if parts.loaders.test is not None else "val"
    with _saved_if_stopped(run, split):
        measured = _final(parts, split)
    stopped = parts.early_stopping.reason if parts.early_stopping is not None else None
    result = TrainResult(run_dir=run.path, best_epoch=parts.checkpoints.best_epoch,
                         val_accuracy=parts.checkpoints.best_val_accuracy, final_split=split,
                         final=measured.metrics if measured else None, stopped_early=stopped, history=history,
                         best_weights=run.best, last_weights=run.last, config=cfg, report=None)
    if stopped:
        parts.say(stopped)
    elif history[-1].get("time_budget_spent"):
        parts.say(f"time budget spent: {cfg.train.time_budget:g} s of training ended the run in epoch "
                  f"{history[-1]['epoch']} of at most {cfg.train.epochs}")
    elif cfg.train.time_budget and history[-1]["epoch"] == cfg.train.epochs:
        parts.say(f"time budget not spent: the run's {counted(cfg.train.epochs, 'epoch')} (--epochs) took "
                  f"{parts.clock.elapsed():.0f} s of its {cfg.train.time_budget:g} s; a larger --epochs uses "
                  f"more of it")
    # The numbers first: the report's pictures take seconds to draw and change none of them.
    parts.say(summary(result, cfg.train.monitor, has_val=parts.loaders.val is not None))
    parts.say(f"run directory: {run}  (weights/best.safetensors, metrics.csv; "
              f"view with: tensorboard --logdir {cfg.train.project})")
    for export in stale_exports(run):
        source = run.path if export.stem == "best" else export.with_suffix(".safetensors")
        parts.warn(f"{export} was exported from older weights than {export.stem}.safetensors now holds: export "
                   f"again with  tudui export {source} {export_flags(export)}")
    if parts.checkpoints.writes and run.state.is_file() and (size := run.weights_bytes()) >= LARGE_WEIGHTS:
        parts.say(f"{run.weights_dir} takes {human_bytes(size)} of disk, {human_bytes(run.state.stat().st_size)} "
                  f"of it {run.state.name}, which only --resume needs (to continue or extend this run)")
    if measured is not None and cfg.train.report:
        with _saved_if_stopped(run, split):
            report = final_report(run, split, measured, getattr(parts.spec, split), cfg, parts.tensorboard.writer,
                                  parts.warn)
        if report is not None:
            result = dataclasses.replace(result, report=report)
            parts.say(f"report: {report}  (confusion matrix, mistakes, curves; open it in a browser)")
    elif measured is not None and parts.checkpoints.writes:   # --no-report: the measurement is still kept
        _keep_metrics(run, split, measured.metrics, parts.warn)
    if parts.skipped_images:
        skipped = len(parts.skipped_images)
        parts.warn(f"{counted(skipped, 'unreadable image')} {'was' if skipped == 1 else 'were'} skipped (named in the "
                   f"warnings above)")
    return result


def _keep_metrics(run: RunDir, split: str, metrics: dict, warn: Callable[[str], None]) -> None:
    """metrics.json in the run without the report: the final numbers outlive the terminal."""
    from tudui.report import write_metrics
    try:
        with _saved_if_stopped(run, split):
            write_metrics(run.path, metrics)
    except OSError as e:
        warn(f"{run.path / 'metrics.json'} could not be written ({e.strerror or e}); the numbers above are "
             f"measured and the run itself is complete in {run}")


def stale_exports(run: RunDir) -> list[Path]:
    """The exports in a run's weights folder (tudui export's default place) that are older than the
    weights of the same name they were made from: a resumed run wrote those again."""
    if not run.weights_dir.is_dir():
        return []
    exports = [path for path in sorted(run.weights_dir.iterdir()) if is_exported(path)]
    return [path for path in exports if (source := path.with_suffix(".safetensors")).is_file()
            and path.stat().st_mtime_ns < source.stat().st_mtime_ns]


def export_flags(export: Path) -> str:
    """The `tudui export` flags that made export again as it was (its format; --half, --batch N and
    --input float where it has them), from its metadata; the format alone if that cannot be read."""
    try:
        info = read_metadata(export)[1]
    except TuduiError:
        return f"--format {format_of(export)}"
    return " ".join([f"--format {info.format}"] + (["--half"] if info.dtype == "float16" else [])
                    + ([f"--batch {info.batch}"] if info.batch is not None else [])
                    + (["--input float"] if info.pixels == "float" else []))


@contextlib.contextmanager
def _another_process_failed():
    """Under torchrun, a collective that fails (Gloo: "Connection closed by peer", NCCL or Gloo: a
    timeout) most often means that another process of the run ended first, or hangs: said as such."""
    try:
        yield
    except RuntimeError as e:
        place = torchrun_place()
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        if place is None or place[1] <= 1 or not _COLLECTIVE_FAILED.search(str(e)):
            raise   # this process's own error (out of memory, say): said as itself
        raise TuduiError(f"rank {place[0]} stops: another process of this run ended or stopped answering "
                         f"({first}); if it said why, that is above (TUDUI_DIST_TIMEOUT sets how long a "
                         f"process waits for the others, {PROCESS_GROUP_TIMEOUT:g} s)") from None


# What Gloo and NCCL say when the other end of a collective went away or did not answer in time.
_COLLECTIVE_FAILED = re.compile(r"gloo|nccl|connection (closed|reset|refused)|closed by peer|broken pipe|"
                                r"timed out|timeout|socket|rendezvous|process group", re.IGNORECASE)


class _Terminated(BaseException):
    """SIGTERM while the final measurement or the report is made (see _saved_if_stopped)."""


def _terminated(signum, frame):
    raise _Terminated


@contextlib.contextmanager
def _saved_if_stopped(run, split: str):
    """Ctrl-C or SIGTERM during the final measurement or report: say that the training itself is
    safe (SIGTERM would otherwise end the process there without a word)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main else None
    try:
        yield
    except (KeyboardInterrupt, _Terminated) as e:
        raise TrainingInterrupted(
            f"stopped while measuring the {split} split or writing the report; training had finished and its "
            f"weights are saved in {run.weights_dir}; measure them with  tudui eval --weights {run} --out {run}",
            signal.SIGTERM if isinstance(e, _Terminated) else signal.SIGINT) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _final(parts: Parts, split: str) -> Measured | None:
    """The final evaluation, by rank 0 alone on the whole split; the other processes are done.

    No collective follows it: rank 0 may take longer than any timeout (a large test split on a
    CPU) without the others giving up on it.
    """
    if not parts.runtime.is_main:
        return None
    loader = getattr(parts.loaders, split)
    if parts.runtime.distributed:   # the run's loaders hold this process's share only
        loader = make_eval_loader(getattr(parts.spec, split), parts.preprocess, parts.runtime.device,
                                  parts.cfg.data.batch_size, choice=parts.cfg.data.loader,
                                  in_memory=parts.spec.in_memory)
    return final_measure(parts.run, split, loader, parts.runtime, parts.spec.source, parts.cfg, parts.warn)


def summary(result: TrainResult, monitor: str, has_val: bool) -> str:
    """The result in one line, each number named for its split and how the weights were chosen."""
    if has_val:
        val = f" (val accuracy {result.val_accuracy:.2%})" if result.val_accuracy is not None else ""
        kept = next((row for row in result.history if row["epoch"] == result.best_epoch), {})
        if monitor == "val_loss" and kept.get("val_loss") is not None:   # the number that chose it
            val = f" (val loss {kept['val_loss']:.4f})"
        elif monitor == "val_balanced_accuracy" and kept.get(monitor) is not None:
            val = f" (val balanced accuracy {kept[monitor]:.2%})"
        chosen = f"epoch {result.best_epoch}, the best by {monitor}{val}"
    else:
        chosen = f"epoch {result.best_epoch}, the last (no val split to choose by)"
    if result.final is None:
        return f"kept the weights of {chosen}; the final evaluation failed (see the warning above)"
    final = result.final
    numbers = (f"{result.final_split} accuracy {final['accuracy']:.2%} (balanced {final['balanced_accuracy']:.2%}, "
               f"macro-F1 {final['macro_f1']:.3f})")
    caveat = "" if result.final_split == "test" else "; no test split: val chose these weights, so expect a little less"
    return f"{numbers} of the weights of {chosen}{caveat}"
