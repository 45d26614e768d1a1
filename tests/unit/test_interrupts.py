"""StopRequest and TrainingInterrupted on their own: real signals sent to this process.

Every test first installs a recording handler for SIGINT and SIGTERM (the `recorder` fixture),
so a StopRequest that failed to catch a signal makes the test fail instead of ending pytest.
"""
import os
import signal
import sys
import threading
import time

import pytest

from tudui.errors import TuduiError
from tudui import interrupts
from tudui.interrupts import StopRequest, TrainingInterrupted, WatchedOutput

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@pytest.fixture
def recorder():
    """A Python handler for SIGINT and SIGTERM that notes what it gets; the old ones come back after."""
    seen: list[int] = []

    def record(signum, frame):
        seen.append(signum)

    previous = {signum: signal.signal(signum, record) for signum in SIGNALS}
    yield record, seen
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def send(signum: int, arrived) -> None:
    """Send signum to this process and wait (briefly) until arrived() says a handler has run."""
    os.kill(os.getpid(), signum)
    deadline = time.monotonic() + 2.0
    while not arrived() and time.monotonic() < deadline:
        time.sleep(0.001)   # Python runs handlers in the main thread between bytecodes


def belongs_to(handler, stop: StopRequest) -> bool:
    return getattr(handler, "__self__", None) is stop


def test_handlers_are_installed_only_inside_the_with_and_the_previous_ones_come_back(recorder):
    record, _ = recorder
    stop = StopRequest()
    assert all(signal.getsignal(s) is record for s in SIGNALS)
    with stop as entered:
        assert entered is stop
        assert all(belongs_to(signal.getsignal(s), stop) for s in SIGNALS)
    assert all(signal.getsignal(s) is record for s in SIGNALS)


def test_the_previous_handlers_come_back_when_the_body_raises(recorder):
    record, _ = recorder
    with pytest.raises(RuntimeError, match="boom"):
        with StopRequest():
            raise RuntimeError("boom")
    assert all(signal.getsignal(s) is record for s in SIGNALS)


@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_a_signal_inside_the_with_is_noted_and_makes_the_request_true(signum, recorder, capsys):
    _, seen = recorder
    with StopRequest() as stop:
        assert stop() is False and stop.requested is None
        send(signum, stop)
        assert stop() is True
        assert stop.requested == signum
    assert seen == []   # the StopRequest took it; the handler before it never saw it
    err = capsys.readouterr().err
    assert f"{signal.Signals(signum).name}: stopping after this batch" in err
    assert "already stopping" not in err


def test_a_second_signal_while_stopping_keeps_the_first_and_says_already_stopping(recorder, capsys):
    _, seen = recorder
    err: list[str] = []

    def said(text):
        def check():
            err.append(capsys.readouterr().err)
            return text in "".join(err)
        return check

    with StopRequest() as stop:
        send(signal.SIGINT, said("SIGINT: stopping"))
        send(signal.SIGTERM, said("already stopping"))
        assert stop.requested == signal.SIGINT and stop()
    assert seen == []
    out = "".join(err) + capsys.readouterr().err
    assert out.count("stopping after this batch") == 1 and "SIGTERM: stopping" not in out
    assert out.count("already stopping") == 1


def test_each_further_signal_gets_one_already_stopping_line_and_no_new_stop_line(recorder, capsys):
    with StopRequest() as stop:
        send(signal.SIGTERM, stop)
        first = capsys.readouterr().err
        for signum in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
            os.kill(os.getpid(), signum)
        time.sleep(0.01)
        later = capsys.readouterr().err
    assert first.count("stopping after this batch") == 1 and "SIGTERM" in first
    assert later.count("already stopping") == 3
    assert "stopping after this batch" not in later
    assert stop.requested == signal.SIGTERM


def test_a_signal_after_the_with_goes_to_the_previous_handler(recorder):
    _, seen = recorder
    with StopRequest() as stop:
        pass
    send(signal.SIGTERM, lambda: seen)
    assert seen == [signal.SIGTERM]
    assert stop.requested is None and stop() is False


def test_off_the_main_thread_nothing_is_installed_and_nothing_fails(recorder):
    record, _ = recorder
    inside: list = []
    errors: list[BaseException] = []

    def body():
        try:
            with StopRequest() as stop:
                inside.extend(signal.getsignal(s) for s in SIGNALS)
                inside.append(stop())
        except BaseException as e:   # signal.signal off the main thread raises ValueError
            errors.append(e)

    worker = threading.Thread(target=body)
    worker.start()
    worker.join(timeout=5)
    assert errors == []
    assert inside == [record, record, False]
    assert all(signal.getsignal(s) is record for s in SIGNALS)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_training_interrupted_exits_with_128_plus_the_signal(signum, code):
    error = TrainingInterrupted("stopped at epoch 2; resume with tudui train --resume runs/exp", signum)
    assert error.exit_code == code
    assert isinstance(error, TuduiError)   # the CLI prints it as one line
    assert str(error) == "stopped at epoch 2; resume with tudui train --resume runs/exp"


def test_a_forked_worker_that_hears_ctrl_c_says_nothing_and_sets_nothing(capsys):
    from tudui.interrupts import StopRequest
    with StopRequest() as stop:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:   # the child, as a DataLoader worker forked while the handler is installed
            os.close(read)
            os.kill(os.getpid(), signal.SIGINT)
            os.write(write, b"1" if stop.requested else b"0")
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        answer = os.read(read, 1)
        os.close(read)
    assert answer == b"0" and stop.requested is None
    assert "stopping" not in capsys.readouterr().err


class GonePipe:
    """A stream whose reader has gone: every write and flush raises BrokenPipeError."""

    def __init__(self, fd=None):
        self.fd = fd

    def fileno(self):
        if self.fd is None:
            raise OSError("no file descriptor")
        return self.fd

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_gone_mid_training_stops_it_as_sigpipe_once_and_says_so(recorder, monkeypatch, capsys):
    silenced = []
    monkeypatch.setattr(interrupts, "silence", silenced.append)
    monkeypatch.setattr(sys, "stdout", GonePipe(fd=41))
    with WatchedOutput() as output, StopRequest() as stop:
        print("epoch 1/3 ...")               # the reader has gone: no BrokenPipeError reaches the loop
        print("epoch 2/3 ...")
        assert stop.requested == signal.SIGPIPE and stop()
    assert isinstance(sys.stdout, GonePipe) and output.gone and set(silenced) == {41}
    err = capsys.readouterr().err
    assert err.count("the output's reader went away: stopping after this batch") == 1
    assert "already stopping" not in err
    assert TrainingInterrupted("x", stop.requested).exit_code == 141


def test_stderr_gone_too_stops_the_run_the_same_way_without_an_error_of_its_own(recorder, monkeypatch):
    monkeypatch.setattr(interrupts, "silence", lambda fd: None)
    monkeypatch.setattr(sys, "stdout", GonePipe())
    monkeypatch.setattr(sys, "stderr", GonePipe())     # `tudui train ... 2>&1 | head`
    with WatchedOutput() as output, StopRequest() as stop:
        print("epoch 1/3 ...")                          # its stop line goes to the gone stderr: swallowed
        assert stop.requested == signal.SIGPIPE
    assert output.gone


def test_a_reader_gone_before_training_stops_it_at_its_first_batch(recorder, monkeypatch):
    monkeypatch.setattr(interrupts, "silence", lambda fd: None)
    monkeypatch.setattr(sys, "stdout", GonePipe())
    with WatchedOutput() as output:
        print("data: ...")
        with StopRequest() as stop:
            assert stop.requested == signal.SIGPIPE
    assert output.gone
    with StopRequest() as later:     # the next command in this process starts afresh
        assert later.requested is None


def test_a_reader_gone_after_training_lets_it_write_its_results(recorder, monkeypatch):
    monkeypatch.setattr(interrupts, "silence", lambda fd: None)
    with StopRequest() as stop:
        pass
    monkeypatch.setattr(sys, "stdout", GonePipe())
    with WatchedOutput() as output:
        print("test accuracy ...")
        print("report: ...")                  # printing goes on, into nothing
    assert output.gone and stop.requested is None


def test_no_stdout_at_all_is_left_alone(monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)          # pythonw, or `tudui train ... >&-`
    with WatchedOutput() as output:
        print("epoch 1/3 ...")                          # print() with no stdout writes nothing, as before
    assert sys.stdout is None and not output.gone
