import pytest

from tudui.config import Config, dump_yaml, make_config, to_dict
from tudui.errors import TuduiError


def test_flags_win_over_yaml_which_wins_over_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {name: digits, batch_size: 16}\noptim: {lr: 0.5}\n")
    cfg = make_config(path, lr=0.25, epochs=3)
    assert cfg.data.dataset == "digits" and cfg.data.batch_size == 16   # from YAML
    assert cfg.optim.lr == 0.25                                       # flag beats YAML
    assert cfg.train.epochs == 3 and cfg.model.arch == Config().model.arch


def test_learning_rate_defaults_per_optimizer():
    assert make_config(optimizer="sgd").optim.lr == 0.01
    assert make_config(optimizer="adamw").optim.lr == 0.001


def test_resolved_config_file_reads_back_identically(tmp_path):
    cfg = make_config(data="digits", lr=0.3, augment="flip", normalize=False, name="x")
    dump_yaml(cfg, tmp_path / "config.yaml")
    assert make_config(tmp_path / "config.yaml") == cfg
    assert to_dict(cfg)["optim"]["lr"] == 0.3


@pytest.mark.parametrize("overrides, message", [
    ({"lr": -1.0}, "--lr"), ({"batch_size": 0}, "--batch-size"), ({"epochs": 0}, "--epochs"),
    ({"optimizer": "rmsprop"}, "--optimizer"), ({"device": "tpu"}, "--device"),
    ({"augment": "wild"}, "--augment"), ({"val_split": 1.5}, "--val-split"),
    ({"name": "a/b"}, "--name"), ({"bogus": 1}, "unknown setting"),
])
def test_bad_values_are_refused_with_the_flag_named(overrides, message):
    with pytest.raises(TuduiError, match=message):
        make_config(**overrides)


@pytest.mark.parametrize("text, message", [
    ("optim: {lr: fast}\n", "optim.lr must be a float"),
    ("optimizer: {lr: 0.1}\n", "'optimizer' is not a config section"),
    ("optimiser: {lr: 0.1}\n", "unknown setting 'optimiser'"),
    ("optim: {learning_rate: 0.1}\n", "unknown setting optim.learning_rate"),
    ("data: {normalize: 3}\n", "true or false"),
    ("data: [1, 2\n", "not valid YAML"),
    ("- just a list\n", "mapping"),
])
def test_bad_config_files_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TuduiError, match=message):
        make_config(path)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(TuduiError, match="config file not found"):
        make_config(tmp_path / "nope.yaml")


def test_seed_recipe_is_the_course_recipe():
    from conftest import REPO
    cfg = make_config(REPO / "configs" / "seed.yaml")
    assert (cfg.model.arch, cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum) == ("tudui", "sgd", 0.01, 0.0)
    assert (cfg.data.batch_size, cfg.train.epochs, cfg.optim.schedule) == (64, 10, "constant")
    assert (cfg.data.normalize, cfg.data.augment, cfg.optim.weight_decay) == (False, "none", 0.0)
