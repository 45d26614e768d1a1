"""docs/course.md read as the tests need it: its code blocks in order and its `Code:` references."""
from __future__ import annotations

import re
from pathlib import Path

from helpers import REPO

COURSE = REPO / "docs" / "course.md"
COURSE_ZH = REPO / "docs" / "course.zh-CN.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
CODE_LINE = re.compile(r"^(?:Code: |代码：)(.+)$", re.M)   # 代码：in the Chinese page


def code_blocks(path: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


def code_references(path: Path) -> list[tuple[str, list[str]]]:
    """(file under the repository, [names]) of each `Code:` line: `src/tudui/x.py` -> `a`, `b`; ..."""
    found = []
    for line in CODE_LINE.findall(path.read_text(encoding="utf-8")):
        for part in line.split(";"):
            file, _, names = part.partition("→")
            found.append((file.strip().strip("`"), [n.strip().strip("`") for n in names.split(",") if n.strip()]))
    return found
