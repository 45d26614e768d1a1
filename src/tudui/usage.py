"""argparse's usage mistakes said in one line, with the word meant where one is close: a
misspelled command or flag, a flag given to a command that takes it as its argument."""
from __future__ import annotations

import argparse
import difflib
import re
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse's parser, with a usage mistake said in one line (argparse prints the whole usage
    first, dozens of lines for train) and argparse's exit status 2."""

    argv: list[str] = []   # the command line being parsed, for the hints (set by main)

    def error(self, message: str):
        hint = _hint(message, Parser.argv, self.prog, list(self._option_string_actions))
        self.exit(2, f"{self.prog}: error: {message}{hint} (see `{self.prog} --help`)\n")


def _hint(message: str, argv: list[str], prog: str, known: list[str]) -> str:
    """The word meant, for argparse's own messages: a misspelled command, or a misspelled flag
    (or a short one tudui does not have, as -w) that argparse then reports as a missing required
    one."""
    choice = re.match(r"argument COMMAND: invalid choice: '(.*?)' \(choose from (.*)\)", message)
    if choice:
        meant = difflib.get_close_matches(choice.group(1), re.findall(r"'?([\w-]+)'?", choice.group(2)), n=1)
        return f"; did you mean {meant[0]}?" if meant else ""
    optional = re.match(r"argument (--tta): invalid int value: '(.*)'", message)
    if optional and not optional.group(2).lstrip("-").isdigit():   # a bare --tta took the next word
        return f" ({optional.group(1)} takes an optional level: write {optional.group(1)} 1, or put it last)"
    required = re.match(r"the following arguments are required: (.*)", message)
    if required:
        flags = [flag for flag in required.group(1).split(", ") if flag.startswith("--")]
        for word in argv:
            name = word.split("=", 1)[0]
            meant = difflib.get_close_matches(name, flags, n=1, cutoff=0.7) if name.startswith("--") else []
            if meant and name not in flags:
                return f" ({name} is not a flag: did you mean {meant[0]}?)"
            if len(name) == 2 and name[0] == "-" and name[1].isalpha() and name not in known:
                initial = [flag for flag in flags if flag[2:3] == name[1]]
                if len(initial) == 1:
                    return f" ({name} is not a flag: did you mean {initial[0]}?)"
        if prog == "tudui eval" and len(argv) > 1 and not argv[1].startswith("-"):   # `tudui eval runs/exp`
            return f" (give the run as --weights {argv[1]})"
        if prog == "tudui predict":   # `tudui predict runs/exp dog.png`
            weights = next((word for word in argv[1:] if _looks_like_weights(word)), "")
            if weights:
                return f" (give {weights} as --weights {weights}, and the images without a flag)"
    return ""


WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".onnx", ".pt2", ".torchscript")


def _looks_like_weights(word: str) -> bool:
    """A run directory or a weights file, named where predict expects images."""
    path = Path(word)
    return path.suffix.lower() in WEIGHTS_SUFFIXES or (path / "config.yaml").is_file() \
        or (path / "weights").is_dir()


def unrecognized(extra: list[str], parser: argparse.ArgumentParser) -> str:
    """The message for arguments parser does not know, with the flag meant when one is misspelled."""
    message = f"unrecognized arguments: {' '.join(extra)}"
    flags = list(parser._option_string_actions)   # noqa: SLF001 - argparse keeps its flags only there
    if "--debug" in extra:   # tudui's own flag, before the command
        command = parser.prog.split()[-1]
        return f"{message}; --debug goes before the command: tudui --debug {command} ..."
    if "--weights" in extra and "--weights" not in flags:   # export and serve take it as their argument
        return f"{message}; {parser.prog} takes the run or weights file as its first argument: {parser.prog} RUN"
    for word in extra:
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            dashed = name.replace("_", "-")
            meant = [dashed] if dashed in flags else difflib.get_close_matches(name, flags, n=1, cutoff=0.7)
            if meant:
                return f"{message}; did you mean {meant[0]}?"
    return message
