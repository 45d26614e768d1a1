"""What a training run is made of (`Parts`): build makes them, announce describes them, the runner
runs them."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from tudui.checkpoint import CheckpointHook, EarlyStopping
from tudui.config import Config
from tudui.data import DatasetSpec, Preprocess
from tudui.data.loaders import Loaders
from tudui.engine import Hooks, ResumePoint, RunProgress, TrainStep
from tudui.engine.averaging import Lookahead
from tudui.logging import TensorBoardHook
from tudui.resume import Resume
from tudui.rundir import RunDir
from tudui.runtime import Runtime
from tudui.transfer import StartingModel


@dataclass(kw_only=True)
class Parts:
    """Everything a training run is made of."""
    cfg: Config
    runtime: Runtime
    run: RunDir
    resumed: Resume | None          # the saved state a resumed run goes on from
    start_at: ResumePoint           # where fit starts: epoch and step
    spec: DatasetSpec
    skipped_images: list[tuple[str, str]]
    preprocess: Preprocess          # with the mean and std training normalised by
    augment: str
    loaders: Loaders                # train, and val and test where the data has them
    start: StartingModel            # where the weights came from
    model: nn.Module                # the plain module: what is saved
    step: TrainStep                 # its model is the compiled wrapper under --compile
    averager: Lookahead | None
    clock: RunProgress
    checkpoints: CheckpointHook
    early_stopping: EarlyStopping | None
    tensorboard: TensorBoardHook | None   # rank 0's; None in the other processes
    hooks: Hooks
    say: Callable[[str], None]      # the run's lines: printed, or logged with progress=False
    warn: Callable[[str], None]
