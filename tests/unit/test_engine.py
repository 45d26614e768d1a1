import copy
import math
import warnings

import pytest
import torch
from torch import nn

from tudui.config import OptimConfig
from tudui.engine.hooks import Hooks
from tudui.engine.loop import TrainStep, evaluate, train_one_epoch
from tudui.engine.optim import (
    MuonWithSGD,
    create_optimizer,
    create_scheduler,
    describe_optimizer,
    lr_factor,
    orthogonalize,
)
from tudui.runtime import Runtime


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
    # no images of class 2, one predicted as it: its accuracy is not measured (None), not 0 %
    without = evaluate(Fixed(), [(inputs[:3], torch.tensor([0, 1, 1]))], torch.device("cpu"), num_classes=3)
    assert without["per_class_accuracy"] == [1.0, 0.5, None]


class Scores(nn.Module):
    """Returns the row of a fixed score table that each input's value indexes."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, x):
        return self.table[x[:, 0, 0, 0].long()]


def test_evaluate_top5_and_kept_outputs_agree_with_scikit_learn():
    from sklearn.metrics import top_k_accuracy_score
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(40, 8, generator=generator)
    targets = torch.randint(0, 8, (40,), generator=generator)
    inputs = torch.arange(40).float().view(-1, 1, 1, 1)
    batches = [(inputs[:16], targets[:16]), (inputs[16:], targets[16:])]
    metrics = evaluate(Scores(table), batches, torch.device("cpu"), num_classes=8, keep_outputs=True)
    assert metrics["top5_accuracy"] == pytest.approx(
        top_k_accuracy_score(targets.numpy(), table.numpy(), k=5, labels=list(range(8))))
    assert metrics["accuracy"] < metrics["top5_accuracy"] < 1.0
    assert torch.equal(metrics["targets"], targets)
    assert torch.allclose(metrics["probabilities"], torch.softmax(table, dim=1))
    plain = evaluate(Scores(table), batches, torch.device("cpu"), num_classes=8)
    assert "probabilities" not in plain and plain["confusion"] == metrics["confusion"]


def test_schedules_warm_up_then_decay_to_the_final_rate():
    assert lr_factor(0.01, 0.1, "cosine") == pytest.approx(0.1)
    assert lr_factor(0.1, 0.1, "cosine") == 1.0
    assert lr_factor(0.55, 0.1, "cosine") == pytest.approx(0.5)
    assert lr_factor(0.55, 0.1, "linear") == pytest.approx(0.5)
    assert lr_factor(0.99, 0.0, "constant") == 1.0
    assert lr_factor(1.0, 0.0, "linear") == 0.0
    assert lr_factor(1.0, 0.0, "linear", final=0.07) == pytest.approx(0.07)
    assert lr_factor(1.0, 0.0, "cosine", final=0.2) == pytest.approx(0.2)


def scheduled_rates(cfg: OptimConfig, steps_per_epoch: int, epochs: int, window=None) -> list[float]:
    """The learning rate at each step of a run of a tiny model under cfg's schedule."""
    optimizer = create_optimizer(cfg, nn.Linear(2, 2))
    scheduler = create_scheduler(cfg, optimizer, steps_per_epoch=steps_per_epoch, epochs=epochs, window=window)
    rates = []
    for _ in range(steps_per_epoch * epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_warm_up_starts_above_zero_and_reaches_the_peak():
    cfg = OptimConfig(lr=1.0, schedule="constant", warmup_epochs=1)
    assert scheduled_rates(cfg, 4, 2) == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_scheduler_steps_the_optimizer_learning_rate():
    rates = scheduled_rates(OptimConfig(lr=0.1, schedule="linear"), 5, 2)
    assert rates[0] == 0.1 and all(a > b for a, b in zip(rates, rates[1:]))


def test_adamw_is_chosen_by_name():
    optimizer = create_optimizer(OptimConfig(optimizer="adamw"), nn.Linear(2, 2))
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["lr"] == 1e-3


def test_tta_logits_are_the_weighted_average_of_the_views():
    from tudui.data.transforms import tta_views
    from tudui.engine.loop import predict_logits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    x = torch.randn(5, 3, 6, 6)
    for level in (0, 1, 2):
        expected = sum(model(view) * weight for view, weight in tta_views(x, level))
        assert torch.allclose(predict_logits(model, x, level), expected, atol=1e-6)
    mirrored = (model(x) + model(x.flip(-1))) / 2
    assert torch.allclose(predict_logits(model, x, 1), mirrored, atol=1e-6)


def test_norm_biases_get_their_own_rate_and_the_same_decay_pull():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    cfg = OptimConfig(lr=0.1, weight_decay=0.01, bias_lr_scale=8.0)
    groups = create_optimizer(cfg, model).param_groups
    assert groups[0]["params"] == [model[1].bias] and groups[0]["lr"] == pytest.approx(0.8)
    assert groups[0]["lr"] * groups[0]["weight_decay"] == pytest.approx(0.1 * 0.01)
    assert len(groups[1]["params"]) == 3      # conv weight and bias, BN weight


class Listener:
    """A hook that records the events of each step."""

    def __init__(self, on_step=None):
        self.optimizer_steps = 0
        if on_step is not None:
            self.on_step = on_step

    def on_optimizer_step(self):
        self.optimizer_steps += 1


def _tiny_epoch(batches, sync_every, on_step=None, listener=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    step = TrainStep(model=model, loss_fn=nn.CrossEntropyLoss(reduction="none"), optimizer=optimizer,
                     scheduler=scheduler, runtime=Runtime(device=torch.device("cpu")))
    return train_one_epoch(step, batches, Hooks([listener or Listener(on_step)]), sync_every=sync_every)


def test_losses_read_back_in_windows_reach_every_step_in_order():
    torch.manual_seed(1)
    batches = [(torch.randn(8, 3, 2, 2), torch.randint(0, 3, (8,))) for _ in range(10)]
    every_step, windowed = [], []
    straight = _tiny_epoch(batches, 1, lambda loss, n, lr: every_step.append(loss))
    batched = _tiny_epoch(batches, 4, lambda loss, n, lr: windowed.append(loss))
    assert windowed == every_step and len(windowed) == 10
    assert batched["loss"] == straight["loss"] and batched["images"] == 80


def test_hooks_hear_of_every_optimizer_step_at_once_and_an_early_stop_ends_the_epoch():
    torch.manual_seed(1)
    batches = [(torch.randn(8, 3, 2, 2), torch.randint(0, 3, (8,))) for _ in range(10)]
    listener, losses = Listener(), []
    listener.on_step = lambda loss, n, lr: losses.append(loss)
    model_steps = []

    def stop_after_three():
        model_steps.append(listener.optimizer_steps)
        return listener.optimizer_steps == 3

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = TrainStep(model=model, loss_fn=nn.CrossEntropyLoss(reduction="none"), optimizer=optimizer,
                     scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0),
                     runtime=Runtime(device=torch.device("cpu")))
    result = train_one_epoch(step, batches, Hooks([listener]), should_stop=stop_after_three, sync_every=8)
    assert model_steps == [1, 2, 3]            # told before the loss window was read back
    assert result["steps"] == 3 and len(losses) == 3 and result["images"] == 24


def test_a_non_finite_loss_stops_the_epoch_naming_its_step():
    batches = [(torch.randn(8, 3, 2, 2), torch.randint(0, 3, (8,))) for _ in range(6)]
    batches[4] = (torch.full((8, 3, 2, 2), float("nan")), batches[4][1])
    with pytest.raises(FloatingPointError, match="nan at step 5 of this epoch"):
        _tiny_epoch(batches, 4)


def test_orthogonalize_pushes_singular_values_towards_one():
    torch.manual_seed(0)
    for rows, cols in ((16, 72), (72, 16)):
        left = torch.linalg.qr(torch.randn(rows, 16))[0]
        right = torch.linalg.qr(torch.randn(cols, 16))[0]
        matrix = left @ torch.diag(torch.logspace(-1.5, 0, 16)) @ right.T   # singular values 0.03 to 1
        values = torch.linalg.svdvals(orthogonalize(matrix))[:16]
        assert values.min() > 0.6 and values.max() < 1.25, values


def _steps(model, optimizer, count=3):
    torch.manual_seed(5)
    for _ in range(count):
        inputs, targets = torch.randn(4, 3, 6, 6), torch.randint(0, 3, (4,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()


def test_muon_steps_the_parameters_that_are_not_filters_as_torch_sgd_does():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(108, 3))
    twin = copy.deepcopy(model)
    cfg = OptimConfig(optimizer="muon", lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)
    _steps(model, create_optimizer(cfg, model))
    _steps(twin, torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01))
    for mine, theirs in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(mine, theirs)


def test_muon_moves_filters_at_a_fixed_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(128, 3))
    optimizer = create_optimizer(OptimConfig(optimizer="muon", lr=0.05, muon_lr=0.1), model)
    assert [len(g["params"]) for g in optimizer.param_groups] == [1, 3]   # the filters; biases + head
    before = model[0].weight.detach().clone()
    _steps(model, optimizer)
    filters = model[0].weight
    assert not torch.allclose(filters, before)
    # rescaled to norm sqrt(8) before each step, then moved by 0.1 times a matrix of norm ~sqrt(8)
    assert abs(filters.norm().item() - 8 ** 0.5) < 0.15 * 8 ** 0.5


def _reference_muon(filters, grads_per_step, lr, momentum, nesterov, steps):
    """Muon written out per filter bank in float64, as the record's optimizer reads: momentum,
    rescale to norm sqrt(out), flatten, normalise, Newton-Schulz on the wide side, step."""
    a, b, c = 3.4445, -4.7750, 2.0315
    weights = [f.double().clone() for f in filters]
    buffers = [torch.zeros_like(w) for w in weights]
    for grads in grads_per_step:
        for w, buf, g in zip(weights, buffers, grads):
            g = g.double()
            buf.mul_(momentum).add_(g)
            update = g + momentum * buf if nesterov else buf
            w.mul_(len(w) ** 0.5 / (w.norm() + 1e-12))
            x = update.reshape(len(update), -1)
            x = x / (x.norm() + 1e-7)
            tall = x.shape[0] > x.shape[1]
            x = x.T if tall else x
            for _ in range(steps):
                gram = x @ x.T
                x = a * x + (b * gram + c * gram @ gram) @ x
            w.add_((x.T if tall else x).reshape(w.shape), alpha=-lr)
    return weights


@pytest.mark.parametrize("nesterov, steps", [(True, 5), (False, 3)])
def test_muon_step_equals_the_reference_arithmetic(nesterov, steps):
    torch.manual_seed(0)
    # Two banks of one shape (stacked together), a wide one and a tall one (4 x 2 x 3 x 3: 4 x 18).
    shapes = [(6, 4, 3, 3), (6, 4, 3, 3), (3, 6, 1, 1), (4, 2, 3, 3), (40, 2, 1, 1)]
    filters = [nn.Parameter(torch.randn(shape)) for shape in shapes]
    grads_per_step = [[torch.randn(shape) for shape in shapes] for _ in range(3)]
    expected = _reference_muon(filters, grads_per_step, lr=0.1, momentum=0.6, nesterov=nesterov, steps=steps)
    optimizer = MuonWithSGD([{"params": filters, "lr": 0.1, "momentum": 0.6, "muon": True,
                              "ns_steps": steps}], nesterov=nesterov)
    for grads in grads_per_step:
        for f, g in zip(filters, grads):
            f.grad = g.clone()
        optimizer.step()
    for mine, theirs in zip(filters, expected):
        torch.testing.assert_close(mine.detach().double(), theirs, rtol=1e-4, atol=1e-5)


def test_orthogonalize_does_a_stack_as_each_matrix_alone():
    torch.manual_seed(1)
    stack = torch.randn(3, 8, 20)
    together = orthogonalize(stack)
    for i in range(3):
        torch.testing.assert_close(together[i], orthogonalize(stack[i]), rtol=1e-5, atol=1e-6)
    half = orthogonalize(stack, dtype=torch.bfloat16)   # the GPU's arithmetic, close to float32's
    assert half.dtype == torch.float32 and (half - together).abs().max() < 0.05


def test_a_schedule_window_spans_only_its_epochs():
    cfg = OptimConfig(lr=1.0, schedule="linear", warmup_epochs=1)
    rates = scheduled_rates(cfg, 2, 5, window=(2, 3))   # a new schedule over epochs 3-5
    assert rates[4:] == scheduled_rates(cfg, 2, 3)      # inside it: a fresh 3-epoch run's rates
    assert rates[:4] == [0.0] * 4                        # before it: where the window starts (warm-up: 0)
    assert scheduled_rates(cfg, 2, 4, window=(0, 2))[4:] == [0.0] * 4   # after it: its last rate holds


def test_the_optimizer_line_says_what_trains_which_weights_at_which_rate():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    sgd = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="linear",
                      warmup_epochs=2, bias_lr_scale=64)
    assert describe_optimizer(sgd, create_optimizer(sgd, model)) == (
        "SGD (lr 0.1, Nesterov momentum 0.9, weight decay 0.0005, BatchNorm biases at 64x the rate); "
        "linear schedule, warm-up 2 epochs")
    muon = OptimConfig(optimizer="muon", lr=0.1, momentum=0.9, muon_lr=0.24, muon_momentum=0.6, muon_steps=5)
    filters = model[0].weight.numel()                       # 4 x 3 x 3 x 3: the one 4-D weight
    others = sum(p.numel() for p in model.parameters()) - filters
    line = describe_optimizer(muon, create_optimizer(muon, model))
    assert line.startswith(f"Muon for the {filters} weights of the conv filters (lr 0.24, momentum 0.6, "
                           f"5 Newton-Schulz steps); SGD for the other {others} (lr 0.1, momentum 0.9")
    adamw = OptimConfig(optimizer="adamw", lr=1e-3, momentum=0.9, weight_decay=0.05, schedule="cosine")
    assert describe_optimizer(adamw, create_optimizer(adamw, model)) == (
        "AdamW (lr 0.001, weight decay 0.05); cosine schedule")


def test_under_a_time_budget_the_clock_follows_whichever_end_comes_first(monkeypatch):
    import tudui.engine.optim as optim
    now = {"t": 100.0}
    monkeypatch.setattr(optim.time, "perf_counter", lambda: now["t"])
    clock = optim.RunProgress(total_steps=10, time_budget=20.0)
    clock.start()
    now["t"] = 105.0                       # a quarter of the budget, but 8 of the 10 steps: the steps lead
    assert clock(8) == pytest.approx(0.8) and not clock.out_of_time()
    assert clock(10) == 1.0                # the last epoch ends the schedule with budget left
    assert not clock.out_of_time()         # ... which does not count as the budget running out
    now["t"] = 115.0                       # three quarters of the budget, 2 steps: the clock leads
    assert clock(2) == pytest.approx(0.75)
    now["t"] = 121.0
    assert clock(2) == 1.0 and clock.out_of_time()
    clock.stop()                            # training over: the final test pass is not training time
    now["t"] = 500.0
    assert clock.elapsed() == pytest.approx(21.0)
    assert optim.RunProgress(total_steps=10)(5) == pytest.approx(0.5)   # no budget: steps alone


def test_balanced_accuracy_and_macro_f1_agree_with_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, f1_score
    generator = torch.Generator().manual_seed(1)
    table = torch.randn(60, 5, generator=generator)
    # class 4 has no images but is predicted now and then: it counts in neither mean
    targets = torch.randint(0, 4, (60,), generator=generator)
    inputs = torch.arange(60).float().view(-1, 1, 1, 1)
    metrics = evaluate(Scores(table), [(inputs, targets)], torch.device("cpu"), num_classes=5)
    predicted = table.argmax(dim=1).numpy()
    assert (predicted == 4).any()
    with warnings.catch_warnings():  # scikit-learn notes the predicted class 4 that has no images
        warnings.simplefilter("ignore", UserWarning)
        expected = balanced_accuracy_score(targets.numpy(), predicted)
    assert math.isclose(metrics["balanced_accuracy"], expected)
    assert math.isclose(metrics["macro_f1"], f1_score(targets.numpy(), predicted, labels=[0, 1, 2, 3],
                                                      average="macro", zero_division=0))
    assert metrics["per_class_accuracy"][4] is None
