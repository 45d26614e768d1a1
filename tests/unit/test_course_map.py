"""docs/course.md and its Chinese twin: the same code in the same order, and every reference to the
code names a file and a function that exist (the commands themselves run in tests/e2e/test_course.py)."""
import re

from course_map import COURSE, COURSE_ZH, code_blocks, code_references
from helpers import REPO


def test_every_code_reference_names_a_definition_that_exists():
    references = code_references(COURSE)
    assert len(references) >= 14
    for file, names in references:
        source = (REPO / file).read_text(encoding="utf-8")
        for name in names:
            assert re.search(rf"^\s*(def|class) {name}\b|^{name}(: .*)? = ", source, re.M), f"{file} has no {name}"


def test_the_chinese_course_map_has_the_same_code_and_lessons():
    english, chinese = COURSE.read_text(encoding="utf-8"), COURSE_ZH.read_text(encoding="utf-8")
    assert code_blocks(COURSE_ZH) == code_blocks(COURSE), "docs/course.md changed: carry it over to course.zh-CN.md"
    lessons = [re.findall(r"^## (\d+)\.", text, re.M) for text in (english, chinese)]
    assert lessons[0] == lessons[1] == [str(i) for i in range(1, 15)]
    assert code_references(COURSE_ZH) == code_references(COURSE)
    assert "(course.zh-CN.md)" in english.split("\n## ")[0] and "(course.md)" in chinese.split("\n## ")[0]
