"""tudui.evaluate, and the report a finished run or an eval leaves (report.html, pictures, TensorBoard).

The pictures and the page are made by tudui.report; this module runs the evaluation that
feeds them and decides where they go.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tudui.checkpoint import load_model, resolve_weights_path
from tudui.config import Config
from tudui.data import build_dataset, make_loaders
from tudui.engine import evaluate as evaluate_model
from tudui.errors import TuduiError
from tudui.runner import next_run_dir, resolve_device, resolve_precision

log = logging.getLogger(__name__)


def run_report(run_dir: Path, best_path: Path, test_loader, device: torch.device, spec, cfg: Config,
               amp_dtype, writer, warn: Callable[[str], None]) -> Path | None:
    """The best weights evaluated once more into report.html, metrics.json, pictures and TensorBoard.

    The run is complete before this starts, so a failure here is reported and costs nothing else.
    """
    from tudui.report import read_history
    try:
        model, meta = load_model(best_path, device)
        paths = {"run directory": run_dir, "weights evaluated": best_path,
                 "last weights": best_path.with_name("last.safetensors"),
                 "settings": run_dir / "config.yaml", "per-epoch metrics": run_dir / "metrics.csv",
                 "TensorBoard": f"tensorboard --logdir {cfg.train.project}"}
        metrics, skipped = _evaluate_and_report(
            model, test_loader, device, spec, meta, cfg.train.tta, amp_dtype, run_dir,
            title=f"tudui run {run_dir}", paths=paths, history=read_history(run_dir / "metrics.csv"),
            writer=writer)
    except Exception as e:  # whatever went wrong, the trained run must stand
        log.debug("report failed", exc_info=True)
        warn(f"the report could not be written ({type(e).__name__}: {e}); the run itself is "
             f"complete in {run_dir}")
        return None
    for item in skipped:
        warn(f"TensorBoard: {item} not written")
    return Path(metrics["report"])


def _evaluate_and_report(model: nn.Module, loader, device: torch.device, spec, meta: dict, tta: int,
                         amp_dtype, out_dir: Path | None, title: str = "", paths: dict | None = None,
                         history: list | None = None, writer=None) -> tuple[dict, list[str]]:
    """(metrics, what TensorBoard skipped): one pass over the test split; with out_dir, the report too.

    writer: a SummaryWriter to add the evaluation to (None: one is opened in out_dir).
    """
    from tudui.report import ReportData, per_class_table, render_pictures, write_report, write_tensorboard
    raw = evaluate_model(model, loader, device, meta["num_classes"], tta, amp_dtype,
                         keep_outputs=out_dir is not None)
    probabilities, targets = raw.pop("probabilities", None), raw.pop("targets", None)
    metrics = {**raw, "per_class": per_class_table(raw["confusion"], meta["class_names"]),
               "class_names": meta["class_names"], "data": spec.source, "tta": tta,
               "model": meta["model"], "weights_epoch": meta.get("epoch")}
    if out_dir is None:
        return metrics, []
    # Absolute paths: the page is read later, from anywhere.
    shown_paths = {k: str(v.resolve()) if isinstance(v, Path) else str(v) for k, v in (paths or {}).items()}
    data = ReportData(metrics, probabilities, targets, meta["class_names"], spec.test, title,
                      meta.get("config", {}), shown_paths, history or [])
    pictures = render_pictures(data)
    report = write_report(out_dir, data, pictures)
    example = next(iter(loader))[0][:1]
    if writer is None:
        from torch.utils.tensorboard import SummaryWriter
        with SummaryWriter(log_dir=str(out_dir)) as own_writer:
            skipped = write_tensorboard(own_writer, data, pictures, model, example)
    else:
        skipped = write_tensorboard(writer, data, pictures, model, example)
    metrics["report"] = str(report)
    return metrics, skipped


def find_run_dir(weights: str | Path) -> Path | None:
    """The run directory that holds a weights file (or is given), if it looks like one."""
    path = Path(weights)
    candidate = path if path.is_dir() else path.parent.parent if path.parent.name == "weights" else None
    if candidate is not None and (candidate / "config.yaml").is_file():
        return candidate
    return None


def eval_output_dir(weights: str | Path, out: str | Path | None) -> Path:
    """Where `tudui eval` writes: --out as given, else RUN/eval, RUN/eval2, ... (next to a bare file)."""
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise TuduiError(f"--out {out} is a file; give a folder for the report")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TuduiError(f"cannot create the report folder {out}: {e.strerror}") from None
        return out
    run_dir = find_run_dir(weights)
    return next_run_dir(str(run_dir if run_dir is not None else Path(weights).parent), "eval")


def evaluate(weights: str | Path, data: str | None = None, data_dir: str | None = None,
             batch_size: int = 256, device: str = "auto", val_split: float | None = None,
             download: bool = True, tta: int | None = None, report: bool = False,
             out: str | Path | None = None, model: str | None = None, trust_pickle: bool = False) -> dict:
    """Loss, top-1/top-5 accuracy, per-class metrics and confusion of saved weights on a test split.

    The data set, split, preprocessing and test-time augmentation default to those
    recorded in the weights. A plain state_dict file (the course's .pth) needs model, the
    model's name, and data; its classes are the data set's, in order. With report (or out),
    report.html, metrics.json, the pictures and TensorBoard events are written to out
    (default: RUN/eval, RUN/eval2, ...), and the result's `report` is the page's path.
    """
    dev = resolve_device(device)
    net, meta = load_model(weights, dev, model, trust_pickle)
    settings = meta.get("config", {})
    data_cfg, train_cfg = settings.get("data", {}), settings.get("train", {})
    data = data or meta.get("data")
    if not data:
        raise TuduiError(f"{weights} does not record its data set; pass --data")
    spec = build_dataset(data, data_dir or meta.get("data_dir") or data_cfg.get("data_dir", "./data"),
                         val_split if val_split is not None else data_cfg.get("val_split", 0.2),
                         train_cfg.get("seed", 0), download)
    if meta.get("imported"):
        if len(spec.class_names) != meta["num_classes"]:
            raise TuduiError(f"{weights} has {meta['num_classes']} outputs but {data} has "
                             f"{len(spec.class_names)} classes")
        meta["class_names"] = spec.class_names
    if spec.class_names != meta["class_names"]:
        raise TuduiError(f"the classes of {data} ({', '.join(spec.class_names[:10])}) differ from "
                         f"the classes the weights were trained on ({', '.join(meta['class_names'][:10])})")
    _, loader, _ = make_loaders(spec, meta["input_size"], meta["mean"], meta["std"], dev, batch_size,
                                choice=data_cfg.get("loader", "auto"), train=False,
                                resize_size=meta.get("resize_size"),
                                interpolation=meta.get("interpolation", "bilinear"))
    tta = train_cfg.get("tta", 0) if tta is None else tta
    precision = train_cfg.get("precision", "fp32")
    if precision == "fp16" and dev.type == "cpu":  # trained on a GPU, evaluated on a CPU
        precision = "fp32"
    amp_dtype = resolve_precision(precision, dev)
    if not (report or out is not None):
        return _evaluate_and_report(net, loader, dev, spec, meta, tta, amp_dtype, None)[0]
    from tudui.report import read_history
    out_dir = eval_output_dir(weights, out)
    run_dir = find_run_dir(weights)
    paths = {"weights evaluated": resolve_weights_path(weights), "report folder": out_dir,
             "TensorBoard": f"tensorboard --logdir {out_dir}"}
    if run_dir is not None:
        paths = {"run directory": run_dir, **paths}
    try:
        metrics, skipped = _evaluate_and_report(
            net, loader, dev, spec, meta, tta, amp_dtype, out_dir, title=f"tudui eval {weights}",
            paths=paths, history=read_history(run_dir / "metrics.csv") if run_dir else [])
    except OSError as e:
        raise TuduiError(f"cannot write the report into {out_dir}: {e.strerror or e}") from None
    for item in skipped:
        log.warning("TensorBoard: %s not written", item)
    return metrics
