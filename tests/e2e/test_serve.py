"""`tudui serve` as a user runs it: a real process, its answers, its stop on SIGTERM with a request in
flight, its one-line errors; and its page in headless Chromium."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import tudui
from tudui.prediction import predict

from helpers import run_cli, write_class_folder

# A class name that is HTML: the page must show it as text, never make it an element.
EVIL = "<img src=x onerror=alert(1)>"
CLASSES = ["cat", "dog", EVIL]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(weights, the folder it learned from): tudui's small net on three generated classes."""
    root = tmp_path_factory.mktemp("serve_e2e")
    folder = write_class_folder(root / "photos", CLASSES, 16)
    result = tudui.train(data=str(folder), epochs=3, lr=0.05, project=str(root / "runs"), name="s",
                         progress=False, report=False, device="cpu")
    return result.best_weights, folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def tudui_serve(weights: Path, *flags: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`tudui serve WEIGHTS --port P FLAGS` in a subprocess, once /health answers; (process, base URL)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tudui", "serve", str(weights), "--port", str(port), *flags],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"tudui serve exited {process.returncode}: {process.communicate()}"
            assert time.monotonic() < deadline, "tudui serve did not answer /health in 90 s"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def predicted(path: Path, weights: Path, topk: int = 5) -> list[dict]:
    return predict(path, weights, topk=topk)[0]["predictions"]


def assert_same_predictions(got: list[dict], want: list[dict]) -> None:
    assert [p["class"] for p in got] == [p["class"] for p in want]
    assert [p["probability"] for p in got] == pytest.approx([p["probability"] for p in want], abs=1e-5)


def test_tudui_serve_answers_and_on_sigterm_answers_the_request_in_flight_then_exits_0(trained):
    weights, folder = trained
    image = folder / "dog" / "000.png"
    body = image.read_bytes()
    with tudui_serve(weights) as (process, url):
        with httpx.Client(base_url=url) as client:
            took = []
            for _ in range(10):
                start = time.perf_counter()
                assert client.get("/health").json()["status"] == "ok"
                took.append(time.perf_counter() - start)
        assert sorted(took)[5] < 0.025      # keep-alive answers do not wait for a delayed ACK (40 ms)
        response = httpx.post(url + "/predict", content=body, headers={"Content-Type": "image/png"})
        assert_same_predictions(response.json()["results"][0]["predictions"], predicted(image, weights))
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body[:len(body) // 2])
            time.sleep(0.5)                               # the server has the request's head: it is in flight
            process.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            with pytest.raises(ConnectionRefusedError):   # stopping: no new connections
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            conn.sendall(body[len(body) // 2:])
            answer = b""
            while data := conn.recv(65536):
                answer += data
        head, _, content = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:500]
        assert_same_predictions(json.loads(content)["results"][0]["predictions"], predicted(image, weights))
        assert process.wait(timeout=30) == 0
        out, err = process.communicate()
    assert out.startswith(f"tudui serve: http://127.0.0.1:{port}/  tudui, 3 classes (")
    assert "Traceback" not in err


def test_past_max_connections_it_answers_503_and_ctrl_c_stops_it_with_exit_0(trained):
    with tudui_serve(trained[0], "--max-connections", "2") as (process, url):
        port = int(url.rsplit(":", 1)[1])
        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        for conn in idle:                                  # half a request head each, then nothing
            conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        time.sleep(0.5)
        assert httpx.get(url + "/health", timeout=10).status_code == 503
        for conn in idle:
            conn.close()
        time.sleep(0.5)
        assert httpx.get(url + "/health", timeout=10).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "Traceback" not in process.communicate()[1]


def test_a_missing_weights_file_or_a_taken_port_is_one_line_and_exit_1(trained, tmp_path):
    weights, _ = trained
    missing = run_cli("serve", str(tmp_path / "nope.safetensors"), "--port", str(free_port()))
    assert missing.returncode == 1 and "nope.safetensors" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = run_cli("serve", str(weights), "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 1 and "cannot listen on 127.0.0.1 port" in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1 and "tudui serve: http" not in busy.stdout


def chromium_driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1000,760"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)


@pytest.mark.skipif(not (shutil.which("chromium") and shutil.which("chromedriver")),
                    reason="Chromium or chromedriver is not installed (.ci/run installs Debian's chromium "
                           "and chromium-driver)")
def test_the_page_shows_the_top_classes_as_bars_in_chromium_and_loads_nothing_from_elsewhere(trained, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    weights, folder = trained
    image = folder / "dog" / "003.png"
    want = predicted(image, weights)
    with tudui_serve(weights) as (_, url):
        driver = chromium_driver()
        try:
            driver.get(url + "/")
            WebDriverWait(driver, 20).until(lambda d: "3 classes" in d.find_element(By.ID, "about").text)
            driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(image))
            WebDriverWait(driver, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .row")) == 3)
            labels = [e.get_attribute("textContent") for e in driver.find_elements(By.CSS_SELECTOR, "#bars .label")]
            percents = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#bars .percent")]
            status = driver.find_element(By.ID, "status").text
            images_on_page = len(driver.find_elements(By.TAG_NAME, "img"))
            driver.save_screenshot(str(tmp_path / "page.png"))
            requests = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
            console = driver.get_log("browser")
        finally:
            driver.quit()
    assert labels == [p["class"] for p in want] and EVIL in labels   # the HTML name shown as text
    assert images_on_page == 1                                          # the preview; the name made none
    assert percents == [f"{100 * p['probability']:.1f}%" for p in want]
    assert f"003.png: most likely {want[0]['class']} ({100 * want[0]['probability']:.1f}%)" in status
    urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
    assert url + "/predict" in urls and url + "/metadata" in urls
    assert all(u.startswith((url + "/", "blob:", "data:")) for u in urls), urls
    assert not [entry for entry in console if entry["level"] == "SEVERE"], console
    with Image.open(tmp_path / "page.png") as shot:
        pixels = np.asarray(shot.convert("RGB"))
    assert shot.format == "PNG" and shot.width >= 800 and shot.height >= 500
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50   # not a blank page
