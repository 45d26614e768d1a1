"""How tudui's figures draw text: as written (a class named "$5 bill" is not mathematics), in
DejaVu Sans with a font for Chinese, Japanese or Korean behind it when one is installed, and
with one warning of tudui's, not matplotlib's one per glyph, for characters no font has.
"""
from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterable, Iterator
from functools import cache

import matplotlib

log = logging.getLogger(__name__)

# Fonts that cover CJK class names, as Linux, macOS and Windows name them; those installed go
# behind DejaVu Sans (matplotlib falls back glyph by glyph since 3.6).
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK KR", "Source Han Sans SC",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "PingFang SC",
             "Hiragino Sans GB", "Microsoft YaHei", "SimHei", "Malgun Gothic", "Arial Unicode MS")

_GLYPH = re.compile(r"Glyph \d+ \((.*)\) missing from font")
_warned: set[str] = set()   # characters already warned about in this process


# Their files' names: matplotlib lists the fonts once and keeps the list, so a font installed since
# is found by looking at the system's font files for these.
CJK_FILES = re.compile(r"notosanscjk|notoserifcjk|sourcehansans|wqy|droidsansfallback|msyh|simhei|pingfang|"
                       r"hiragino|malgun|arialuni", re.IGNORECASE)


@cache
def installed_fallbacks(look: bool = True) -> tuple[str, ...]:
    """The fonts of CJK_FONTS that this machine has; look: also among the system's font files
    (a quarter of a second), for those installed after matplotlib made its list."""
    from matplotlib import font_manager
    names = {font.name for font in font_manager.fontManager.ttflist}
    if look and not names.intersection(CJK_FONTS):
        for path in font_manager.findSystemFonts():
            if CJK_FILES.search(path.rsplit("/", 1)[-1]):
                with contextlib.suppress(Exception):   # a font file matplotlib cannot read is no fallback
                    font_manager.fontManager.addfont(path)
        names = {font.name for font in font_manager.fontManager.ttflist}
    return tuple(name for name in CJK_FONTS if name in names)


@contextlib.contextmanager
def figure_text(texts: Iterable[str] = ()) -> Iterator[None]:
    """Inside it, figures draw text as written with the fallback fonts (looked for on the disk
    when texts, the class names, have CJK characters); glyphs that no font has are gathered and
    said once, after the drawing."""
    look = any(ord(char) >= 0x2E80 for text in texts for char in text)
    # Fallback goes down font.family's own list (a generic family such as sans-serif is one font).
    settings = {"text.parse_math": False}
    if fallbacks := installed_fallbacks(look):
        settings["font.family"] = ["DejaVu Sans", *fallbacks]
    fonts_log = logging.getLogger("matplotlib.font_manager")
    level = fonts_log.level
    fonts_log.setLevel(logging.ERROR)   # "failed to find font weight normal for ...": its choice is fine
    try:
        with warnings.catch_warnings(record=True) as caught, matplotlib.rc_context(settings):
            warnings.simplefilter("always")
            yield
    finally:
        fonts_log.setLevel(level)
    missing = []
    for warning in caught:
        found = _GLYPH.search(str(warning.message))
        if found is None:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        elif found.group(1) not in _warned:
            _warned.add(found.group(1))
            missing.append(found.group(1))
    if missing:
        log.warning("the pictures show boxes for characters no installed font has (%s); "
                    "a font such as Noto Sans CJK, once installed, is used for them", _shown(missing))


def _shown(names: list[str]) -> str:
    """matplotlib's character names (\\N{CJK UNIFIED IDEOGRAPH-732B}) as the characters."""
    chars = []
    for name in dict.fromkeys(names):
        try:
            chars.append(name.encode().decode("unicode_escape"))
        except UnicodeDecodeError:
            chars.append(name)
    return " ".join(chars[:12]) + (" ..." if len(chars) > 12 else "")
