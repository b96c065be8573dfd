"""Time at the edges: Envoy's timestamp formats in, a location's local time out.

Inside, an instant is an integer UTC epoch. Entry times arrive as `YYYY-MM-DD HH:MM:SS`
meaning UTC; invite arrivals as ISO 8601 (with an offset or `Z`; naive means UTC).
"""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def parse_instant(value) -> int | None:
    """Epoch seconds from Envoy's formats (or an epoch number); None if absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def zone(name: str | None) -> ZoneInfo:
    """The location's zone, UTC when it is unknown or invalid."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_clock(epoch: int, zone_name: str | None) -> str:
    return datetime.fromtimestamp(epoch, zone(zone_name)).strftime("%H:%M")


def local_window(start: int, end: int | None, zone_name: str | None) -> str:
    """`09:45–12:00 (America/New_York)`, with dates when the window spans days."""
    tz = zone(zone_name)
    begin = datetime.fromtimestamp(start, tz)
    label = zone_name or "UTC"
    if end is None:
        return f"from {begin:%Y-%m-%d %H:%M} ({label})"
    finish = datetime.fromtimestamp(end, tz)
    if finish.date() == begin.date():
        return f"{begin:%H:%M}–{finish:%H:%M} ({label})"
    return f"{begin:%Y-%m-%d %H:%M}–{finish:%Y-%m-%d %H:%M} ({label})"


def iso_utc(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
