"""The Envoy Protect policy as a pure function: employee event + settings + now → a plan.

Employees already exist in Proxy; Protect only decides when their access is on. Access opens
at sign-in (within the allowed daily hours, if set) and closes at the earliest of: the end of
those hours, the Protect duration, and — when access is limited to time frames — sign-out.
"""

from daemon.rules.access_hours import describe, window_around
from daemon.rules.policy import Close, Ignore, Open, Plan
from daemon.rules.settings import Settings
from daemon.rules.visits import Visit

EMPLOYEE_EVENTS = ("employee_entry_sign_in", "employee_entry_sign_out")


def is_employee_event(event: str, visit: Visit | None) -> bool:
    """Employee events, and entry events of an employee's screening (Protect) flow."""
    if event in EMPLOYEE_EVENTS:
        return True
    return event in ("entry_sign_in", "entry_sign_out") and bool(visit and visit.employee_screening)


def _sign_in(visit: Visit, settings: Settings, now: int, zone_name: str | None) -> Plan:
    signed_in = visit.signed_in_at or now
    ends = None
    if settings.protect_access_hours:
        window = window_around(signed_in, settings.protect_access_hours, zone_name)
        if window is None:
            allowed = describe(settings.protect_access_hours, zone_name)
            return Ignore(400, f"signed in outside the allowed Protect hours {allowed}")
        ends = window[1]
    if settings.protect_limit_access:
        limit = signed_in + settings.protect_access_duration_minutes * 60
        ends = limit if ends is None else min(ends, limit)
    if visit.signed_out_at is not None and settings.protect_limit_access:
        ends = min(ends, visit.signed_out_at)
    if ends is not None and ends <= now:
        return Ignore(400, "the employee's Protect access window is already over")
    return Open(visit.subject, now, ends, (), visit)


def plan_employee(
    event: str, visit: Visit, settings: Settings, now: int, zone_name: str | None
) -> Plan:
    """What an employee's sign-in or sign-out means for their Proxy access."""
    if not settings.protect_enabled:
        return Ignore(400, "Envoy Protect is not enabled for this install")
    if visit.employee_id and visit.employee_id in settings.protect_excluded_employees:
        return Ignore(400, f"employee {visit.employee_id} is excluded from Protect")
    if event.endswith("sign_out"):
        if not settings.protect_limit_access:
            return Ignore(
                400, "Protect does not limit access to time frames: sign-out leaves access as is"
            )
        return Close(visit.subject, now, visit)
    if visit.email is None:
        return Ignore(
            412, "the employee has no email in Envoy, so their Proxy person cannot be found"
        )
    return _sign_in(visit, settings, now, zone_name)
