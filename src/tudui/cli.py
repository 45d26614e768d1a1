"""The `tudui` command: subcommands mapped to one library call each; no training logic here."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from pathlib import Path

from tudui._version import __version__
from tudui.config import SECTIONS, TrainFlags, iter_options
from tudui.config_commands import EvalConfig, ExportConfig, PredictConfig, ServeConfig
from tudui.errors import SettingError, TuduiError
from tudui.interrupts import TrainingInterrupted, WatchedOutput, silence
from tudui.settings import columns, counted, flag_name, option_key, padded, shown_path, value_type
from tudui.usage import Parser, unrecognized

TRAIN_EXAMPLES = """examples:
  tudui train --data digits                      # the embedded data set, no download, ~15 s on a CPU
  tudui train                                    # CIFAR-10 (downloaded to ./data when missing)
  tudui train --config seed                      # the course's recipe exactly (tudui's own configs/seed.yaml)
  tudui train --data path/to/folder --model tudui_relu --epochs 30 --lr 0.05
  tudui train --data photos/ --model resnet18 --pretrained --freeze-epochs 1    # transfer learning
  tudui train --data photos/ --model vgg16 --weights vgg16_method2.pth --head append
  tudui train --data cifar10-jpeg.tar.gz --optimizer adamw --batch-size 128 --name adamw
  tudui train --resume runs/exp                  # after Ctrl-C (or a crash): go on where it stopped
  tudui train --resume runs/exp --epochs 30      # extend a finished run (its schedule stretched)
  tudui train --resume runs/exp --epochs 30 --extend restart   # ...with a new schedule for the new epochs

settings: defaults < --config FILE.yaml < flags. The resolved settings are written to
RUN_DIR/config.yaml, which --config accepts as it is."""

EVAL_EXAMPLES = """examples:
  tudui eval --weights runs/exp                  # the run's best weights; report in runs/exp/eval/
  tudui eval --weights runs/exp/weights/last.safetensors --json
  tudui eval --weights runs/exp --data path/to/other/folder --out other-eval

writes report.html (open it in a browser), metrics.json, confusion_matrix.png,
misclassified.png, per_class.png, curves.png and TensorBoard events into RUN/eval
(then RUN/eval2, ...), or into --out DIR."""

PREDICT_EXAMPLES = """examples:
  tudui predict dog.png --weights runs/exp
  tudui predict photos/ more.jpg --weights runs/exp/weights/best.safetensors --topk 3
  tudui predict photos/ --weights runs/exp --json > predictions.json
  tudui predict photos/ --weights runs/exp --topk 3 --out predictions.csv --tta"""

EXPORT_EXAMPLES = """examples:
  tudui export runs/exp                          # runs/exp/weights/best.onnx, uint8 images in, probabilities out
  tudui export runs/exp --format torchscript     # best.torchscript, for torch.jit.load
  tudui export runs/exp --format pt2 --batch 1   # best.pt2 with a fixed batch of one, for torch.export.load
  tudui predict dog.png --weights runs/exp/weights/best.onnx    # check the export with the same commands

The file holds the class names, input size, resize and crop, normalisation and tudui version.
The export is compared with the original model on a batch of images; above the tolerance
nothing is written and the command exits 1. Needs the export extra: pip install onnx onnxscript
onnxruntime (or pip install -e ".[export]" in a clone of tudui)."""

SERVE_EXAMPLES = """examples:
  tudui serve runs/exp                           # http://127.0.0.1:8000/ : a page to drop an image on
  tudui serve runs/exp/weights/best.onnx --port 9000 --max-batch 64
  curl -X POST --data-binary @dog.png -H "Content-Type: image/png" http://127.0.0.1:8000/predict
  curl -F file=@dog.png -F file=@cat.jpg http://127.0.0.1:8000/predict

GET /health, GET /metadata, POST /predict; the API's documentation is at /docs.
Needs the serve extra: pip install fastapi uvicorn python-multipart (or pip install -e ".[serve]"
in a clone of tudui)."""

CACHE_EXAMPLES = """examples:
  tudui cache                                    # what is there, how large, last used, made from what
  tudui cache --prune                            # remove what nothing can use again, or unused for 30 days
  tudui cache --clear                            # remove it all (the next runs unpack and decode again)

The folder is ~/.cache/tudui, or $TUDUI_CACHE. An entry whose archive or image folder has
changed, moved or gone can never be used again; tudui removes those, and entries unused for
30 days, whenever it adds a new entry. Entries in use by a running tudui are never removed."""


def _add_settings(parser: argparse.ArgumentParser, title: str, cls: type, positional: str = "") -> None:
    """An option for every field of the settings dataclass cls, in an argument group titled title;
    the field named positional is the command's argument instead."""
    group = parser.add_argument_group(title)
    for f in fields(cls):
        if f.name == positional:
            parser.add_argument(f.name, metavar=f.metadata["cli"]["metavar"], help=f.metadata["help"])
            continue
        default = None if f.default is MISSING else f.default
        kind = value_type(f)
        # lr's default depends on the optimizer and empty strings mean "see the help text".
        suffix = "" if f.name == "lr" or default in (None, "") else f" (default: {default})"
        kwargs = dict(dest=option_key(f), default=None, help=f"{f.metadata['help']}{suffix}")
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = {int: "N", float: "X", str: "S"}[kind]
        group.add_argument(flag_name(f), **{**kwargs, **f.metadata["cli"]})


def _given(cls: type, args: argparse.Namespace) -> dict:
    """{field: value} of the settings in cls that the command line gave."""
    values = {f.name: getattr(args, option_key(f)) for f in fields(cls)}
    return {name: value for name, value in values.items() if value is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tudui", description="Train, evaluate and use image classifiers with PyTorch.",
        epilog="run `tudui COMMAND --help` for each command's settings and examples")
    parser.add_argument("--version", action="version", version=f"tudui {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the whole traceback of an unexpected error (for a bug report)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.set_defaults(parsers=commands.choices)   # each command's own parser, for its messages
    formatter = argparse.RawDescriptionHelpFormatter

    train = commands.add_parser("train", help="train a model; writes a run directory",
                                description="Train an image classifier and write runs/<name>/.",
                                epilog=TRAIN_EXAMPLES, formatter_class=formatter)
    _add_settings(train, "run", TrainFlags)
    for section, cls in SECTIONS.items():
        _add_settings(train, f"{section} settings", cls)

    ev = commands.add_parser("eval", help="accuracy of saved weights on a split of a data set, and a report",
                             description="Loss, accuracy and per-class metrics of saved weights, "
                                         "with a report page and pictures.",
                             epilog=EVAL_EXAMPLES, formatter_class=formatter)
    _add_settings(ev, "eval settings", EvalConfig)
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")

    pr = commands.add_parser("predict", help="class probabilities for images or folders",
                             description="Predict the class of each image (folders are searched).",
                             epilog=PREDICT_EXAMPLES, formatter_class=formatter)
    pr.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                    help="image files, or folders of them (searched through, hidden files left out)")
    _add_settings(pr, "predict settings", PredictConfig)
    pr.add_argument("--json", action="store_true", help="print the predictions as JSON")

    ex = commands.add_parser("export", help="write the model as ONNX, TorchScript or pt2, checked against the original",
                             description="Export weights with their preprocessing and class names inside, "
                                         "and check the export against the original model.",
                             epilog=EXPORT_EXAMPLES, formatter_class=formatter)
    _add_settings(ex, "export settings", ExportConfig, positional="weights")

    se = commands.add_parser("serve", help="an HTTP prediction service (and a page) for a run or an exported file",
                             description="Serve predictions over HTTP, with dynamic batching and limits.",
                             epilog=SERVE_EXAMPLES, formatter_class=formatter)
    _add_settings(se, "serve settings", ServeConfig, positional="weights")

    commands.add_parser("models", help="list the models and their parameter counts",
                        description="tudui's models, with parameters for 10 classes, and torchvision's.")

    ca = commands.add_parser("cache", help="what tudui keeps in its cache folder; remove what is no longer used",
                             description="List the cache folder (unpacked archives, decoded images, image "
                                         "checks, the model list): each entry's size, last use and source.",
                             epilog=CACHE_EXAMPLES, formatter_class=formatter)
    action = ca.add_mutually_exclusive_group()
    action.add_argument("--prune", action="store_true",
                        help="remove the entries nothing can use again and those unused for "
                             "--max-idle-days (what tudui also does by itself when it adds an entry)")
    action.add_argument("--clear", action="store_true", help="remove every entry not in use by a running tudui")
    ca.add_argument("--max-idle-days", type=float, default=None, metavar="X",
                    help="with --prune: the days an entry may go unused (default: 30)")
    return parser


def run_train(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    from tudui.runner import train
    flags = TrainFlags(**_given(TrainFlags, args))
    overrides = {option_key(f): getattr(args, option_key(f)) for _, f in iter_options()}
    if flags.nproc > 1 and "LOCAL_RANK" not in os.environ:   # not started by torchrun already
        from tudui.runtime import check_process_count, launch_torchrun
        check_process_count(flags.nproc, overrides.get("device") or _file_device(flags))
        return launch_torchrun(flags.nproc, argv)
    with WatchedOutput() as output:   # `tudui train ... | head` stops the run cleanly
        train(config_file=flags.config or None, resume=flags.resume or None, trust_pickle=flags.trust_pickle,
              extend=flags.extend, **overrides)
    return 141 if output.gone else 0


def _file_device(flags: TrainFlags) -> str:
    """The --device of the settings file (or of the run --resume continues), else auto."""
    from tudui.config_files import make_config
    path = flags.config or (Path(flags.resume) / "config.yaml" if flags.resume else None)
    try:
        return make_config(path).train.device if path else "auto"
    except TuduiError:   # said by the training itself, with its context
        return "auto"


def run_eval(args: argparse.Namespace) -> int:
    from tudui.evaluation import evaluate_weights
    metrics = evaluate_weights(EvalConfig(**_given(EvalConfig, args)))
    if args.json:
        print(json.dumps(metrics))
        return 0
    from tudui.report_html import of_split
    from tudui.scores import top5_tells
    print(f"{metrics['data']}: {counted(metrics['count'], of_split(metrics['split'], 'image'))}")
    top5 = f"  top-5 {metrics['top5_accuracy']:.2%}" if top5_tells(len(metrics["class_names"])) else ""
    print(f"loss {metrics['loss']:.4f}  accuracy {metrics['accuracy']:.2%}{top5}  "
          f"balanced accuracy {metrics['balanced_accuracy']:.2%}  macro-F1 {metrics['macro_f1']:.3f}")
    names = [repr(name)[1:-1] for name in metrics["class_names"]]   # a name's control characters escaped
    width = max(columns(name) for name in names)
    for i, name in enumerate(names):
        row = metrics["confusion"][i]
        found = (f"{metrics['per_class_accuracy'][i]:7.2%}  ({row[i]}/{sum(row)})" if sum(row)
                 else "      -  (no images)")
        print(f"  {padded(name, width)}  {found}")
    if "report" in metrics:
        print(f"report: {metrics['report']}  (open it in a browser; pictures and metrics.json beside it)")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from tudui.prediction import predict_images
    cfg = PredictConfig(**_given(PredictConfig, args))
    results = predict_images(args.inputs, cfg)
    failed = sum("error" in r for r in results)
    if args.json:
        print(json.dumps(results, indent=1))
    elif len(results) == 1 and failed:   # one image that failed: one line, its reason (naming it)
        print(f"error: {results[0]['error']}", file=sys.stderr)
    else:
        for r in results:
            if "error" in r:
                print(f"{r['path']}: error: {r['error']}")
            else:
                shown = ", ".join(f"{p['class']} {p['probability']:.1%}" for p in r["predictions"])
                print(f"{r['path']}: {shown}")
    if cfg.out and not args.json:
        print(f"predictions written to {cfg.out}")
    if failed and (len(results) > 1 or args.json):
        print(f"error: {_failures(results)}", file=sys.stderr)
    return 1 if failed else 0


def _failures(results: list[dict]) -> str:
    """What failed among predict's results, counting a folder without images as a folder."""
    from tudui.prediction import NO_IMAGES
    empty = [r["path"] for r in results if r.get("error", "").startswith(NO_IMAGES)]
    images = len(results) - len(empty)
    unread = sum("error" in r for r in results) - len(empty)
    said = ([f"{unread} of {images} images could not be read" if images > 1 else "the image could not be read"]
            if unread else [])
    if empty:
        said.append(f"no images in {', '.join(empty[:3])}{' ...' if len(empty) > 3 else ''}")
    return "; ".join(said) if images else f"no images to predict ({said[-1]})"


def run_export(args: argparse.Namespace) -> int:
    from tudui.export import export_weights
    export_weights(ExportConfig(**_given(ExportConfig, args)), say=print)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from tudui.serve import serve
    serve(ServeConfig(**_given(ServeConfig, args)))
    return 0


def run_models(args: argparse.Namespace) -> int:
    from tudui.model_listing import model_listing
    print(model_listing(), end="")
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from tudui.caches import cache_command
    action = "clear" if args.clear else "prune" if args.prune else "list"
    cache_command(action, args.max_idle_days, say=print)
    return 0


COMMANDS = {"train": run_train, "eval": run_eval, "predict": run_predict, "export": run_export,
            "serve": run_serve, "models": run_models, "cache": run_cache}


def one_line(error: TuduiError) -> str:
    """error's message; one raised in a DataLoader worker (a broken image) arrives wrapped in the
    worker's traceback, whose last line is the message."""
    text = str(error)
    if text.startswith("Caught TuduiError"):
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return text


class _Said(logging.Formatter):
    """A log line as the CLI prints it: the message, with "warning: " in front of a warning (as
    the lines the commands print themselves have)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"warning: {text}" if record.levelno >= logging.WARNING else text


class _StderrNow(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line comes (tests and redirections replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def show_log_lines() -> None:
    """tudui's log lines on stderr as plain lines: what it does once and slowly (unpacking an archive,
    checking and decoding thousands of images, downloading weights) and its warnings. A program that
    calls tudui as a library keeps its own logging setup instead."""
    logger = logging.getLogger("tudui")
    if not any(isinstance(handler, _StderrNow) for handler in logger.handlers):
        handler = _StderrNow()
        handler.setFormatter(_Said("%(message)s"))
        logger.addHandler(handler)
    # Under torchrun the other ranks' lines and warnings would repeat rank 0's; their errors still show.
    logger.setLevel(logging.ERROR if _follower() else logging.INFO)


def _follower() -> bool:
    """A process of a distributed run other than rank 0 (which says what the run does)."""
    return "LOCAL_RANK" in os.environ and os.environ.get("RANK", "0") != "0"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    Parser.argv = argv
    if not argv:   # `tudui` alone: what it can do, rather than "COMMAND is required"
        build_parser().print_help()
        return 0
    args, extra = build_parser().parse_known_args(argv)
    if extra:   # said by the command's parser, which knows its flags
        command = args.parsers[args.command]
        command.error(unrecognized(extra, command))
    show_log_lines()
    try:
        if args.command == "train":
            return run_train(args, argv)
        return COMMANDS[args.command](args)
    except TrainingInterrupted as e:
        if os.environ.get("RANK", "0") == "0":   # every process stopped together: one of them says so
            print(f"interrupted: {e}", file=sys.stderr)
        return e.exit_code
    except SettingError as e:   # a usage mistake, said the way argparse says its own
        prog = args.parsers[args.command].prog
        if not _follower():     # the same in every process of a distributed run: rank 0 says it
            print(f"{prog}: error: {one_line(e)} (see `{prog} --help`)", file=sys.stderr)
        return 2
    except TuduiError as e:
        said = one_line(e)
        if _follower() and not said.startswith("rank "):   # whose it is, when every process may say one
            said = f"rank {os.environ['RANK']}: {said}"
        print(f"error: {said}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`tudui predict ... | head`): nothing left to say, and nowhere to say it.
        silence(1)
        return 141
    except OSError as e:   # what the files or the system refused (a name too long, no permission): not a bug
        if args.debug:
            raise
        about = f": {shown_path(e.filename)}" if e.filename else ""
        said = e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        print(f"error: {said}{about}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if args.debug:
            raise
        text = (str(e).strip().splitlines() or [""])[0][:200]
        print(f"error: unexpected {type(e).__name__}: {text} (rerun with `tudui --debug {args.command} ...` "
              f"for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
