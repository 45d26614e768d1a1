"""The command line's last line of defence: any error is one line; --debug shows the traceback."""
import logging

import pytest

import tudui.cli as cli


def broken(args):
    raise KeyError("a bug somewhere deep\nwith a second line")


def test_an_unexpected_error_is_one_line_with_a_hint_and_exit_1(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "models", broken)
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unexpected KeyError: 'a bug somewhere deep")
    assert "tudui --debug models" in err and "Traceback" not in err


def test_debug_shows_the_whole_traceback(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "models", broken)
    with pytest.raises(KeyError, match="a bug somewhere deep"):
        cli.main(["--debug", "models"])


def test_what_the_file_system_refuses_is_one_line_naming_the_file_not_a_bug_report(tmp_path, capsys):
    name = "a" * 300                                       # longer than a file name may be
    assert cli.main(["eval", "--weights", str(tmp_path / name)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: File name too long: ...aaa") and "unexpected" not in err and err.count("\n") == 1
    assert cli.main(["train", "--data", name]) == 1
    assert capsys.readouterr().err.startswith("error: File name too long")


def test_a_reader_that_went_away_ends_the_command_quietly(monkeypatch, capsys):
    def closed_pipe(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(cli.COMMANDS, "models", closed_pipe)
    redirected = []
    monkeypatch.setattr(cli.os, "dup2", lambda *args: redirected.append(args))   # not pytest's own stdout
    assert cli.main(["models"]) == 141
    assert capsys.readouterr().err == ""


def test_the_command_line_shows_tudui_log_lines_on_stderr_once(capsys):
    logger = logging.getLogger("tudui")
    handlers, level = logger.handlers[:], logger.level
    logger.handlers.clear()
    logger.setLevel(logging.NOTSET)
    try:
        cli.show_log_lines()
        cli.show_log_lines()                                  # a second command in one process: no double lines
        logging.getLogger("tudui.data.folders").info("unpacking a.tar.gz into the cache (once)")
        logging.getLogger("tudui.data.cache").warning("decode cache x is unreadable; decoding again")
        logging.getLogger("tudui.data.cache").debug("not for users")
        assert capsys.readouterr() == ("", "unpacking a.tar.gz into the cache (once)\n"
                                           "warning: decode cache x is unreadable; decoding again\n")
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)


@pytest.mark.parametrize("argv, said", [
    (["train", "--data", "digits", "--epcohs", "3"],
     "tudui train: error: unrecognized arguments: --epcohs 3; did you mean --epochs? (see `tudui train --help`)"),
    (["train", "--batch_size", "32"], "unrecognized arguments: --batch_size 32; did you mean --batch-size?"),
    (["predict", "a.png", "--weights", "w", "--top-k", "3"], "did you mean --topk?"),
    (["eval", "--weights", "w", "--zzzz"], "tudui eval: error: unrecognized arguments: --zzzz (see `tudui eval"),
    (["train", "--epochs", "2.5"], "tudui train: error: argument --epochs: invalid int value: '2.5'"),
    (["trian"], "tudui: error: argument COMMAND: invalid choice: 'trian'"),
])
def test_a_usage_mistake_is_one_line_naming_the_flag_meant_and_exit_2(argv, said, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and said in err, err


@pytest.mark.parametrize("argv, hint", [
    (["prdict", "x.png"], "invalid choice: 'prdict' (choose from"),
    (["predict", "x.png", "--wieghts", "runs"],
     "required: --weights (--wieghts is not a flag: did you mean --weights?)"),
    (["predict", "x.png", "-w", "runs"], "required: --weights (-w is not a flag: did you mean --weights?)"),
    (["eval", "runs/exp"], "required: --weights (give the run as --weights runs/exp)"),
    (["export", "runs/exp", "--weights", "runs/exp"],
     "tudui export takes the run or weights file as its first argument"),
    (["serve", "--weights", "runs/exp"], "tudui serve takes the run or weights file as its first argument"),
    (["predict", "best.onnx", "dog.png"],
     "required: --weights (give best.onnx as --weights best.onnx, and the images without a flag)"),
    (["predict", "dog.png", "--weights", "w.pth", "--debug"],
     "unrecognized arguments: --debug; --debug goes before the command: tudui --debug predict ..."),
    (["predict", "--tta", "dog.png", "--weights", "w.pth"],
     "invalid int value: 'dog.png' (--tta takes an optional level: write --tta 1, or put it last)"),
])
def test_a_misspelled_command_or_flag_gets_the_word_meant_and_exit_2(argv, hint, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and hint in err and err.count("\n") == 1
    if argv[0] == "prdict":
        assert "did you mean predict?" in err
