import math

import torch
from torch import nn

from tudui.engine.loop import evaluate
from tudui.engine.optim import create_optimizer, create_scheduler, lr_factor
from tudui.config import OptimConfig


class Fixed(nn.Module):
    """Predicts class (input value) for every image: a model whose answers we know."""

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), 3).float() * 10


def test_evaluate_counts_agree_with_each_other():
    inputs = torch.tensor([0, 1, 2, 2, 1, 0, 0]).float().view(-1, 1, 1, 1)
    targets = torch.tensor([0, 1, 2, 1, 1, 2, 0])
    metrics = evaluate(Fixed(), [(inputs[:4], targets[:4]), (inputs[4:], targets[4:])],
                       torch.device("cpu"), num_classes=3)
    confusion = torch.tensor(metrics["confusion"])
    assert confusion.sum() == metrics["count"] == 7
    assert math.isclose(metrics["accuracy"], 5 / 7)
    assert math.isclose(metrics["accuracy"], confusion.diag().sum().item() / 7)
    assert metrics["per_class_accuracy"] == [1.0, 2 / 3, 0.5]
    assert confusion[1, 2] == 1 and confusion[2, 0] == 1


def test_schedules_warm_up_then_decay_to_zero():
    assert lr_factor(0, 100, 10, "cosine") == 0.1
    assert lr_factor(9, 100, 10, "cosine") == 1.0
    assert lr_factor(10, 100, 10, "cosine") == 1.0
    assert math.isclose(lr_factor(55, 100, 10, "cosine"), 0.5)
    assert math.isclose(lr_factor(55, 100, 10, "linear"), 0.5)
    assert lr_factor(99, 100, 0, "constant") == 1.0
    assert lr_factor(100, 100, 0, "linear") == 0.0


def test_scheduler_steps_the_optimizer_learning_rate():
    model = nn.Linear(2, 2)
    cfg = OptimConfig(lr=0.1, schedule="linear")
    optimizer = create_optimizer(cfg, model)
    scheduler = create_scheduler(cfg, optimizer, steps_per_epoch=5, epochs=2)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 0.1 and all(a > b for a, b in zip(rates, rates[1:]))


def test_adamw_is_chosen_by_name():
    optimizer = create_optimizer(OptimConfig(name="adamw"), nn.Linear(2, 2))
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["lr"] == 1e-3
