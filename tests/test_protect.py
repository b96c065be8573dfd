"""Envoy Protect: employees' existing Proxy access on at sign-in, off within time frames."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine

from daemon.rules.access_hours import parse_hours, window_around
from daemon.rules.policy import Close, Ignore, Open
from daemon.rules.protect import plan_employee
from daemon.rules.settings import Settings
from daemon.rules.visits import Visit

NY, BERLIN = "America/New_York", "Europe/Berlin"
PROTECT = {"protect_enabled": True, "protect_excluded_employees": ["e-3"]}


def _at(zone: str, text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp())


def _local(epoch: int, zone: str) -> str:
    return datetime.fromtimestamp(epoch, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def _visit(signed_in_at: int, employee_id="e-1", email="erin@example.com", **extra) -> Visit:
    return Visit(kind="entries", id="900", full_name="Erin Employee", email=email, phone=None,
                 photo_url=None, flow_id="flow-employee", flow_name="Employee registration",
                 signed_in_at=signed_in_at, employee_id=employee_id, employee_screening=True,
                 **extra)  # fmt: skip


def _plan(event, visit, now, zone=NY, **config):
    settings = Settings.from_config({**PROTECT, **config})
    return plan_employee(event, visit, settings, now, zone)


# --- the pure policy ---------------------------------------------------------------------


def test_protect_disabled_ignores_employee_events():
    plan = plan_employee("employee_entry_sign_in", _visit(0), Settings.from_config({}), 0, NY)
    assert plan == Ignore(400, "Envoy Protect is not enabled for this install")


def test_excluded_employee_is_ignored_with_the_reason():
    plan = _plan("employee_entry_sign_in", _visit(0, employee_id="e-3"), 0)
    assert isinstance(plan, Ignore) and plan.status == 400 and "e-3 is excluded" in plan.message


def test_without_limits_access_opens_with_no_end_and_sign_out_leaves_it():
    now = _at(NY, "2026-06-01 09:00")
    plan = _plan("employee_entry_sign_in", _visit(now), now)
    assert isinstance(plan, Open) and plan.ends_at is None
    out = _plan("employee_entry_sign_out", _visit(now), now + 60)
    assert isinstance(out, Ignore) and out.status == 400 and "sign-out leaves access" in out.message


def test_limit_ends_after_the_duration_and_sign_out_closes():
    now = _at(NY, "2026-06-01 09:00")
    plan = _plan("employee_entry_sign_in", _visit(now), now, protect_limit_access=True,
                 protect_access_duration_minutes=120)  # fmt: skip
    assert plan.ends_at == now + 7200
    out = _plan("employee_entry_sign_out", _visit(now), now + 60, protect_limit_access=True)
    assert isinstance(out, Close) and out.at == now + 60


def test_sign_in_outside_the_hours_gets_nothing_and_names_the_local_window():
    now = _at(NY, "2026-06-01 19:30")
    plan = _plan("employee_entry_sign_in", _visit(now), now, protect_access_hours="08:00-18:00")
    assert isinstance(plan, Ignore)
    assert "08:00–18:00 (America/New_York)" in plan.message


def test_inside_the_hours_access_ends_at_the_window_end_that_day():
    now = _at(NY, "2026-06-01 17:00")
    plan = _plan("employee_entry_sign_in", _visit(now), now, protect_access_hours="08:00-18:00")
    assert _local(plan.ends_at, NY) == "2026-06-01 18:00 EDT"


def test_a_window_crossing_midnight():
    hours = "22:00-06:00"
    late = _at(BERLIN, "2026-06-01 23:30")
    early = _at(BERLIN, "2026-06-02 05:00")
    noon = _at(BERLIN, "2026-06-02 12:00")
    assert _local(window_around(late, hours, BERLIN)[1], BERLIN) == "2026-06-02 06:00 CEST"
    assert _local(window_around(early, hours, BERLIN)[0], BERLIN) == "2026-06-01 22:00 CEST"
    assert window_around(noon, hours, BERLIN) is None


@pytest.mark.parametrize(
    ("zone", "day", "expected_open"),
    [
        # Spring forward: 02:30 does not exist; the window opens when the clock jumps to 03:00.
        (NY, "2026-03-08", "2026-03-08 03:00 EDT"),
        (BERLIN, "2026-03-29", "2026-03-29 03:00 CEST"),
    ],
)
def test_dst_spring_forward_opens_when_the_clock_jumps(zone, day, expected_open):
    moment = _at(zone, f"{day} 09:00")
    opens, closes = window_around(moment, "02:30-10:00", zone)
    assert _local(opens, zone) == expected_open
    assert _local(closes, zone) == f"{day} 10:00 {expected_open.split()[-1]}"
    assert closes - opens == 7 * 3600  # 03:00 → 10:00 on the short day


@pytest.mark.parametrize(
    ("zone", "day", "first", "second"),
    [(NY, "2026-11-01", "EDT", "EST"), (BERLIN, "2026-10-25", "CEST", "CET")],
)
def test_dst_fall_back_opens_at_the_first_and_closes_at_the_second_repeat(zone, day, first, second):
    moment = _at(zone, f"{day} 00:30")
    opens, closes = window_around(moment, "00:00-02:30", zone)
    assert _local(opens, zone) == f"{day} 00:00 {first}"
    assert _local(closes, zone) == f"{day} 02:30 {second}"
    assert closes - opens == 3.5 * 3600  # the repeated hour is inside the window


def test_a_normal_day_window_is_its_wall_clock_length_across_dst():
    for zone, day in ((NY, "2026-03-08"), (NY, "2026-11-01"), (BERLIN, "2026-03-29")):
        opens, closes = window_around(_at(zone, f"{day} 12:00"), "08:00-18:00", zone)
        assert closes - opens == 10 * 3600


@pytest.mark.parametrize("text", ["8-18", "08:00-08:00", "25:00-06:00", "08:00 - 18:60", ""])
def test_malformed_hours_are_refused(text):
    with pytest.raises(ValueError):
        parse_hours(text)


# --- through the daemon --------------------------------------------------------------------


def _employee_event(daemon, event="employee_entry_sign_in", entry_id="900", **kwargs):
    kwargs.setdefault("full_name", "Erin Employee")
    kwargs.setdefault("email", "erin@example.com")
    kwargs.setdefault("flow_id", "flow-employee")
    kwargs.setdefault("employee_id", "e-1")
    kwargs.setdefault("employee_screening", True)
    return daemon.entry(event, entry_id=entry_id, **kwargs)


def _erin(daemon):
    [person] = daemon.persons("erin@example.com")
    return person


def _statuses(person):
    return [
        s["status"] for s in sorted(person["scheduledStatuses"], key=lambda s: s["scheduledDate"])
    ]


def test_employee_sign_in_activates_their_existing_person_and_creates_nobody(daemon):
    daemon.install(**PROTECT)
    before = len(daemon.proxy.persons())
    with time_machine.travel(_at(NY, "2026-06-01 09:00"), tick=False):
        answer = daemon.deliver(_employee_event(daemon, signed_in_at=_at(NY, "2026-06-01 09:00")))
    assert answer.status_code == 200, answer.text
    assert answer.json()["attachments"][0] == {
        "type": "text", "label": "Protect access", "value": "active, with no end set"
    }  # fmt: skip
    assert len(daemon.proxy.persons()) == before
    assert _statuses(_erin(daemon)) == ["active"]
    assert _erin(daemon)["tags"] == ["staff"], "employees' groups are left alone"


def test_unknown_employee_fails_with_advice_and_proxy_is_unchanged(daemon):
    daemon.install(**PROTECT)
    before = daemon.proxy.state()["persons"]
    answer = daemon.deliver(_employee_event(daemon, email="nobody@example.com", signed_in_at=0))
    assert answer.status_code == 412
    assert "add the employee in Proxy" in answer.json()["message"]
    assert daemon.proxy.state()["persons"] == before


def test_excluded_employee_is_ignored_through_the_api(daemon):
    daemon.install(**PROTECT)
    answer = daemon.deliver(_employee_event(daemon, employee_id="e-3", email="alex@example.com",
                                         signed_in_at=0))  # fmt: skip
    assert answer.status_code == 400 and "excluded" in answer.json()["message"]


def test_email_comes_from_envoys_user_api_when_the_entry_has_none(daemon):
    daemon.install(**PROTECT)
    answer = daemon.deliver(_employee_event(daemon, email=None, signed_in_at=0))
    assert answer.status_code == 200, answer.text
    assert _statuses(_erin(daemon)) == ["active"]


def test_screening_flow_entry_events_count_as_protect(daemon):
    daemon.install(**PROTECT)
    answer = daemon.deliver(_employee_event(daemon, event="entry_sign_in", signed_in_at=0))
    assert answer.status_code == 200
    assert daemon.grants()[0].kind == "employee"


def test_access_hours_end_access_at_the_window_end_in_local_time(daemon):
    daemon.install(**PROTECT, protect_access_hours="08:00-18:00")
    signed_in = _at(NY, "2026-06-01 17:00")
    with time_machine.travel(signed_in, tick=False):
        answer = daemon.deliver(_employee_event(daemon, signed_in_at=signed_in))
    assert answer.json()["attachments"][0]["value"] == "until 18:00 America/New_York"
    with time_machine.travel(_at(NY, "2026-06-01 18:00") + 1, tick=False):
        daemon.run_due()
    assert _statuses(_erin(daemon))[-1] == "suspended"
    assert daemon.grants()[0].state == "ended"


def test_limited_access_ends_at_sign_out_and_duplicates_change_nothing(daemon):
    daemon.install(**PROTECT, protect_limit_access=True, protect_access_duration_minutes=480)
    signed_in = _at(NY, "2026-06-01 09:00")
    with time_machine.travel(signed_in, tick=False):
        sign_in = _employee_event(daemon, signed_in_at=signed_in)
        assert daemon.deliver(sign_in).status_code == 200
        assert daemon.deliver(sign_in).status_code == 200
    with time_machine.travel(signed_in + 3600, tick=False):
        sign_out = _employee_event(daemon, "employee_entry_sign_out", signed_in_at=signed_in,
                                   signed_out_at=signed_in + 3600)  # fmt: skip
        assert daemon.deliver(sign_out).status_code == 200
        assert daemon.deliver(sign_out).status_code == 200
    # active at sign-in, suspended at sign-out, and Proxy's own net at the 8-hour limit;
    # the duplicate deliveries added nothing.
    assert _statuses(_erin(daemon)) == ["active", "suspended", "suspended"]
    assert [g.state for g in daemon.grants()] == ["ended"]


def test_sign_out_before_sign_in_was_processed_keeps_access_off(daemon):
    daemon.install(**PROTECT, protect_limit_access=True)
    assert daemon.deliver(_employee_event(daemon, "employee_entry_sign_out", signed_in_at=0,
                                       signed_out_at=1)).status_code == 200  # fmt: skip
    assert daemon.deliver(_employee_event(daemon, signed_in_at=0)).status_code == 400
    assert _erin(daemon)["scheduledStatuses"] == []


def test_employee_signing_in_twice_a_day_keeps_access_until_the_last_visit_ends(daemon):
    daemon.install(**PROTECT, protect_limit_access=True, protect_access_duration_minutes=240)
    morning = _at(NY, "2026-06-01 08:00")
    with time_machine.travel(morning, tick=False):
        daemon.deliver(_employee_event(daemon, entry_id="901", signed_in_at=morning))
    with time_machine.travel(morning + 3 * 3600, tick=False):
        daemon.deliver(_employee_event(daemon, entry_id="902", signed_in_at=morning + 3 * 3600))
    with time_machine.travel(morning + 4 * 3600 + 1, tick=False):
        daemon.run_due()  # the first visit's duration lapses; the second still needs access
        assert [g.state for g in daemon.grants()] == ["ended", "active"]
    # The first visit's net fired in Proxy; the daemon turned access on again just after it
    # (Proxy's schedule holds no future `active` that an ended visit could leave behind).
    with time_machine.travel(morning + 4 * 3600 + 10, tick=False):
        assert _erin(daemon)["status"] == "active"
    with time_machine.travel(morning + 7 * 3600 + 1, tick=False):
        daemon.run_due()
        assert [g.state for g in daemon.grants()] == ["ended", "ended"]
        assert _erin(daemon)["status"] == "suspended"


def test_overdue_employee_end_runs_after_a_restart(daemon):
    daemon.install(**PROTECT, protect_limit_access=True, protect_access_duration_minutes=60)
    signed_in = _at(NY, "2026-06-01 09:00")
    with time_machine.travel(signed_in, tick=False):
        daemon.deliver(_employee_event(daemon, signed_in_at=signed_in))
    # The daemon was down at 10:00; it comes back at 13:00 and catches up.
    with time_machine.travel(signed_in + 4 * 3600, tick=False):
        daemon.run_due()
        assert _erin(daemon)["status"] == "suspended"


def test_proxy_outage_during_employee_sign_in_answers_202_then_converges(daemon):
    daemon.install(**PROTECT)
    daemon.proxy.add_fault(status=503)
    answer = daemon.send(_employee_event(daemon, signed_in_at=0))
    assert answer.status_code == 202
    daemon.run_due()
    daemon.proxy.clear_faults()
    [action] = [a for a in daemon.actions() if a.kind == "issue"]
    with time_machine.travel(action.next_attempt_at + 1, tick=False):
        daemon.run_due()
    assert _statuses(_erin(daemon)) == ["active"]
