"""Time at the edges: Envoy's timestamps in, a location's local time out.

Inside, an instant is an integer UTC epoch. Entry times arrive as `YYYY-MM-DD HH:MM:SS`
meaning UTC; invite arrivals as ISO 8601 (with an offset or `Z`; naive means UTC).

Reading is bounded and writing never raises: an instant outside 1970..3000 is a corrupt
value rather than a visit (and `datetime` overflows past year 9999, which one absurd epoch
or duration reaches), so `parse_instant` calls it unreadable, and the formatters render
whatever was stored (a status page must show a bad row, not crash on it).
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MIN_EPOCH = 0  # 1970-01-01T00:00:00Z
MAX_EPOCH = 32503680000  # 3000-01-01T00:00:00Z: room for any visit plus any duration


def _plausible(epoch: int) -> int | None:
    return epoch if MIN_EPOCH <= epoch <= MAX_EPOCH else None


def parse_instant(value) -> int | None:
    """Epoch seconds from Envoy's formats (or an epoch number); None if absent, unreadable
    or outside MIN_EPOCH..MAX_EPOCH (NaN and infinities included)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if MIN_EPOCH <= value <= MAX_EPOCH else None  # NaN compares False
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return _plausible(int(moment.timestamp()))
    except (ValueError, OverflowError):  # year 9999 with a negative offset overflows
        return None


def zone(name: str | None) -> ZoneInfo:
    """The location's zone, UTC when it is unknown or invalid."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _at(epoch: int, tz) -> datetime | None:
    """The instant in `tz`, or None where `datetime` cannot represent it."""
    try:
        return datetime.fromtimestamp(epoch, tz)
    except (OverflowError, OSError, ValueError):
        return None


def _unrepresentable(epoch) -> str:
    return f"epoch {epoch} (out of range)"


def local_time(epoch: int, zone_name: str | None, pattern: str = "%Y-%m-%d %H:%M %Z") -> str:
    """`epoch` as wall-clock text in the zone; never raises (see the module's docstring)."""
    moment = _at(epoch, zone(zone_name))
    return moment.strftime(pattern) if moment else _unrepresentable(epoch)


def local_clock(epoch: int, zone_name: str | None) -> str:
    return local_time(epoch, zone_name, "%H:%M")


def local_window(start: int, end: int | None, zone_name: str | None) -> str:
    """`09:45–12:00 (America/New_York)`, with dates when the window spans days."""
    tz = zone(zone_name)
    label = zone_name or "UTC"
    begin = _at(start, tz)
    text_begin = f"{begin:%Y-%m-%d %H:%M}" if begin else _unrepresentable(start)
    if end is None:
        return f"from {text_begin} ({label})"
    finish = _at(end, tz)
    if begin and finish and finish.date() == begin.date():
        return f"{begin:%H:%M}–{finish:%H:%M} ({label})"
    text_end = f"{finish:%Y-%m-%d %H:%M}" if finish else _unrepresentable(end)
    return f"{text_begin}–{text_end} ({label})"


def iso_utc(epoch: int) -> str:
    return local_time(epoch, "UTC", "%Y-%m-%dT%H:%M:%SZ")
