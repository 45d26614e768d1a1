"""Feed mutated weights headers, exported files, training states, settings files, CSV lists, data set
archives and images to tudui's readers and the CLI.

    python fuzz_loaders.py WORK_DIR SEED CASES_PER_KIND MEMORY_GIB

Run by tests/e2e/test_fuzz.py in a subprocess with its address space capped. Every case must
either load or fail with one TuduiError line; anything else (another exception, a message
over 400 characters or of several lines, a CLI exit other than 0 or 1, a traceback) is
printed as a failure. The last line of output is a JSON summary.
"""
from __future__ import annotations

import contextlib
import io
import json
import random
import resource
import struct
import sys
import traceback
from pathlib import Path

WORK, SEED, CASES, MEMORY_GIB = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_AS, (MEMORY_GIB << 30, MEMORY_GIB << 30))

import numpy as np  # noqa: E402  (after the cap: what they allocate counts)
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tudui.checkpoint import FORMAT_VERSION, capture_rng, load_state  # noqa: E402
from tudui.cli import main  # noqa: E402
from tudui.config_files import make_config  # noqa: E402
from tudui.data.csvlist import csv_dataset  # noqa: E402
from tudui.data.folders import folder  # noqa: E402
from tudui.data.images import load_image  # noqa: E402
from tudui.data.transforms import Preprocess  # noqa: E402
from tudui.errors import TuduiError  # noqa: E402
from tudui.models import create_model  # noqa: E402
from tudui.export import export_model  # noqa: E402
from tudui.weights import WeightsMeta, load_model, read_weights, save_weights  # noqa: E402

rng = random.Random(SEED)
HOSTILE = [None, True, -1, 0, 10 ** 12, 2 ** 63, -2 ** 63, 1e308, float("nan"), "", "x" * 10_000, "$\\bad{$",
           "=cmd|' /C calc'!A0", [], [1, 2], {"a": 1}, [[[[[[]]]]]], "../../etc/passwd", "\x00", "é" * 50]
failures: list[str] = []
outcomes: dict[str, dict[str, int]] = {}


def check(kind: str, case: int, action) -> str:
    """Run action; 'ok' or 'refused' when it behaves, else record a failure."""
    outcome = _outcome(kind, case, action)
    counts = outcomes.setdefault(kind, {})
    counts[outcome] = counts.get(outcome, 0) + 1
    return outcome


def _outcome(kind: str, case: int, action) -> str:
    try:
        action()
        return "ok"
    except TuduiError as e:
        text = str(e)
        if "\n" in text or len(text) > 400:
            failures.append(f"{kind} {case}: message of {len(text)} characters / {text.count(chr(10))} newlines")
        return "refused"
    except Exception:  # noqa: BLE001 - exactly what the fuzzing looks for
        failures.append(f"{kind} {case}: {traceback.format_exc(limit=-4)[-900:]}")
        return "crashed"


def mutate_value(value):
    choice = rng.random()
    if choice < 0.6:
        return rng.choice(HOSTILE)
    if choice < 0.8 and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value * rng.choice([-1, 0, 1e6, 1e300])
    return [value] * rng.randint(0, 3)


def mutate_json(obj, depth=0):
    """obj with some of its values (at any depth) replaced by hostile ones, keys dropped or added."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            roll = rng.random()
            if roll < 0.05:
                continue
            out[key] = mutate_value(value) if roll < 0.15 else mutate_json(value, depth + 1)
        if rng.random() < 0.05:
            out[rng.choice(["extra", "evil", "__class__"])] = mutate_value(None)
        return out
    return obj


# ---------------------------------------------------------------- weights headers

def weights_cases(base: Path) -> None:
    meta = WeightsMeta(model="tudui", num_classes=3, class_names=("a", "b", "c"),
                       preprocess=Preprocess(input_size=32, mean=(0.5,) * 3, std=(0.25,) * 3))
    save_weights(base, create_model("tudui", 3), meta)
    data = base.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + header_len])
    for case in range(CASES):
        path = WORK / f"w{case}.safetensors"
        roll = rng.random()
        if roll < 0.5:   # the tudui metadata, mutated, in an otherwise valid file
            inner = json.loads(header["__metadata__"]["tudui"])
            if rng.random() < 0.15:   # an optional field left out, as older files have it: still loads
                inner.pop(rng.choice(["start", "pretrained", "val_loss", "listed", "tudui_version"]))
            else:
                inner = mutate_json(inner) if rng.random() < 0.9 else None
            text = json.dumps(inner) if inner is not None else "[" * rng.randint(1, 200_000)
            new = dict(header, __metadata__={"tudui": text})
            blob = json.dumps(new).encode()
            path.write_bytes(struct.pack("<Q", len(blob)) + blob + data[8 + header_len:])
        elif roll < 0.8:   # bytes flipped anywhere in the first kilobyte
            broken = bytearray(data)
            for _ in range(rng.randint(1, 20)):
                broken[rng.randrange(min(len(broken), 1024))] = rng.randrange(256)
            path.write_bytes(bytes(broken))
        else:   # cut short, or a header length that lies
            cut = data[:rng.randrange(len(data))]
            path.write_bytes(struct.pack("<Q", rng.choice([2 ** 40, 10, header_len + 5])) + cut[8:]
                             if rng.random() < 0.5 else cut)
        check("weights", case, lambda: read_weights(path))


def exported_cases(base: Path) -> None:
    """ONNX files with their metadata mutated, bytes flipped or cut short; .pt2 and TorchScript
    archives with mutated metadata entries (read without loading the graph, which needs trust)."""
    import onnx
    import zipfile
    sources = {fmt: export_model(base, format=fmt, out=str(WORK / f"good.{fmt}")).path
               for fmt in ("onnx", "pt2", "torchscript")}
    data = sources["onnx"].read_bytes()
    for case in range(CASES):
        fmt = rng.choice(["onnx", "onnx", "pt2", "torchscript"])
        path, roll = WORK / f"e{case}.{fmt}", rng.random()
        if fmt != "onnx":
            with zipfile.ZipFile(sources[fmt]) as src, zipfile.ZipFile(path, "w") as dst:
                for info in src.infolist():
                    blob = src.read(info)
                    if info.filename.endswith(".json") and "/extra/" in info.filename:
                        blob = json.dumps(mutate_json(json.loads(blob))).encode()
                    dst.writestr(info, blob)
        elif roll < 0.5:
            model = onnx.load_from_string(data)
            for prop in model.metadata_props:
                if rng.random() < 0.7:
                    prop.value = json.dumps(mutate_json(json.loads(prop.value)))
            path.write_bytes(model.SerializeToString())
        elif roll < 0.8:
            broken = bytearray(data)
            for _ in range(rng.randint(1, 20)):
                broken[rng.randrange(len(broken))] = rng.randrange(256)
            path.write_bytes(bytes(broken))
        else:
            path.write_bytes(data[:rng.randrange(len(data))])
        check("exported", case, lambda: load_model(path))


# ---------------------------------------------------------------- settings files

SETTINGS = {"data": {"dataset": "digits", "batch_size": 32, "augment": "none"}, "model": {"arch": "tudui"},
            "optim": {"optimizer": "sgd", "lr": 0.1}, "train": {"epochs": 2, "tta": 1}, "epochs": 3}


def yaml_text(case: int) -> str:
    import yaml
    roll = rng.random()
    if roll < 0.5:
        settings = {k: v for k, v in mutate_json(SETTINGS).items() if k != "epochs" or rng.random() < 0.3}
        try:
            return yaml.safe_dump(settings)
        except yaml.YAMLError:
            return "a: b"
    if roll < 0.7:   # aliases, repeated keys, deep nesting
        return rng.choice(["a: &a [1, 2]\nb: *a\n", "epochs: 1\nepochs: 2\n", "x: " + "[" * 5000,
                           "data: {dataset: digits}\ndata: {batch_size: 3}\n", "!!python/object:os.system {}\n"])
    base = yaml.safe_dump(SETTINGS)
    chars = list(base)
    for _ in range(rng.randint(1, 10)):
        chars.insert(rng.randrange(len(chars) + 1), rng.choice(":[]{}&*!|>-#'\"\n\t\\%@`,?"))
    return "".join(chars)


def settings_cases() -> None:
    for case in range(CASES):
        path = WORK / f"s{case}.yaml"
        if rng.random() < 0.1:
            path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randint(0, 3000))))
        else:
            path.write_text(yaml_text(case))
        check("settings", case, lambda: make_config(path))


# ---------------------------------------------------------------- CSV lists

def csv_cases() -> None:
    for name, value in (("a", 40), ("b", 200)):
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), value + i, dtype=np.uint8)).save(WORK / f"{name}{i}.png")
    cells = ["a0.png", "a1.png", "b0.png", "b1.png", "a", "b", "train", "val", "test", "x.png", "", '"', '""',
             "/etc/passwd", "../a0.png", "a0.png\x00", "é", "=1+1", "a" * 5000, ",", "\n"]
    for case in range(CASES):
        rows = ["path,label,split" if rng.random() < 0.5 else "path,label"]
        if rng.random() < 0.3:     # a good list, to which the random rows below may add a few
            rows = ["path,label", "a0.png,a", "a1.png,a", "a2.png,a", "b0.png,b", "b1.png,b", "b2.png,b"]
        rows += [",".join(rng.choice(cells) for _ in range(rng.randint(0, 4)))
                 for _ in range(rng.randint(0, 12 if len(rows) == 1 else 2))]
        path = WORK / f"c{case}.csv"
        path.write_text("\n".join(rows))
        check("csv", case, lambda: csv_dataset(path))


# ---------------------------------------------------------------- the CLI, on a few of them

# ---------------------------------------------------------------- training states (state.pt)

def state_cases() -> None:
    model = create_model("tudui", 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.zeros(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    base = {"format": FORMAT_VERSION, "epoch": 1, "step_in_epoch": 0, "partial_loss": 0.0, "partial_images": 0,
            "best_score": 0.5, "best_epoch": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": {}, "rng": capture_rng(), "elapsed": 1.5, "schedule": [0, 3], "epochs": 3,
            "data": {"train": [10, "abc"], "test": [5, "def"]}, "tensorboard_step": 4, "world_size": 1}
    for case in range(CASES):
        state = {key: (mutate_value(value) if rng.random() < 0.15 else value) for key, value in base.items()}
        roll = rng.random()
        if roll < 0.2:   # a tensor whose shape is far larger than its data
            key = rng.choice(list(base["model"]))
            state["model"] = {**base["model"], key: torch.zeros(1).expand(rng.choice([10 ** 6, 10 ** 9, 2 ** 40]))}
        elif roll < 0.35:   # a structure that holds itself, in a field the loader quotes or walks
            loop: list = []
            for _ in range(40):
                loop = [loop, loop]
            state[rng.choice(["epoch", "format", "elapsed", "schedule", "data", "optimizer"])] = loop
        path = WORK / f"state{case}.pt"
        torch.save(state, path)
        check("state", case, lambda: load_state(path))


# ---------------------------------------------------------------- data set archives

ESCAPED = "fuzz-escaped"    # members named so try to land outside the cache; none may


def hostile_tar(path: Path, base_files: dict[str, bytes]) -> None:
    """A tar of the data set's files plus members that are links, devices, paths out of the folder,
    sizes that lie or names that clash, packed with one of tar's compressions."""
    import tarfile
    mode = rng.choice(["w", "w:gz", "w:bz2", "w:xz"])
    with tarfile.open(path, mode) as tar:
        for name, blob in base_files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        for _ in range(rng.randint(1, 4)):
            info = tarfile.TarInfo(rng.choice([f"../../{ESCAPED}", f"/tmp/{ESCAPED}", f"data/a/{ESCAPED}.png",
                                               "data/a/a0.png", "data/a", "data/a/x/../../../" + ESCAPED]))
            info.type = rng.choice([tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE,
                                    tarfile.CHRTYPE, tarfile.FIFOTYPE])
            info.linkname = rng.choice(["/etc/passwd", f"../../../{ESCAPED}", "data/a/a0.png", ""])
            info.mode = rng.choice([0o644, 0o4755, 0o777])
            blob = b"x" * rng.choice([0, 10, 600])
            info.size = len(blob) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(blob) if info.size else None)


def hostile_zip(path: Path, base_files: dict[str, bytes]) -> None:
    import zipfile
    with zipfile.ZipFile(path, "w", compression=rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as zipped:
        for name, blob in base_files.items():
            zipped.writestr(name, blob)
        for _ in range(rng.randint(1, 4)):
            name = rng.choice([f"../{ESCAPED}", f"/{ESCAPED}", f"C:/{ESCAPED}", f"data\\..\\..\\{ESCAPED}",
                               "data/a/a0.png/inner.png", "data/a/", "data/a/a0.png"])
            zipped.writestr(name, b"y" * rng.choice([0, 10, 600]))


def archive_cases() -> None:
    files = {}
    for name, value in (("a", 40), ("b", 200)):
        for i in range(3):
            buffer = io.BytesIO()
            Image.fromarray(np.full((8, 8, 3), value + i, dtype=np.uint8)).save(buffer, "PNG")
            files[f"data/{name}/{name}{i}.png"] = buffer.getvalue()
    cache = WORK / "cache" / "extracted"
    existed = {path for path in (Path("/tmp") / ESCAPED,) if path.exists()}
    for case in range(CASES):
        suffix = rng.choice([".tar", ".zip"])
        path = WORK / f"arch{case}{'.tar' if suffix == '.tar' else '.zip'}"
        (hostile_tar if suffix == ".tar" else hostile_zip)(path, files)
        roll = rng.random()
        data = path.read_bytes()
        if roll < 0.3:    # bytes flipped anywhere
            broken = bytearray(data)
            for _ in range(rng.randint(1, 20)):
                broken[rng.randrange(len(broken))] = rng.randrange(256)
            path.write_bytes(bytes(broken))
        elif roll < 0.45:  # cut short
            path.write_bytes(data[:rng.randrange(len(data))])
        check("archive", case, lambda: folder(str(path), cache))
    # Anything named fuzz-escaped outside the cache got out of an archive's folder (the test's own
    # folder, or the absolute /tmp/fuzz-escaped some members name).
    escaped = [found for found in WORK.parent.rglob(f"*{ESCAPED}*") if cache not in found.parents]
    escaped += [path for path in (Path("/tmp") / ESCAPED,) if path.exists() and path not in existed]
    failures.extend(f"archive: {found} was written outside the cache" for found in escaped)


# ---------------------------------------------------------------- images

def image_cases() -> None:
    """Images of every format tudui reads with bytes flipped, cut short, or (PNG) a header that
    claims a huge size with a valid checksum: each reads or is one line."""
    import zlib
    pixels = np.random.default_rng(SEED).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    sources = {}
    for fmt, mode in (("PNG", "RGBA"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"),
                      ("WEBP", "RGB"), ("PPM", "RGB")):
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buffer, fmt)
        sources[fmt] = buffer.getvalue()
    for case in range(CASES):
        fmt = rng.choice(list(sources))
        data, roll = bytearray(sources[fmt]), rng.random()
        if roll < 0.5:
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif roll < 0.75:
            data = data[:rng.randrange(len(data))]
        elif fmt == "PNG":      # IHDR's width and height, with its CRC made to match
            data[16:24] = struct.pack(">II", rng.choice([1, 65535, 2 ** 31 - 1]), rng.choice([1, 65535, 2 ** 31 - 1]))
            data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        else:
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 5000)))
        path = WORK / f"img{case}.{fmt.lower()}"
        path.write_bytes(bytes(data))
        at_least = rng.choice([0, 0, 8, 32])     # also decoded reduced, as evaluation decodes JPEGs
        check("image", case, lambda: load_image(path, at_least))


def cli_cases() -> None:
    image = WORK / "a0.png"
    for case in range(min(CASES, 40)):
        args = rng.choice([["predict", str(image), "--weights", str(WORK / f"w{case}.safetensors")],
                           ["eval", "--weights", str(WORK / f"w{case}.safetensors"), "--no-report"],
                           ["train", "--config", str(WORK / f"s{case}.yaml"), "--epochs", "0"]])
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(args)
            except SystemExit as e:   # argparse usage errors
                code = e.code
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        if code not in (0, 1, 2) or "Traceback" in err.getvalue() or (code == 1 and len(lines) != 1):
            failures.append(f"cli {case} {args[0]}: exit {code}, stderr {err.getvalue()[-400:]!r}")


weights_cases(WORK / "good.safetensors")
exported_cases(WORK / "good.safetensors")
settings_cases()
csv_cases()
state_cases()
archive_cases()
image_cases()
cli_cases()
torch.set_num_threads(1)
for failure in failures[:20]:
    print("FAILURE", failure)
print(json.dumps({"cases": 7 * CASES + min(CASES, 40), "failures": len(failures), "outcomes": outcomes}))
