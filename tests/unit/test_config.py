import pytest

import tudui
from tudui.config import Config
from tudui.config_files import dump_yaml, make_config, to_dict
from tudui.errors import SettingError, TuduiError


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


def test_a_special_value_in_config_yaml_says_what_it_means(tmp_path):
    cfg = make_config(data="digits", workers=-1, patience=0, translate=3, name="-1: not a setting")
    dump_yaml(cfg, tmp_path / "config.yaml")
    lines = (tmp_path / "config.yaml").read_text().splitlines()
    assert "  workers: -1  # -1: pick for the data set" in lines
    assert "  patience: 0  # 0: never" in lines
    assert "  val_split: -1.0  # -1: 0.2 when it has no test split either, none when it has one (cifar10, digits)" \
        in lines
    assert "  translate: 3" in lines and "  run_name: '-1: not a setting'" in lines   # ordinary values: no comment
    assert make_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("overrides, message", [
    ({"lr": -1.0}, "--lr"), ({"batch_size": 0}, "--batch-size"), ({"epochs": 0}, "--epochs"),
    ({"optimizer": "rmsprop"}, "--optimizer"), ({"device": "tpu"}, "--device"),
    ({"augment": "wild"}, "--augment"), ({"val_split": 1.5}, "--val-split"),
    ({"name": "a/b"}, "--name"), ({"bogus": 1}, "unknown setting"),
    ({"progressive_size": 4, "progressive_epochs": 1, "epochs": 3}, "--progressive-size must be 0 .* at least 8"),
    ({"progressive_size": 24, "epochs": 3},
     "--progressive-epochs must be from 1 to 2.*--progressive-size 0 --progressive-epochs 0 turn"),
    ({"progressive_size": 24, "progressive_epochs": 3, "epochs": 3}, "--progressive-epochs must be from 1 to 2"),
    ({"progressive_epochs": 2}, "--progressive-epochs needs --progressive-size"),
    ({"progressive_size": 24, "progressive_epochs": 1, "epochs": 1},
     "needs at least 2 epochs.*--progressive-size 0 --progressive-epochs 0 turn it off"),
])
def test_bad_values_are_refused_with_the_flag_named(overrides, message):
    with pytest.raises(TuduiError, match=message):
        make_config(**overrides)


@pytest.mark.parametrize("text, message", [
    ("optim: {lr: fast}\n", "optim.lr must be a float"),
    ("optimizer: {lr: 0.1}\n", "'optimizer' is not a config section"),
    ("optimiser: {lr: 0.1}\n", "unknown setting 'optimiser'"),
    ("optim: {learning_rate: 0.1}\n", "unknown setting optim.learning_rate; `tudui train --help` lists"),
    ("train: {epoch: 3}\n", r"unknown setting train.epoch; did you mean train.epochs\?"),
    ("train: {lr: 0.1}\n", r"unknown setting train.lr; lr belongs in the optim section \(optim.lr\), or write it "
                           r"without a section$"),
    ("epocs: 3\n", r"unknown setting 'epocs' in the config: .*; did you mean epochs\?$"),
    ("dat: digits\n", r"did you mean data or dataset\?$"),
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
    with pytest.raises(TuduiError,
                       match=r"config file not found: .*nope.yaml \(tudui's own, .*: cifar10-cpu, .*seed\)"):
        make_config(tmp_path / "nope.yaml")


def test_tudui_s_own_recipes_are_taken_by_name_from_any_folder_and_a_file_here_comes_first(tmp_path, monkeypatch):
    from helpers import REPO
    monkeypatch.chdir(tmp_path)
    own = make_config(REPO / "configs" / "seed.yaml")
    for name in ("seed", "seed.yaml", "configs/seed.yaml"):
        assert make_config(name) == own
    (tmp_path / "seed.yaml").write_text("epochs: 3\n")
    assert make_config("seed.yaml").train.epochs == 3 and make_config("seed").train.epochs == 10
    with pytest.raises(TuduiError, match="config file not found"):   # a path elsewhere is only that path
        make_config("other/seed.yaml")
    from dataclasses import fields

    from tudui.config import TrainFlags
    from tudui.config_files import builtin_configs
    said = next(f for f in fields(TrainFlags) if f.name == "config").metadata["help"]
    assert len(builtin_configs()) >= 5 and all(name in said for name in builtin_configs())   # --help names them all


def test_seed_recipe_is_the_course_recipe():
    from helpers import REPO
    cfg = make_config(REPO / "configs" / "seed.yaml")
    assert (cfg.model.arch, cfg.optim.optimizer, cfg.optim.lr, cfg.optim.momentum) == ("tudui", "sgd", 0.01, 0.0)
    assert (cfg.data.batch_size, cfg.train.epochs, cfg.optim.schedule) == (64, 10, "constant")
    assert (cfg.data.normalize, cfg.data.augment, cfg.optim.weight_decay) == (False, "none", 0.0)


COMMON_CPU_CHANGES = {("optim", "optimizer"): "muon", ("optim", "muon_lr"): 0.16,
                      ("train", "whiten_bias_epochs"): 3, ("train", "progressive_size"): 24}


@pytest.mark.parametrize("name, own", [
    ("cifar10-cpu.yaml", {("model", "widths"): "32,128,128", ("optim", "warmup_epochs"): 1.24,
                          ("train", "epochs"): 7, ("train", "progressive_epochs"): 3}),
    ("cifar10-cpu-10min.yaml", {("model", "widths"): "48,192,192", ("optim", "warmup_epochs"): 1.77,
                                ("optim", "muon_steps"): 3, ("train", "epochs"): 10,
                                ("train", "progressive_epochs"): 4}),
])
def test_the_cpu_presets_are_the_fast_recipe_with_only_their_marked_changes(name, own):
    from helpers import REPO
    fast = to_dict(make_config(REPO / "configs" / "cifar10-fast.yaml"))
    cpu = to_dict(make_config(REPO / "configs" / name))
    changed = {(section, key): value for section, values in cpu.items() for key, value in values.items()
               if fast[section][key] != value}
    assert changed == {**COMMON_CPU_CHANGES, **own}
    lines = (REPO / "configs" / name).read_text().splitlines()
    marked = {line.split(":")[0].strip() for line in lines if "# CPU:" in line}
    assert marked == {key for _, key in changed}   # the file's comments say what differs


@pytest.mark.parametrize("written, value", [("1e-3", 1e-3), ("1.0e3", 1000.0), ("2E-4", 2e-4), ('"5e-4"', 5e-4),
                                            (".5e1", 5.0), ("1.0e-3", 1e-3), ("0.01", 0.01)])
def test_numbers_in_exponent_form_are_numbers_in_a_settings_file(tmp_path, written, value):
    # PyYAML (YAML 1.1) reads 1e-3 and 1.0e3 as text, where --lr 1e-3 on the command line is a number.
    path = tmp_path / "exp.yaml"
    path.write_text(f"data: digits\nlr: {written}\nweight_decay: {written}\n")
    cfg = make_config(path)
    assert cfg.optim.lr == pytest.approx(value) and cfg.optim.weight_decay == pytest.approx(value)


@pytest.mark.parametrize("written", ["1e", "e5", "1e-3x", "1,5e3", "0x1p3", "1:30.5"])
def test_text_that_only_looks_like_a_number_is_still_refused(tmp_path, written):
    path = tmp_path / "bad.yaml"
    path.write_text(f"lr: {written}\n")
    with pytest.raises(TuduiError, match="lr must be a float"):
        make_config(path)


def test_a_number_in_base_sixty_is_the_text_it_looks_like(tmp_path):
    path = tmp_path / "sixty.yaml"
    path.write_text("epochs: 190:20:30\n")                 # YAML 1.1: 685,230
    with pytest.raises(TuduiError, match=r"epochs must be an int, got '190:20:30'"):
        make_config(path)


def test_a_flat_file_names_settings_like_the_flags(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text("data: digits\nepochs: 3\nmodel: tudui_relu\noptimizer: adamw\nbatch-size: 16\nname: mine\n")
    cfg = make_config(path)
    assert (cfg.data.dataset, cfg.train.epochs, cfg.model.arch) == ("digits", 3, "tudui_relu")
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.data.batch_size) == ("adamw", 1e-3, 16)
    assert cfg.train.run_name == "mine"


def test_flat_keys_and_sections_mix_but_a_setting_is_given_once(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text("epochs: 2\ndata: {dataset: synthetic, batch_size: 8}\noptim: {lr: 0.2}\n")
    cfg = make_config(path)
    assert (cfg.train.epochs, cfg.data.dataset, cfg.data.batch_size, cfg.optim.lr) == (2, "synthetic", 8, 0.2)
    path.write_text("lr: 0.1\noptim: {lr: 0.2}\n")
    with pytest.raises(TuduiError, match="optim.lr is set twice"):
        make_config(path)


def test_files_written_before_the_settings_were_renamed_still_read(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("data: {name: digits}\nmodel: {name: tudui_relu}\noptim: {name: adamw}\ntrain: {name: x}\n")
    cfg = make_config(path)
    assert (cfg.data.dataset, cfg.model.arch, cfg.optim.optimizer, cfg.train.run_name) == (
        "digits", "tudui_relu", "adamw", "x")


def test_keywords_take_paths_and_whole_numbers_where_the_setting_wants_text_or_a_fraction(tmp_path):
    cfg = make_config(data=tmp_path / "photos", lr=1, project=tmp_path)
    assert cfg.data.dataset == str(tmp_path / "photos") and cfg.optim.lr == 1.0
    with pytest.raises(TuduiError, match="--epochs must be an int"):
        make_config(epochs="3")


def test_eval_and_predict_share_trainings_settings_and_read_the_rest_from_the_weights():
    from dataclasses import fields

    from tudui.config import DataConfig, TrainConfig
    from tudui.config_commands import EvalConfig, PredictConfig
    from tudui.settings import flag_name
    evaluated = {flag_name(f): f for f in fields(EvalConfig)}
    trained = {flag_name(f): f for cls in (DataConfig, TrainConfig) for f in fields(cls)}
    for flag in ("--data", "--data-dir", "--val-split", "--batch-size", "--tta"):
        assert evaluated[flag].default is None                         # as in training
        assert evaluated[flag].metadata["help"].startswith(trained[flag].metadata["help"])
    assert evaluated["--device"].default == trained["--device"].default == "auto"
    assert EvalConfig(weights="w").report and not PredictConfig(weights="w").out
    for bad, flag in (({"tta": 3}, "--tta"), ({"batch_size": 0}, "--batch-size"), ({"device": "tpu"}, "--device")):
        with pytest.raises(TuduiError, match=flag):
            EvalConfig(weights="w", **bad)
        with pytest.raises(TuduiError, match=flag):
            PredictConfig(weights="w", **bad)
    with pytest.raises(TuduiError, match="--topk must be between 1 and 1000"):
        PredictConfig(weights="w", topk=0)


def test_every_setting_of_every_command_is_a_flag_with_its_help():
    from dataclasses import fields

    from tudui.cli import build_parser
    from tudui.config import SECTIONS
    from tudui.config_commands import EvalConfig, PredictConfig
    from tudui.settings import flag_name
    commands = build_parser()._subparsers._group_actions[0].choices
    for command, classes in (("train", SECTIONS.values()), ("eval", [EvalConfig]), ("predict", [PredictConfig])):
        text = commands[command].format_help()
        for cls in classes:
            for f in fields(cls):
                assert flag_name(f) in text, (command, flag_name(f))
    args = commands["predict"].parse_args(["x.png", "--weights", "w", "--tta"])
    assert args.tta == 1                                               # a bare --tta mirrors


@pytest.mark.parametrize("text", ["model: {trust_pickle: true}\n", "trust_pickle: true\n", "trust-pickle: true\n"])
def test_a_settings_file_cannot_switch_on_unpickling(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(TuduiError, match="cannot be switched on in a settings file.*--trust-pickle"):
        make_config(path)


def test_old_config_files_that_leave_unpickling_off_still_read_and_it_is_never_written(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("model: {name: tudui, trust_pickle: false}\n")
    cfg = make_config(path)
    dump_yaml(cfg, tmp_path / "again.yaml")
    assert "trust_pickle" not in (tmp_path / "again.yaml").read_text()
    with pytest.raises(TuduiError, match="unknown setting 'trust_pickle'"):
        make_config(trust_pickle=True)                # not a setting of the run, as a keyword either


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    levels = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels) + "\n")           # 9 ** 10 strings if it were expanded
    with pytest.raises(TuduiError, match=r"aliases \(\*name\) are not allowed .*line 2") as error:
        make_config(path)
    assert len(str(error.value)) < 200


@pytest.mark.parametrize("content, message", [
    (b"epochs: 2\nepochs: 3\n", "'epochs' is given twice"),
    (b"data: {batch_size: 8, batch_size: 9}\n", "'batch_size' is given twice"),
    (bytes(range(256)) * 4, "not a text file"),
    (b"epochs: " + b"9" * 5000 + b"\n", "not valid YAML"),
    (b"# padding\n" * 200_000, "a settings file is under"),
])
def test_files_that_cannot_be_settings_are_one_short_error(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(TuduiError, match=message) as error:
        make_config(path)
    assert len(str(error.value)) < 250 and "\n" not in str(error.value)


@pytest.mark.parametrize("text", ["augment: " + "x" * 100_000, "x" * 100_000 + ": 1",
                                  "epochs: [" + "1, " * 30_000 + "1]"])
def test_error_messages_quote_only_the_start_of_a_long_value(tmp_path, text):
    path = tmp_path / "long.yaml"
    path.write_text(text + "\n")
    with pytest.raises(TuduiError) as error:
        make_config(path)
    assert len(str(error.value)) < 300


@pytest.mark.parametrize("overrides, message", [
    ({"lr": float("inf")}, "--lr must be a finite number"), ({"momentum": float("nan")}, "--momentum must be a finite"),
    ({"weight_decay": float("inf")}, "--weight-decay must be a finite"), ({"seed": -1}, "--seed must be between 0"),
    ({"seed": 2 ** 40}, "--seed must be between 0"), ({"epochs": 10 ** 23}, "--epochs must be between 1"),
    ({"lr": 1e308}, "--lr must be positive and at most 1000"),
    ({"batch_size": 10 ** 9}, "--batch-size must be between"),
    ({"input_size": 200_000}, "--input-size must be 0"), ({"workers": 10_000}, "--workers must be between"),
])
def test_numbers_out_of_any_sensible_range_are_refused_with_the_flag_named(overrides, message):
    with pytest.raises(TuduiError, match=message):
        make_config(**overrides)


def test_a_section_left_empty_takes_the_defaults_and_one_that_is_a_list_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: null\ntrain: {epochs: 2}\n")
    assert make_config(path).data == Config().data
    path.write_text("train: [1, 2]\n")
    with pytest.raises(TuduiError, match="config section 'train' must be a mapping, got \\[1, 2\\]"):
        make_config(path)
    path.write_text("data: [1, 2]\n")                  # data is also the flat --data
    with pytest.raises(TuduiError, match="data must be a str, got \\[1, 2\\]"):
        make_config(path)


def test_a_failed_write_of_config_yaml_keeps_the_previous_file_whole(tmp_path, monkeypatch):
    import errno
    import pathlib
    path = tmp_path / "config.yaml"
    dump_yaml(make_config(epochs=3), path)
    before = path.read_text()
    real = pathlib.Path.write_text

    def half_then_full_disk(self, text, *args, **kwargs):
        real(self, text[:10], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_full_disk)
    with pytest.raises(TuduiError, match="cannot write .*config.yaml: No space left on device"):
        dump_yaml(make_config(epochs=4), path)
    monkeypatch.undo()
    assert path.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_a_key_that_is_a_mapping_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("? {a: 1}\n: 3\n")
    with pytest.raises(TuduiError, match="a key must be a plain name"):
        make_config(path)


@pytest.mark.parametrize("text, message", [
    ("epochs: two\n", "epochs must be an int, got 'two'"),
    ("device: gpu\n", "device must be one of auto, cpu"),
    ("train:\n  lr: 0.1\n", "unknown setting train.lr; lr belongs in the optim section"),
    ("optim:\n  lr: -1\n", "optim.lr must be positive")])
def test_a_bad_value_in_a_settings_file_names_the_file_and_its_key(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(TuduiError) as error:
        make_config(path)
    assert str(error.value).startswith(f"{path}: {message}")
    # a value given as a flag beside the file names the flag, not the file
    (tmp_path / "fine.yaml").write_text("lr: 0.1\n")
    with pytest.raises(TuduiError, match=r"^--device must be one of"):
        make_config(tmp_path / "fine.yaml", device="gpu")


def test_a_conflict_between_a_file_and_a_flag_says_which_came_from_where(tmp_path):
    (tmp_path / "tune.yaml").write_text("freeze_epochs: 3\n")
    with pytest.raises(TuduiError) as error:
        make_config(tmp_path / "tune.yaml", epochs=2)
    said = str(error.value)
    assert said.startswith("--freeze-epochs must be 0 or more and below --epochs (2), got 3")
    assert said.endswith(f"(--freeze-epochs 3 is from {tmp_path / 'tune.yaml'})")


def test_terminal_text_counts_wide_characters_as_two_columns():
    from tudui.settings import clipped, columns, padded
    assert columns("cat") == 3 and columns("猫") == 2 and columns("零号_zero") == 9
    assert padded("猫", 4) == "猫  " and padded("cat", 4) == "cat " and padded("toolong", 4) == "toolong"
    assert clipped("cat", 20) == "cat"
    cut = clipped("二二二二二二二二二二二二_long", 20)
    assert cut.endswith("…") and columns(cut) <= 20 and cut.startswith("二二二")


def test_long_class_names_that_start_alike_are_cut_so_that_they_stay_apart():
    from tudui.settings import columns, distinct_labels
    plant = ["Corn_(maize)___Common_rust_", "Corn_(maize)___healthy", "Corn_(maize)___Northern_Leaf_Blight",
             "Tomato___Early_blight", "Potato___Early_blight", "Apple___healthy"]
    labels = distinct_labels(plant, 16)
    assert labels[:3] == ["Corn_…Common_ru…", "Corn_…healthy", "Corn_…Northern_…"]   # the word that differs
    assert labels[5] == "Apple___healthy"                                             # short: as it is
    numbered = [f"very_long_class_name_number_{i:02d}_golden_retriever" for i in range(20)]
    for names, width in [(plant, 16), (numbered, 16), (numbered, 20),
                         ([f"二二二二二二二二二二_{i}" for i in range(12)], 16),
                         ([f"{'x' * 30}{i}" for i in range(30)], 16)]:
        labels = distinct_labels(names, width)
        assert len(set(labels)) == len(names) and max(columns(label) for label in labels) <= width, labels
    assert distinct_labels(["airplane", "a" * 40, "a" * 40 + "b"], 16)[0] == "airplane"
    assert distinct_labels(["cat", "dog"], 16) == ["cat", "dog"]
    tricky = ["Tomato___mosaic_healthy", "Tomato___rust_mosaic_healthy", "Tomato___rust_mold"]   # alike at both ends
    assert len(set(distinct_labels(tricky, 16))) == 3
    assert len(set(distinct_labels(["abcdefgh_one", "abcdefgh_two"], 6))) == 2   # no room for a start: ends


def test_distinct_labels_of_random_names_alike_at_both_ends_are_distinct_and_fit():
    import random

    from tudui.settings import columns, distinct_labels
    rng = random.Random(0)
    for _ in range(2000):
        start, end = ("".join(rng.choice("ab_") for _ in range(rng.randint(0, 20))) for _ in range(2))
        names = list({start + "".join(rng.choice("abc_") for _ in range(rng.randint(0, 6))) + end
                      for _ in range(rng.randint(1, 12))})
        width = rng.choice([6, 10, 16, 20])
        labels = distinct_labels(names, width)
        assert len(set(labels)) == len(names) and max(map(columns, labels)) <= width, (names, width, labels)


def test_the_class_listing_names_each_class_or_the_extremes_past_twelve():
    import numpy as np

    from tudui.announce import class_listing
    listed = class_listing(["cat", "二二二二二二二二二二二二_long"], np.array([3, 1200]))
    assert listed == "cat 3, 二二二二二二二二二… 1,200"
    many = [f"c{i}" for i in range(20)]
    assert class_listing(many, np.full(20, 12)) == "12 each"
    assert class_listing(many, np.arange(20) + 5) == "5 (c0) to 24 (c19), median 14"


def test_classes_that_val_or_test_never_measure_are_warned_of_with_what_leaves_them_out():
    from types import SimpleNamespace

    import numpy as np

    from tudui.announce import _unmeasured
    split = lambda *labels: SimpleNamespace(labels=list(labels))   # noqa: E731
    warned = []
    spec = SimpleNamespace(class_names=["a", "b", "lonely"], train=split(0, 0, 1, 1, 2), val=split(0, 1),
                           test=split(0, 1, 2))
    _unmeasured(SimpleNamespace(spec=spec, warn=warned.append), np.array([2, 2, 1]))
    assert warned == ["1 class with training images has no val images (lonely): choosing the kept epoch "
                      "leaves it out"]
    warned.clear()
    spec = SimpleNamespace(class_names=["a", "b", "c"], train=split(0, 1, 2), val=split(0), test=None)
    _unmeasured(SimpleNamespace(spec=spec, warn=warned.append), np.array([1, 1, 1]))
    assert warned == ["2 classes with training images have no val images (b, c): the final numbers (balanced "
                      "accuracy and macro-F1 too) leave them out"]


def test_shown_quotes_a_value_that_nests_itself_without_working_out_its_whole_repr():
    import time

    from tudui.settings import SHOWN_CHARS, shown
    bomb = []
    for _ in range(40):                      # a few hundred bytes of pickle, 2**40 elements of repr
        bomb = [bomb, bomb]
    began = time.perf_counter()
    text = shown(bomb)
    assert time.perf_counter() - began < 1 and text.startswith("[[[") and len(text) < SHOWN_CHARS + 30
    assert shown(10 ** 5000) == "a number of 16,610 bits" and shown(12) == "12"


@pytest.mark.parametrize("call, word, meant", [
    (lambda: tudui.evaluate("runs/exp", splitt="val"), "splitt", "did you mean split"),
    (lambda: tudui.predict(["seven.png"], weights="runs/exp", topkk=3), "topkk", "did you mean topk"),
    (lambda: tudui.export_model("runs/exp", formt="onnx"), "formt", "did you mean format"),
    (lambda: tudui.evaluate("runs/exp", zzz=1), "zzz", "`tudui eval --help` lists them"),
    (lambda: tudui.evaluate("runs/exp", splitt=None), "splitt", "did you mean split"),   # None is no excuse
])
def test_a_keyword_the_python_commands_do_not_have_is_a_setting_error_with_the_near_names(call, word, meant):
    with pytest.raises(SettingError, match=f"unknown setting '{word}' for .*; {meant}"):
        call()       # before anything is read: runs/exp need not exist


def test_what_several_processes_cannot_do_is_a_usage_error_said_before_any_work():
    from types import SimpleNamespace

    import torch

    from tudui.build import _check_distributed
    two_cpus = SimpleNamespace(distributed=True, world_size=2, device=torch.device("cpu"))
    three = SimpleNamespace(distributed=True, world_size=3, device=torch.device("cpu"))
    with pytest.raises(SettingError, match="--sync-bn needs CUDA GPUs"):
        _check_distributed(make_config(sync_bn=True), two_cpus, None)
    with pytest.raises(SettingError, match="make it a multiple of 3"):
        _check_distributed(make_config(batch_size=16), three, None)
    # a resume keeps the run's batch: the advice is the process counts that divide it, not another batch
    with pytest.raises(SettingError, match=r"resume with a number of processes that divides it \(1, 2, 4, 8, 16\)"):
        _check_distributed(make_config(batch_size=16), three, resumed=object())
    _check_distributed(make_config(batch_size=16, sync_bn=True), SimpleNamespace(distributed=False), None)
