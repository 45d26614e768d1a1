"""The report a finished run leaves: its numbers agree with metrics.json, TensorBoard and the page in a browser."""
import html
import json
import os
import re
import shutil
import signal
import subprocess
import time
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import tudui
from tudui.report import (
    plot_curves,
    read_history,
)

REPORT_PICTURES = ("confusion_matrix.png", "misclassified.png", "per_class.png", "curves.png")


def test_a_finished_run_leaves_a_report_whose_numbers_agree(digits_run):
    metrics = json.loads((digits_run.run_dir / "metrics.json").read_text())
    confusion = np.array(metrics["confusion"])
    assert confusion.shape == (10, 10)
    assert confusion.sum() == metrics["count"] == 360                       # the digits test split
    assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    assert metrics["accuracy"] <= metrics["top5_accuracy"] <= 1.0
    assert [row["class"] for row in metrics["per_class"]] == [str(d) for d in range(10)]
    for k, row in enumerate(metrics["per_class"]):
        assert set(row) == {"class", "precision", "recall", "f1", "accuracy", "support"}
        assert row["recall"] == pytest.approx(confusion[k, k] / confusion[k].sum())
        assert row["precision"] == pytest.approx(confusion[k, k] / confusion[:, k].sum())
        assert row["accuracy"] == pytest.approx(metrics["per_class_accuracy"][k])
        assert row["support"] == confusion[k].sum()
    # The report is the one evaluation of the kept weights on test: the number of the summary line.
    summary = re.search(r"^test accuracy ([\d.]+)%", digits_run.stdout, re.M)
    assert metrics["split"] == "test" and 100 * metrics["accuracy"] == pytest.approx(float(summary.group(1)), abs=5e-3)
    assert "report: runs/exp/report.html" in digits_run.stdout


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("href", "src"):
            if key in attrs:
                self.links.append(attrs[key])

    def handle_data(self, data):
        self.text.append(data)


def test_report_pictures_decode_and_the_page_embeds_them_all(digits_run):
    import base64
    import io
    for name in REPORT_PICTURES:
        with Image.open(digits_run.run_dir / name) as image:
            image.load()
            assert image.format == "PNG" and image.width >= 600 and image.height >= 300, name
    page = PageParser()
    page.feed((digits_run.run_dir / "report.html").read_text(encoding="utf-8"))
    assert len(page.images) == len(REPORT_PICTURES)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).load()
    assert not [link for link in page.links if not link.startswith("data:")]    # nothing fetched
    text = " ".join(page.text)
    metrics = json.loads((digits_run.run_dir / "metrics.json").read_text())
    assert f"{100 * metrics['accuracy']:.2f}%" in text
    assert str(digits_run.run_dir.resolve() / "weights" / "best.safetensors") in text
    assert "optim" in text and "0.01" in text                       # the settings


def test_curves_plot_the_values_of_metrics_csv(digits_run, tmp_path):
    history = read_history(digits_run.run_dir / "metrics.csv")      # digits: no val split
    loss_ax, lr_ax = plot_curves(history).axes                      # no val panel to leave empty
    train_line = loss_ax.get_lines()[0]
    assert list(train_line.get_ydata()) == [row["train_loss"] for row in history]
    assert "no val split" in loss_ax.get_title()
    assert "val loss" not in [line.get_label() for line in loss_ax.get_lines()]
    assert list(lr_ax.get_lines()[0].get_ydata()) == [row["lr"] for row in history]
    assert plot_curves([]) is None
    with_val = tudui.train(data="synthetic", val_split=0.25, epochs=2, project=str(tmp_path), progress=False,
                           report=False)
    history = read_history(with_val.run_dir / "metrics.csv")
    loss_ax, accuracy_ax, _ = plot_curves(history).axes
    assert list(loss_ax.get_lines()[1].get_ydata()) == [row["val_loss"] for row in history]
    assert list(accuracy_ax.get_lines()[0].get_ydata()) == pytest.approx(
        [100 * row["val_accuracy"] for row in history])


def test_tensorboard_gets_the_confusion_matrix_pr_curves_graph_hparams_and_samples(digits_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(digits_run.run_dir), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"eval/confusion_matrix", "eval/sample_predictions", "eval/most_confident_mistakes", "eval/per_class",
            "eval/curves"} <= set(tags["images"])
    assert {f"pr_curve/{d}" for d in range(10)} <= set(tags["tensors"])
    assert tags["graph"]
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams and "_hparams_/session_start_info" in hparams
    metrics = json.loads((digits_run.run_dir / "metrics.json").read_text())
    assert events.Scalars("hparam/accuracy")[-1].value == pytest.approx(metrics["accuracy"])
    assert events.Scalars("hparam/top5_accuracy")[-1].value == pytest.approx(metrics["top5_accuracy"])
    assert events.Scalars("hparam/balanced_accuracy")[-1].value == pytest.approx(metrics["balanced_accuracy"])
    assert events.Scalars("hparam/accuracy")[-1].step == events.Images("eval/per_class")[-1].step == 10  # last epoch


PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const result = {images: images.length, text: document.body.innerText,
                  loaded: images.filter(i => i.complete && i.naturalWidth > 0).length};
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(find_chromium() is None,
                    reason="Chromium is not installed (.ci/run installs Debian's chromium package)")
def test_report_page_shows_every_image_and_the_accuracy_in_chromium(digits_run, tmp_path):
    # A copy with a probe script: the report itself has no scripts.
    page = (digits_run.run_dir / "report.html").read_text(encoding="utf-8")
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = subprocess.run([find_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                             "--virtual-time-budget=10000", "--dump-dom", probe_page.as_uri()],
                            capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.DOTALL)
    assert found, f"Chromium rendered no result (exit {result.returncode}): {result.stderr[-2000:]}"
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["images"] == len(REPORT_PICTURES)
    assert seen["loaded"] == seen["images"]
    metrics = json.loads((digits_run.run_dir / "metrics.json").read_text())
    assert f"{100 * metrics['accuracy']:.2f}%" in seen["text"]


def test_a_failing_report_keeps_the_run_and_says_why(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("tudui.report.write_report", broken)
    result = tudui.train(data="synthetic", epochs=1, project=str(tmp_path), progress=False)
    assert result.report is None
    assert result.best_weights.is_file() and (result.run_dir / "metrics.csv").is_file()
    assert "report could not be made" in caplog.text and "No space left" in caplog.text
    assert not (result.run_dir / "report.html").exists()


def test_no_report_flag_leaves_the_page_and_pictures_out_but_keeps_the_final_numbers(tmp_path):
    result = tudui.train(data="synthetic", epochs=1, project=str(tmp_path), progress=False, report=False)
    assert result.report is None and not (result.run_dir / "report.html").exists()
    assert not list(result.run_dir.glob("*.png")) and (result.run_dir / "metrics.csv").is_file()
    kept = json.loads((result.run_dir / "metrics.json").read_text())   # the test number outlives the terminal
    assert kept["split"] == result.final_split == "test" and kept["accuracy"] == result.final["accuracy"]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_report_is_written_says_the_training_is_safe(tmp_path, monkeypatch, signum, code):
    from tudui.interrupts import TrainingInterrupted

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signum)     # as Ctrl-C or a scheduler's SIGTERM would, mid-measurement
        time.sleep(5)
    monkeypatch.setattr("tudui.runner.final_measure", interrupted)
    with pytest.raises(TrainingInterrupted, match="training had finished and its weights are saved") as stop:
        tudui.train(data="synthetic", epochs=1, project=str(tmp_path), progress=False)
    assert stop.value.exit_code == code and "tudui eval --weights" in str(stop.value)
    assert (tmp_path / "exp" / "weights" / "best.safetensors").is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL   # the handler is put back


def test_the_summary_line_comes_before_the_report_is_drawn(tmp_path, monkeypatch, capsys):
    import tudui.runner
    real = tudui.runner.final_report

    def marked(*args, **kwargs):
        print("DRAWING THE REPORT", flush=True)
        return real(*args, **kwargs)
    monkeypatch.setattr(tudui.runner, "final_report", marked)
    result = tudui.train(data="synthetic", epochs=1, project=str(tmp_path))
    out = capsys.readouterr().out
    assert out.index("test accuracy") < out.index("DRAWING THE REPORT") < out.index("report: ")
    assert result.report is not None and result.report.is_file()
