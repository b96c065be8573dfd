"""Logs journald reads well, with no secret and no visitor email in them."""

import io
import logging
import sys
import threading
import time

import pytest

from daemon.logs import setup_logging
from scheduler import Alarm


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    sys.excepthook, threading.excepthook = hooks


def _lines(message: str, *args, secrets=(), exc_info=None) -> list[str]:
    """What the daemon's log shows for one record logged as `message % args`."""
    stream = io.StringIO()
    setup_logging("DEBUG", secrets=list(secrets), stream=stream)
    logging.getLogger("envoy_proxy").info(message, *args, exc_info=exc_info)
    return stream.getvalue().splitlines()


def test_under_journald_lines_carry_no_timestamp_of_their_own(monkeypatch, restore_logging):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    assert _lines("hello %s", "world") == ["INFO envoy_proxy: hello world"]


def test_outside_journald_lines_start_with_a_timestamp(monkeypatch, restore_logging):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    [line] = _lines("hello")
    assert line[:2] == "20" and line.endswith("INFO envoy_proxy: hello")


def test_a_line_is_written_before_the_logging_call_returns(restore_logging):
    stream = io.StringIO()
    setup_logging("INFO", stream=stream)
    for n in range(3):
        logging.getLogger("envoy_proxy.worker").warning("line %d", n)
        assert stream.getvalue().count("\n") == n + 1  # no writer thread, no buffer


def test_a_secret_that_reaches_a_record_is_redacted(restore_logging):
    [line] = _lines("token %s and %s", "s3cret-value", {"nested": "s3cret-value"},
                    secrets=["s3cret-value", ""])  # fmt: skip
    assert "s3cret-value" not in line and line.count("***") == 2


def test_a_secret_in_a_traceback_is_redacted_too(restore_logging):
    try:
        raise ValueError("Proxy said: bad secret s3cret-value")
    except ValueError as error:
        lines = _lines("action crashed", exc_info=error, secrets=["s3cret-value"])
    assert lines[-1] == "ValueError: Proxy said: bad secret ***"
    assert not [line for line in lines if "s3cret-value" in line]


def test_a_traceback_reaches_the_log(restore_logging):
    try:
        raise ValueError("boom")
    except ValueError as error:
        lines = _lines("action crashed", exc_info=error)
    assert lines[0].endswith("action crashed") and lines[-1] == "ValueError: boom"


def test_urllib3_never_logs_urls_even_at_debug(restore_logging):
    setup_logging("DEBUG")
    assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.DEBUG)


def test_the_alarm_runs_without_a_line_of_apschedulers_each_time(restore_logging):
    """A busy lobby fires the alarm several times a second: APScheduler's two INFO lines per
    run ("Running job", "executed successfully") flooded the journal."""
    stream = io.StringIO()
    setup_logging("INFO", stream=stream)
    ran = threading.Event()
    alarm = Alarm(lambda: ran.set())
    alarm.start(int(time.time()))
    try:
        assert ran.wait(10)
    finally:
        alarm.shutdown()
    assert "Running job" not in stream.getvalue()
    assert "executed successfully" not in stream.getvalue()
    assert logging.getLogger("apscheduler.executors.default").isEnabledFor(logging.WARNING)


def _crash_in_a_thread():
    raise ValueError("Proxy said: bad secret s3cret-value")


def test_a_thread_that_dies_is_logged_with_its_traceback_redacted(restore_logging, capfd):
    stream = io.StringIO()
    setup_logging("INFO", secrets=["s3cret-value"], stream=stream)
    thread = threading.Thread(target=_crash_in_a_thread, name="worker-7")
    thread.start()
    thread.join()
    lines = stream.getvalue().splitlines()
    assert "thread worker-7 died: ValueError" in lines[0]
    assert lines[-1] == "ValueError: Proxy said: bad secret ***"
    assert "s3cret-value" not in stream.getvalue() + "".join(capfd.readouterr())


def test_an_uncaught_exception_is_logged_redacted_not_printed(restore_logging, capfd):
    stream = io.StringIO()
    setup_logging("INFO", secrets=["s3cret-value"], stream=stream)
    try:
        _crash_in_a_thread()
    except ValueError:
        sys.excepthook(*sys.exc_info())
    assert stream.getvalue().splitlines()[-1] == "ValueError: Proxy said: bad secret ***"
    assert "s3cret-value" not in stream.getvalue() + "".join(capfd.readouterr())
