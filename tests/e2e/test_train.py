"""tudui.train / evaluate / predict as a notebook calls them."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

import tudui
from tudui.errors import TuduiError


def test_synthetic_data_is_learned(tmp_path):
    result = tudui.train(data="synthetic", epochs=3, val_split=0.25, project=str(tmp_path), progress=False)
    assert result.test_accuracy >= 0.9           # 4 classes: chance is 25 %
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_weights.is_file() and result.last_weights.is_file()
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {"epoch", "train_loss", "val_loss", "val_accuracy", "val_top5", "val_balanced_accuracy",
                            "lr", "seconds"}
    for row in rows:   # 4 classes: top-5 would hold every class, so it is not logged
        assert 0 < float(row["val_accuracy"]) <= 1.0 and row["val_top5"] == ""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    scalars = set(EventAccumulator(str(result.run_dir)).Reload().Tags()["scalars"])
    assert {"val/accuracy", "hparam/accuracy"} <= scalars
    assert not {"val/top5_accuracy", "hparam/top5_accuracy"} & scalars


def test_training_is_repeatable_with_the_same_seed(tmp_path):
    runs = [tudui.train(data="synthetic", epochs=1, seed=5, project=str(tmp_path), progress=False)
            for _ in range(2)]
    assert runs[0].history[0]["train_loss"] == runs[1].history[0]["train_loss"]
    assert runs[0].run_dir.name == "exp" and runs[1].run_dir.name == "exp2"


def test_a_name_taken_already_is_numbered_and_the_first_lines_say_so(tmp_path, capsys):
    said = []
    for _ in range(2):
        tudui.train(data="synthetic", epochs=1, name="mine", project=str(tmp_path), report=False)
        said.append(capsys.readouterr().out)
    assert f"run directory {tmp_path / 'mine'}\n" in said[0] and "exists" not in said[0]
    assert f"run directory {tmp_path / 'mine2'} ({tmp_path / 'mine'} exists)" in said[1]


def test_folder_training_evaluate_and_predict_agree(split_folder, tmp_path):
    result = tudui.train(data=str(split_folder), epochs=4, lr=0.05, project=str(tmp_path),
                         progress=False, model="tudui_relu")
    metrics = tudui.evaluate(result.run_dir)
    assert metrics["count"] == 12
    files = sorted((split_folder / "val").rglob("*.png"))
    predictions = tudui.predict(files, weights=result.best_weights, topk=1)
    correct = [p["predictions"][0]["class"] == f.parent.name for p, f in zip(predictions, files)]
    assert np.mean(correct) == pytest.approx(metrics["accuracy"])
    assert metrics["accuracy"] > 0.5


def test_predict_takes_pil_images_of_any_size_and_mode(digits_run):
    images = [Image.new("L", (300, 120), 30), Image.new("RGBA", (5, 5), (0, 0, 0, 0))]
    results = tudui.predict(images, weights=digits_run.run_dir, topk=3)
    for r in results:
        assert len(r["predictions"]) == 3
        probabilities = [p["probability"] for p in r["predictions"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6


def test_predict_reports_bad_files_and_still_predicts_the_rest(digits_run, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    results = tudui.predict([tmp_path / "bad.png", tmp_path / "good.png"], weights=digits_run.run_dir)
    assert "error" in results[0] and "bad.png" in results[0]["error"]
    assert "predictions" in results[1]


def test_evaluate_refuses_data_with_other_classes(digits_run, split_folder):
    with pytest.raises(TuduiError, match="has 3 classes the weights were not trained on: .cat., .dog., .fox."):
        tudui.evaluate(digits_run.run_dir, data=str(split_folder))


def test_missing_cuda_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(TuduiError, match="no CUDA"):
        tudui.train(data="synthetic", device="cuda", project=str(tmp_path), progress=False)


# Digits are 8x8 images blown up to 32 px: the whitening stem's gain is huge there, and with
# Muon its bias must stay fixed (--whiten-bias-epochs 0) or it grows without bound.
@pytest.mark.parametrize("optimizer, whiten_bias_epochs", [("sgd", -1), ("muon", 0)])
def test_the_fast_recipe_learns_digits_with_a_small_net(tmp_path, optimizer, whiten_bias_epochs):
    from helpers import REPO
    result = tudui.train(config_file=REPO / "configs" / "cifar10-fast.yaml", data="digits", val_split=0.1,
                         widths="16,32,32", epochs=4, batch_size=128, precision="fp32", augment="crop",
                         optimizer=optimizer, whiten_bias_epochs=whiten_bias_epochs,
                         project=str(tmp_path), progress=False)
    # 10 classes, chance is 10 %; 50 steps reach 70-89 % depending on the seed.
    assert result.test_accuracy >= 0.6
    # --eval-every 0 in the recipe: val is measured once, after the last epoch.
    assert [row["val_accuracy"] is None for row in result.history] == [True, True, True, False]
    assert result.history[-1]["val_accuracy"] <= result.history[-1]["val_top5"] <= 1.0     # 10 classes
    evaluated = tudui.evaluate(result.run_dir)                # with the recorded TTA level 2
    assert evaluated["tta"] == 2 and evaluated["accuracy"] == pytest.approx(result.test_accuracy)


def test_a_time_budget_ends_training_early_with_a_finished_schedule(tmp_path):
    result = tudui.train(data="synthetic", model="fastnet", widths="8,8,8", epochs=1000,
                         time_budget=3.0, batch_size=32, project=str(tmp_path), progress=False,
                         eval_every=0, schedule="linear", val_split=0.25)
    assert 1 <= len(result.history) < 1000
    assert sum(row["seconds"] for row in result.history) < 3.0 + 5.0   # budget + one evaluation
    assert result.history[-1]["val_accuracy"] is not None and result.test_accuracy is not None


def test_both_loaders_train_the_same_recipe(tmp_path):
    accuracies = {}
    for loader in ("tensor", "dataloader"):
        result = tudui.train(data="digits", epochs=2, loader=loader, project=str(tmp_path),
                             progress=False)
        accuracies[loader] = result.test_accuracy
    assert min(accuracies.values()) > 0.8


def test_the_whitening_bias_stops_learning_after_its_epochs(tmp_path):
    from tudui.weights import read_weights
    biases = []
    for epochs in (1, 2):
        result = tudui.train(data="synthetic", model="fastnet", widths="8,8,8", epochs=epochs, batch_size=32,
                             whiten_bias_epochs=1, lr=0.05, schedule="constant", project=str(tmp_path),
                             progress=False)
        biases.append(read_weights(result.last_weights)[0]["whiten.bias"])
    assert torch.equal(biases[0], biases[1])


def test_progressive_resizing_trains_the_first_epochs_smaller(tmp_path, monkeypatch, capsys):
    from tudui.data import tensor_loaders
    sizes, resized = [], []
    set_size, resize_batch = tensor_loaders.TensorLoader.set_size, tensor_loaders.resize_batch
    monkeypatch.setattr(tensor_loaders.TensorLoader, "set_size",
                        lambda loader, size: sizes.append((loader.epoch, size)) or set_size(loader, size))
    monkeypatch.setattr(tensor_loaders, "resize_batch",
                        lambda images, size: resized.append(size) or resize_batch(images, size))
    # On the CPU every batch is resized on its own (a GPU resizes the whole epoch at once).
    result = tudui.train(data="synthetic", model="fastnet", widths="8,8,8", epochs=3, batch_size=32, device="cpu",
                         progressive_size=16, progressive_epochs=2, project=str(tmp_path), report=False)
    assert sizes == [(0, 16), (1, 16), (2, None)]
    steps = 256 // 32                              # synthetic: 4 classes x 64 training images, batches of 32
    assert resized == [16] * (2 * steps)           # every batch of the first two epochs, none after
    assert "progressive resizing: epochs 1-2 at 16 px" in capsys.readouterr().out
    assert result.test_accuracy is not None


@pytest.mark.parametrize("options, message", [
    ({"model": "tudui"}, r"tudui cannot take 16x16 inputs .*; --progressive-size needs a model that pools globally"),
    ({"model": "fastnet", "loader": "dataloader"}, "--progressive-size resizes batches on the tensor path"),
    ({"model": "fastnet", "progressive_size": 32}, "--progressive-size 32 must be below the input size"),
])
def test_progressive_resizing_is_refused_where_it_cannot_work(tmp_path, options, message):
    settings = {"progressive_size": 16, **options}
    with pytest.raises(TuduiError, match=message):
        tudui.train(data="synthetic", epochs=2, progressive_epochs=1, project=str(tmp_path), progress=False,
                    **settings)
    assert not any(tmp_path.iterdir())             # refused before a run directory was made


def _muon_steps(compiled: bool, batches) -> dict:
    from torch import nn

    from tudui.config import OptimConfig
    from tudui.engine.loop import TrainStep
    from tudui.engine.optim import create_optimizer
    from tudui.models import create_model
    from tudui.runtime import Runtime
    torch.manual_seed(0)
    model = create_model("fastnet", num_classes=4, widths="8,16,16")
    cfg = OptimConfig(optimizer="muon", lr=0.002, momentum=0.85, nesterov=True, muon_steps=3, loss_sum=True)
    optimizer = create_optimizer(cfg, model, compile=compiled)
    step = TrainStep(model=torch.compile(model) if compiled else model, optimizer=optimizer,
                     loss_fn=nn.CrossEntropyLoss(reduction="none", label_smoothing=0.2), loss_sum=True,
                     scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0),
                     runtime=Runtime(device=torch.device("cpu")))
    model.train()
    for inputs, targets in batches:
        step(inputs, targets)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_compiled_steps_agree_with_eager_ones():
    torch.manual_seed(3)
    batches = [(torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,))) for _ in range(3)]
    eager, compiled = _muon_steps(False, batches), _muon_steps(True, batches)
    moved = _muon_steps(False, batches[:1])
    for name in eager:   # float32 both ways; fused kernels round differently
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-3, atol=2e-5, msg=name)
    assert not torch.allclose(moved["groups.0.conv1.weight"], eager["groups.0.conv1.weight"])


@pytest.fixture
def graphs_only(monkeypatch):
    """torch.compile that captures graphs (TorchDynamo, whose counters these tests read) but runs them
    as they are, instead of generating and compiling C++ for the CPU: which graphs, and how many,
    do not depend on the backend, and Inductor's own numbers are checked against eager above."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *args, **kwargs: compile_(*args, **{**kwargs, "backend": "eager"}))


def test_a_compiled_run_with_progressive_resizing_compiles_a_graph_per_size(tmp_path, graphs_only):
    import torch._dynamo
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    result = tudui.train(data="synthetic", model="fastnet", widths="8,8,8", epochs=3, batch_size=32, compile=True,
                         device="cpu", progressive_size=16, progressive_epochs=1, project=str(tmp_path),
                         progress=False, report=False)
    assert counters["stats"]["unique_graphs"] - before == 2     # 16 px, then 32 px, then no more
    assert result.test_accuracy is not None


def test_a_second_compiled_run_in_one_process_compiles_nothing_again(tmp_path, graphs_only):
    from torch._dynamo.utils import counters
    common = dict(data="synthetic", model="fastnet", widths="8,16,16", epochs=2, batch_size=32, optimizer="muon",
                  whiten_bias_epochs=1, compile=True, device="cpu", progress=False, report=False)
    first = tudui.train(project=str(tmp_path / "first"), **common)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0                                   # it did compile
    # The next run (a benchmark's next seed) reuses what the first compiled: no new graphs.
    again = tudui.train(project=str(tmp_path / "again"), **{**common, "seed": 1})
    assert counters["stats"]["unique_graphs"] == graphs
    assert again.history[-1]["train_loss"] != first.history[-1]["train_loss"]   # another seed's run


def test_config_yaml_repeats_a_folder_run_from_any_working_folder(tmp_path, monkeypatch):
    from helpers import write_class_folder
    write_class_folder(tmp_path / "here" / "data", ["a", "b"], 6)
    monkeypatch.chdir(tmp_path / "here")
    first = tudui.train(data="data", epochs=1, project="runs", progress=False, report=False)
    run_dir = first.run_dir.resolve()
    config = run_dir / "config.yaml"
    assert f"dataset: {tmp_path / 'here' / 'data'}" in config.read_text()   # recorded where it is
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = tudui.train(config_file=config, project="runs", progress=False, report=False)
    assert again.history[0]["train_loss"] == first.history[0]["train_loss"]
    resumed = tudui.train(resume=run_dir, epochs=2, data="../here/data", progress=False)
    assert [row["epoch"] for row in resumed.history] == [2]   # the same folder, spelled relative: no refusal
    # a run that started from another's weights, given relative: recorded where they are, too
    monkeypatch.chdir(tmp_path / "here")
    tuned = tudui.train(data="data", weights="runs/exp", epochs=1, project="runs", progress=False, report=False)
    config = tuned.run_dir.resolve() / "config.yaml"
    assert f"weights: {run_dir}" in config.read_text()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = tudui.train(config_file=config, project="runs", progress=False, report=False)
    assert again.history[0]["train_loss"] == tuned.history[0]["train_loss"]
    monkeypatch.chdir(tmp_path / "here")
    resumed = tudui.train(resume=tuned.run_dir, epochs=2, weights="runs/exp", progress=False)
    assert [row["epoch"] for row in resumed.history] == [2]   # the same weights, spelled relative: no refusal


def test_the_val_numbers_of_training_and_of_eval_leave_the_same_mirror_out(tmp_path):
    result = tudui.train(data="synthetic", epochs=1, batch_size=32, tta=2, val_split=0.25, project=str(tmp_path),
                         progress=False, report=False)
    again = tudui.evaluate(result.run_dir, split="val")
    assert again["tta"] == 2 and again["tta_mirror"] is False
    assert result.history[-1]["val_loss"] == pytest.approx(again["loss"], rel=1e-5)


def test_monitor_val_balanced_accuracy_keeps_the_epoch_whose_classes_do_best_on_average(tmp_path):
    result = tudui.train(data="synthetic", epochs=4, batch_size=32, val_split=0.25,
                         monitor="val_balanced_accuracy", project=str(tmp_path), progress=False, report=False)
    scores = [row["val_balanced_accuracy"] for row in result.history]
    assert result.best_epoch == 1 + scores.index(max(scores))
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    assert [float(row["val_balanced_accuracy"]) for row in rows] == pytest.approx(scores, abs=1e-5)
    again = tudui.evaluate(result.run_dir, split="val")        # the kept weights' number, measured again
    assert again["balanced_accuracy"] == pytest.approx(max(scores), abs=1e-6)


def test_settings_the_run_cannot_use_are_said_not_to_be_used(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="tudui"):
        tudui.train(data="synthetic", epochs=1, workers=2, sync_bn=True, project=str(tmp_path), progress=False,
                    report=False)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("not used by this run")]
    assert said == ["not used by this run: --workers 2 (the tensor loader has no worker processes; --loader "
                    "dataloader uses them); --sync-bn (one process: its BatchNorm sees the whole batch already)"]
