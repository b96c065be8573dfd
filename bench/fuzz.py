"""Bad input: property-based fuzzing of every route's bodies, headers and signatures.

Properties: never a 5xx, never a dead daemon; a request without a valid signature changes
nothing (row counts of every table are unchanged); the daemon is healthy afterwards. Signed
cases (the daemon's secret) reach the parser, the domain and Proxy.

    python -m bench.fuzz [--examples 3000] [--seed 4]
"""

import argparse
import http.client
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bench.common import (
    CLIENT_SECRET,
    SITE_CONFIG,
    Daemon,
    KeepAlive,
    Sandbox,
    Verdicts,
    daemon_db,
    prepare_install,
    print_header,
    workdir,
)
from sandbox.envoy import entry_event, invite_event, route_body, sign

STEPS = ("proxy-access", "site", "visitor-mapping", "protect", "customization")
DROPDOWNS = ("sites", "groups", "flows", "employees", "durations", "early-access",
             "protect-durations")  # fmt: skip
EVENTS = ("entry_sign_in", "entry_sign_out", "invite_created", "invite_updated",
          "invite_removed", "upcoming_visit", "employee_entry_sign_in",
          "employee_entry_sign_out", "unknown_event")  # fmt: skip
TABLES = ("Install", "Event", "Grant", "Action", "Verification", "WatchlistEntry")

names = st.sampled_from(["x", "", "..", "%2e%2e", "%C3%BC", "a" * 300, "sites%00", "1"])
paths = st.one_of(
    st.just("/envoy/events"),
    st.just("/envoy/hooks/identity-verification"),
    st.builds("/envoy/setup/{}".format, st.one_of(st.sampled_from(STEPS), names)),
    st.builds("/envoy/options/{}".format, st.one_of(st.sampled_from(DROPDOWNS), names)),
    st.builds("/envoy/selected/{}".format, st.one_of(st.sampled_from(DROPDOWNS), names)),
    st.just("/healthz"),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=40), st.sampled_from(["", "2024-02-30 25:61:00", "1970-01-01T00:00:00Z",
                                           "9999-12-31T23:59:59.999Z", "flow-visitor",
                                           "a@b.co", "grp-visitors", "install-1"]),
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _templates() -> list[dict]:
    """Well-formed bodies of every kind, the starting points of mutation."""
    now = time.time()
    visit = {"full_name": "Fuzz", "email": "fuzz@example.com", "flow_id": "flow-visitor",
             "config": SITE_CONFIG}  # fmt: skip
    bodies = [entry_event(e, entry_id="f1", signed_in_at=now, **visit) for e in EVENTS[:2]]
    bodies += [invite_event(e, invite_id="f2", expected_arrival=now, **visit) for e in EVENTS[2:6]]
    bodies.append(entry_event(EVENTS[6], entry_id="f3", signed_in_at=now, employee_id="e-1",
                              employee_screening=True, **visit))  # fmt: skip
    bodies.append(route_body("/setup", payload={"proxy_app_key": "app-key",
                                                "proxy_app_secret": "app-secret"}))  # fmt: skip
    bodies.append(route_body("/options", params={"search": "Lobby", "page": 1}))
    bodies.append(route_body("/selected", params={"value": ["site-1", "grp-visitors"]}))
    return bodies


TEMPLATES = _templates()


def _leaf_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _leaf_paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _leaf_paths(inner, (*prefix, i))
    yield prefix


@st.composite
def mutated(draw) -> dict:
    """A template with a few subtrees replaced by arbitrary JSON or removed."""
    body = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES))))
    for _ in range(draw(st.integers(0, 4))):
        spots = [p for p in _leaf_paths(body) if p]
        if not spots:
            break
        where = draw(st.sampled_from(spots))
        parent = body
        for step in where[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            parent.pop(where[-1], None)
        else:
            parent[where[-1]] = draw(json_values)
    return body


@st.composite
def confused(draw) -> dict:
    """A template whose `meta` or `payload` members get values of the wrong type."""
    body = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES))))
    for _ in range(draw(st.integers(1, 3))):
        part = body.get(draw(st.sampled_from(["meta", "payload"])))
        if isinstance(part, dict) and draw(st.booleans()):
            inner = part.get(draw(st.sampled_from(["attributes", "relationships"])))
            part = inner if isinstance(inner, dict) else part
        if isinstance(part, dict) and part:
            part[draw(st.sampled_from(sorted(part)))] = draw(json_values)
    return body


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: bytes
    headers: dict
    signed: bool

    def __repr__(self) -> str:  # hypothesis prints the falsifying example
        return f"Case({self.method} {self.path} signed={self.signed} body={self.body[:300]!r})"


@st.composite
def cases(draw, secret: str = CLIENT_SECRET, signed_share: float = 0.5) -> Case:
    path = draw(paths)
    method = "GET" if path == "/healthz" else draw(st.sampled_from(["POST"] * 9 + ["PUT"]))
    kind = draw(st.sampled_from(["mutated", "confused", "json", "bytes"]))
    if kind in ("mutated", "confused"):
        body = draw(mutated() if kind == "mutated" else confused())
        raw = json.dumps(body, separators=(",", ":")).encode()
    elif kind == "json":
        raw = json.dumps(draw(json_values)).encode()
    else:
        raw = draw(st.binary(max_size=300))
    headers = {"Content-Type": draw(st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))}  # fmt: skip
    valid = draw(st.floats(0, 1)) < signed_share
    if valid:
        headers["X-Envoy-Signature"] = sign(secret, raw)
    else:
        headers["X-Envoy-Signature"] = draw(st.one_of(
            st.just(sign("wrong-secret", raw)), st.just(sign(secret, raw + b" ")),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
            st.just(""),
        ))  # fmt: skip
        if draw(st.booleans()):
            del headers["X-Envoy-Signature"]
    if draw(st.booleans()):
        headers["X-Forwarded-For"] = draw(st.sampled_from(["1.2.3.4", "evil, 127.0.0.1", ""]))
    return Case(method, path, raw, headers, valid and method == "POST")


@dataclass
class FuzzResult:
    examples: int = 0
    statuses: Counter = field(default_factory=Counter)
    unsigned: int = 0

    def describe(self) -> str:
        return (
            f"{self.examples} requests ({self.unsigned} without a valid signature), statuses "
            f"{dict(sorted(self.statuses.items()))}"
        )


def fuzz(
    url: str,
    row_counts: Callable[[], dict],
    examples: int,
    seed_value: int = 4,
    signed_share: float = 0.5,
    secret: str = CLIENT_SECRET,
) -> FuzzResult:
    """Run the properties; raises AssertionError (hypothesis' shrunk example) on a violation."""
    result = FuzzResult()
    conn = KeepAlive(url, timeout=30)

    @seed(seed_value)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(case=cases(secret, signed_share))
    def check(case: Case) -> None:
        before = None if case.signed else row_counts()
        try:
            status, answer = conn.request(case.method, case.path, case.body, case.headers)
        except (OSError, http.client.HTTPException) as error:
            raise AssertionError(f"no answer (daemon down?): {error!r}") from error
        result.examples += 1
        result.statuses[status] += 1
        assert status < 500, f"{status} {answer[:300]!r}"
        if not case.signed:
            result.unsigned += 1
            assert row_counts() == before, "an unsigned request changed the database"

    check()
    status, _ = conn.request("GET", "/healthz")
    assert status == 200, "the daemon is not healthy after fuzzing"
    conn.close()
    return result


def db_row_counts(state) -> Callable[[], dict]:
    """Row counts of every table of the daemon's database (read from this process)."""

    def counts() -> dict:
        with daemon_db(state) as db:
            return {name: getattr(db, name).select().count() for name in TABLES}

    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__)
    parser.add_argument("--examples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)
    print_header(f"bad input: {args.examples} fuzzed requests against the daemon process")
    verdicts = Verdicts()
    with workdir("fuzz") as work:
        sandbox = Sandbox(work)
        state = work / "state"
        prepare_install(state)
        daemon = Daemon(state, sandbox.url).start()
        try:
            daemon.wait_ready()
            error = None
            try:
                result = fuzz(daemon.url, db_row_counts(state), args.examples, args.seed)
            except AssertionError as failure:
                error, result = failure, FuzzResult()
            alive = daemon.service.alive()
            log = daemon.logs()
        finally:
            daemon.stop()
            sandbox.stop()
    tracebacks = log.count("Traceback")
    print(f"   {result.describe()}; daemon alive: {alive}; tracebacks in its log: {tracebacks}")
    verdicts.check(
        "never a 5xx, nothing stored unsigned, healthy after",
        error is None and alive,
        str(error) if error else result.describe(),
    )
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
