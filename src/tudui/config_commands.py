"""Settings of the commands that use trained weights: eval, predict, export and serve.

A setting these commands share with training is training's own field (tudui.config), taken with
`_like`: the same flag, help and rule. Those whose default is the value recorded with the weights
default to None, and the command fills them in from the weights' settings.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from tudui.config import DataConfig, TrainConfig, trust_pickle_option
from tudui.settings import Rule, Settings, check, one_of, option, up_to, value_type

EVAL_SPLITS = ("auto", "train", "val", "test", "all")
ONE_DEVICE = "auto, cpu, cuda, cuda:N (one GPU of several) or mps (auto: cuda, then mps, then cpu)"


def _like(section: type, name: str, *, as_trained: bool, help: str = "") -> Any:
    """Training's setting `name` for another command; as_trained: None by default, meaning the
    value the weights were trained with; help: the command's own words, where training's do not fit."""
    f = next(f for f in fields(section) if f.name == name)
    metadata = {**f.metadata, "kind": value_type(f), **({"help": help} if help else {})}
    if as_trained:
        metadata["help"] += " (default: as in training)"
        return field(default=None, metadata=metadata)
    return field(default=f.default, metadata=metadata)


def _weights_to_use() -> Any:
    return option("a run directory, a .safetensors file, an export (.onnx, .pt2, .torchscript), or a "
                  "state_dict .pth with --model", kind=str,
                cli={"required": True, "metavar": "RUN_OR_FILE"})


def _model_of_state_dict() -> Any:
    return option("the model a plain state_dict file (.pth) is for, e.g. vgg16 (tudui weights name "
                "their own)", default="")


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Settings):
    """Settings of `tudui eval`: which weights, on which data, and where the report goes."""
    weights: str = _weights_to_use()
    data: str | None = _like(DataConfig, "dataset", as_trained=True)
    split: str = option("the split to measure: train, val, test, all; auto: the whole folder when --data names "
                      "one without splits of its own, else test, else val", rule=one_of(*EVAL_SPLITS),
                      default="auto")
    data_dir: str | None = _like(DataConfig, "data_dir", as_trained=True)
    val_split: float | None = _like(DataConfig, "val_split", as_trained=True)
    batch_size: int | None = _like(DataConfig, "batch_size", as_trained=True)
    max_bad_share: float | None = _like(DataConfig, "max_bad_share", as_trained=True)
    download: bool = _like(DataConfig, "download", as_trained=False)
    device: str = _like(TrainConfig, "device", as_trained=False, help=ONE_DEVICE)
    tta: int | None = _like(TrainConfig, "tta", as_trained=True)
    model: str = _model_of_state_dict()
    trust_pickle: bool = trust_pickle_option()
    out: str = option("folder for the report (default: RUN/eval, RUN/eval2, ...; files of the same names "
                    "in DIR are replaced)", cli={"metavar": "DIR"}, default="")
    report: bool = option("write report.html, metrics.json, the pictures and TensorBoard events "
                        "(--no-report: print the metrics only, write no files)", default=True)


@dataclass(frozen=True, kw_only=True)
class PredictConfig(Settings):
    """Settings of `tudui predict` (the images are its arguments)."""
    weights: str = _weights_to_use()
    topk: int = option("classes to show per image", rule=up_to(1, 1000), default=5)
    batch_size: int | None = _like(DataConfig, "batch_size", as_trained=True)
    device: str = _like(TrainConfig, "device", as_trained=False, help=ONE_DEVICE)
    tta: int | None = _like(TrainConfig, "tta", as_trained=True)
    model: str = _model_of_state_dict()
    classes: str = option("the class names of weights that do not carry them (a plain state_dict .pth), in "
                          "the order of the model's outputs: comma-separated (cat,dog), or cifar10",
                          cli={"metavar": "NAMES"}, default="")
    trust_pickle: bool = trust_pickle_option()
    out: str = option("also write the predictions to FILE.csv or FILE.json", cli={"metavar": "FILE"},
                    default="")


EXPORT_FORMATS = ("onnx", "torchscript", "pt2")
EXPORT_INPUTS = ("uint8", "float")
BATCH_SHAPE = Rule(lambda v: v == "dynamic" or (v.isdigit() and 1 <= int(v) <= 4096),
                   "dynamic or a batch size from 1 to 4096")


@dataclass(frozen=True, kw_only=True)
class ExportConfig(Settings):
    """Settings of `tudui export` (the weights are its argument)."""
    weights: str = option("a run directory, a .safetensors file, or a state_dict .pth with --model", kind=str,
                          cli={"metavar": "RUN_OR_WEIGHTS"})
    format: str = option("onnx (onnxruntime and most runtimes), torchscript (torch.jit.load), pt2 "
                         "(torch.export.load)", rule=one_of(*EXPORT_FORMATS), default="onnx")
    out: str = option("the file to write (default: beside the weights, e.g. runs/exp/weights/best.onnx)",
                      cli={"metavar": "FILE"}, default="")
    batch: str = option("the batch dimension of the exported graph: dynamic, or a fixed size N",
                        rule=BATCH_SHAPE, default="dynamic")
    half: bool = option("export in float16 (half the size, faster on GPUs; checked against the float32 original "
                        "with a tolerance of 2e-2)",
                        default=False)
    pixels: str = option("what the graph takes: uint8 (0-255, as images are stored) or float (0-1); either "
                         "way RGB, N x 3 x H x W at the trained input size, normalised inside the graph",
                         flag="--input", rule=one_of(*EXPORT_INPUTS), default="uint8")
    tolerance: float = option("largest absolute difference of the probabilities allowed by the parity check "
                              "(default: 1e-4, with --half 2e-2)", rule=up_to(0, 1), kind=float, default=None)
    check_images: int = option("images in the parity check's batch", rule=up_to(1, 4096), default=64)
    model: str = _model_of_state_dict()
    trust_pickle: bool = trust_pickle_option()


# Pillow's limit on an image's pixels (Image.MAX_IMAGE_PIXELS, a guard against decompression bombs,
# which tudui keeps): serve's own limit can only be lower. Written out so settings need no Pillow.
PILLOW_PIXELS = 1024 * 1024 * 1024 // 4 // 3

UPLOAD_MEMORY = 256 * 1024 * 1024    # serve's default --max-upload-memory


@dataclass(frozen=True, kw_only=True)
class ServeConfig(Settings):
    """Settings of `tudui serve` (the weights are its argument): where it listens and what it accepts."""
    weights: str = option("a run directory, a weights file, or an exported .onnx / .pt2 / .torchscript file",
                          kind=str, cli={"metavar": "RUN_OR_FILE"})
    host: str = option("address to listen on (127.0.0.1: this machine only; 0.0.0.0: every network, "
                       "put it behind a proxy with TLS)", default="127.0.0.1")
    port: int = option("port to listen on", rule=up_to(1, 65535), default=8000)
    topk: int = option("classes in each answer", rule=up_to(1, 1000), default=5)
    max_batch: int = option("most images in one forward pass (1: one pass per image, no batching)",
                            rule=up_to(1, 4096), default=32)
    batch_timeout: float = option("ms a forward pass may wait for more images once one is waiting and others "
                                  "are on their way (a lone request never waits)", rule=up_to(0, 10_000),
                                  default=5.0)
    max_body: int = option("largest request body in bytes (413 above it; the rest is not read)",
                           rule=up_to(1, 1 << 31), default=16 * 1024 * 1024)
    max_images: int = option("most images in one request (413 above it)", rule=up_to(1, 1024), default=16)
    max_pixels: int = option("largest image in pixels, width x height (400 above it, refused before decoding; "
                             f"at most Pillow's own limit, {PILLOW_PIXELS:,})",
                             rule=up_to(1, PILLOW_PIXELS), default=40_000_000)
    max_queue: int = option("most images waiting for the model (503 with Retry-After above it)",
                            rule=up_to(1, 1_000_000), default=256)
    decode_workers: int = option("threads that decode uploaded images", rule=up_to(1, 256), default=2)
    max_connections: int = option("most connections open at once (once that many are open, new requests "
                                  "get 503)", rule=up_to(1, 100_000), default=128)
    max_upload_memory: int = option("most bytes of request bodies held in memory at once, over all requests "
                                    "(503 with Retry-After above it); at least --max-body (default: 256 MiB, or "
                                    "--max-body when larger)", rule=up_to(1, 1 << 40), kind=int, default=None)
    read_timeout: float = option("seconds a request's head may take to arrive, and then its body (the "
                                 "connection closed, or 408, after it): a client that sends slowly cannot "
                                 "hold a connection for ever", rule=up_to(0.1, 3600), default=30.0)
    device: str = _like(TrainConfig, "device", as_trained=False, help=ONE_DEVICE)
    tta: int | None = _like(TrainConfig, "tta", as_trained=True)
    model: str = _model_of_state_dict()
    trust_pickle: bool = trust_pickle_option()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_upload_memory is None:   # not given: resolved here, as --lr is, so that it is shown
            object.__setattr__(self, "max_upload_memory", max(UPLOAD_MEMORY, self.max_body))
        check(self.max_body <= self.max_upload_memory,
              f"--max-body {self.max_body:,} is more than --max-upload-memory {self.max_upload_memory:,}: "
              "a body that large would always be refused; raise --max-upload-memory or lower --max-body")
