"""tudui.evaluate, and the report a finished run or an eval leaves (report.html, pictures, TensorBoard).

The pictures and the page are made by tudui.report; this module runs the evaluation that
feeds them and decides where they go. What `eval` is not told (data set, split, batch size,
test-time augmentation, precision) it takes from the settings recorded with the weights.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from tudui.config import Config
from tudui.config_commands import EvalConfig
from tudui.config_files import special_meanings, to_dict
from tudui.data import DatasetSpec
from tudui.data.loaders import make_eval_loader
from tudui.data.sources import BUILTIN_DATASETS, data_reference, read_dataset
from tudui.data.splits import held_out_positions, hold_out_val, join_images, relabel, trained_in_val, val_share
from tudui.data.validate import drop_unreadable, readable_images
from tudui.engine import evaluate as evaluate_model
from tudui.errors import SettingError, TuduiError
from tudui.rundir import RunDir, create_numbered, resolve_weights_path
from tudui.runtime import Runtime, create_runtime, resolve_device
from tudui.settings import made, shown
from tudui.weights import WeightsMeta, load_model, with_class_names

log = logging.getLogger(__name__)


def evaluate(weights: str | Path, **settings) -> dict:
    """Loss, top-1/top-5 and balanced accuracy, macro-F1, per-class metrics and confusion of saved
    weights on one split of a data set.

    settings are `tudui eval`'s, by the same names (data, split, batch_size, tta, out, report, ...).
    The data set, the val split, preprocessing and test-time augmentation default to those
    recorded in the weights; the split to the test split (or val without one), or to the whole
    folder when data names a folder without splits of its own. A plain state_dict file (the
    course's .pth) needs model, the model's name, and data; its classes are the data set's, in
    order. From Python nothing is written unless
    report=True or out is given: then report.html, metrics.json, the pictures and TensorBoard
    events go to out (default: RUN/eval, RUN/eval2, ...), and the result's `report` is the page.
    """
    if settings.get("report") is None:
        settings["report"] = settings.get("out") is not None
    return evaluate_weights(made(EvalConfig, "eval", {**settings, "weights": weights}))


def evaluate_weights(cfg: EvalConfig) -> dict:
    """evaluate, for settings made already (the CLI's)."""
    device = resolve_device(cfg.device)
    model, meta = load_model(cfg.weights, device, cfg.model or None, cfg.trust_pickle)
    trained = meta.config
    data = cfg.data or meta.data
    if not data:
        raise TuduiError(f"{cfg.weights} does not record its data set; pass --data")
    if meta.imported:   # a plain state_dict: the data given is all there is to know of its images
        meta = dataclasses.replace(meta, data=data)
    if cfg.data is None and data not in BUILTIN_DATASETS and not Path(data).exists():
        raise TuduiError(f"{cfg.weights} was trained on {data}, which is not there any more; pass --data with "
                         f"where it is now")
    spec, split, images = _split_to_evaluate(cfg, data, trained, meta)
    meta, images = _match_classes(meta, spec, images, cfg.weights, data)
    loader = make_eval_loader(images, meta.preprocess, device, cfg.batch_size or trained.data.batch_size,
                              choice=trained.data.loader, in_memory=spec.in_memory)
    runtime = create_runtime(device, trained.train.precision)
    tta = trained.train.tta if cfg.tta is None else cfg.tta
    if cfg.tta and (note := meta.tta_note(cfg.tta)):   # asked for here; a recorded level was said in training
        log.warning("%s", note)
    if not cfg.report:
        return measure(model, loader, runtime, meta, tta, spec.source, split)[0]
    out_dir = eval_output_dir(cfg.weights, cfg.out)
    run = RunDir.find(cfg.weights)
    paths = {**({"run directory": run.path} if run else {}),
             "weights evaluated": resolve_weights_path(cfg.weights), "report folder": out_dir,
             "TensorBoard": f"tensorboard --logdir {out_dir}"}
    from tudui.report import read_history  # matplotlib loads only when a report is made
    which = "every image" if split == "all" else f"{split} split"
    page = ReportPage(out_dir=out_dir, title=f"tudui eval {cfg.weights} ({which})", paths=paths,
                      history=read_history(run.metrics) if run else [])
    try:
        metrics, skipped = measure_and_report(model, loader, images, runtime, meta, tta, spec.source, split, page)
    except OSError as e:
        raise TuduiError(f"cannot write the report into {out_dir}: {e.strerror or e}") from None
    for item in skipped:
        log.warning("TensorBoard: %s not written", item)
    return metrics


def _split_to_evaluate(cfg: EvalConfig, data: str, trained: Config, meta: WeightsMeta):
    """(data set, the split's name, its images) for --split: auto is the whole folder when
    --data names one without splits of its own, else test, else val (held out as in training)."""
    raw = read_dataset(data, cfg.data_dir or meta.data_dir or trained.data.data_dir, trained.train.seed,
                       cfg.download, min_classes=1)
    if raw.ignored:
        log.info("%s: ignored %s", data, raw.ignored_words())
    split = cfg.split
    if split == "auto":
        whole = cfg.data is not None and raw.val is None and raw.test is None
        split = "all" if whole else "test" if raw.test is not None else "val"
    # Unreadable images are skipped as training skipped them (after the val split is held out, as there).
    bad_share = trained.data.max_bad_share if cfg.max_bad_share is None else cfg.max_bad_share
    # the run's own images (by place, or by what the weights say they were) matter where the val split
    # is drawn from train again, and where everything is measured
    held_out = split == "val" and raw.val is None
    same_images = _has_the_runs_images(raw, trained, meta) if held_out or split == "all" else None
    own = _is_training_data(data, meta) or same_images is True
    if own and same_images is False and raw.val is None and split in ("val", "all"):
        log.warning("the images of %s have changed since these weights were trained on them, so the val split "
                    "held out of them is not the run's own and may hold images it was trained on: its accuracy "
                    "may be flattered; measure on images kept apart instead (a test split, or --data of "
                    "images the run never saw)", data)
    if split == "all":
        raw, _ = drop_unreadable(raw, bad_share)
        if own:
            trained_on = len(raw.train) - len(held_out_positions(raw, trained.data.val_split, trained.train.seed))
            log.warning("%s is the data these weights were trained on: %s of its %s images are training "
                        "images, which flatter the accuracy; --split %s measures only held-out ones",
                        data, f"{trained_on:,}", f"{sum(len(d) for d in raw.splits().values()):,}",
                        "test" if raw.test is not None else "val")
        return raw, split, join_images(list(raw.splits().values()))
    val_split = trained.data.val_split if cfg.val_split is None else cfg.val_split
    if own and split == "val" and raw.val is None and val_split != trained.data.val_split:
        seen, held = trained_in_val(raw, trained.data.val_split, val_split, trained.train.seed)
        trained_share = val_share(raw, trained.data.val_split)
        if seen and not trained_share:
            log.warning("--val-split %g: the weights were trained without a val split, so all %s images of "
                        "this one are training images, which flatter the accuracy%s", val_split, f"{held:,}",
                        "; --split test measures held-out ones" if raw.test is not None else "")
        elif seen:
            log.warning("--val-split %g is not the share the weights were trained with (%g%s): %s of the %s "
                        "images of this val split are training images, which flatter the accuracy; leave "
                        "--val-split out to measure the run's own val split", val_split, trained_share,
                        ", the automatic one" if trained.data.val_split < 0 else "", f"{seen:,}", f"{held:,}")
    spec = hold_out_val(raw, val_split, trained.train.seed)
    images = getattr(spec, split)
    if images is None:
        raise TuduiError(f"{data} has no {split} split (it has {', '.join(spec.splits())}); pass another --split")
    return spec, split, readable_images(images, split, bad_share)[0]


def _has_the_runs_images(raw: DatasetSpec, trained: Config, meta: WeightsMeta) -> bool | None:
    """Whether raw, split as the run split it, lists the very images the weights were trained on
    (by their names within the data set, labels and sizes, so also where the folder was copied or moved);
    None when the weights do not say (from before tudui kept it, or not made by a tudui run)."""
    if not meta.listed:
        return None
    try:
        return hold_out_val(raw, trained.data.val_split, trained.train.seed).fingerprint(sizes=True) == meta.listed
    except TuduiError:   # no val or test split as the run split it: not the run's data
        return False


def _is_training_data(data: str, meta: WeightsMeta) -> bool:
    """Whether data names the data set the weights were trained on (a folder, archive or list by
    where it is, a built-in set by name)."""
    return bool(meta.data) and data_reference(data) == data_reference(meta.data)


def _match_classes(meta: WeightsMeta, spec: DatasetSpec, images, weights: str, data: str):
    """(meta, images) with the images' labels in the weights' numbering: the data set may have the
    trained classes or some of them (by name, in any order); a class the weights never saw is an
    error. An imported state_dict's classes are named by the data set's."""
    if meta.imported:
        if len(spec.class_names) != meta.num_classes:
            raise TuduiError(f"{weights} has {meta.num_classes} outputs but {data} has "
                             f"{len(spec.class_names)} classes")
        return with_class_names(meta, spec.class_names), images
    if list(spec.class_names) == list(meta.class_names):
        return meta, images
    trained = {name: i for i, name in enumerate(meta.class_names)}
    unknown = [name for name in spec.class_names if name not in trained]
    if unknown:
        raise TuduiError(f"{data} has {_count(unknown, 'class', 'classes')} the weights were not trained on: "
                         f"{_listed(unknown)} (they know {_listed(meta.class_names)})"
                         + _meant(unknown, meta.class_names))
    log.info("%s has %d of the %d trained classes (%s); each image is measured against all %d",
             data, len(spec.class_names), meta.num_classes, _listed(spec.class_names), meta.num_classes)
    return meta, relabel(images, np.array([trained[name] for name in spec.class_names]))


def _meant(unknown: list[str], known: list[str]) -> str:
    """The hint "; did you mean 'cat' for 'Cat'?" for unknown names that differ from a known one
    by case or a letter or so (cats, Cat), else "" (class1 is not taken for class0)."""
    by_lower = {name.lower(): name for name in known}
    pairs = [f"{shown(by_lower[match[0]])} for {shown(name)}" for name in unknown
             if (match := difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.85))]
    return f"; did you mean {', '.join(pairs[:5])}?" if pairs else ""


def _count(items: list, one: str, many: str) -> str:
    return f"{len(items)} {one if len(items) == 1 else many}"


def _listed(names: list[str], most: int = 10) -> str:
    """The first names, comma-separated, and how many more."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(shown(name) for name in names[:most]) + more


def eval_output_dir(weights: str | Path, out: str) -> Path:
    """Where `tudui eval` writes: --out as given, else RUN/eval, RUN/eval2, ... (next to a bare file)."""
    if out:
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise TuduiError(f"--out {path} is a file; give a folder for the report")
        if not path.exists() and path.suffix.lower() in (".html", ".htm", ".json", ".csv"):
            raise SettingError(f"--out names the report's folder (report.html, metrics.json and the pictures go in "
                             f"it), not a file: give a folder such as {path.with_suffix('')}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TuduiError(f"cannot create the report folder {path}: {e.strerror}") from None
        return path
    run = RunDir.find(weights)
    return run.create_eval_dir() if run is not None else create_numbered(Path(weights).parent, "eval")


# ---------------------------------------------------------------- measuring and reporting

@dataclass(frozen=True, kw_only=True)
class ReportPage:
    """Where a report goes and what it says about where it came from."""
    out_dir: Path
    title: str
    paths: dict = field(default_factory=dict)     # what is where, shown on the page
    history: list = field(default_factory=list)   # metrics.csv rows, for curves.png
    writer: object | None = None                   # a SummaryWriter to add to (None: one in out_dir)


def measure(model: nn.Module, loader, runtime: Runtime, meta: WeightsMeta, tta: int, source: str, split: str,
            keep_outputs: bool = False) -> tuple[dict, object, object]:
    """(metrics, probabilities, targets) of one pass over a split (the last two with keep_outputs)."""
    from tudui.scores import per_class_table, top5_tells
    raw = evaluate_model(model, loader, runtime.device, meta.num_classes, tta, runtime.amp_dtype,
                         keep_outputs=keep_outputs, mirror=meta.tta_mirror())
    probabilities, targets = raw.pop("probabilities", None), raw.pop("targets", None)
    if not top5_tells(meta.num_classes):   # always 100 %: null in metrics.json, as metrics.csv leaves it empty
        raw["top5_accuracy"] = None
    class_names = list(meta.class_names)
    metrics = {**raw, "split": split, "per_class": per_class_table(raw["confusion"], class_names),
               "class_names": class_names, "data": source, "tta": tta, "tta_mirror": tta > 0 and meta.tta_mirror(),
               "model": meta.model, "weights_epoch": meta.epoch}
    return metrics, probabilities, targets


def measure_and_report(model: nn.Module, loader, images, runtime: Runtime, meta: WeightsMeta, tta: int,
                       source: str, split: str, page: ReportPage) -> tuple[dict, list[str]]:
    """(metrics with the report's path, what TensorBoard skipped): the pass over the split whose
    images (in the loader's order) are given, then the report."""
    measured = Measured(model, meta, *measure(model, loader, runtime, meta, tta, source, split, keep_outputs=True))
    report, skipped = report_on(measured, loader, images, page)
    return {**measured.metrics, "report": str(report)}, skipped


@dataclass
class Measured:
    """One pass of a model over a split: the metrics, and the outputs the report's pictures need."""
    model: nn.Module
    meta: WeightsMeta
    metrics: dict
    probabilities: object = None
    targets: object = None
    loader: object = None    # what was measured, in order (the report goes over the same images)


def report_on(measured: Measured, loader, images, page: ReportPage) -> tuple[Path, list[str]]:
    """(report.html, what TensorBoard skipped): the page, pictures and TensorBoard figures of a
    measured pass (kept outputs), in page.out_dir."""
    from tudui.report import ReportData, render_pictures, write_report, write_tensorboard
    meta, model = measured.meta, measured.model
    # Absolute paths: the page is read later, from anywhere.
    shown_paths = {k: str(v.resolve()) if isinstance(v, Path) else str(v) for k, v in page.paths.items()}
    data = ReportData(measured.metrics, measured.probabilities, measured.targets, list(meta.class_names), images,
                      page.title, to_dict(meta.config), shown_paths, page.history, kept_epoch=meta.epoch,
                      meanings=special_meanings(meta.config))
    pictures = render_pictures(data)
    report = write_report(page.out_dir, data, pictures)
    example = next(iter(loader))[0][:1]
    from tudui.exported import ExportedModel
    if isinstance(model, ExportedModel):   # a compiled graph: TensorBoard's tracer cannot draw it
        model = None
    if page.writer is None:
        from torch.utils.tensorboard import SummaryWriter
        with SummaryWriter(log_dir=str(page.out_dir)) as own_writer:
            skipped = write_tensorboard(own_writer, data, pictures, model, example)
    else:
        skipped = write_tensorboard(page.writer, data, pictures, model, example)
    return report, skipped


def final_measure(run: RunDir, split: str, loader, runtime: Runtime, source: str, cfg: Config,
                  warn: Callable[[str], None]) -> Measured | None:
    """A finished run's chosen weights (weights/best) measured once on `split` (with the outputs
    its report needs, under --report). The run is complete before this starts, so a failure here
    is a warning and costs nothing else."""
    try:
        model, meta = load_model(run.best, runtime.device)
        metrics, probabilities, targets = measure(model, loader, runtime, meta, cfg.train.tta, source, split,
                                                  keep_outputs=cfg.train.report)
    except Exception as e:  # whatever went wrong, the trained run must stand
        log.debug("final evaluation failed", exc_info=True)
        warn(f"the final {split} evaluation could not be made ({type(e).__name__}: {e}); the run itself is "
             f"complete in {run}")
        return None
    return Measured(model, meta, metrics, probabilities, targets, loader)


def final_report(run: RunDir, split: str, measured: Measured, images, cfg: Config, writer,
                 warn: Callable[[str], None]) -> Path | None:
    """report.html, the pictures and TensorBoard figures of final_measure's pass, in the run
    directory; a failure is a warning (the numbers are printed already, the weights saved)."""
    from tudui.report import read_history
    paths = {"run directory": run.path, "weights evaluated": run.best, "last weights": run.last,
             "settings": run.config, "per-epoch metrics": run.metrics,
             "TensorBoard": f"tensorboard --logdir {cfg.train.project}"}
    try:
        page = ReportPage(out_dir=run.path, title=f"tudui run {run} ({split} split)", paths=paths,
                          history=read_history(run.metrics), writer=writer)
        report, skipped = report_on(measured, measured.loader, images, page)
    except Exception as e:  # whatever went wrong, the trained run must stand
        log.debug("final report failed", exc_info=True)
        warn(f"the {split} report could not be made ({type(e).__name__}: {e}); the numbers above are measured "
             f"and the run itself is complete in {run}")
        return None
    for item in skipped:
        warn(f"TensorBoard: {item} not written")
    return report
