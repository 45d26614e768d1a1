"""Reading what `tudui export` wrote: an .onnx, .pt2 or .torchscript file as a module that eval and
predict use like any other, and the metadata inside it, read without running anything.

An exported graph takes images (uint8 0-255 or float 0-1, RGB, N x 3 x H x W at the trained
size), normalises them itself and answers class probabilities. `ExportedModel` puts it behind
tudui's usual contract (normalised-free float images in, logits out: the log of the
probabilities, whose softmax is the probabilities again), so the same loaders, test-time
augmentation and metrics apply. The metadata is two JSON entries: `tudui`, the same record as
in a .safetensors header, and `tudui_export`, how the graph was exported (EXPORT_SCHEMA).

ONNX files are data (a graph of standard operators) and load in onnxruntime without unpickling
anything; a graph that a classifier never is (control flow, computed allocations: _check_onnx_graph)
is refused first, since running it could take any time or memory. .pt2 and
TorchScript files unpickle parts of themselves when loaded, which can run code from the file,
so they load only with trust_pickle, as whole pickled models do.
"""
from __future__ import annotations

import json
import math
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tudui.errors import TuduiError
from tudui.settings import shown, shown_path

SUFFIXES = {".onnx": "onnx", ".pt2": "pt2", ".torchscript": "torchscript"}
META_KEY = "tudui"
EXPORT_KEY = "tudui_export"
EXTRA_FILES = {META_KEY: "tudui.json", EXPORT_KEY: "tudui_export.json"}   # pt2 / TorchScript entries
MAX_METADATA = 16 * 1024 * 1024    # bytes of JSON read from a file's metadata
MAX_ONNX_BYTES = 2 * 1024 ** 3     # protobuf's own ceiling for one file
# What a classifier's graph never needs and a crafted one uses to run for ever or allocate without
# bound: control flow (its bodies are graphs of their own), and tensors made to a size it computes.
REFUSED_OPS = {"Loop", "Scan", "If", "ConstantOfShape", "Range", "Tile", "SequenceConstruct", "SequenceInsert",
               "SplitToSequence", "ConcatFromSequence"}
MAX_ONNX_ELEMENTS = 1 << 28        # of any tensor the graph holds or makes, for one image (fixed sizes)


@dataclass(frozen=True)
class ExportInfo:
    """How a graph was exported: its file format, what its input is, its weights' dtype, its batch."""
    format: str                 # onnx, pt2, torchscript
    pixels: str                 # uint8 or float
    dtype: str                  # float32 or float16
    batch: int | None           # None: any batch size

    def to_json(self) -> str:
        return json.dumps({"format": self.format, "input": self.pixels, "dtype": self.dtype,
                           "batch": "dynamic" if self.batch is None else self.batch,
                           "layout": "N x 3 x H x W, RGB", "output": "probabilities"})

    @classmethod
    def from_json(cls, text: str, source: str) -> ExportInfo:
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError):   # a JSON error, or an integer past Python's 4,300 digits
            raw = None
        if not isinstance(raw, dict):
            raise TuduiError(f"{source} has damaged export metadata")
        checks = {"format": lambda v: v in SUFFIXES.values(), "input": lambda v: v in ("uint8", "float"),
                  "dtype": lambda v: v in ("float32", "float16"),
                  "batch": lambda v: v == "dynamic" or (type(v) is int and 1 <= v <= 4096)}
        for key, test in checks.items():
            if not test(raw.get(key)):
                raise TuduiError(f"{source} has damaged export metadata: {key} is {shown(raw.get(key))}")
        return cls(raw["format"], raw["input"], raw["dtype"], None if raw["batch"] == "dynamic" else raw["batch"])


def is_exported(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def format_of(path: str | Path) -> str:
    return SUFFIXES[Path(path).suffix.lower()]


def read_metadata(path: str | Path) -> tuple[str, ExportInfo]:
    """(the `tudui` JSON record, ExportInfo) of an exported file, read without loading its graph."""
    path = Path(path)
    entries = _onnx_metadata(_read_onnx(path), path) if format_of(path) == "onnx" else _zip_metadata(path)
    return _metadata(entries, path)


@dataclass(frozen=True)
class ExportedFile:
    """An exported file opened: its metadata read, its graph not yet loaded. An ONNX file's bytes
    are read and parsed once, for the metadata and the graph both."""
    path: Path
    record: str                 # the `tudui` JSON record
    info: ExportInfo
    onnx_bytes: bytes | None = None

    @classmethod
    def open(cls, path: str | Path) -> ExportedFile:
        path = Path(path)
        if format_of(path) != "onnx":
            return cls(path, *read_metadata(path))
        data = path.read_bytes()   # read once: the bytes checked are the bytes run
        return cls(path, *_metadata(_onnx_metadata(_read_onnx(path, data), path), path), onnx_bytes=data)

    def load(self, device: torch.device, trust_pickle: bool) -> nn.Module:
        """The graph as an ExportedModel (see load_graph)."""
        if self.onnx_bytes is None:
            return load_graph(self.path, self.info, device, trust_pickle)
        return ExportedModel(_onnx_runner(self.path, self.onnx_bytes), self.info).eval()


def _metadata(entries: dict[str, str], path: Path) -> tuple[str, ExportInfo]:
    if META_KEY not in entries or EXPORT_KEY not in entries:
        raise TuduiError(f"{shown_path(path)} has no tudui metadata (class names, input size); "
                         f"tudui runs the files that `tudui export` wrote")
    return entries[META_KEY], ExportInfo.from_json(entries[EXPORT_KEY], str(path))


def _read_onnx(path: Path, data: bytes | None = None):
    """The ONNX model in path (or in data, its bytes), refused when damaged or when it points at
    data in other files."""
    onnx = _needs("onnx")
    if path.stat().st_size > MAX_ONNX_BYTES:
        raise TuduiError(f"{shown_path(path)} is larger than an ONNX file can be (2 GB)")
    try:
        model = onnx.load_from_string(path.read_bytes() if data is None else data)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and others: all mean a damaged file
        raise TuduiError(f"{shown_path(path)} is not a readable ONNX file ({type(e).__name__})") from None
    external = onnx.TensorProto.EXTERNAL
    if any(t.data_location == external for t in model.graph.initializer):
        # External data names other files to read; a file from elsewhere could name any file here.
        raise TuduiError(f"{shown_path(path)} keeps weights in other files (ONNX external data); tudui reads "
                         f"self-contained ONNX files only")
    _check_onnx_graph(model, path)
    return model


def _check_onnx_graph(model, path: Path) -> None:
    """Refuse a graph that an image classifier exported by tudui never is: one with control flow or
    computed allocation (REFUSED_OPS, or any operator from outside the standard set), or one where
    shape inference finds a tensor of more than MAX_ONNX_ELEMENTS per image."""
    onnx = _needs("onnx")
    for node in model.graph.node:
        if node.op_type in REFUSED_OPS or node.domain not in ("", "ai.onnx"):
            raise TuduiError(f"{shown_path(path)} has a {shown(node.op_type)} operator, which no image "
                             f"classifier tudui exports has; tudui does not run it")
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - a graph shape inference cannot follow: onnxruntime says more
        return
    def sizes(value) -> list[int | None]:   # None: a size decided when it runs (the batch, mostly)
        if hasattr(value, "dims"):          # an initializer
            return [int(d) for d in value.dims]
        return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
    inputs = [sizes(value) for value in inferred.input]
    batch = inputs[0][0] if inputs and inputs[0] and inputs[0][0] else 1   # a fixed batch of N images
    for value in [*inferred.value_info, *inferred.output, *inferred.initializer]:
        dims = sizes(value)
        elements = math.prod(d for d in dims if d)
        if dims and dims[0] == batch:
            elements //= batch
        if elements > MAX_ONNX_ELEMENTS:
            raise TuduiError(f"{shown_path(path)} makes a tensor of {elements:,} elements per image "
                             f"({shown(value.name)}); tudui does not run it")


def _onnx_metadata(model, path: Path) -> dict[str, str]:
    entries = {}
    try:
        for prop in model.metadata_props:
            value = prop.value   # protobuf may hand back bytes for a string that is not UTF-8
            if prop.key in EXTRA_FILES and len(value) <= MAX_METADATA:
                entries[prop.key] = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    except UnicodeDecodeError:   # or decode it only when it is read, and fail then
        raise TuduiError(f"{shown_path(path)} has damaged metadata (not UTF-8 text)") from None
    return entries


def _zip_metadata(path: Path) -> dict[str, str]:
    """The metadata entries of a .pt2 or TorchScript archive (a zip file with an extra/ folder)."""
    wanted = {name: key for key, name in EXTRA_FILES.items()}
    found: dict[str, str] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                folder, _, name = info.filename.rpartition("/")
                if folder.endswith("extra") and name in wanted and info.file_size <= MAX_METADATA:
                    found[wanted[name]] = archive.read(info).decode("utf-8", errors="replace")
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise TuduiError(f"{shown_path(path)} is not a readable {format_of(path)} file ({e})") from None
    return found


def load_graph(path: str | Path, info: ExportInfo, device: torch.device, trust_pickle: bool) -> nn.Module:
    """The exported graph in path behind tudui's model contract (an ExportedModel)."""
    path = Path(path)
    if info.format != "onnx" and not trust_pickle:
        raise TuduiError(f"{shown_path(path)} is a {info.format} export: loading it unpickles parts of the file, "
                         f"which can run code from it; pass --trust-pickle if you made it (an .onnx export "
                         f"loads without)")
    if info.format == "onnx":
        data = path.read_bytes()   # read once: the bytes checked are the bytes run
        _read_onnx(path, data)
        run = _onnx_runner(path, data)
    else:
        run = _torch_runner(path, info.format, device)
    return ExportedModel(run, info).eval()


def _onnx_runner(path: Path, data: bytes):
    """A function running the ONNX graph in data (path's bytes, checked by _read_onnx) in onnxruntime."""
    ort = _needs("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3   # errors only: its warnings about unused initialisers are not ours
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own classes for a graph it cannot run
        raise TuduiError(f"onnxruntime cannot run {shown_path(path)}: {str(e)[:200]}") from None
    name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> torch.Tensor:
        out = session.run(None, {name: images.cpu().numpy()})[0]
        return torch.from_numpy(out).to(images.device)
    return run


def _torch_runner(path: Path, kind: str, device: torch.device):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)   # torch.jit is deprecated, still loads
            if kind == "torchscript":
                module = torch.jit.load(str(path), map_location=device)
            else:
                module = torch.export.load(str(path)).module().to(device)
        if kind == "torchscript":   # an exported program is in eval mode already (and refuses eval())
            module.eval()
    except Exception as e:  # noqa: BLE001 - a damaged archive fails in many ways inside torch
        raise TuduiError(f"{shown_path(path)} is not a loadable {kind} file ({type(e).__name__}: "
                         f"{str(e).strip()[:150]})") from None

    def run(images: torch.Tensor) -> torch.Tensor:
        return module(images.to(device))
    return run


class ExportedModel(nn.Module):
    """An exported graph as tudui's models are: float images in [0, 1] in, logits out.

    Images become what the graph takes (uint8 rounded back from [0, 1], or float16), a fixed
    batch is filled with copies of the last image and cut off again, and the probabilities come
    back as their logarithm.
    """

    def __init__(self, run, info: ExportInfo):
        super().__init__()
        self.run = run    # a function, not a submodule: a loaded .pt2 program refuses train() and eval()
        self.info = info

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.info.pixels == "uint8":
            x = (images.float() * 255).round_().clamp_(0, 255).to(torch.uint8)
        else:
            x = images.to(torch.float16 if self.info.dtype == "float16" else torch.float32)
        step = self.info.batch or len(x)
        outputs = []
        for start in range(0, len(x), max(step, 1)):
            chunk = x[start:start + step]
            missing = step - len(chunk)
            if missing:
                chunk = torch.cat([chunk, chunk[-1:].expand(missing, *chunk.shape[1:])])
            outputs.append(self.run(chunk)[:step - missing].float())
        return torch.cat(outputs).clamp_min(1e-30).log()


def _needs(module: str):
    """An optional dependency of export, or a message saying how to install it."""
    import importlib

    from tudui.extras import install_hint
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TuduiError(f"{module} is needed for exported models: {install_hint('export')}") from None
