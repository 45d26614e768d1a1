"""report.html on its own: render_page with a hand-made ReportData and tiny PNGs."""
import base64
import io
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from tudui.report import ReportData
from tudui.report_html import render_page

PICTURE_NAMES = ("confusion_matrix.png", "misclassified.png", "per_class.png", "curves.png")


class Page(HTMLParser):
    """Every tag with its attributes, the visible text, and the rows of each table."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.rows: list[tuple[dict, list[str]]] = []   # (the <tr>'s attributes, its cells' text)
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "tr":
            self.rows.append((attrs, []))
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1][1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def images(self) -> list[dict]:
        return [attrs for tag, attrs in self.tags if tag == "img"]

    def class_rows(self, class_names) -> list[tuple[dict, list[str]]]:
        return [(attrs, cells) for attrs, cells in self.rows if cells and cells[0] in class_names]


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), color).save(buffer, format="PNG")
    return buffer.getvalue()


def per_class(confusion: np.ndarray, class_names: list[str]) -> list[dict]:
    """metrics.json's per_class rows, computed here from the confusion matrix (rows: true class)."""
    rows = []
    for k, name in enumerate(class_names):
        correct, support, predicted = confusion[k, k], confusion[k].sum(), confusion[:, k].sum()
        precision = correct / predicted if predicted else 0.0
        recall = correct / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"class": name, "precision": float(precision), "recall": float(recall), "f1": float(f1),
                     "accuracy": float(recall), "support": int(support)})
    return rows


def report(class_names: list[str], confusion=None, title: str = "digits run", settings=None,
           paths=None, data: str = "digits") -> ReportData:
    n = len(class_names)
    confusion = np.asarray(confusion if confusion is not None else np.eye(n, dtype=int) * 4 + 1)
    count = int(confusion.sum())
    metrics = {"loss": 0.4321, "accuracy": float(np.trace(confusion) / count), "top5_accuracy": 0.987,
               "count": count, "confusion": confusion.tolist(), "per_class": per_class(confusion, class_names),
               "data": data, "model": "fastnet", "weights_epoch": 3, "tta": 0}
    return ReportData(metrics=metrics, probabilities=torch.zeros(count, n), targets=torch.zeros(count),
                      class_names=class_names, images=[], title=title,
                      settings={"optim": {"lr": 0.01}} if settings is None else settings,
                      paths={"run directory": "/runs/exp"} if paths is None else paths)


ALL_PICTURES = {name: png((40 * i, 255 - 40 * i, 7)) for i, name in enumerate(PICTURE_NAMES)}


def test_markup_in_class_names_title_settings_and_paths_is_shown_as_text():
    hostile = "<script>alert(1)</script>"
    page = render_page(report(["cat", hostile, 'say "hi" & <b>bye</b>'], title=f"<i>{hostile}</i>",
                              settings={"<data>": {"name": "<img src=x onerror=alert(2)>", "flag": hostile}},
                              paths={"<weights>": "/runs/<exp>/best.safetensors"}, data="<u>set</u>"),
                       ALL_PICTURES)
    parsed = Page(page)
    tags = {tag for tag, _ in parsed.tags}
    assert not tags & {"script", "b", "i", "u"}
    assert [attrs for tag, attrs in parsed.tags if tag == "img" and attrs.get("src") == "x"] == []
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name in attrs)
    text = "".join(parsed.text)
    for shown in (hostile, f"<i>{hostile}</i>", 'say "hi" & <b>bye</b>', "<data>",
                  "<img src=x onerror=alert(2)>", "<weights>", "/runs/<exp>/best.safetensors", "<u>set</u>"):
        assert shown in text, shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_every_picture_is_inline_base64_of_its_own_bytes():
    parsed = Page(render_page(report(["a", "b", "c"]), ALL_PICTURES))
    sources = [attrs["src"] for attrs in parsed.images()]
    assert len(sources) == len(ALL_PICTURES)
    prefix = "data:image/png;base64,"
    assert all(src.startswith(prefix) for src in sources)
    embedded = sorted(base64.b64decode(src[len(prefix):], validate=True) for src in sources)
    assert embedded == sorted(ALL_PICTURES.values())


def test_the_page_fetches_nothing_from_outside():
    page = render_page(report(["a", "b", "c"]), ALL_PICTURES)
    parsed = Page(page)
    assert not {tag for tag, _ in parsed.tags} & {"script", "link", "iframe", "object", "embed"}
    links = [attrs[key] for _, attrs in parsed.tags for key in ("src", "href") if attrs.get(key)]
    assert links and all(link.startswith("data:") for link in links)
    lowered = page.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert "url(" not in lowered and "@import" not in lowered


def test_only_the_pictures_given_are_shown_and_the_per_class_table_stays_without_its_picture():
    classes = ["ant", "bee", "cow"]
    picture = png((1, 2, 3))
    parsed = Page(render_page(report(classes), {"confusion_matrix.png": picture}))
    [image] = parsed.images()
    assert base64.b64decode(image["src"].split(",", 1)[1]) == picture
    assert "Per class" in parsed.text
    assert [cells[0] for _, cells in parsed.class_rows(classes)] == classes


def test_every_class_has_a_row_with_its_numbers_in_class_order():
    classes = ["zebra", "ant", "moth", "bee", "yak", "owl", "cat"]   # not sorted: the order is kept
    rng = np.random.default_rng(4)
    confusion = rng.integers(0, 4, (7, 7)) + np.diag(rng.integers(1, 30, 7))
    parsed = Page(render_page(report(classes, confusion), ALL_PICTURES))
    rows = parsed.class_rows(classes)
    assert [cells[0] for _, cells in rows] == classes
    for k, (_, cells) in enumerate(rows):
        support = confusion[k].sum()
        recall = confusion[k, k] / support
        precision = confusion[k, k] / confusion[:, k].sum()
        f1 = 2 * precision * recall / (precision + recall)
        assert cells[1:] == [f"{100 * precision:.2f}%", f"{100 * recall:.2f}%", f"{100 * f1:.2f}%",
                             f"{100 * recall:.2f}%", f"{support:,}"], classes[k]


def test_a_class_with_thousands_of_images_shows_a_grouped_count():
    confusion = np.array([[12000, 345], [6, 7]])
    parsed = Page(render_page(report(["big", "small"], confusion), {}))
    assert dict((cells[0], cells[-1]) for _, cells in parsed.class_rows(["big", "small"])) == \
        {"big": "12,345", "small": "13"}
    assert "12,358 test images" in "".join(parsed.text)


def test_the_weakest_fifth_of_the_classes_by_recall_is_tinted():
    classes = [f"c{k}" for k in range(10)]
    confusion = np.eye(10, dtype=int) * 10
    # c3 finds 2 of its 10 images, c7 6 of 10, each other class all of its own; c3's and c7's misses
    # all go to c5, whose F1 (0.62) is then below c7's (0.75): ranked by F1, c5 would be tinted.
    confusion[3] = [0, 0, 0, 2, 0, 8, 0, 0, 0, 0]
    confusion[7] = [0, 0, 0, 0, 0, 4, 0, 6, 0, 0]
    parsed = Page(render_page(report(classes, confusion), {}))
    tinted = [cells[0] for attrs, cells in parsed.class_rows(classes) if attrs.get("class") == "weak"]
    assert sorted(tinted) == ["c3", "c7"]


def test_classes_that_tie_with_the_weakest_are_tinted_too_unless_all_tie():
    classes = ["circle", "square", "triangle"]
    tied = Page(render_page(report(classes, np.array([[0, 0, 4], [0, 0, 4], [0, 0, 4]])), {}))
    assert [cells[0] for attrs, cells in tied.class_rows(classes) if attrs.get("class") == "weak"] == [
        "circle", "square"]
    perfect = Page(render_page(report(classes, np.eye(3, dtype=int) * 4), {}))
    assert not [cells for attrs, cells in perfect.class_rows(classes) if attrs.get("class") == "weak"]


@pytest.mark.parametrize("num_classes", [1, 2])
def test_with_two_classes_or_fewer_no_row_is_tinted(num_classes):
    classes = ["yes", "no"][:num_classes]
    confusion = np.array([[1, 9], [0, 10]])[:num_classes, :num_classes]
    parsed = Page(render_page(report(classes, confusion), {}))
    rows = parsed.class_rows(classes)
    assert len(rows) == num_classes and all(attrs.get("class") != "weak" for attrs, _ in rows)


@pytest.mark.parametrize(("num_classes", "shown"), [(5, False), (6, True)])
def test_top5_accuracy_is_shown_only_with_more_than_five_classes(num_classes, shown):
    page = render_page(report([f"k{i}" for i in range(num_classes)]), {})
    assert ("top-5 accuracy" in page) is shown
    assert ("98.70%" in page) is shown


def test_the_cards_show_accuracy_loss_and_counts():
    confusion = np.array([[3, 1], [0, 4]])    # 7 of 8 right
    text = "".join(Page(render_page(report(["a", "b"], confusion), {})).text)
    assert "87.50%" in text and "0.4321" in text and "8 test images, 2 classes" in text


def test_the_three_weakest_classes_by_recall_are_named_weakest_first():
    confusion = np.array([[10, 0, 0, 0],     # a: recall 100 %
                          [0, 5, 5, 0],      # b: 50 %
                          [1, 0, 9, 0],      # c: 90 %
                          [10, 0, 0, 10]])   # d: 50 %, after b on a tie (the table's order)
    page = Page(render_page(report(["a", "b", "c", "d"], confusion), {}))
    line = next(t for t in page.text if t.startswith("Weakest classes by recall"))
    assert line == "Weakest classes by recall: b (50.00%), d (50.00%), c (90.00%)."


def test_settings_show_one_table_per_section_with_booleans_as_in_config_yaml():
    settings = {"data": {"name": "digits", "val_split": 0.2}, "train": {"amp": True, "compile": False},
                "model": None}
    parsed = Page(render_page(report(["a", "b"], settings=settings), {}))
    assert [t for t in parsed.text if t in ("data", "train", "model")][-3:] == ["data", "train", "model"]
    cells = {cells[0]: cells[1] for _, cells in parsed.rows if len(cells) == 2}
    assert cells["amp"] == "true" and cells["compile"] == "false"
    assert cells["val_split"] == "0.2" and cells["name"] == "digits"


def test_a_setting_left_to_a_later_choice_says_which_as_config_yaml_does():
    from tudui.config_files import make_config, special_meanings, to_dict
    config = make_config(data="digits")
    data = report(["a", "b"], settings=to_dict(config))
    data.meanings = special_meanings(config)
    cells = {cells[0]: cells[1] for _, cells in Page(render_page(data, {})).rows if len(cells) == 2}
    assert cells["val_split"].startswith("-1") and "0.2 when it has no test split" in cells["val_split"]
    assert cells["workers"].startswith("-1") and "pick for the data set" in cells["workers"]
    assert cells["lr"] == str(config.optim.lr)                      # an ordinary value: as it is


def test_a_model_without_recorded_settings_says_so():
    page = render_page(report(["a", "b"], settings={}), {})
    assert "do not record their settings" in page


def test_every_path_is_listed_with_its_name():
    paths = {"run directory": "/runs/exp", "weights": "/runs/exp/weights/best.safetensors"}
    parsed = Page(render_page(report(["a", "b"], paths=paths), {}))
    cells = {cells[0]: cells[1] for _, cells in parsed.rows if len(cells) == 2}
    assert {key: cells[key] for key in paths} == paths
