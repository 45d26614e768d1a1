"""Lookahead weight averaging, alone and as a hook inside fit."""
import pytest
import torch
from torch import nn

from tudui.engine import FitOptions, Hooks, TrainStep, fit
from tudui.engine.averaging import Lookahead
from tudui.runtime import Runtime


def test_lookahead_pulls_weights_to_the_average_and_ends_on_it():
    model = nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(0.0)
    lookahead = Lookahead(model, progress=lambda step: 1.0, every=1, max_decay=0.5)
    model.weight.data.fill_(1.0)
    lookahead.on_optimizer_step()              # average 0 -> 0.5, model reset to it
    assert model.weight.item() == pytest.approx(0.5)
    model.weight.data.fill_(2.0)
    lookahead.on_train_end()                   # the model takes the average, untouched by 2.0
    assert model.weight.item() == pytest.approx(0.5)


def test_the_average_moves_only_every_few_steps_and_more_slowly_as_the_run_goes_on():
    model = nn.Linear(1, 1, bias=False)
    model.weight.data.fill_(0.0)
    done = {"share": 0.5}
    lookahead = Lookahead(model, progress=lambda step: done["share"], every=3, max_decay=0.8)
    for _ in range(2):
        model.weight.data.fill_(1.0)
        lookahead.on_optimizer_step()
    assert model.weight.item() == 1.0          # steps 1 and 2: nothing happens
    lookahead.on_optimizer_step()              # step 3: decay 0.8 * 0.5 ** 3 = 0.1
    assert model.weight.item() == pytest.approx(0.9)
    done["share"] = 1.0
    model.weight.data.fill_(2.0)
    for _ in range(3):
        lookahead.on_optimizer_step()          # decay 0.8: 0.9 + 0.2 * (2 - 0.9)
    assert model.weight.item() == pytest.approx(1.12)


def test_a_saved_average_restores_exactly():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    lookahead = Lookahead(model, progress=lambda step: 1.0, every=1)
    with torch.no_grad():
        model.weight.add_(1.0)
    lookahead.on_optimizer_step()
    saved = {"average": {k: v.clone() for k, v in lookahead.state_dict()["average"].items()},
             "step": lookahead.state_dict()["step"]}
    twin = Lookahead(nn.Linear(3, 2), progress=lambda step: 1.0, every=1)
    twin.load_state_dict(saved)
    assert twin.step == 1
    for name, value in saved["average"].items():
        assert torch.equal(twin.average[name], value)


def test_as_a_hook_it_hears_every_step_and_leaves_the_model_on_the_average():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    batches = [(torch.randn(4, 3, 2, 2), torch.randint(0, 3, (4,))) for _ in range(5)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    step = TrainStep(model=model, loss_fn=nn.CrossEntropyLoss(reduction="none"), optimizer=optimizer,
                     scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                     runtime=Runtime(device=torch.device("cpu")))
    lookahead = Lookahead(model, progress=lambda s: 0.5, every=2)
    history = fit(step, batches, batches, FitOptions(epochs=2, num_classes=3), Hooks([lookahead]))
    assert len(history) == 2 and lookahead.step == 10
    for name, value in model.state_dict().items():
        assert torch.equal(value, lookahead.average[name])   # on_train_end put the average in
