"""Weights from the course's own scripts: state_dicts (method 2) and whole pickled models (method 1)."""
import logging

import pytest
import torch
import torchvision
from torch import nn

from tudui.errors import TuduiError
from tudui.models import create_model
from tudui.state_dicts import fit_state_dict, read_state_dict, strip_prefixes
from tudui.weights import load_model, model_for_state_dict


def test_wrapper_prefixes_are_stripped_in_any_combination():
    state = {"module.a.weight": 1, "_orig_mod.b": 2, "_orig_mod.module.c": 3, "d.module.e": 4}
    assert strip_prefixes(state) == {"a.weight": 1, "b": 2, "c": 3, "d.module.e": 4}


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "_orig_mod.module."])
def test_a_course_state_dict_loads_with_or_without_prefixes(tmp_path, prefix):
    torch.manual_seed(0)
    trained = create_model("tudui", num_classes=10)
    torch.save({prefix + k: v for k, v in trained.state_dict().items()}, tmp_path / "tudui_method2.pth")
    model, meta = load_model(tmp_path / "tudui_method2.pth", model_name="tudui")
    assert meta.num_classes == 10 and meta.imported and meta.preprocess.mean is None   # ToTensor only
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), trained.eval()(x))


def test_the_nn_seq_lessons_model1_is_read_as_tudui_s_model(tmp_path, caplog):
    torch.manual_seed(0)
    trained = create_model("tudui", num_classes=10)
    # the course's nn_seq.py: the same layers, as self.model1 = Sequential(...)
    torch.save({k.replace("model.", "model1.", 1): v for k, v in trained.state_dict().items()}, tmp_path / "seq.pth")
    with caplog.at_level(logging.INFO, logger="tudui.state_dicts"):
        model, _ = load_model(tmp_path / "seq.pth", model_name="tudui")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model(x), trained.eval()(x))
    assert "names its layers model1.*, the model model.*: read as the same layers" in caplog.text
    extra = {**torch.load(tmp_path / "seq.pth"), "model1.99.weight": torch.zeros(1)}   # more than a new name
    torch.save(extra, tmp_path / "more.pth")
    with pytest.raises(TuduiError, match=r"missing keys model\.0\.bias.*unexpected keys model1\.0\.bias"):
        load_model(tmp_path / "more.pth", model_name="tudui")


def test_a_nested_training_checkpoint_is_unwrapped(tmp_path):
    model = create_model("tudui", num_classes=3)
    torch.save({"epoch": 4, "state_dict": model.state_dict(), "optimizer": {}}, tmp_path / "ckpt.pth")
    assert set(read_state_dict(tmp_path / "ckpt.pth")) == set(model.state_dict())


def test_the_course_vgg16_files_are_recognised_as_they_were_saved():
    vgg = torchvision.models.vgg16()                           # model_save.py's vgg16_method2.pth
    fit = model_for_state_dict("vgg16", vgg.state_dict())
    assert (fit.num_classes, fit.head, fit.unmodified) == (1000, "replace", True)
    vgg.classifier.add_module("add_linear", nn.Linear(1000, 10))   # the transfer lesson's change
    fit = model_for_state_dict("vgg16", vgg.state_dict())
    assert (fit.num_classes, fit.head, fit.unmodified) == (10, "append", False)
    assert torch.equal(fit.model.classifier.add_linear.weight, vgg.classifier.add_linear.weight)


def test_a_mismatch_names_the_missing_and_unexpected_keys():
    model = create_model("tudui", num_classes=10)
    state = model.state_dict()
    state["model.99.weight"] = state.pop("model.0.weight")
    with pytest.raises(TuduiError, match=r"missing keys model\.0\.weight; unexpected keys model\.99\.weight"):
        fit_state_dict(model, state, "x.pth", "tudui")


def test_a_whole_pickled_model_is_refused_with_why_and_how_to_convert(tmp_path):
    torch.save(create_model("tudui", num_classes=10), tmp_path / "tudui_method1.pth")
    with pytest.raises(TuduiError) as err:
        read_state_dict(tmp_path / "tudui_method1.pth")
    message = str(err.value)
    assert "pickle" in message and "run code" in message and "\n" not in message
    assert "torch.save(m.state_dict()" in message and "--trust-pickle" in message


def test_trust_pickle_loads_a_whole_model_with_a_warning(tmp_path, caplog):
    model = create_model("tudui", num_classes=10)
    torch.save(model, tmp_path / "tudui_method1.pth")
    with caplog.at_level(logging.WARNING):
        state = read_state_dict(tmp_path / "tudui_method1.pth", trust_pickle=True)
    assert "runs code" in caplog.text
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("where", ["model.py", "the script"])
def test_an_unpicklable_model_says_where_its_class_must_come_from(tmp_path, where):
    import subprocess
    import sys
    net = "import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n" \
          "        self.fc = torch.nn.Linear(2, 2)\n"
    if where == "model.py":   # the course: model.py holds the class, train.py does `from model import *`
        (tmp_path / "coursemodel.py").write_text(net)
        script = "import torch\nfrom coursemodel import *\ntorch.save(Net(), 'whole.pth')\n"
    else:
        script = net + "torch.save(Net(), 'whole.pth')\n"
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True)
    with pytest.raises(TuduiError) as err:
        read_state_dict(tmp_path / "whole.pth", trust_pickle=True)
    message = str(err.value)
    if where == "model.py":
        assert "defined in coursemodel.py: run tudui in the folder that holds coursemodel.py" in message
        assert "PYTHONPATH=." in message
    else:
        assert "class Net was defined in the script that saved it" in message and "state_dict()" in message


# "hello" sends torch's restricted unpickler to a memo it never filled (a KeyError, once).
@pytest.mark.parametrize("content", [b"<html>", b"hello", b"notes\n", bytes(range(256)) * 4])
@pytest.mark.parametrize("model_name", [None, "tudui"])
def test_a_file_that_is_not_weights_is_one_error(tmp_path, content, model_name):
    (tmp_path / "x.pth").write_bytes(content)
    with pytest.raises(TuduiError, match="not a PyTorch weights file"):
        read_state_dict(tmp_path / "x.pth")
    # With or without --model: not called "a plain PyTorch weights file" that only lacks a model name.
    with pytest.raises(TuduiError, match="not a PyTorch weights file"):
        load_model(tmp_path / "x.pth", model_name=model_name)


def test_the_training_state_of_a_run_is_not_taken_for_weights(tmp_path):
    from tudui.checkpoint import save_state
    model = create_model("tudui")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_state(tmp_path / "state.pt", {"format": 1, "epoch": 1, "model": model.state_dict(),
                                       "optimizer": optimizer.state_dict(), "rng": {"torch": torch.get_rng_state()}})
    with pytest.raises(TuduiError, match="training state, which --resume reads.*weights/best.safetensors"):
        load_model(tmp_path / "state.pt", model_name="tudui")


def test_a_state_dict_without_its_model_name_is_refused(tmp_path):
    torch.save(create_model("tudui").state_dict(), tmp_path / "w.pth")
    with pytest.raises(TuduiError, match="pass --model NAME"):
        load_model(tmp_path / "w.pth")




def test_a_tensor_larger_than_its_data_or_a_checkpoint_that_holds_itself_is_refused_at_once(tmp_path):
    import time
    state = create_model("tudui", num_classes=10).state_dict()
    state["model.0.weight"] = torch.zeros(1).expand(2_000_000_000)     # 4 bytes in the file, 8 GB if computed on
    torch.save(state, tmp_path / "expanded.pth")
    began = time.perf_counter()
    with pytest.raises(TuduiError, match=r"model.0.weight has the shape \(2000000000,\) but holds 4 bytes of data"):
        read_state_dict(tmp_path / "expanded.pth")
    assert time.perf_counter() - began < 5
    looped = {}
    looped["model"] = looped
    torch.save(looped, tmp_path / "selfref.pth")
    with pytest.raises(TuduiError, match="nests its weights too deeply"):
        read_state_dict(tmp_path / "selfref.pth")


class RunsAProgram:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_a_pickle_that_runs_a_program_is_never_loaded_and_the_conversion_command_quotes_the_name(tmp_path):
    path = tmp_path / "x'); print('injected'); ('.pth"
    torch.save({"model": RunsAProgram()}, path)
    for trust in (False, True):
        with pytest.raises(TuduiError, match=r"is not a model: its pickle calls (posix|os|nt)\.system, which runs "
                                             r"programs or code"):
            read_state_dict(path, trust_pickle=trust)
    import shlex
    named = tmp_path / "it's mine.pth"
    torch.save(create_model("tudui", num_classes=10), named)
    with pytest.raises(TuduiError) as err:
        read_state_dict(named)
    command = str(err.value).split("python -c ", 1)[1].split(" and pass the new file")[0]
    code = shlex.split(command)[0]                           # one shell word, whatever the file is called
    assert code.startswith("import torch; m = torch.load(") and repr(str(named)) in code
