"""Requests/s and latency of `tudui serve` under load, with dynamic batching on and off.

    python benchmarks/serve_load.py [--seconds 10] [--clients 1 8 32 128] [--models fastnet resnet18]
                                    [--max-batch 32 1] [--device auto] [--decode-workers 4]

For each model (untrained weights made here with tudui's own save_weights, 10 classes) and each
--max-batch, a `tudui serve` process listens on 127.0.0.1; then for each client count N, N clients
(asyncio keep-alive connections in this process, a minimal HTTP/1.1 client so that the load
generator costs little) send requests back to back for --seconds, each client alternating a
CIFAR-size image (32x32 PNG) and a photo-size one (1024x768 JPEG), one image per request as the raw
body. Timed: from writing a request to reading the whole answer, what a client waits for. Checked:
every request gets one answer with one result equal to the answer for its image (same top class and
probability, to 1e-4), and the server's count of images through the model grows by exactly the
number of answers (none lost, none run twice). One JSON line per configuration, then a table and
the targets: at 32 clients, batching gives >= 3x the requests/s of --max-batch 1, at a p99 no worse
than 2x the single-client latency (the 1-client p50 and p99 with the same batching, both shown).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import git_commit, machine
from tudui.models import create_model, preprocess_of
from tudui.prediction import CIFAR10_CLASSES as CLASSES
from tudui.weights import WeightsMeta, save_weights


def make_weights(model: str, folder: Path) -> Path:
    """Untrained weights of model for ten classes, as tudui writes them (seeded)."""
    import torch
    torch.manual_seed(0)
    net = create_model(model, num_classes=len(CLASSES))
    path = folder / f"{model}.safetensors"
    save_weights(path, net, WeightsMeta(model=model, num_classes=len(CLASSES), class_names=CLASSES,
                                        preprocess=preprocess_of(model)))
    return path


def test_images() -> list[tuple[str, bytes, str]]:
    """(name, bytes, content type): a 32x32 PNG and a 1024x768 JPEG of smooth noise, seeded."""
    rng = np.random.default_rng(0)
    small = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(small, "PNG")
    photo = io.BytesIO()
    coarse = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    coarse.resize((1024, 768), Image.Resampling.BICUBIC).save(photo, "JPEG", quality=90)
    return [("cifar-size 32x32 png", small.getvalue(), "image/png"),
            ("photo-size 1024x768 jpeg", photo.getvalue(), "image/jpeg")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(weights: Path, max_batch: int, device: str, decode_workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "tudui", "serve", str(weights), "--port", str(port), "--max-batch",
               str(max_batch), "--device", device, "--decode-workers", str(decode_workers), "--max-queue", "4096"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{' '.join(command)} exited {process.returncode}:\n{process.stderr.read()[-3000:]}")
        try:
            if asyncio.run(get_json(port, "/health"))["status"] == "ok":
                return process, port
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("tudui serve did not answer /health in 180 s")


class Connection:
    """One keep-alive HTTP/1.1 connection: request bytes out, (status, body) back."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        body = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection") == "close":
            self.close()
        return int(lines[0].split()[1]), body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def post_bytes(name: str, data: bytes, kind: str) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def get_json(port: int, path: str) -> dict:
    connection = Connection(port)
    try:
        _, body = await connection.exchange(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    finally:
        connection.close()
    return json.loads(body)


async def expected_answers(port: int, images: list) -> list[dict]:
    """The top prediction of each image, asked alone: what every answer under load must repeat."""
    connection = Connection(port)
    answers = []
    for name, data, kind in images:
        status, body = await connection.exchange(post_bytes(name, data, kind))
        assert status == 200, body
        answers.append(json.loads(body)["results"][0]["predictions"][0])
    connection.close()
    return answers


async def client(port: int, requests: list[bytes], expected: list[dict], deadline: float, index: int) -> dict:
    """Requests back to back until the deadline; latencies, errors, answers that do not match."""
    connection, latencies, errors, mismatched, sent = Connection(port), [], 0, 0, 0
    turn = index % len(requests)         # clients start on different images, so both kinds are in every batch
    while time.monotonic() < deadline:
        start = time.perf_counter()
        sent += 1
        try:
            status, body = await connection.exchange(requests[turn])
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            connection.close()
            continue
        latencies.append(time.perf_counter() - start)
        if status != 200:
            errors += 1
        else:
            results = json.loads(body)["results"]
            best = results[0]["predictions"][0]
            mismatched += len(results) != 1 or best["class"] != expected[turn]["class"] or \
                abs(best["probability"] - expected[turn]["probability"]) > 1e-4
        turn = (turn + 1) % len(requests)
    connection.close()
    return {"latencies": latencies, "errors": errors, "mismatched": mismatched, "sent": sent}


async def load(port: int, clients: int, seconds: float, images: list, expected: list[dict]) -> dict:
    requests = [post_bytes(*image) for image in images]
    before = await get_json(port, "/health")
    start = time.perf_counter()
    deadline = time.monotonic() + seconds
    done = await asyncio.gather(*(client(port, requests, expected, deadline, i) for i in range(clients)))
    elapsed = time.perf_counter() - start           # until the last answer: requests in flight at the deadline count
    after = await get_json(port, "/health")
    latencies = np.array([x for d in done for x in d["latencies"]]) * 1000
    answered = sum(d["sent"] - d["errors"] for d in done)
    passes = after["forward_passes"] - before["forward_passes"]
    images_run = after["images"] - before["images"]
    return {"clients": clients, "seconds": round(elapsed, 2), "requests": answered,
            "requests_per_s": round(answered / elapsed, 1),
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p95_ms": round(float(np.percentile(latencies, 95)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2),
            "errors": sum(d["errors"] for d in done), "mismatched": sum(d["mismatched"] for d in done),
            "lost_or_doubled": images_run - answered, "forward_passes": passes,
            "mean_batch": round(images_run / passes, 2) if passes else 0.0}


def warm_up(port: int, images: list) -> None:
    """A few rounds of concurrent requests first: allocator, kernels and caches settle."""
    requests = [post_bytes(*image) for image in images]

    async def rounds():
        for _ in range(3):
            connections = [Connection(port) for _ in range(32)]
            await asyncio.gather(*(c.exchange(requests[i % 2]) for i, c in enumerate(connections)))
            for c in connections:
                c.close()
    asyncio.run(rounds())


def run_model(model: str, weights: Path, args, common: dict, images: list) -> list[dict]:
    rows = []
    for max_batch in args.max_batch:
        process, port = start_server(weights, max_batch, args.device, args.decode_workers)
        try:
            meta = asyncio.run(get_json(port, "/metadata"))
            expected = asyncio.run(expected_answers(port, images))
            warm_up(port, images)
            for clients in args.clients:
                row = {**common, "device": meta["device"], "model": model, "input_size": meta["input_size"],
                       "max_batch": max_batch, **asyncio.run(load(port, clients, args.seconds, images, expected))}
                print(json.dumps(row), flush=True)
                rows.append(row)
        finally:
            process.terminate()
            process.wait(timeout=60)
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'model':<10} {'max_batch':>9} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
             f"{'batch':>6} {'errors':>6} {'bad':>4}"]
    for r in rows:
        lines.append(f"{r['model']:<10} {r['max_batch']:>9} {r['clients']:>7} {r['requests_per_s']:>9.1f} "
                     f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['mean_batch']:>6.1f} "
                     f"{r['errors']:>6} {r['mismatched'] + abs(r['lost_or_doubled']):>4}")
    return "\n".join(lines)


def targets(rows: list[dict], clients: int = 32) -> list[str]:
    """At 32 clients: batched req/s over max_batch 1's (target >= 3), and the batched p99 over the
    single-client latency (target <= 2), against both the 1-client p50 and p99, as either may be meant."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        by = {(r["max_batch"], r["clients"]): r for r in rows if r["model"] == model}
        batched = max(b for b, _ in by)
        if (batched, clients) not in by or (1, clients) not in by or (batched, 1) not in by:
            continue
        speedup = by[batched, clients]["requests_per_s"] / by[1, clients]["requests_per_s"]
        p99 = by[batched, clients]["p99_ms"]
        vs_p50, vs_p99 = p99 / by[batched, 1]["p50_ms"], p99 / by[batched, 1]["p99_ms"]
        out.append(f"{model}: {clients} clients, max_batch {batched} vs 1: {speedup:.2f}x requests/s "
                   f"(target >= 3: {'met' if speedup >= 3 else 'NOT met'}); p99 {p99:.1f} ms = {vs_p50:.2f}x the "
                   f"1-client p50, {vs_p99:.2f}x its p99 (target <= 2: {'met' if vs_p99 <= 2 else 'NOT met'} "
                   f"against the p99, {'met' if vs_p50 <= 2 else 'NOT met'} against the p50)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load per configuration")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--models", nargs="+", default=["fastnet", "resnet18"])
    parser.add_argument("--max-batch", type=int, nargs="+", default=[32, 1])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decode-workers", type=int, default=4)
    args = parser.parse_args()
    images = test_images()
    common = {"benchmark": "serve_load", "commit": git_commit(), "machine": machine(args.device),
              "cpus": os.cpu_count(), "decode_workers": args.decode_workers, "seconds_per_setting": args.seconds,
              "images": [name for name, _, _ in images],
              "timed": "per request, writing it to reading the whole answer, over the loopback; weights untrained"}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models:
            rows += run_model(model, make_weights(model, Path(folder)), args, common, images)
    print(table(rows), file=sys.stderr)
    for line in targets(rows):
        print(line, file=sys.stderr)


if __name__ == "__main__":
    main()
