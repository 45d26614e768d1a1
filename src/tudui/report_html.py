"""report.html: one self-contained page (pictures embedded, no scripts, nothing fetched)."""
from __future__ import annotations

import base64
from html import escape

from tudui.scores import present, top5_tells
from tudui.settings import counted

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1d1d1f;
       max-width: 1400px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; font-size: 16px; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.subtitle { color: #555; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; margin: 1.2em 0; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 0.7em 1.1em; min-width: 9em; }
.card .value { font-size: 1.7em; font-weight: 600; } .card .label { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: 0.95em; }
th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.weak td { background: #fdecea; }
code { font-size: 0.95em; overflow-wrap: anywhere; }
.settings { display: flex; flex-wrap: wrap; gap: 0 2.5em; align-items: flex-start; }
.settings h3 { margin: 0.8em 0 0.3em; font-size: 1.05em; }
.settings .note { color: #666; font-size: 0.85em; }
"""

PICTURES = (("confusion_matrix.png", "Confusion matrix",
             "Rows are the true classes, columns the predicted ones; off the diagonal are the mistakes."),
            ("misclassified.png", "Most confident mistakes",
             ("The images the model got wrong with the highest probability: often label errors "
              "or classes that look alike.")),
            ("per_class.png", "Per class", ("Recall (the share of a class's images found) and precision "
                                            "(the share of a class's predictions that were right; no dot "
                                            "when nothing was predicted as it), weakest class first.")),
            ("curves.png", "Training curves", "Loss, val accuracy and learning rate per epoch (val picks the "
                                              "best epoch; the numbers above measure its weights)."))


NO_VAL_CURVES = ("Training loss and learning rate per epoch (no val split: the last epoch's weights are kept, "
                 "and the numbers above measure them).")


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _image(name: str, content: bytes, alt: str) -> str:
    encoded = base64.b64encode(content).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{escape(alt)}" title="{escape(name)}">'


def _card(value: str, label: str) -> str:
    return f'<div class="card"><div class="value">{escape(value)}</div><div class="label">{escape(label)}</div></div>'


def _per_class_rows(table: list[dict]) -> str:
    # The weakest fifth of the classes by recall (as the text above and per_class.png rank them) is
    # tinted, so the eye finds them in a long table. A class without images in the split (some of
    # the trained classes evaluated) shows dashes, unranked.
    ranked = sorted(present(table), key=lambda i: table[i]["recall"])
    weak: set[int] = set()
    if len(ranked) > 2:   # the weakest fifth and the classes tied with its last; when all tie, none is weaker
        threshold = table[ranked[max(1, len(ranked) // 5) - 1]]["recall"]
        weak = {i for i in ranked if table[i]["recall"] <= threshold}
        weak = weak if len(weak) < len(ranked) else set()
    rows = []
    for i, row in enumerate(table):
        cells = "".join(f'<td class="num">{"-" if row[key] is None else percent(row[key])}</td>'
                        for key in ("precision", "recall", "f1", "accuracy"))
        rows.append(f'<tr{" class=weak" if i in weak else ""}><td>{escape(row["class"])}</td>{cells}'
                    f'<td class="num">{row["support"]:,}</td></tr>')
    return "\n".join(rows)


def _shown(value) -> str:
    """A setting as config.yaml writes it (true/false, not Python's True/False)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _key_values(pairs) -> str:
    return "\n".join(f"<tr><th>{escape(str(key))}</th><td><code>{escape(_shown(value))}</code></td></tr>"
                     for key, value in pairs)


def _settings(settings: dict, meanings: dict) -> str:
    """One small table per config section (data, model, optim, train), side by side; a value that
    stands for a choice made later (-1, 0) says which, as config.yaml does."""
    if not settings:
        return "<p>The weights do not record their settings.</p>"
    tables = [f"<div><h3>{escape(section)}</h3><table>\n{_setting_rows(section, values or {}, meanings)}\n"
              f"</table></div>" for section, values in settings.items()]
    return f'<div class="settings">\n{"".join(tables)}\n</div>'


def _setting_rows(section: str, values: dict, meanings: dict) -> str:
    rows = []
    for key, value in values.items():
        meaning = meanings.get((section, key))
        note = f' <span class="note">{escape(meaning.split(": ", 1)[1])}</span>' if meaning else ""
        rows.append(f"<tr><th>{escape(str(key))}</th><td><code>{escape(_shown(value))}</code>{note}</td></tr>")
    return "\n".join(rows)


def _tta(metrics: dict) -> str:
    """The test-time augmentation level, and whether its views were mirrored."""
    level = metrics.get("tta", 0)
    return f"{level} (no mirrored views)" if level and metrics.get("tta_mirror") is False else str(level)


def of_split(split: str, noun: str = "images") -> str:
    """What was measured, named for its split: "test images", "test accuracy"; for a whole data
    set (`tudui eval --split all`, or a folder without splits) the noun alone."""
    return noun if split == "all" else f"{split} {noun}"


def _cards(metrics: dict, split: str, num_classes: int) -> list[str]:
    """The headline numbers, each a card: accuracy, balanced accuracy, macro-F1, top-5, loss, counts."""
    cards = [_card(percent(metrics["accuracy"]), f"{of_split(split, 'accuracy')} (top-1)")]
    if "balanced_accuracy" in metrics:
        cards += [_card(percent(metrics["balanced_accuracy"]), "balanced accuracy (mean class recall)"),
                  _card(f"{metrics['macro_f1']:.3f}", "macro-F1")]
    if top5_tells(num_classes):
        cards.append(_card(percent(metrics["top5_accuracy"]), "top-5 accuracy"))
    return cards + [_card(f"{metrics['loss']:.4f}", "loss (cross-entropy)"),
                    _card(f"{metrics['count']:,}", of_split(split)), _card(f"{num_classes:,}", "classes")]


def render_page(data, pictures: dict[str, bytes]) -> str:
    """The HTML of the report for a ReportData, with the PNG bytes of its pictures embedded."""
    metrics = data.metrics
    table = metrics["per_class"]
    split = metrics.get("split", "test")
    cards = _cards(metrics, split, len(data.class_names))
    shown = present(table)   # up to 3, and never every class: of 3 classes, the weakest two
    weakest = sorted((table[i] for i in shown), key=lambda row: row["recall"])[:min(3, max(1, len(shown) - 1))]
    weakest_text = ", ".join(f"{row['class']} ({percent(row['recall'])})" for row in weakest)
    sections = {}
    for name, heading, caption in PICTURES:
        if name == "curves.png" and not any(row.get("val_accuracy") is not None for row in data.history):
            caption = NO_VAL_CURVES
        if name in pictures:
            sections[name] = (f"<h2>{escape(heading)}</h2>\n<p>{escape(caption)}</p>\n"
                              f"{_image(name, pictures[name], heading)}")
    # The table goes under the per-class picture: the two read together.
    sections["per_class.png"] = sections.get("per_class.png", "<h2>Per class</h2>") + f"""
<p>Accuracy of a class is the share of its {escape(of_split(split))} classified correctly (equal to its recall).
Tinted rows are the weakest fifth by recall.</p>
<table>
<tr><th>class</th><th class="num">precision</th><th class="num">recall</th><th class="num">F1</th>
<th class="num">accuracy</th><th class="num">images</th></tr>
{_per_class_rows(table)}
</table>"""
    body = "\n".join(sections[name] for name, _, _ in PICTURES if name in sections)
    subtitle = (f"{metrics.get('data', '')}: {counted(metrics['count'], of_split(split, 'image'))}, "
                f"{counted(len(data.class_names), 'class', 'classes')}")
    details = [("data", metrics.get("data", "")), ("model", metrics.get("model", "")),
               ("weights from epoch", metrics.get("weights_epoch", "")),
               ("test-time augmentation", _tta(metrics))]
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(data.title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{escape(data.title)}</h1>
<p class="subtitle">{escape(subtitle)}</p>
<div class="cards">
{"".join(cards)}
</div>
<p>Weakest {"class" if len(weakest) == 1 else "classes"} by recall: {escape(weakest_text)}.</p>
{body}
<h2>Evaluation</h2>
<table>
{_key_values(details)}
</table>
<h2>Paths</h2>
<table>
{_key_values(data.paths.items())}
</table>
<h2>Settings</h2>
{_settings(data.settings, data.meanings)}
</body>
</html>
"""
