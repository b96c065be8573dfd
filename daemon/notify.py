"""systemd's notify protocol (`Type=notify`): READY, STOPPING and watchdog pings.

A datagram to `$NOTIFY_SOCKET` (a path, or an abstract socket written `@name`); nothing at all
when the variable is unset, as when run by hand or in tests. The watchdog pings only while the
daemon is healthy (`daemon.health`: due work gets done), so that systemd restarts it when not.
"""

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger("envoy_proxy.notify")


def _address() -> str | None:
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return None
    if address.startswith("@"):
        return "\0" + address[1:]  # Linux abstract namespace
    if address.startswith("/"):
        return address
    log.warning("NOTIFY_SOCKET=%r is not a path or an abstract socket: not notifying", address)
    return None


def notify(message: str) -> bool:
    """Send one notification; True when sent, False when there is no socket or sending failed.

    A failure is logged, never raised: systemd's bookkeeping must not take the daemon down.
    """
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as error:
        log.warning("could not notify systemd (%s): %s", message.split("\n", 1)[0], error)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """Tell systemd that start-up is complete (migrated, caught up, listening)."""
    return notify("READY=1" + (f"\nSTATUS={status}" if status else ""))


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds (`WATCHDOG_USEC`), None when no watchdog is asked for.

    Like sd_watchdog_enabled(): a `WATCHDOG_PID` naming another process means not for us.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        if usec:
            log.warning("WATCHDOG_USEC=%r is not a number: no watchdog pings", usec)
        return None
    return value / 1_000_000 if value > 0 else None


class Watchdog:
    """A thread that pings every `interval` seconds while `problems()` is empty; stoppable.

    `problems()` gives the reasons the daemon is unhealthy (`Health.problems`).
    """

    def __init__(self, problems: Callable[[], Sequence[str]], interval: float):
        self._problems = problems
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sd-watchdog", daemon=True)
        self._withholding = False

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            try:
                self.beat()
            except Exception:  # log, keep going: a bad tick must not end the pings for good
                log.exception("watchdog check failed; no ping this time")
            if self._stop.wait(self.interval):
                return

    def beat(self) -> bool:
        """One tick: ping if healthy; True when a ping was sent."""
        problems = self._problems()
        if not problems:
            if self._withholding:
                log.info("healthy again: watchdog pings resume")
                self._withholding = False
            return watchdog()
        if not self._withholding:
            log.error(
                "unhealthy (%s): withholding watchdog pings so that systemd restarts the daemon",
                "; ".join(problems),
            )
            self._withholding = True
        return False


def start_watchdog(problems: Callable[[], Sequence[str]]) -> Watchdog | None:
    """Start pinging at half the watchdog timeout (systemd's advice); None without a watchdog."""
    timeout = watchdog_interval()
    if timeout is None:
        return None
    log.info("systemd watchdog: %.0f s; pinging every %.1f s while healthy", timeout, timeout / 2)
    return Watchdog(problems, timeout / 2).start()
