"""Logs journald reads well, with no secret and no visitor email in them."""

import logging

import pytest

from daemon.logs import RedactSecrets, setup_logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _format(record_message: str, *args) -> str:
    handler = logging.getLogger().handlers[0]
    record = logging.LogRecord("envoy_proxy", logging.INFO, __file__, 1, record_message, args, None)
    assert all(f.filter(record) for f in handler.filters)
    return handler.format(record)


def test_under_journald_lines_carry_no_timestamp_of_their_own(monkeypatch, restore_logging):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    setup_logging("INFO")
    assert _format("hello %s", "world") == "INFO envoy_proxy: hello world"


def test_outside_journald_lines_start_with_a_timestamp(monkeypatch, restore_logging):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    setup_logging("INFO")
    assert _format("hello")[:2] == "20"


def test_a_secret_that_reaches_a_record_is_redacted(restore_logging):
    setup_logging("DEBUG", secrets=["s3cret-value", ""])
    line = _format("token %s and %s", "s3cret-value", {"nested": "s3cret-value"})
    assert "s3cret-value" not in line and line.count("***") == 2


def test_short_values_are_not_treated_as_secrets():
    assert RedactSecrets(["abc", "", "abcd"]).secrets == ["abcd"]


def test_urllib3_never_logs_urls_even_at_debug(restore_logging):
    setup_logging("DEBUG")
    assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.DEBUG)
