"""Logging that journald reads well and that never prints a secret.

Under systemd (`JOURNAL_STREAM` set) lines carry no timestamp of their own: journald adds one.
A filter replaces any registered secret that reaches a record, as a last line of defence
behind code that never logs secrets in the first place.
"""

import logging
import os
import sys

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


def setup_logging(level: str = "INFO", secrets: list[str] = ()) -> None:
    """Configure the root logger once for the process."""
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not under_journald:
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(RedactSecrets(list(secrets)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Waitress logs each "Serving on" itself; keep its queue warnings, drop the chatter.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    # urllib3 logs whole URLs at DEBUG, and Proxy lookups carry a visitor's email in the query.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
