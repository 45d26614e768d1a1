"""tudui.export and tudui.exported: files that carry their metadata, load back behind the model
contract, and are refused in one line when damaged, untrusted or unchecked."""
import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from tudui import exported
from tudui.data import Preprocess
from tudui.errors import TuduiError
from tudui.export import TOLERANCE, parity_images
from tudui.export import export_model as export
from tudui.models import create_model
from tudui.prediction import predict
from tudui.weights import WeightsMeta, load_model, save_weights

META = WeightsMeta(model="tudui", num_classes=3, class_names=("cat", "dog", "fox"), tudui_version="test",
                   preprocess=Preprocess(input_size=32, resize_size=36, mean=(0.5,) * 3, std=(0.25,) * 3))


@pytest.fixture
def weights(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "run" / "weights" / "best.safetensors"
    path.parent.mkdir(parents=True)
    save_weights(path, create_model("tudui", num_classes=3), META)
    return path


@pytest.fixture
def images(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 40), (64, 48), (36, 90), (33, 33), (120, 80), (50, 50), (41, 77)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_metadata_is_read_back_without_loading_the_graph(weights, fmt):
    result = export(weights, format=fmt)
    assert result.path == weights.with_suffix("." + fmt) and result.path.is_file()
    assert result.max_difference <= TOLERANCE["float32"] and result.top1_agreement == 1.0
    record, info = exported.read_metadata(result.path)
    assert (info.format, info.pixels, info.dtype, info.batch) == (fmt, "uint8", "float32", None)
    meta = WeightsMeta.from_json(record, "x")
    assert meta.class_names == META.class_names and meta.preprocess == META.preprocess
    assert meta.tudui_version == "test"
    assert not list(result.path.parent.glob(".*partial*"))   # the temporary file is gone
    # readable as the weights beside it are (0666 less the umask), not only by its owner as mkstemp makes it
    assert result.path.stat().st_mode & 0o777 == weights.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_others_read_the_metadata_with_their_own_tools(weights):
    """Whoever loads the file needs no tudui to find the class names and the preprocessing."""
    onnx_file = export(weights).path
    props = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert json.loads(props["tudui"])["class_names"] == ["cat", "dog", "fox"]
    assert json.loads(props["tudui_export"])["input"] == "uint8"
    script = export(weights, format="torchscript").path
    extra = {"tudui.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(script), _extra_files=extra)
    assert json.loads(extra["tudui.json"])["resize_size"] == 36


def test_exported_files_predict_what_the_weights_predict(weights, images):
    expected = predict(images, weights, topk=3)
    for fmt, batch in [("onnx", "dynamic"), ("onnx", "4"), ("torchscript", "dynamic"), ("pt2", "2")]:
        path = export(weights, format=fmt, batch=batch, out=str(weights.parent / f"b{batch}.{fmt}")).path
        got = predict(images, path, topk=3, trust_pickle=True)
        for e, g in zip(expected, got):
            assert [p["class"] for p in e["predictions"]] == [p["class"] for p in g["predictions"]]
            assert np.allclose([p["probability"] for p in e["predictions"]],
                               [p["probability"] for p in g["predictions"]], atol=1e-5)


def test_float_input_and_half_precision(weights):
    result = export(weights, pixels="float", out=str(weights.parent / "f.onnx"))
    assert exported.read_metadata(result.path)[1].pixels == "float"
    model, meta = load_model(result.path)
    assert meta.exported == "onnx" and meta.preprocess.mean is None   # the graph normalises
    half = export(weights, half=True, out=str(weights.parent / "h.onnx"))
    assert half.tolerance == TOLERANCE["float16"] and half.max_difference <= TOLERANCE["float16"]
    assert half.path.stat().st_size < 0.6 * result.path.stat().st_size


def test_a_failed_parity_check_leaves_no_file(weights):
    with pytest.raises(TuduiError, match="differs from the original model.*nothing was written"):
        export(weights, half=True, tolerance=0.0)
    assert sorted(p.name for p in weights.parent.iterdir()) == ["best.safetensors"]


def test_pt2_and_torchscript_need_trust_onnx_does_not(weights):
    for fmt in ("pt2", "torchscript"):
        path = export(weights, format=fmt).path
        with pytest.raises(TuduiError, match="can run code from it; pass --trust-pickle"):
            load_model(path)
        assert load_model(path, trust_pickle=True)[1].exported == fmt
    assert load_model(export(weights).path)[1].class_names == META.class_names


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_a_damaged_export_is_one_clear_error(weights, tmp_path, fmt):
    good = export(weights, format=fmt).path.read_bytes()
    for name, data in [("cut", good[: len(good) // 2]), ("empty", b""), ("text", b"not a model\n" * 10)]:
        bad = tmp_path / f"{name}.{fmt}"
        bad.write_bytes(data)
        with pytest.raises(TuduiError, match=rf"{name}\.{fmt} (is not a readable|has no tudui metadata|is not a "
                                             rf"loadable)"):
            load_model(bad, trust_pickle=True)


def test_onnx_pointing_at_other_files_is_refused(weights, tmp_path):
    model = onnx.load(str(export(weights).path))
    initializer = model.graph.initializer[0]
    initializer.data_location = onnx.TensorProto.EXTERNAL
    initializer.ClearField("raw_data")
    initializer.external_data.add(key="location", value="../../../../etc/passwd")
    bad = tmp_path / "external.onnx"
    bad.write_bytes(model.SerializeToString())
    with pytest.raises(TuduiError, match="keeps weights in other files"):
        load_model(bad)


def test_damaged_export_metadata_is_named(weights, tmp_path):
    model = onnx.load(str(export(weights).path))
    for prop in model.metadata_props:
        if prop.key == "tudui_export":
            prop.value = json.dumps({"format": "onnx", "input": "uint8", "dtype": "float32", "batch": -3})
    bad = tmp_path / "meta.onnx"
    bad.write_bytes(model.SerializeToString())
    with pytest.raises(TuduiError, match="damaged export metadata: batch is -3"):
        load_model(bad)
    for prop in model.metadata_props:      # an integer longer than Python reads: damaged too, not a ValueError
        if prop.key == "tudui_export":
            prop.value = '{"format": "onnx", "batch": ' + "7" * 5000 + "}"
    bad.write_bytes(model.SerializeToString())
    with pytest.raises(TuduiError, match="damaged export metadata"):
        load_model(bad)


def test_settings_are_checked_before_any_work(weights, tmp_path):
    with pytest.raises(TuduiError, match="--out must end in .onnx"):
        export(weights, out=str(tmp_path / "model.pt2"))
    with pytest.raises(TuduiError, match="folder .* does not exist"):
        export(weights, out=str(tmp_path / "missing" / "m.onnx"))
    with pytest.raises(TuduiError, match="--batch must be dynamic or a batch size"):
        export(weights, batch="0")
    onnx_file = export(weights).path
    with pytest.raises(TuduiError, match="is exported already"):
        export(onnx_file)
    with pytest.raises(TuduiError, match="weights not found"):
        export(tmp_path / "nothing.safetensors")


def test_a_missing_extra_says_how_to_install_it(weights, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)   # makes `import onnxscript` fail
    with pytest.raises(TuduiError, match=r"pip install 'onnx>=[\d.]+' 'onnxscript>=[\d.]+' 'onnxruntime>=[\d.]+'  "
                                         r'\(or pip install -e "\.\[export\]" in a clone of tudui\)$'):
        export(weights)


def test_parity_images_are_fixed_and_span_the_range():
    a, b = parity_images(8, 32), parity_images(8, 32)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == (8, 3, 32, 32)
    assert a.min() == 0 and a.max() == 255


def test_export_info_round_trip_and_bounds():
    info = exported.ExportInfo("pt2", "float", "float16", 8)
    assert exported.ExportInfo.from_json(info.to_json(), "x") == info
    for bad in ['[1]', '{"format": "exe"}', "{", json.dumps({**json.loads(info.to_json()), "dtype": "int8"})]:
        with pytest.raises(TuduiError, match="damaged export metadata"):
            exported.ExportInfo.from_json(bad, "x")
    assert dataclasses.replace(info, batch=None).to_json().count('"dynamic"') == 1


def test_an_onnx_graph_with_control_flow_or_a_huge_tensor_is_refused_before_it_runs(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tudui.exported import _check_onnx_graph

    def graph(nodes, inits, out_shape):
        inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])
        out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, out_shape)
        return helper.make_model(helper.make_graph(nodes, "g", [inp], [out], initializer=inits),
                                 opset_imports=[helper.make_opsetid("", 17)])
    body = helper.make_graph([helper.make_node("Identity", ["c_in"], ["c_out"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("c_in", TensorProto.BOOL, [])],
                             [helper.make_tensor_value_info("c_out", TensorProto.BOOL, [])])
    trip, cond = numpy_helper.from_array(np.array(10 ** 12), "trip"), numpy_helper.from_array(np.array(True), "cond")
    looping = graph([helper.make_node("Loop", ["trip", "cond"], ["probs"], body=body)], [trip, cond], [1, 10])
    with pytest.raises(TuduiError, match=r"has a 'Loop' operator, which no image classifier tudui exports has"):
        _check_onnx_graph(looping, tmp_path / "loop.onnx")
    one = numpy_helper.from_array(np.zeros(1, np.float32), "one")
    shape = numpy_helper.from_array(np.array([250_000_000, 10], np.int64), "shape")   # 10 GB from a few bytes
    growing = graph([helper.make_node("Expand", ["one", "shape"], ["probs"])], [one, shape], [250_000_000, 10])
    with pytest.raises(TuduiError, match=r"makes a tensor of 2,500,000,000 elements per image"):
        _check_onnx_graph(growing, tmp_path / "alloc.onnx")
    assert onnx.checker.check_model(growing) is None   # a valid graph: refused for what it would do
