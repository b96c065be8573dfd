"""Logging that journald reads well and that never prints a secret.

Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp of their own: journald adds one.
A filter replaces any registered secret that reaches a record, as a last line of defence
behind code that never logs secrets in the first place.

Records are handed to one writer thread (the standard library's QueueListener) instead of
being written by the thread that logs, and the writer writes a burst of lines at once: every
write lets go of the GIL, and webhook threads each writing their own line then waited to get
it back behind the others (accept rate 650 → 860 events/s with 8 threads, BENCHMARKS.md §1).
`stop_logging` writes what is queued.
"""

import atexit
import logging
import os
import queue
import sys
from logging.handlers import QueueHandler, QueueListener

LOGGER_NAME = "envoy_proxy"
_REDACTED = "***"


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 4]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, _REDACTED)
            record.msg, record.args = message, None
        return True


_listener: QueueListener | None = None
_output: logging.StreamHandler | None = None


class _FlushWhenIdle(logging.StreamHandler):
    """Writes a burst of lines at once: flushes only when no record is waiting behind."""

    def __init__(self, stream, waiting: queue.SimpleQueue):
        super().__init__(stream)
        self._waiting = waiting

    def flush(self) -> None:
        if self._waiting.empty():
            super().flush()


def _buffered_stderr():
    """Standard error with a block buffer (sys.stderr flushes at every line)."""
    return open(  # lives as long as the process
        sys.stderr.fileno(), "w", buffering=1 << 16, encoding="utf-8",
        errors="backslashreplace", closefd=False,
    )  # fmt: skip


def setup_logging(level: str = "INFO", secrets: list[str] = (), stream=None) -> None:
    """Configure the root logger for the process (again: the previous writer is stopped)."""
    global _listener, _output
    stop_logging()
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    records = queue.SimpleQueue()
    output = _FlushWhenIdle(stream or _buffered_stderr(), records)
    output.setFormatter(logging.Formatter(fmt))
    front = QueueHandler(records)
    front.addFilter(RedactSecrets(list(secrets)))  # before a record is queued
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(front)
    root.setLevel(level.upper())
    _listener, _output = QueueListener(records, output), output
    _listener.start()
    # Waitress logs each "Serving on" itself; keep its queue warnings, drop the chatter.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # urllib3 logs whole URLs at DEBUG, and Proxy lookups carry a visitor's email in the query.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def stop_logging() -> None:
    """Write every queued record and stop the writer thread (at exit, or before reconfiguring)."""
    global _listener, _output
    if _listener is not None:
        _listener.stop()
        _output.stream.flush()  # the last lines, queued behind the stop
        _listener = _output = None


atexit.register(stop_logging)
