"""The state Proxy should be in after a sequence of Envoy events, from the rules alone.

Written from the README's rules, not from the daemon's code: one access window per subject
(an invite, or a walk-in entry; an entry of an invite belongs to the invite), opened or
moved by sign-ins and invites, closed for good by a sign-out or a removal (a close that comes
first leaves a tombstone, so the late sign-in is a no-op). At an instant T a visitor has an
active credential, tagged with the tags of their flow's groups, exactly when a live window of
theirs contains T. Protect employees exist in Proxy already: a sign-in activates them (within
the Protect duration), a sign-out suspends them when access is limited to time frames.

`Oracle.apply()` takes the events in the order the daemon first accepted each (duplicates of
one job id count once); `compare()` checks a snapshot of the sandbox against `expected()`.
"""

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

from bench.common import GROUP_TAGS

FOREVER = float("inf")


def _instant(text) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    text = text.replace("Z", "+00:00")
    if "T" not in text:
        text = text.replace(" ", "T") + "+00:00"
    return datetime.fromisoformat(text).timestamp()


def _email(value) -> str | None:
    if not isinstance(value, str) or "@" not in value or "." not in value.split("@")[-1]:
        return None
    return value.strip().lower()


def _related(payload: dict, name: str) -> str | None:
    data = (payload.get("relationships", {}).get(name) or {}).get("data") or {}
    return str(data["id"]) if data.get("id") is not None else None


@dataclass
class Window:
    email: str | None
    starts: float
    ends: float
    tags: frozenset[str]
    employee: bool = False
    closed: bool = False


@dataclass
class Oracle:
    config: dict
    windows: dict[str, Window] = field(default_factory=dict)
    employees: dict[str, dict] = field(default_factory=dict)  # email -> seeded person
    # Every change of a window, as it stood after the change: (instant, subject, window).
    changes: list[tuple[float, str, Window]] = field(default_factory=list)

    def _tags(self, flow: str | None) -> frozenset[str] | None:
        groups = self.config.get("visitor_mapping", {}).get(flow or "")
        return frozenset(GROUP_TAGS[g] for g in groups) if groups else None

    def apply(self, body: dict, now: float) -> None:
        """One accepted event, processed by the daemon at about `now`."""
        event = body["meta"]["event"]
        payload = body["payload"]
        attributes = payload["attributes"]
        kind, ident = payload["type"], str(payload["id"])
        if event.startswith("employee_") or attributes.get("employee-screening-flow"):
            return self._employee(event, ident, attributes, now)
        flow = attributes.get("flow-id") or _related(payload, "flow")
        if event in ("entry_sign_in", "entry_sign_out"):
            invite = _related(payload, "invite")
            subject = f"invites:{invite}" if invite else f"entries:{ident}"
            if event == "entry_sign_out":
                return self._close(subject, now)
            tags, email = self._tags(str(flow)), _email(attributes.get("email"))
            if tags is None or email is None:
                return None
            ends = _instant(attributes["signed-in-at"]) + self._minutes("access_duration") * 60
            if ends > now:
                self._open(subject, Window(email, now, ends, tags), now, extend=True)
            return None
        subject = f"{kind}:{ident}"
        if event == "invite_removed":
            return self._close(subject, now)
        tags, email = self._tags(str(flow)), _email(attributes.get("email"))
        if tags is None or email is None:
            return None
        arrival = _instant(attributes["expected-arrival-time"])
        ends = arrival + self._minutes("access_duration") * 60
        if ends > now:
            starts = max(now, arrival - self._minutes("early_access") * 60)
            self._open(subject, Window(email, starts, ends, tags), now, extend=False)
        return None

    def _minutes(self, name: str) -> int:
        return int(self.config[f"{name}_minutes"])

    def _employee(self, event: str, ident: str, attributes: dict, now: float) -> None:
        if not self.config.get("protect_enabled"):
            return
        subject = f"entries:{ident}"
        limited = bool(self.config.get("protect_limit_access"))
        if event.endswith("sign_out"):
            if limited:
                self._close(subject, now)
            return
        email = _email(attributes.get("email"))
        if email is None:
            return
        ends = FOREVER
        if limited:
            signed_in = _instant(attributes["signed-in-at"])
            ends = signed_in + int(self.config["protect_access_duration_minutes"]) * 60
        if ends > now:
            self._open(subject, Window(email, now, ends, frozenset(), employee=True), now, False)

    def _open(self, subject: str, new: Window, now: float, extend: bool) -> None:
        old = self.windows.get(subject)
        if old is None:
            self.windows[subject] = new
        elif old.closed:
            return
        elif extend:
            old.starts, old.ends = min(old.starts, new.starts), max(old.ends, new.ends)
        else:
            # A moved window: a credential already issued keeps its start, gets the new end.
            old.starts = old.starts if old.starts <= now else new.starts
            old.ends = new.ends
        if old is not None:
            old.tags = new.tags
        self._changed(subject, now)

    def _close(self, subject: str, now: float) -> None:
        window = self.windows.get(subject)
        if window is None:
            self.windows[subject] = Window(None, 0, 0, frozenset(), closed=True)
        else:
            window.closed = True
        self._changed(subject, now)

    def _changed(self, subject: str, now: float) -> None:
        self.changes.append((now, subject, dataclasses.replace(self.windows[subject])))

    def expected(self, at: float) -> dict[str, frozenset[str] | None]:
        """Every email the events named: the tags of its active credential at `at`, or None."""
        answer: dict[str, frozenset[str] | None] = {}
        for window in self.windows.values():
            if window.email is None:
                continue
            live = not window.closed and window.starts <= at < window.ends
            if live:
                tags = window.tags if not window.employee else self._employee_tags(window.email)
                answer[window.email] = (answer.get(window.email) or frozenset()) | tags
            else:
                answer.setdefault(window.email, None)
        return answer

    def _employee_tags(self, email: str) -> frozenset[str]:
        return frozenset(self.employees.get(email, {}).get("tags", []))


def status_at(person: dict, at: float) -> str:
    """A sandbox person's status at `at` from its scheduled statuses (later entries win ties)."""
    due = [
        (_instant(s["scheduledDate"]), i, s["status"])
        for i, s in enumerate(person.get("scheduledStatuses", []))
    ]
    due = [d for d in due if d[0] <= at]
    return max(due)[2] if due else "active"


def compare(oracle: Oracle, persons: list[dict], at: float, ignore: set[str]) -> list[str]:
    """Differences between the sandbox's persons and the oracle at `at` (empty: they agree),
    each starting with its kind: access, tags, leftover-tags, duplicate or stray.

    `ignore`: emails of persons that exist for other reasons (the demo seed's staff).
    """
    problems = []
    by_email: dict[str, list[dict]] = {}
    for person in persons:
        by_email.setdefault(person["email"].lower(), []).append(person)
    for email, same in by_email.items():
        if len(same) > 1:
            problems.append(f"duplicate: persons for {email}: {[p['id'] for p in same]}")
    expected = oracle.expected(at)
    visitor_tags = set(GROUP_TAGS.values())
    for email, tags in sorted(expected.items()):
        person = (by_email.get(email) or [None])[0]
        status = status_at(person, at) if person else None
        if tags is not None:
            if status != "active":
                problems.append(f"access: {email} should be active with {sorted(tags)}, is "
                                f"{status or 'missing'}")  # fmt: skip
            elif set(person["tags"]) != set(tags):
                problems.append(f"tags: {email} should have {sorted(tags)}, has "
                                f"{sorted(person['tags'])}")  # fmt: skip
        elif person is not None:
            if status != "suspended":
                problems.append(f"access: {email} should have no access, is {status} with "
                                f"{sorted(person['tags'])}")  # fmt: skip
            elif set(person["tags"]) & visitor_tags and email not in oracle.employees:
                problems.append(f"leftover-tags: {email} is suspended but keeps "
                                f"{sorted(set(person['tags']) & visitor_tags)}")  # fmt: skip
    for email in by_email:
        if email not in expected and email not in ignore and email not in oracle.employees:
            problems.append(f"stray: {email} is a person no event asked for")
    for email, seeded in oracle.employees.items():
        if email not in expected and by_email.get(email):
            person = by_email[email][0]
            if status_at(person, at) != "suspended" or person["tags"] != seeded["tags"]:
                problems.append(f"access: {email} is an employee nobody signed in, yet changed")
    return problems


LEAD = 3  # seconds: a scheduled status lands a second or two after its instant


def timeline(
    oracle: Oracle, persons: list[dict], at: float, tolerance: float, quiet=()
) -> tuple[list[str], int]:
    """Differences between each person's status over time, replayed from its schedule as the
    sandbox applies it, and the union of its live windows as the events left them at each
    instant (empty: they agree), and how many instants were judged. Judged from the person's
    first event (or creation) to `at`: later, the daemon's own due work (a re-activation after
    a net, an invite's start) is part of the timeline, and Proxy's schedule alone does not
    say it.

    Both sides only change at a change of the windows, a window's start or end, or a scheduled
    status: they are compared just after each of those. Instants within `tolerance` s after a
    change of the person's windows (the daemon's work and its retries take that long), within
    LEAD s of a scheduled status (a net fires and the person is re-activated a second later),
    or in a `quiet` interval (Proxy down: nothing can change) are not judged.
    """
    by_email: dict[str, list[tuple[float, str, Window]]] = {}
    for change in sorted(oracle.changes, key=lambda c: c[0]):
        if change[2].email is not None:
            by_email.setdefault(change[2].email, []).append(change)
    persons_by_email = {p["email"].lower(): p for p in persons}
    problems, judged = [], 0
    for email, changes in sorted(by_email.items()):
        person = persons_by_email.get(email)
        if person is None:
            continue  # `compare` names a missing person
        edges = {c[0] for c in changes} | _edges(changes)
        scheduled = [_instant(s["scheduledDate"]) for s in person.get("scheduledStatuses", [])]
        breaks = edges | set(scheduled) | {end for _, end in quiet} | {at}
        first = max(changes[0][0], person.get("createdAt") or 0)
        moments = sorted(
            b + margin for b in breaks for margin in (0, 0.5, LEAD + 0.5, tolerance + 0.5)
        )
        for t in (m for m in moments if first <= m <= at):
            if (
                any(-LEAD <= t - edge <= tolerance for edge in edges)
                or any(abs(t - when) <= LEAD for when in scheduled)
                or any(start <= t <= end + tolerance for start, end in quiet)
            ):
                continue
            judged += 1
            wanted, got = _live_at(changes, t), status_at(person, t)
            if (got == "active") != wanted:
                problems.append(f"timeline: {email} is {got} at {t:.0f}, its windows say "
                                f"{'active' if wanted else 'no access'}")  # fmt: skip
                break  # one difference per person is enough to read
    return problems, judged


def _edges(changes) -> set[float]:
    return {e for _, _, w in changes for e in (w.starts, w.ends) if e not in (0, FOREVER)}


def _live_at(changes, t: float) -> bool:
    """Whether some window of the person, as the changes up to `t` left it, contains `t`."""
    latest: dict[str, Window] = {}
    for when, subject, window in changes:
        if when > t:
            break
        latest[subject] = window
    return any(not w.closed and w.starts <= t < w.ends for w in latest.values())


def future_actives(persons: list[dict], at: float) -> list[str]:
    """Persons whose schedule still holds an `active` after `at`: nothing may turn access
    back on once the events are over."""
    return [
        f"future-active: {p['email']} has `active` scheduled at {s['scheduledDate']}"
        for p in persons
        for s in p.get("scheduledStatuses", [])
        if s["status"] == "active" and _instant(s["scheduledDate"]) > at
    ]
