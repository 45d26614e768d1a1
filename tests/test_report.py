"""The report: metrics.json, pictures, report.html and TensorBoard, and that their numbers agree."""
import csv
import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from itertools import combinations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

import tudui
from tudui.report import (ReportData, class_metrics, confident_mistakes, per_class_table, plot_confusion,
                          plot_curves, plot_mistakes, read_history)

REPORT_PICTURES = ("confusion_matrix.png", "misclassified.png", "per_class.png", "curves.png")


def fake_report(num_classes: int, per_class: int = 6, seed: int = 0) -> ReportData:
    """A ReportData with random-ish predictions (right about half the time) and 32-px images."""
    rng = np.random.default_rng(seed)
    targets = torch.arange(num_classes).repeat(per_class)
    logits = torch.randn(len(targets), num_classes, generator=torch.Generator().manual_seed(seed))
    logits[torch.arange(len(targets)), targets] += 1.5
    probabilities = torch.softmax(logits, dim=1)
    predicted = probabilities.argmax(dim=1)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    confusion.index_put_((targets, predicted), torch.ones(len(targets), dtype=torch.int64), accumulate=True)
    names = [f"{['sweet_pepper', 'cat', 'aquarium_fish', 'maple_tree'][k % 4]}_{k}" for k in range(num_classes)]
    metrics = {"loss": 1.0, "accuracy": float((predicted == targets).float().mean()), "top5_accuracy": 0.9,
               "count": len(targets), "confusion": confusion.tolist(),
               "per_class": per_class_table(confusion.tolist(), names)}
    images = [(Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)), int(t)) for t in targets]
    return ReportData(metrics, probabilities, targets, names, images, "fake")


# ---------------------------------------------------------------- numbers

def test_class_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 5, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 5, 200))
    y_pred[y_pred == 4] = 0                                   # class 4 is never predicted
    confusion = np.zeros((5, 5), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    ours = class_metrics(confusion)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=range(5),
                                                                     zero_division=0)
    np.testing.assert_allclose(ours["precision"], precision)
    np.testing.assert_allclose(ours["recall"], recall)
    np.testing.assert_allclose(ours["f1"], f1)
    assert ours["support"] == support.tolist()
    assert ours["precision"][4] == 0.0 and ours["accuracy"] == ours["recall"]


def test_confident_mistakes_are_wrong_and_surest_first():
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.05, 0.95]])
    targets = torch.tensor([0, 0, 0, 1, 1])
    assert confident_mistakes(probabilities, targets, 10) == [
        (1, 0, 1, pytest.approx(0.8)), (3, 1, 0, pytest.approx(0.7)), (2, 0, 1, pytest.approx(0.6))]
    assert len(confident_mistakes(probabilities, targets, 2)) == 2


# ---------------------------------------------------------------- what a finished run leaves

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
    # The report evaluates the best weights: the best epoch's accuracy in metrics.csv.
    rows = list(csv.DictReader((digits_run.run_dir / "metrics.csv").open()))
    assert metrics["accuracy"] == pytest.approx(max(float(r["test_accuracy"]) for r in rows), abs=1e-5)
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


def test_curves_plot_the_values_of_metrics_csv(digits_run):
    history = read_history(digits_run.run_dir / "metrics.csv")
    loss_ax, accuracy_ax, lr_ax = plot_curves(history).axes
    train_line, test_line = loss_ax.get_lines()
    assert list(train_line.get_ydata()) == [row["train_loss"] for row in history]
    assert list(test_line.get_ydata()) == [row["test_loss"] for row in history]
    assert list(accuracy_ax.get_lines()[0].get_ydata()) == pytest.approx(
        [100 * row["test_accuracy"] for row in history])
    assert list(lr_ax.get_lines()[0].get_ydata()) == [row["lr"] for row in history]
    assert plot_curves([]) is None


# ---------------------------------------------------------------- readable pictures

def _visible_labels(fig, axis: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig)      # laid out and drawn as savefig does
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        if not ax.get_images():        # colour bars have no class names
            continue
        labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
        yield ax, [label.get_window_extent(renderer) for label in labels if label.get_text()], labels


@pytest.mark.parametrize("num_classes", [10, 100])
def test_confusion_matrix_labels_never_overlap_or_leave_the_picture(num_classes):
    data = fake_report(num_classes, per_class=3)
    fig = plot_confusion(data.metrics["confusion"], data.class_names)
    figure_box = fig.bbox
    for axis in ("x", "y"):
        for ax, boxes, labels in _visible_labels(fig, axis):
            assert len(boxes) >= min(num_classes, 40)              # thinned, but many classes named
            assert min(label.get_fontsize() for label in labels) >= 8
            for a, b in combinations(boxes, 2):
                assert not a.overlaps(b)
            for box in boxes:
                assert box.x0 >= figure_box.x0 and box.x1 <= figure_box.x1
                assert box.y0 >= figure_box.y0 and box.y1 <= figure_box.y1
    cell_numbers = [t for ax in fig.axes for t in ax.texts if t.get_text()]
    if num_classes == 10:
        assert cell_numbers                   # small matrices print their counts and shares
    else:
        assert not cell_numbers               # 10,000 numbers would be unreadable


def test_mistake_grid_names_true_and_predicted_class_with_the_probability():
    data = fake_report(40)        # names up to 16 characters, e.g. aquarium_fish_38
    fig = plot_mistakes(data, limit=24)
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    expected = confident_mistakes(data.probabilities, data.targets, 24)
    assert len(titles) == len(expected) == 24
    for title, (_, true, predicted, probability) in zip(titles, expected):
        assert f"true: {data.class_names[true]}" in title.get_text()
        assert f"predicted: {data.class_names[predicted]}" in title.get_text()
        assert f"{probability:.1%}" in title.get_text()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    boxes = [title.get_window_extent(canvas.get_renderer()) for title in titles]
    for a, b in combinations(boxes, 2):
        assert not a.overlaps(b)


def test_a_model_without_mistakes_gets_a_picture_that_says_so():
    data = fake_report(3)
    data.probabilities = torch.nn.functional.one_hot(data.targets, 3).float()
    fig = plot_mistakes(data)
    assert fig.get_suptitle() == "No mistakes on the test split" and not fig.axes


# ---------------------------------------------------------------- TensorBoard

def test_tensorboard_gets_the_confusion_matrix_pr_curves_graph_hparams_and_samples(digits_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(digits_run.run_dir), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"eval/confusion_matrix", "eval/sample_predictions", "eval/most_confident_mistakes"} <= set(
        tags["images"])
    assert {f"pr_curve/{d}" for d in range(10)} <= set(tags["tensors"])
    assert tags["graph"]
    hparams = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hparams and "_hparams_/session_start_info" in hparams
    metrics = json.loads((digits_run.run_dir / "metrics.json").read_text())
    assert events.Scalars("hparam/accuracy")[-1].value == pytest.approx(metrics["accuracy"])


# ---------------------------------------------------------------- the page in a browser

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


# ---------------------------------------------------------------- failures

def test_a_failing_report_keeps_the_run_and_says_why(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("tudui.report.write_report", broken)
    result = tudui.train(data="synthetic", epochs=1, project=str(tmp_path), progress=False)
    assert result.report is None
    assert result.best_weights.is_file() and (result.run_dir / "metrics.csv").is_file()
    assert "report could not be written" in caplog.text and "No space left" in caplog.text
    assert not (result.run_dir / "report.html").exists()


def test_no_report_flag_leaves_only_the_run(tmp_path):
    result = tudui.train(data="synthetic", epochs=1, project=str(tmp_path), progress=False, report=False)
    assert result.report is None and not (result.run_dir / "metrics.json").exists()
    assert (result.run_dir / "metrics.csv").is_file()
