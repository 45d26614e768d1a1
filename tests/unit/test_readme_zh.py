"""README.zh-CN.md is the whole README.md in Chinese: these tests keep the two in step.

They compare what a translation must not change: the fenced code blocks (the same blocks, in
the same order, byte for byte), the outline (as many headings at each level, in the same
order), the tables (as many, each with the same rows and columns), the inline `code` spans
(flags, file names, numbers), and the links: each file links to the other at its top, and the
relative links of README.md are in the Chinese one too and lead to files that exist.

When one fails after an edit of README.md, carry the edit over to README.zh-CN.md: the message
names the block, heading or table that differs and its line in each file.
Pure file reading: no tudui import, no subprocess.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EN = REPO / "README.md"
ZH = REPO / "README.zh-CN.md"
HINT = "README.md changed: carry the change over to README.zh-CN.md (the Chinese translation)."

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*#*[ \t]*$")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")


@dataclass(frozen=True)
class Block:
    line: int    # 1-based line of the opening fence
    text: str    # the fences and everything between them, exactly as written


@dataclass(frozen=True)
class Heading:
    line: int
    level: int
    title: str


@dataclass(frozen=True)
class Table:
    line: int
    rows: int     # the header row and the body rows (the |---| line not counted)
    columns: int  # cells of the header row


@dataclass(frozen=True)
class Markdown:
    name: str
    lines: list[str]
    blocks: list[Block]
    prose: list[tuple[int, str]]  # (line number, line) for every line outside code blocks


def parse(path: Path) -> Markdown:
    """Split a Markdown file into its fenced code blocks and the lines outside them."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence = opening.group(1)
        end = i + 1
        while end < len(lines):   # a fence closes with the same character, at least as long, nothing after
            closing = FENCE.match(lines[end])
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence) \
                    and not lines[end].strip().strip(fence[0]):
                break
            end += 1
        blocks.append(Block(i + 1, "\n".join(lines[i:end + 1])))   # an unclosed fence runs to the end
        prose.append((i + 1, ""))  # a code block separates paragraphs
        i = end + 1
    return Markdown(path.name, lines, blocks, prose)


def headings(doc: Markdown) -> list[Heading]:
    found = []
    for number, line in doc.prose:
        match = HEADING.match(line)
        if match:
            found.append(Heading(number, len(match.group(1)), (match.group(2) or "").strip()))
    return found


def tables(doc: Markdown) -> list[Table]:
    """Pipe tables: a header row, a |---| delimiter row, then the rows that start with |."""
    found = []
    prose = doc.prose
    i = 0
    while i + 1 < len(prose):
        number, line = prose[i]
        if line.lstrip().startswith("|") and TABLE_DELIMITER.match(prose[i + 1][1]) and "-" in prose[i + 1][1]:
            columns = len(split_row(line))
            end = i + 2
            while end < len(prose) and prose[end][1].lstrip().startswith("|"):
                end += 1
            found.append(Table(number, end - i - 1, columns))
            i = end
        else:
            i += 1
    return found


def split_row(row: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", row.strip().strip("|"))
    return [cell.strip() for cell in cells]


def paragraphs(doc: Markdown) -> list[tuple[int, str]]:
    """(first line, text) of each run of non-blank lines outside code blocks."""
    found: list[tuple[int, str]] = []
    start, current = 0, []
    for number, line in doc.prose + [(0, "")]:
        if line.strip():
            if not current:
                start = number
            current.append(line)
        elif current:
            found.append((start, "\n".join(current)))
            current = []
    return found


def code_spans(doc: Markdown) -> dict[str, int]:
    """{inline code span, whitespace collapsed: first line it is on}, outside code blocks."""
    spans: dict[str, int] = {}
    for start, text in paragraphs(doc):
        i = 0
        while i < len(text):
            if text[i] != "`":
                i += 1
                continue
            run = re.match(r"`+", text[i:]).group(0)
            close = re.compile(r"(?<!`)" + run + r"(?!`)").search(text, i + len(run))
            if not close:                   # an unmatched run of backticks is literal text
                i += len(run)
                continue
            span = " ".join(text[i + len(run):close.start()].split())
            spans.setdefault(span, start + text.count("\n", 0, i))
            i = close.end()
    return spans


def links(doc: Markdown) -> list[tuple[int, str]]:
    return [(number, target) for number, line in doc.prose for target in LINK.findall(line)]


def relative(target: str) -> bool:
    return not re.match(r"^([a-z][a-z0-9+.-]*:|#|//)", target, re.IGNORECASE)


def first_line(block: Block) -> str:
    body = block.text.splitlines()[1:2]
    return body[0] if body else block.text.splitlines()[0]


def describe(doc: Markdown, index: int, block: Block) -> str:
    return f"code block {index + 1} of {doc.name} (line {block.line}: {first_line(block)!r})"


def test_the_code_blocks_are_the_same_blocks_in_the_same_order():
    en, zh = parse(EN), parse(ZH)
    problems = []
    matcher = difflib.SequenceMatcher(None, [b.text for b in en.blocks], [b.text for b in zh.blocks], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for i, j in zip(range(i1, i2), range(j1, j2)):
                diff = difflib.unified_diff(zh.blocks[j].text.splitlines(), en.blocks[i].text.splitlines(),
                                            zh.name, en.name, lineterm="", n=1)
                problems.append(f"{describe(en, i, en.blocks[i])} differs from {describe(zh, j, zh.blocks[j])}:\n"
                                + "\n".join(diff))
            continue
        for i in range(i1, i2):
            problems.append(f"{describe(en, i, en.blocks[i])} is not in {zh.name} (or not there exactly):\n"
                            f"{en.blocks[i].text}")
        for j in range(j1, j2):
            problems.append(f"{describe(zh, j, zh.blocks[j])} is not in {en.name}:\n{zh.blocks[j].text}")
    assert not problems, (f"{HINT}\n{en.name} has {len(en.blocks)} code blocks, {zh.name} {len(zh.blocks)}; "
                          "code blocks stay byte-identical.\n\n" + "\n\n".join(problems))


def test_the_same_number_of_headings_at_each_level_in_the_same_order():
    en, zh = headings(parse(EN)), headings(parse(ZH))
    problems = []
    for level in range(1, 7):
        en_level = [h for h in en if h.level == level]
        zh_level = [h for h in zh if h.level == level]
        if len(en_level) != len(zh_level):
            pairs = [f"  {e.line if e else '-':>4} {('#' * level + ' ' + e.title) if e else '(none)':<60} "
                     f"{z.line if z else '-':>4} {('#' * level + ' ' + z.title) if z else '(none)'}"
                     for e, z in _zip_longest(en_level, zh_level)]
            problems.append(f"{'#' * level} headings: {EN.name} has {len(en_level)}, {ZH.name} {len(zh_level)}; "
                            "side by side (line, heading):\n" + "\n".join(pairs))
    if not problems:   # as many at each level: then the outline must also run in the same order
        for index, (e, z) in enumerate(zip(en, zh)):
            if e.level != z.level:
                problems.append(f"heading {index + 1} is level {e.level} in {EN.name} (line {e.line}: "
                                f"{'#' * e.level} {e.title}) but level {z.level} in {ZH.name} "
                                f"(line {z.line}: {'#' * z.level} {z.title})")
                break
    assert not problems, HINT + "\n" + "\n\n".join(problems)


def test_the_tables_have_the_same_rows_and_columns():
    en, zh = tables(parse(EN)), tables(parse(ZH))
    problems = [f"table {i + 1}: {EN.name} line {e.line} has {e.rows} rows x {e.columns} columns, "
                f"{ZH.name} line {z.line} has {z.rows} x {z.columns}"
                for i, (e, z) in enumerate(zip(en, zh)) if (e.rows, e.columns) != (z.rows, z.columns)]
    if len(en) != len(zh):
        problems.append(f"{EN.name} has {len(en)} tables (lines {[t.line for t in en]}), "
                        f"{ZH.name} {len(zh)} (lines {[t.line for t in zh]})")
    assert not problems, HINT + "\n" + "\n".join(problems)


def test_the_inline_code_is_the_same():
    """Flags, file names, commands and numbers in `backticks` are not translated."""
    en, zh = code_spans(parse(EN)), code_spans(parse(ZH))
    missing = [f"  `{span}` ({EN.name} line {line})" for span, line in en.items() if span not in zh]
    extra = [f"  `{span}` ({ZH.name} line {line})" for span, line in zh.items() if span not in en]
    message = HINT
    if missing:
        message += f"\ninline code in {EN.name} that {ZH.name} lacks:\n" + "\n".join(missing)
    if extra:
        message += f"\ninline code in {ZH.name} that {EN.name} no longer has:\n" + "\n".join(extra)
    assert not missing and not extra, message


def test_each_links_to_the_other_at_its_top_and_the_relative_links_work():
    en, zh = parse(EN), parse(ZH)
    top = 5
    en_links, zh_links = links(en), links(zh)
    assert any(target == ZH.name and line <= top for line, target in en_links), \
        f"{EN.name} should link to the Chinese version right under its title, e.g. [中文说明]({ZH.name})"
    assert any(target == EN.name and line <= top for line, target in zh_links), \
        f"{ZH.name} should link back to the English one at its top, e.g. [English]({EN.name})"

    en_targets = {t for _, t in en_links if relative(t) and t != ZH.name}
    zh_targets = {t for _, t in zh_links if relative(t) and t != EN.name}
    missing = sorted(en_targets - zh_targets)
    assert en_targets <= zh_targets, f"{HINT}\nlinks of {EN.name} missing in {ZH.name}: {missing}"
    broken = [f"{ZH.name} line {line}: {target}" for line, target in zh_links
              if relative(target) and not (ZH.parent / target.split("#")[0]).exists()]
    assert not broken, "relative links that lead nowhere:\n" + "\n".join(broken)


def _zip_longest(a: list, b: list):
    for i in range(max(len(a), len(b))):
        yield (a[i] if i < len(a) else None), (b[i] if i < len(b) else None)
