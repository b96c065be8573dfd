"""Daily access hours ("HH:MM-HH:MM" in a location's own time zone) as UTC instants.

Local wall-clock times are turned into instants with `zoneinfo`, so DST changes are handled:
a start that falls in the spring-forward gap begins when the clock jumps (02:30 → 03:00 EDT
means the window opens at 03:00 local); a time that repeats in the autumn opens at its
first occurrence and closes at its second (the more generous reading). A window whose end is
before its start crosses midnight.
"""

import re
from datetime import date, datetime, time, timedelta

from daemon.rules.times import zone

_HOURS = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")


def parse_hours(text: str) -> tuple[time, time]:
    """`"08:00-18:00"` → (08:00, 18:00); ValueError for anything else or an empty window."""
    match = _HOURS.match(text or "")
    if not match:
        raise ValueError("access hours must look like HH:MM-HH:MM (24-hour clock)")
    start = time(int(match[1]), int(match[2]))
    end = time(int(match[3]), int(match[4]))
    if start == end:
        raise ValueError("access hours must not start and end at the same time")
    return start, end


def _wall(instant: int, zone_name: str | None) -> datetime:
    return datetime.fromtimestamp(instant, zone(zone_name)).replace(tzinfo=None)


def _instant(day: date, clock: time, zone_name: str | None, *, fold: int) -> int:
    wanted = datetime.combine(day, clock)
    instant = int(wanted.replace(tzinfo=zone(zone_name), fold=fold).timestamp())
    if _wall(instant, zone_name) == wanted:
        return instant
    # In the spring-forward gap: the first instant whose wall clock has reached `clock`.
    probe = int(wanted.replace(tzinfo=zone(zone_name), fold=1).timestamp())
    while _wall(probe, zone_name) < wanted:
        probe += 60
    return probe


def window_around(moment: int, hours: str, zone_name: str | None) -> tuple[int, int] | None:
    """The window (start, end) that contains `moment`, or None if `moment` is outside."""
    start, end = parse_hours(hours)
    today = datetime.fromtimestamp(moment, zone(zone_name)).date()
    for day in (today - timedelta(days=1), today):
        end_day = day + timedelta(days=1) if end <= start else day
        opens = _instant(day, start, zone_name, fold=0)
        closes = _instant(end_day, end, zone_name, fold=1)
        if opens <= moment < closes:
            return opens, closes
    return None


def describe(hours: str, zone_name: str | None) -> str:
    start, end = parse_hours(hours)
    return f"{start:%H:%M}–{end:%H:%M} ({zone_name or 'UTC'})"
