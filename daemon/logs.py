"""Logging that journald reads well and that never prints a secret.

One line per record, written to standard error by the thread that logs, as it logs: journald
stores each line as it arrives, and nothing is lost or late if the process dies. Under systemd
(`JOURNAL_STREAM` set) lines carry no timestamp of their own: journald adds one. Every
formatted line, traceback included, passes the secret masker, as a last line of defence
behind code that never logs secrets in the first place. Tracebacks that Python would print
to standard error itself (an uncaught exception, in the main thread or another) are logged
instead, so they pass it too.
"""

import logging
import os
import sys
import threading

from daemon.masking import Masker


class MaskingFormatter(logging.Formatter):
    """Formats a record, then masks the secrets in the whole text (message and traceback)."""

    def __init__(self, fmt: str, secrets):
        super().__init__(fmt)
        self.mask = Masker(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(super().format(record))


def setup_logging(level: str = "INFO", secrets=(), stream=None) -> None:
    """Configure the root logger for the process (again: the previous handlers are replaced).

    `stream`: where lines go (standard error by default).
    """
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    output = logging.StreamHandler(stream)
    output.setFormatter(MaskingFormatter(fmt, secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(output)
    root.setLevel(level.upper())
    # Waitress logs each "Serving on" itself; keep its queue warnings, drop the chatter.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # urllib3 logs whole URLs at DEBUG, and Proxy lookups carry a visitor's email in the query.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    # APScheduler logs two lines at every run of the alarm, which a busy lobby fires several
    # times a second; the runner logs what each run did. Its warnings (a missed run) stay.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


_crashes = logging.getLogger("envoy_proxy.crash")


def _log_uncaught(kind, error, traceback) -> None:
    _crashes.critical("uncaught %s", kind.__name__, exc_info=(kind, error, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as Python's own hook: a thread's normal way out
    name = args.thread.name if args.thread else "?"
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    _crashes.error("thread %s died: %s", name, args.exc_type.__name__, exc_info=exc_info)
