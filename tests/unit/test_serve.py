"""tudui serve's app in this process: its answers and refusals over real HTTP on 127.0.0.1
(uvicorn in a thread), and the batcher's decisions on their own."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

import tudui
from tudui.errors import TuduiError
from tudui.prediction import predict
from tudui.serve import create_app
from tudui.serve.batching import Batcher, QueueFull
from tudui.config_commands import ServeConfig
from tudui.serve.app import build_app
from tudui.serve.server import bind, uvicorn_config

from helpers import class_image, write_class_folder

CLASSES = ["cat", "dog", "fox", "owl"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A run of tudui's small net on four generated classes (2 s on a CPU)."""
    root = tmp_path_factory.mktemp("serve")
    folder = write_class_folder(root / "photos", CLASSES, 16)
    result = tudui.train(data=str(folder), epochs=4, lr=0.05, project=str(root / "runs"), name="s",
                         progress=False, report=False, device="cpu")
    return result.best_weights


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Twelve files: small PNGs of each class, a grey one, one with transparency, photo-size JPEGs."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    paths = []
    for i in range(8):
        paths.append(folder / f"small_{i}.png")
        Image.fromarray(class_image(i % 4, rng)).save(paths[-1])
    Image.fromarray(class_image(1, rng)[:, :, 0]).save(paths_append(paths, folder / "grey.png"))
    Image.fromarray(class_image(2, rng)).convert("RGBA").save(paths_append(paths, folder / "alpha.png"))
    for i in range(2):
        photo = Image.fromarray(class_image(i, rng, size=64)).resize((1024, 768))
        photo.save(paths_append(paths, folder / f"photo_{i}.jpg"), quality=90)
    return paths


def paths_append(paths: list[Path], path: Path) -> Path:
    paths.append(path)
    return path


@contextlib.contextmanager
def running(app, config: uvicorn.Config | None = None) -> Iterator[str]:
    """The app on uvicorn in a thread (with uvicorn's defaults unless config is given), at a free
    port of 127.0.0.1; its base URL."""
    listener = bind("127.0.0.1", 0)
    server = uvicorn.Server(config or uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)


def expected(paths: list[Path], weights: Path, topk: int = 5) -> dict[str, list[dict]]:
    """tudui predict's answers, by file name."""
    return {Path(r["path"]).name: r["predictions"] for r in predict(paths, weights, topk=topk)}


def assert_same_predictions(got: list[dict], want: list[dict]) -> None:
    """The same classes in the same order with the same probabilities (to 1e-5)."""
    assert [p["class"] for p in got] == [p["class"] for p in want]
    assert [p["probability"] for p in got] == pytest.approx([p["probability"] for p in want], abs=1e-5)


def raw_post(client: httpx.Client, path: Path, content_type: str = "image/png") -> httpx.Response:
    return client.post("/predict", content=path.read_bytes(), headers={"Content-Type": content_type})


def test_one_image_as_the_body_is_answered_as_tudui_predict_answers(weights, images):
    want = expected(images, weights)
    with running(create_app(weights)) as url, httpx.Client(base_url=url) as client:
        for path in images:
            kind = "image/jpeg" if path.suffix == ".jpg" else "application/octet-stream"
            response = raw_post(client, path, kind)
            assert response.status_code == 200, response.text
            (result,) = response.json()["results"]
            assert result["name"] == "image" and len(result["predictions"]) == 5 - 1   # four classes
            assert_same_predictions(result["predictions"], want[path.name])


def test_tta_leaves_the_mirror_out_for_digits_as_predict_does(weights, images, tmp_path):
    import dataclasses

    from tudui.weights import load_model, save_weights
    model, meta = load_model(weights)   # the same net, recorded as trained on digits (never mirrored)
    data = dataclasses.replace(meta.config.data, dataset="digits")
    digits = tmp_path / "digits.safetensors"
    save_weights(digits, model, dataclasses.replace(meta, data="digits", config=dataclasses.replace(meta.config,
                                                                                                   data=data)))
    plain = expected(images[:3], digits)
    with running(create_app(digits, tta=1)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/metadata").json()["tta_mirror"] is False
        for path in images[:3]:
            (result,) = raw_post(client, path).json()["results"]
            assert_same_predictions(result["predictions"], plain[path.name])   # --tta 1 less the mirror: tta 0
    with running(create_app(weights, tta=1)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/metadata").json()["tta_mirror"] is True             # photos: mirrored


def test_several_images_in_a_multipart_body_are_answered_in_request_order(weights, images):
    want = expected(images, weights, topk=2)
    chosen = [images[3], images[-1], images[0], images[8]]
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in chosen[:2]]
    files += [("note", (None, b"a text field, not an image")), ("other", (chosen[2].name, chosen[2].read_bytes()))]
    files += [("file", (chosen[3].name, chosen[3].read_bytes(), "application/octet-stream"))]
    with running(create_app(weights, topk=2)) as url, httpx.Client(base_url=url) as client:
        response = client.post("/predict", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["name"] for r in results] == [p.name for p in chosen]
    for result in results:
        assert_same_predictions(result["predictions"], want[result["name"]])


def test_health_metadata_docs_and_the_page(weights):
    with running(create_app(weights, max_batch=8, topk=3)) as url, httpx.Client(base_url=url) as client:
        health = client.get("/health").json()
        meta = client.get("/metadata").json()
        openapi = client.get("/openapi.json").json()
        docs, page = client.get("/docs"), client.get("/")
    assert health["status"] == "ok" and health["model"] == "tudui"
    assert meta["classes"] == CLASSES and meta["input_size"] == 32 and meta["model"] == "tudui"
    assert meta["tudui_version"] == tudui.__version__ and meta["weights"] == "best.safetensors"
    assert meta["settings"]["max_batch"] == 8 and meta["settings"]["topk"] == 3
    body = openapi["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"image/*", "application/octet-stream", "multipart/form-data"} <= set(body)
    assert {"413", "415", "503"} <= set(openapi["paths"]["/predict"]["post"]["responses"])
    assert docs.status_code == 200
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'type="file"' in page.text and "innerHTML" not in page.text
    assert "http://" not in page.text and "https://" not in page.text     # nothing from elsewhere


def tiny_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG file whose header claims width x height pixels, with a few bytes of data: a bomb's head."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")


def assert_refused(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and all(word in detail for word in words), detail


def test_images_that_cannot_be_read_or_are_too_large_are_a_400(weights):
    with running(create_app(weights, max_pixels=32 * 32)) as url, httpx.Client(base_url=url) as client:
        headers = {"Content-Type": "image/png"}
        assert client.post("/predict", content=tiny_png(), headers=headers).status_code == 200
        assert_refused(client.post("/predict", content=b"these are my notes", headers=headers), 400,
                       "the image is not in a format tudui reads")
        noisy = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(noisy, "PNG")
        assert_refused(client.post("/predict", content=noisy.getvalue()[:1500], headers=headers), 400,
                       "cannot read the image")
        assert_refused(client.post("/predict", content=b"", headers=headers), 400, "empty")
        assert_refused(client.post("/predict", content=png_header(33, 32), headers=headers), 400,
                       "33 x 32 pixels", "--max-pixels")
        # Of several images, those that cannot be read get an error each and the others their answer
        # (as `tudui predict` answers a folder); when none can be read, the request is refused.
        files = [("file", ("notes.png", b"not an image")), ("file", ("a.png", tiny_png())),
                 ("file", ("big.png", png_header(33, 32)))]
        answer = client.post("/predict", files=files)
        assert answer.status_code == 200, answer.text
        first, good, big = answer.json()["results"]
        assert first["name"] == "notes.png" and "not in a format tudui reads" in first["error"]
        assert "predictions" not in first and "error" not in good
        assert good["predictions"] == client.post("/predict", content=tiny_png(), headers=headers).json()[
            "results"][0]["predictions"]
        assert big["name"] == "big.png" and "33 x 32 pixels" in big["error"]
        assert_refused(client.post("/predict", files=[files[0], files[2]]), 400, "image 'notes.png'")
        eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"     # Ghostscript's: never offered
        assert_refused(client.post("/predict", content=eps, headers=headers), 400, "not in a format")
    # Pillow's own bomb limits refuse too, from the header alone: above it, and above twice it.
    from tudui.config_commands import PILLOW_PIXELS
    with running(create_app(weights, max_pixels=PILLOW_PIXELS)) as url, httpx.Client(base_url=url) as client:
        for side in (10_000, 30_000):
            assert_refused(client.post("/predict", content=png_header(side, side), headers=headers), 400,
                           f"more pixels than the limit of {PILLOW_PIXELS:,} (--max-pixels), and than Pillow's")
    with pytest.raises(TuduiError, match="--max-pixels must be"):   # above Pillow's: it would not be the limit
        create_app(weights, max_pixels=PILLOW_PIXELS + 1)


def test_wrong_content_types_are_a_415(weights):
    with running(create_app(weights)) as url, httpx.Client(base_url=url) as client:
        assert_refused(client.post("/predict", content=tiny_png(), headers={"Content-Type": "text/plain"}), 415,
                       "text/plain", "multipart/form-data")
        assert_refused(client.post("/predict", content=tiny_png()), 415, "missing")
        assert_refused(client.post("/predict", data={"a": "b"}), 415, "application/x-www-form-urlencoded")
        assert_refused(client.post("/predict", content=b"--x--",
                                   headers={"Content-Type": "multipart/form-data"}), 400, "boundary")


def http_exchange(url: str, head: bytes, body_chunks: list[bytes] = ()) -> bytes:
    """Send a request's head and body chunks on a plain socket; everything the server answers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head)
        for chunk in body_chunks:
            conn.sendall(chunk)
        answer = b""
        while data := conn.recv(65536):
            answer += data
    return answer


def test_bodies_over_the_limit_are_a_413_by_length_at_once_or_counted_when_streamed(weights):
    with running(create_app(weights, max_body=5000)) as url, httpx.Client(base_url=url) as client:
        start = time.monotonic()
        # A declared gigabyte, none of it sent: the answer comes at once, and the connection closes.
        answer = http_exchange(url, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                    b"Content-Length: 1000000000\r\n\r\n")
        assert time.monotonic() - start < 2
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 413") and b"connection: close" in status.lower()
        assert "5,000 bytes (--max-body)" in json.loads(body)["detail"]
        # Chunked, with no length: counted as it comes, refused at the chunk that passes the limit.
        # (Exactly that much is sent: bytes arriving after the server closes would reset the connection.)
        chunks = [f"{1000:x}\r\n".encode() + b"\0" * 1000 + b"\r\n" for _ in range(6)]
        answer = http_exchange(url, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n", chunks)
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 413") and "--max-body" in json.loads(body)["detail"]
        # Within the limit, the same way in, it is read to the end (and here is no image).
        assert_refused(client.post("/predict", content=iter([b"\0" * 1000] * 5), headers={"Content-Type": "image/png"}),
                       400, "not in a format")


def test_more_images_than_max_images_are_a_413(weights):
    with running(create_app(weights, max_images=2)) as url, httpx.Client(base_url=url) as client:
        two = [("file", (f"{i}.png", tiny_png(), "image/png")) for i in range(2)]
        assert client.post("/predict", files=two).status_code == 200
        assert_refused(client.post("/predict", files=two + two[:1]), 413, "more than 2 images", "--max-images")
        fields = {f"note{i}": "x" for i in range(100)}        # parts that are no images count too, past a few
        assert_refused(client.post("/predict", files=two, data=fields), 413, "more than 66 parts", "--max-images")


@pytest.fixture
def slow_model(monkeypatch):
    """Every forward pass takes at least 0.2 s more."""
    from tudui.serve import service
    original = service.top_classes

    def slow(*args, **kwargs):
        time.sleep(0.2)
        return original(*args, **kwargs)
    monkeypatch.setattr(service, "top_classes", slow)


def test_a_full_queue_is_a_503_with_retry_after(weights, slow_model):
    app = create_app(weights, max_batch=1, max_queue=2)
    body = tiny_png()

    async def flood(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/predict", content=body, headers={"Content-Type": "image/png"})
                                          for _ in range(10)))
    with running(app) as url:
        responses = asyncio.run(flood(url))
    busy = [r for r in responses if r.status_code == 503]
    assert busy and all(r.status_code == 200 for r in responses if r not in busy)
    assert len(busy) <= 10 - 3                    # one in the model and two waiting get through at least
    for response in busy:
        assert_refused(response, 503, "busy")
        assert int(response.headers["retry-after"]) >= 1


def test_two_hundred_concurrent_requests_share_forward_passes_and_get_their_own_answers(weights, images):
    want = expected(images, weights)
    app = create_app(weights, max_batch=32)
    order = [images[i % len(images)] for i in range(200)]

    async def send_all(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post("/predict", files=[("file", (p.name, p.read_bytes()))])
                                          for p in order))
    with running(app) as url:
        responses = asyncio.run(send_all(url))
    for path, response in zip(order, responses):
        assert response.status_code == 200, response.text
        (result,) = response.json()["results"]
        assert result["name"] == path.name
        assert_same_predictions(result["predictions"], want[path.name])
    stats = app.state.service.batcher.stats
    assert stats.images == 200                         # each image through the model once
    assert stats.passes < 200 and stats.largest > 1, stats


def test_max_batch_1_runs_one_forward_pass_per_image(weights, images):
    app = create_app(weights, max_batch=1)

    async def send_all(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(raw_post_async(client, images[i % 8]) for i in range(24)))
    with running(app) as url:
        assert all(r.status_code == 200 for r in asyncio.run(send_all(url)))
    stats = app.state.service.batcher.stats
    assert stats.passes == stats.images == 24 and stats.largest == 1


def raw_post_async(client: httpx.AsyncClient, path: Path):
    return client.post("/predict", content=path.read_bytes(), headers={"Content-Type": "image/png"})


def test_a_slow_client_does_not_hold_up_the_others(weights, images):
    data = images[0].read_bytes()
    pieces = [data[i:i + len(data) // 10 + 1] for i in range(0, len(data), len(data) // 10 + 1)]

    async def slow_body():
        for piece in pieces:
            yield piece
            await asyncio.sleep(0.15)

    async def race(url: str) -> tuple[httpx.Response, float, list[float]]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            start = time.monotonic()
            slow = asyncio.create_task(client.post("/predict", content=slow_body(),
                                                   headers={"Content-Type": "image/png"}))
            await asyncio.sleep(0.2)
            quick = []
            for path in images[1:6]:
                assert (await raw_post_async(client, path)).status_code == 200
                quick.append(time.monotonic() - start)
            response = await slow
            return response, time.monotonic() - start, quick
    with running(create_app(weights)) as url:
        slow_response, slow_done, quick_done = asyncio.run(race(url))
    assert slow_response.status_code == 200 and slow_done >= 1.3
    assert max(quick_done) < slow_done - 0.3          # all five answered while the slow one was sending


def test_a_body_that_does_not_arrive_in_time_is_a_408(weights, images):
    import socket
    from urllib.parse import urlsplit
    data = images[0].read_bytes()
    with running(create_app(weights, read_timeout=0.5)) as url:
        where = urlsplit(url)
        with socket.create_connection((where.hostname, where.port), timeout=10) as client:
            client.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                           f"Content-Length: {len(data)}\r\n\r\n".encode() + data[:100])   # and then nothing
            began = time.monotonic()
            answer = b""
            while b"}" not in answer and (chunk := client.recv(4096)):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s (--read-timeout)" in answer
    assert time.monotonic() - began < 5


def test_uploads_in_progress_hold_at_most_max_upload_memory_and_give_it_back_however_they_end(weights, images):
    data = images[0].read_bytes()
    data += b"\0" * (3500 - len(data))            # a PNG with zeros after its end: 3,500 bytes

    async def hold_then_flood(url: str) -> tuple:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            sent, others_done = asyncio.Event(), asyncio.Event()

            async def slow_body():        # 3,000 bytes at once, the rest once the others are answered
                yield data[:3000]
                sent.set()
                await others_done.wait()
                yield data[3000:]
            slow = asyncio.create_task(client.post("/predict", content=slow_body(),
                                                   headers={"Content-Type": "image/png"}))
            await sent.wait()
            deadline = time.monotonic() + 10
            while (await client.get("/health")).json()["upload_bytes_held"] < 3000 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)                 # until the server has read the first chunk
            held = [(await client.get("/health")).json()["upload_bytes_held"]]
            others = [await client.post("/predict", content=b"\1" * 2000, headers={"Content-Type": "image/png"})
                      for _ in range(3)]
            others_done.set()
            slow_response = await slow
            held.append((await client.get("/health")).json()["upload_bytes_held"])
            ends = [await client.post("/predict", content=b"not an image", headers={"Content-Type": "image/png"}),
                    await raw_post_async(client, images[1])]
            held.append((await client.get("/health")).json()["upload_bytes_held"])
            return others, slow_response, held, [r.status_code for r in ends]
    with running(create_app(weights, max_body=4000, max_upload_memory=4000)) as url:
        others, slow_response, held, ends = asyncio.run(hold_then_flood(url))
    assert held[0] == 3000
    for response in others:              # 3,000 + 2,000 > 4,000: refused while the first is held
        assert_refused(response, 503, "busy", "--max-upload-memory")
        assert int(response.headers["retry-after"]) >= 1
    assert slow_response.status_code == 200
    assert held[1:] == [0, 0] and ends == [400, 200]


def test_max_body_over_max_upload_memory_is_refused_as_a_setting(weights):
    with pytest.raises(TuduiError, match="--max-body 5,000 is more than --max-upload-memory 4,000"):
        create_app(weights, max_body=5000, max_upload_memory=4000)
    # not given, it is 256 MiB, or --max-body when that is larger
    assert ServeConfig(weights="w").max_upload_memory == 256 << 20
    assert ServeConfig(weights="w", max_body=1 << 30).max_upload_memory == 1 << 30


def head_timeout_server(weights: Path, seconds: float):
    """tudui serve's own uvicorn settings, with a request head's deadline of so many seconds."""
    cfg = ServeConfig(weights=str(weights), read_timeout=seconds)
    app = build_app(cfg)
    return running(app, uvicorn_config(app, cfg))


def read_until_closed(conn: socket.socket) -> bytes:
    answer = b""
    while chunk := conn.recv(4096):
        answer += chunk
    return answer


def test_a_request_head_that_does_not_arrive_in_time_closes_the_connection(weights, images):
    from urllib.parse import urlsplit
    with head_timeout_server(weights, 0.5) as url:
        where = (urlsplit(url).hostname, urlsplit(url).port)
        with httpx.Client(base_url=url) as client:      # the protocol answers requests as uvicorn's does
            assert raw_post(client, images[0]).status_code == 200
        began = time.monotonic()
        with socket.create_connection(where, timeout=10) as silent, \
                socket.create_connection(where, timeout=10) as partial, \
                socket.create_connection(where, timeout=10) as second:
            partial.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")    # and then nothing
            second.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            first = b""
            while b"largest_batch" not in first:                                   # the whole first answer
                first += second.recv(4096)
            second.sendall(b"GET /health HTTP/1.1\r\nHo")                       # a second head, cut short
            silent_answer, partial_answer, second_answer = map(read_until_closed, (silent, partial, second))
        took = time.monotonic() - began
    assert silent_answer == b""                              # never sent a byte: closed without a word
    first += second_answer
    second_answer = first[first.index(b"HTTP/1.1 408"):]
    for answer in (partial_answer, second_answer):
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 0.5 s (--read-timeout)" in answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["detail"].startswith("the request head")
    assert first.startswith(b"HTTP/1.1 200")
    assert took < 5


def test_neither_a_head_sent_byte_by_byte_nor_an_unread_body_holds_a_connection(weights):
    from urllib.parse import urlsplit
    with head_timeout_server(weights, 1.0) as url:
        where = (urlsplit(url).hostname, urlsplit(url).port)
        with socket.create_connection(where, timeout=10) as trickle, \
                socket.create_connection(where, timeout=10) as unread:
            # /health does not read bodies: its answer comes before the 10 bytes announced
            unread.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
            began = time.monotonic()
            head, sent = b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200, 0
            trickle.settimeout(0.1)
            answer = b""
            while time.monotonic() - began < 8 and not answer:
                with contextlib.suppress(OSError):
                    trickle.sendall(head[sent:sent + 1])    # a byte every 0.1 s: a new one never resets the clock
                    sent += 1
                with contextlib.suppress(socket.timeout):
                    answer = trickle.recv(4096)
            took = time.monotonic() - began
            unread_answer = b""
            while b"largest_batch" not in unread_answer:
                unread_answer += unread.recv(4096)
            with contextlib.suppress(OSError):
                unread.sendall(b"x")        # one byte of the body: it stopped uvicorn's keep-alive clock
            answered = time.monotonic()
            unread_answer += read_until_closed(unread)   # closed once answered
            closed_after = time.monotonic() - answered
    assert answer.startswith(b"HTTP/1.1 408") and 0.9 < took < 5, (answer[:60], took)
    assert unread_answer.startswith(b"HTTP/1.1 200") and closed_after < 3


def test_a_client_that_hangs_up_mid_upload_is_forgotten_without_a_traceback(weights, images):
    import logging
    from urllib.parse import urlsplit
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    data = images[0].read_bytes()
    with running(create_app(weights)) as url:
        logging.getLogger("uvicorn.error").addHandler(handler)
        try:
            where = (urlsplit(url).hostname, urlsplit(url).port)
            with socket.create_connection(where, timeout=10) as client:
                client.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                               f"Content-Length: {len(data) + 1000}\r\n\r\n".encode() + data)
                deadline = time.monotonic() + 10
                while httpx.get(url + "/health", timeout=10).json()["upload_bytes_held"] == 0:
                    assert time.monotonic() < deadline, "the upload was never held"
                    time.sleep(0.05)
            deadline = time.monotonic() + 10                  # hung up: until its bytes are let go
            while (health := httpx.get(url + "/health", timeout=10).json())["upload_bytes_held"]:
                assert time.monotonic() < deadline, health
                time.sleep(0.05)
            time.sleep(0.2)
        finally:
            logging.getLogger("uvicorn.error").removeHandler(handler)
    assert health["upload_bytes_held"] == 0
    assert not [r for r in records if r.levelno >= logging.ERROR], [r.getMessage() for r in records]


def test_a_lone_request_does_not_wait_for_the_batch_timeout(weights, images):
    with running(create_app(weights, batch_timeout=2000)) as url, httpx.Client(base_url=url) as client:
        raw_post(client, images[0])                       # the first request starts the threads
        for path in images[1:4]:
            start = time.monotonic()
            assert raw_post(client, path).status_code == 200
            assert time.monotonic() - start < 0.5


def run_batcher(max_batch: int, timeout_s: float, scenario) -> tuple[list[int], object]:
    """Run scenario(batcher) in an event loop with a batcher whose model records its batch sizes."""
    sizes: list[int] = []

    def model(inputs: list) -> list:
        sizes.append(len(inputs))
        return [x * 10 for x in inputs]
    batcher = Batcher(model, max_batch, timeout_s, max_queue=100)
    batcher.start()
    try:
        return sizes, asyncio.run(scenario(batcher))
    finally:
        batcher.close()


def test_the_batcher_waits_only_for_images_that_are_on_their_way():
    async def alone(batcher):
        start = time.monotonic()
        assert await asyncio.gather(*batcher.submit([1, 2])) == [10, 20]
        return time.monotonic() - start
    sizes, took = run_batcher(8, 1.0, alone)
    assert sizes == [2] and took < 0.3                  # nobody else on the way: no waiting

    async def one_on_its_way(batcher):
        async def decoding_then_submitting():
            batcher.expect()
            await asyncio.sleep(0.2)
            return await asyncio.gather(*batcher.submit([3], expected=True))
        later = asyncio.create_task(decoding_then_submitting())
        await asyncio.sleep(0.05)
        first = await asyncio.gather(*batcher.submit([1]))
        return first, await later
    sizes, answers = run_batcher(8, 1.0, one_on_its_way)
    assert sizes == [2] and answers == ([10], [30])      # waited for the image on its way: one pass

    async def never_comes(batcher):
        async def stuck():
            batcher.expect()
            await asyncio.sleep(1.0)
            batcher.forget()
        task = asyncio.create_task(stuck())
        await asyncio.sleep(0.05)
        start = time.monotonic()
        await asyncio.gather(*batcher.submit([1]))
        took = time.monotonic() - start
        await task
        return took
    sizes, took = run_batcher(8, 0.3, never_comes)
    assert sizes == [1] and 0.2 < took < 0.8            # waited batch_timeout, not for the stuck request


def test_the_batcher_takes_at_most_max_batch_and_answers_what_is_queued_before_it_stops():
    release = threading.Event()
    sizes: list[int] = []

    def model(inputs: list) -> list:
        release.wait(5)
        sizes.append(len(inputs))
        return [-x for x in inputs]

    async def scenario():
        batcher = Batcher(model, 4, 0.0, max_queue=6)
        batcher.start()
        futures = batcher.submit([0])
        await asyncio.sleep(0.1)                         # the worker holds [0]; the rest queue behind it
        futures += batcher.submit([1, 2, 3, 4, 5, 6])
        with pytest.raises(QueueFull):
            batcher.submit([7])
        closing = asyncio.get_running_loop().run_in_executor(None, batcher.close)
        await asyncio.sleep(0.1)
        release.set()
        await closing
        with pytest.raises(QueueFull, match="stopping"):
            batcher.submit([8])
        return await asyncio.gather(*futures)
    assert asyncio.run(scenario()) == [0, -1, -2, -3, -4, -5, -6]
    assert sizes == [1, 4, 2]


def test_the_app_works_mounted_inside_another_asgi_app(weights, images):
    from fastapi import FastAPI
    from starlette.applications import Starlette
    from starlette.routing import Mount
    want = expected(images[:1], weights)
    outer = FastAPI()
    outer.mount("/models/shapes", create_app(weights))
    plain = Starlette(routes=[Mount("/v1", app=create_app(weights))])
    for app, prefix in ((outer, "/models/shapes"), (plain, "/v1")):
        with running(app) as url, httpx.Client(base_url=url + prefix) as client:
            assert client.get("/health").json()["status"] == "ok"
            assert 'fetch("predict"' in client.get("/").text         # relative: works under any prefix
            response = raw_post(client, images[0])
            assert response.status_code == 200, response.text
            assert_same_predictions(response.json()["results"][0]["predictions"], want[images[0].name])


def test_create_app_says_what_is_wrong_with_its_arguments(weights, tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="max_batchs"):
        create_app(weights, max_batchs=3)
    with pytest.raises(TuduiError, match="--max-batch"):
        create_app(weights, max_batch=0)
    with pytest.raises(TuduiError):
        create_app(tmp_path / "missing.safetensors")
    monkeypatch.setitem(__import__("sys").modules, "fastapi", None)    # as if FastAPI were not installed
    with pytest.raises(TuduiError, match=r"pip install 'fastapi>=[\d.]+' 'uvicorn>=[\d.]+' "
                                         r"'python-multipart>=[\d.]+'  "
                                         r'\(or pip install -e "\.\[serve\]" in a clone of tudui\)$'):
        create_app(weights)


def test_topk_is_at_most_the_number_of_classes(weights):
    app = create_app(weights)   # the default topk 5, a model of 4 classes
    assert app.state.service.topk == len(CLASSES) == 4 and app.description.startswith("Top-4 classes")
