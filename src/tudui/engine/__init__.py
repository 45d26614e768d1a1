"""Training machinery: the epoch loop, evaluation, optimizers and schedules, fit."""
from tudui.engine.fit import fit
from tudui.engine.loop import evaluate, train_one_epoch
from tudui.engine.optim import create_optimizer, create_scheduler

__all__ = ["fit", "evaluate", "train_one_epoch", "create_optimizer", "create_scheduler"]
