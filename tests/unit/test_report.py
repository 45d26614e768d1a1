"""The report's numbers and pictures: per-class metrics, mistakes, the confusion matrix, the curves."""
import dataclasses
from itertools import combinations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

from tudui.report import (
    plot_curves,
    ReportData,
    plot_confusion,
    plot_mistakes,
    render_pictures,
)
from tudui.scores import class_metrics, confident_mistakes, per_class_table
from tudui.report_html import render_page


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
    # class 4's precision (0/0) is not measured: None where scikit-learn's zero_division puts 0
    assert ours["precision"][4] is None
    np.testing.assert_allclose(ours["precision"][:4], precision[:4])
    np.testing.assert_allclose(ours["recall"], recall)
    np.testing.assert_allclose(ours["f1"], f1)                # its F1 is 0 all the same: recall 0
    assert ours["support"] == support.tolist()
    assert ours["accuracy"] == ours["recall"]


def test_confident_mistakes_are_wrong_and_surest_first():
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.05, 0.95]])
    targets = torch.tensor([0, 0, 0, 1, 1])
    assert confident_mistakes(probabilities, targets, 10) == [
        (1, 0, 1, pytest.approx(0.8)), (3, 1, 0, pytest.approx(0.7)), (2, 0, 1, pytest.approx(0.6))]
    assert len(confident_mistakes(probabilities, targets, 2)) == 2


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
    assert fig.get_suptitle() == "No mistakes in the 18 test images" and not fig.axes


def test_pictures_say_what_was_measured_and_leave_out_classes_without_images():
    from tudui.report import plot_per_class
    data = fake_report(4, per_class=5)
    keep = data.targets != 2                                    # no images of class 2 in this split
    data.targets, data.probabilities = data.targets[keep], data.probabilities[keep]
    data.images = [pair for pair, kept in zip(data.images, keep) if kept]
    confusion = torch.tensor(data.metrics["confusion"])
    confusion[2] = 0
    data.metrics.update(split="val", count=int(keep.sum()), confusion=confusion.tolist(),
                        per_class=per_class_table(confusion.tolist(), data.class_names))
    data.kept_epoch = 7
    fig = plot_per_class(data)
    names = [label.get_text() for label in fig.axes[0].get_yticklabels()]
    assert sorted(names) == sorted(data.class_names[:2] + data.class_names[3:])
    assert fig.axes[0].get_title() == ("Per class, weakest at the top\nval split, 15 images, weights of epoch 7; "
                                       "1 trained class without images left out")
    confusion_fig = plot_confusion(data.metrics["confusion"], data.class_names, "val split, 15 images")
    assert confusion_fig.get_suptitle() == "val split, 15 images"
    page = render_page(data, {})
    absent = data.class_names[2]
    # recall, F1 and accuracy not measured; precision 0 % when images were predicted as it (all wrongly)
    predicted_as = sum(row[2] for row in data.metrics["confusion"])
    precision = '<td class="num">0.00%</td>' if predicted_as else '<td class="num">-</td>'
    dashes = '<td class="num">-</td>' * 3
    assert f'<tr><td>{absent}</td>{precision}{dashes}<td class="num">0</td></tr>' in page
    assert data.metrics["per_class"][2]["recall"] is None and data.metrics["per_class"][2]["support"] == 0
    weakest = page.split("Weakest classes by recall: ")[1].split("</p>")[0]
    assert absent not in weakest and weakest.count("(") == 2    # of the 3 classes with images, never all
    data.metrics["split"] = "all"            # a whole folder: no split to name
    assert plot_mistakes(data).get_suptitle().endswith("in 15 images)")
    page = render_page(data, {})
    assert ": 15 images, 4 classes</p>" in page and "all images" not in page and "all accuracy" not in page




def test_class_names_with_dollar_signs_are_drawn_as_written_not_as_mathematics():
    from tudui.report import render_pictures
    data = fake_report(3)
    data.class_names = ["price $5 and $6^", "$\\bad{$", "plain"]
    data.metrics["per_class"] = per_class_table(data.metrics["confusion"], data.class_names)
    pictures = render_pictures(data)
    assert set(pictures) == {"confusion_matrix.png", "misclassified.png", "per_class.png"}
    fig = plot_confusion(data.metrics["confusion"], data.class_names)
    labels = [tick.get_text() for tick in fig.axes[0].get_yticklabels()]
    assert "$\\bad{$" in labels


def test_the_curves_mark_the_kept_epoch_and_show_top5():
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 1.0 + (e - 3) ** 2 / 10, "val_accuracy": a,
                "val_top5": min(1.0, a + 0.2), "lr": 0.1} for e, a in zip(range(1, 6), [.3, .5, .7, .6, .55])]
    fig = plot_curves(history, kept_epoch=3)
    loss_ax, accuracy_ax, lr_ax = fig.axes
    for ax in fig.axes:   # a vertical line at the kept epoch on each panel
        assert any(list(line.get_xdata()) == [3, 3] for line in ax.get_lines())
    labels = [t.get_text() for t in accuracy_ax.get_legend().get_texts()]
    assert labels == ["val top-1", "val top-5", "kept: epoch 3"]
    top5 = next(line for line in accuracy_ax.get_lines() if line.get_label() == "val top-5")
    assert list(top5.get_ydata()) == pytest.approx([50, 70, 90, 80, 75])
    assert all(len(ax.get_lines()) == n for ax, n in zip(fig.axes, (3, 3, 2)))
    unmarked = plot_curves(history)
    assert not any(list(line.get_xdata()) == [3, 3] for ax in unmarked.axes for line in ax.get_lines())


def test_curves_without_a_val_split_draw_no_empty_val_panel():
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": None, "val_accuracy": None, "val_top5": None,
                "lr": 0.1 / e} for e in range(1, 6)]
    fig = plot_curves(history, kept_epoch=5)
    loss_ax, lr_ax = fig.axes           # loss and rate only
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train loss", "kept: epoch 5"]
    assert "no val split" in loss_ax.get_title()
    assert all(len(line.get_xdata()) for ax in fig.axes for line in ax.get_lines())   # no empty line
    data = dataclasses.replace(fake_report(3), history=history, kept_epoch=5)
    page = render_page(data, render_pictures(data))
    assert "no val split: the last epoch" in page and "val picks the best epoch" not in page
    with_val = dataclasses.replace(data, history=[{**row, "val_loss": 1.0, "val_accuracy": 0.5} for row in history])
    assert "val picks the best epoch" in render_page(with_val, render_pictures(with_val))


def test_one_epoch_curves_tick_that_epoch_and_leave_out_a_top5_that_is_always_100():
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_accuracy": 0.4, "val_top5": 1.0, "lr": 0.1}]
    fig = plot_curves(history, kept_epoch=1)
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [1] and ax.get_xlim() == (0.5, 1.5)
    accuracy_ax = fig.axes[1]
    assert [t.get_text() for t in accuracy_ax.get_legend().get_texts()] == ["val top-1", "kept: epoch 1"]


def test_the_accuracy_axis_stays_within_0_and_100_percent():
    perfect = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 0.5 / e, "val_accuracy": 1.0, "val_top5": 1.0,
                "lr": 0.1} for e in (1, 2)]
    low, high = plot_curves(perfect, kept_epoch=1).axes[1].get_ylim()
    assert high <= 100.5 and low < 100
    nothing = [{**row, "val_accuracy": 0.0} for row in perfect]
    assert plot_curves(nothing, kept_epoch=1).axes[1].get_ylim()[0] >= 0


def test_characters_no_font_has_are_one_warning_of_ours_not_matplotlibs_per_glyph(caplog, recwarn):
    import tudui.drawing as drawing
    data = fake_report(3)
    data.class_names = ["猫 cat", "\ue000 private", "dog"]   # U+E000: a private-use character, in no font
    data.metrics["per_class"] = per_class_table(data.metrics["confusion"], data.class_names)
    drawing._warned.clear()
    with caplog.at_level("WARNING", logger="tudui"):
        render_pictures(data)
        render_pictures(data)   # drawn again (TensorBoard's copy): not said again
    assert not [w for w in recwarn if "missing from font" in str(w.message)]
    said = [r.getMessage() for r in caplog.records if "no installed font has" in r.getMessage()]
    assert len(said) == 1 and "\ue000" in said[0]
    # the CJK name draws with an installed CJK font, or is named among the missing ones
    assert ("猫" in said[0]) == (not drawing.installed_fallbacks(True))


def test_a_class_never_predicted_has_no_precision_dot_and_a_dash_in_the_table():
    from tudui.report import plot_per_class
    data = fake_report(3, per_class=5)
    predicted = data.probabilities.argmax(dim=1)
    data.probabilities[predicted == 1] = torch.tensor([0.6, 0.1, 0.3])   # nothing is predicted as class 1
    confusion = torch.zeros(3, 3, dtype=torch.int64)
    for t, p in zip(data.targets.tolist(), data.probabilities.argmax(dim=1).tolist()):
        confusion[t, p] += 1
    data.metrics.update(confusion=confusion.tolist(), per_class=per_class_table(confusion.tolist(), data.class_names))
    assert data.metrics["per_class"][1]["precision"] is None and data.metrics["per_class"][1]["recall"] == 0.0
    fig = plot_per_class(data)
    dots = fig.axes[0].lines[0].get_xdata()
    assert int(np.isnan(np.asarray(dots, dtype=float)).sum()) == 1
    page = render_page(data, {})
    assert f'<td>{data.class_names[1]}</td><td class="num">-</td><td class="num">0.00%</td>' in page
