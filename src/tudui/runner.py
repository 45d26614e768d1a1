"""tudui.train: the whole training job as one story, settings -> build -> fit -> finish.

`build` (tudui.build) turns the settings into the parts of a run; `run_epochs` trains them
and saves where a signal stopped it; `finish` writes the report and returns the results.
The CLI is a thin layer over `train` and a notebook calls it directly.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path

from tudui.build import Parts, build
from tudui.checkpoint import Resume, restore_rng, resume_settings
from tudui.config import Config, make_config
from tudui.engine import FitOptions, StoppedMidEpoch, fit
from tudui.errors import TuduiError
from tudui.evaluation import run_report
from tudui.interrupts import StopRequest, TrainingInterrupted


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a finished training run produced."""
    run_dir: Path
    best_accuracy: float
    best_epoch: int
    final_accuracy: float
    history: list[dict] = field(default_factory=list)
    best_weights: Path | None = None
    last_weights: Path | None = None
    config: Config | None = None
    report: Path | None = None       # report.html, when it was written


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
    parts = build(cfg, resumed, progress, trust_pickle)
    try:
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


def settings(config: Config | None, config_file: str | Path | None, resume: str | Path | None,
             overrides: dict) -> tuple[Config, Resume | None]:
    """The settings to train with, and the run to resume (None for a new run)."""
    if resume is not None:
        resumed = resume_settings(resume, config, config_file, overrides)
        return resumed.config, resumed
    return (config if config is not None else make_config(config_file, **overrides)), None


def run_epochs(parts: Parts) -> list[dict]:
    """fit, with Ctrl-C and SIGTERM ending the epoch at a batch boundary: the state is then saved
    (a second signal cannot cut the save short) and TrainingInterrupted raised."""
    cfg = parts.cfg
    with StopRequest() as stop:
        if parts.resumed is None:
            parts.tensorboard.add_images(next(iter(parts.train_loader))[0], parts.preprocess.mean,
                                         parts.preprocess.std)
        else:
            restore_rng(parts.resumed.state["rng"])   # last: building the model drew from the generators
        options = FitOptions(epochs=cfg.train.epochs, num_classes=len(parts.spec.class_names),
                             tta=cfg.train.tta, eval_every=cfg.train.eval_every, clock=parts.clock, stop=stop)
        try:
            return fit(parts.step, parts.train_loader, parts.test_loader, options, parts.hooks, parts.start_at)
        except StoppedMidEpoch as e:
            at = e.at
            parts.checkpoints.save_state(at.epoch, at.step, at.loss_sum, at.images)
            raise TrainingInterrupted(
                f"stopped in epoch {at.epoch + 1} after {at.step} of its {len(parts.train_loader)} steps; "
                f"the state is saved: resume with  tudui train --resume {parts.run}", stop.requested) from None


def finish(parts: Parts, history: list[dict]) -> TrainResult:
    """The report of the best weights (when asked), the summary lines and the result."""
    cfg, run, checkpoints = parts.cfg, parts.run, parts.checkpoints
    report = None
    if cfg.train.report:
        try:
            report = run_report(run, parts.test_loader, parts.runtime, parts.spec, cfg, parts.tensorboard.writer,
                                parts.warn)
        except KeyboardInterrupt:
            raise TrainingInterrupted(
                f"stopped while writing the report; training had finished and its weights are saved in "
                f"{run.weights_dir}; make the report with  tudui eval --weights {run} --out {run}",
                signal.SIGINT) from None
    if not history:
        raise TuduiError(f"{run}: nothing left to train")
    result = TrainResult(run_dir=run.path, best_accuracy=checkpoints.best_accuracy,
                         best_epoch=checkpoints.best_epoch, final_accuracy=history[-1]["test_accuracy"],
                         history=history, best_weights=run.best, last_weights=run.last, config=cfg,
                         report=report)
    parts.say(f"best test accuracy {result.best_accuracy:.2%} (epoch {result.best_epoch}), "
              f"final {result.final_accuracy:.2%}")
    parts.say(f"run directory: {run}  (weights/best.safetensors, metrics.csv; "
              f"view with: tensorboard --logdir {cfg.train.project})")
    if report is not None:
        parts.say(f"report: {report}  (confusion matrix, mistakes, curves; open it in a browser)")
    if parts.skipped_images:
        parts.warn(f"{len(parts.skipped_images)} unreadable image(s) were skipped (named in the warnings above)")
    return result
