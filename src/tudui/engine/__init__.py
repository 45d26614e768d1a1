"""Training machinery: the epoch loop, evaluation, optimizers and schedules, hooks, fit."""
from tudui.engine.fit import FitOptions, ResumePoint, StoppedMidEpoch, fit
from tudui.engine.hooks import Hook, Hooks
from tudui.engine.loop import TrainStep, evaluate, train_one_epoch
from tudui.engine.optim import RunProgress, create_optimizer, create_scheduler

__all__ = ["FitOptions", "Hook", "Hooks", "ResumePoint", "RunProgress", "StoppedMidEpoch", "TrainStep",
           "create_optimizer", "create_scheduler", "evaluate", "fit", "train_one_epoch"]
