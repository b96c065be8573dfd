"""Bad input: property-based fuzzing of every route's bodies, headers and signatures.

Valid bodies of every kind are mutated (subtrees replaced by any JSON or removed, members
given wrong types, or poisoned with what nothing can store: lone surrogates in values and
keys, nesting past the limit, NaN/Infinity, 1e400, integers past 64 bits or 4,300 digits)
and re-signed with the daemon's secret, so they reach the parser, the domain and Proxy.
Properties: never a 5xx, never a stall, never a dead daemon; a request without a valid
signature changes nothing (row counts of every table are unchanged); a signed poisoned body
is a 400 and changes nothing; the daemon is healthy afterwards.

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
    EnvoySim,
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
# What a request writes before it is answered. The rest changes in the background, whatever
# the request being checked: the scheduler adds actions and settles job waits, and the
# identity hook records its decision after answering within its deadline.
TABLES = ("Install", "Event", "Grant", "WatchlistEntry")
STALL_SECONDS = 15  # Envoy gives up at 30; a webhook waits for Proxy at most its budget

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
                                           "a@b.co", "grp-visitors", "install-1",
                                           "a@" + "b." * 50_000 + "@"]),
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _templates() -> list[tuple[tuple[str, ...], dict]]:
    """Well-formed bodies of every kind with the routes that take them: the starting points
    of mutation."""
    now = time.time()
    visit = {"full_name": "Fuzz", "email": "fuzz@example.com", "flow_id": "flow-visitor",
             "config": SITE_CONFIG}  # fmt: skip
    hook = "/envoy/hooks/identity-verification"
    events = [
        (("/envoy/events", hook), entry_event(e, entry_id="f1", signed_in_at=now, **visit))
        for e in EVENTS[:2]
    ]
    events += [
        (("/envoy/events",), invite_event(e, invite_id="f2", expected_arrival=now, **visit))
        for e in EVENTS[2:6]
    ]
    events.append((("/envoy/events",),
                   entry_event(EVENTS[6], entry_id="f3", signed_in_at=now, employee_id="e-1",
                               employee_screening=True, **visit)))  # fmt: skip
    setup = route_body("/setup", payload={"proxy_app_key": "app-key",
                                          "proxy_app_secret": "app-secret"})  # fmt: skip
    options = route_body("/options", params={"search": "Lobby", "page": 1})
    selected = route_body("/selected", params={"value": ["site-1", "grp-visitors"]})
    return [
        *events,
        (tuple(f"/envoy/setup/{step}" for step in STEPS), setup),
        (tuple(f"/envoy/options/{name}" for name in DROPDOWNS), options),
        (tuple(f"/envoy/selected/{name}" for name in DROPDOWNS), selected),
    ]


TEMPLATES = _templates()
ROUTES = frozenset(path for routes, _ in TEMPLATES for path in routes)

# What Python's json reads or writes but nothing downstream can store; each must be refused
# at the edge with a 400. Texts json.dumps cannot write (deep nesting, 5,000 digits) travel
# as a marker string that `_render` swaps for the raw text.
_RAW_MARK = "\x00raw{}\x00"
RAW = ("NaN", "Infinity", "-Infinity", "1e400", "-1e999", "9" * 5000, str(2**64),
       str(-(2**63) - 1), "[" * 65 + "]" * 65, "[" * 50_000 + "]" * 50_000,
       '{"a":' * 65 + "0" + "}" * 65)  # fmt: skip
# One lone surrogate, as a JavaScript client sends when it cuts an emoji in half.
lone_surrogates = st.builds(
    "{}{}{}".format, st.text(max_size=6), st.integers(0xD800, 0xDFFF).map(chr), st.text(max_size=6)
)
poisons = st.one_of(
    lone_surrogates,
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.sampled_from(range(len(RAW))).map(_RAW_MARK.format),
)


def _render(body) -> bytes:
    text = json.dumps(body, separators=(",", ":"))  # ASCII: a surrogate travels as \udxxx
    for index, raw in enumerate(RAW):
        text = text.replace(json.dumps(_RAW_MARK.format(index)), raw)
    return text.encode()


def _leaf_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _leaf_paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _leaf_paths(inner, (*prefix, i))
    yield prefix


def _spot(draw, body) -> tuple[dict | list, object] | None:
    """A random (parent, key-or-index) of the body, at any depth; None if it has none."""
    spots = [p for p in _leaf_paths(body) if p]
    if not spots:
        return None
    where = draw(st.sampled_from(spots))
    parent = body
    for step in where[:-1]:
        parent = parent[step]
    return parent, where[-1]


@st.composite
def mutated(draw, template: dict) -> dict:
    """The template with a few subtrees replaced by arbitrary JSON (any type) or removed."""
    body = json.loads(json.dumps(template))
    for _ in range(draw(st.integers(0, 4))):
        spot = _spot(draw, body)
        if spot is None:
            break
        parent, key = spot
        if isinstance(parent, dict) and draw(st.booleans()):
            parent.pop(key, None)
        else:
            parent[key] = draw(json_values)
    return body


@st.composite
def confused(draw, template: dict) -> dict:
    """The template whose `meta` or `payload` members get values of the wrong type."""
    body = json.loads(json.dumps(template))
    for _ in range(draw(st.integers(1, 3))):
        part = body.get(draw(st.sampled_from(["meta", "payload"])))
        if isinstance(part, dict) and draw(st.booleans()):
            inner = part.get(draw(st.sampled_from(["attributes", "relationships"])))
            part = inner if isinstance(inner, dict) else part
        if isinstance(part, dict) and part:
            part[draw(st.sampled_from(sorted(part)))] = draw(json_values)
    return body


@st.composite
def poisoned(draw, template: dict) -> dict:
    """The template carrying 1-3 things nothing can store (`poisons` as values, lone
    surrogates as keys) at any depth; a later one may move or replace an earlier one, never
    remove the last."""
    body = json.loads(json.dumps(template))
    for _ in range(draw(st.integers(1, 3))):
        parent, key = _spot(draw, body)
        if isinstance(parent, dict) and draw(st.booleans()):
            parent[draw(lone_surrogates)] = parent.pop(key)
        else:
            parent[key] = draw(poisons)
    return body


MUTATIONS = {"mutated": mutated, "confused": confused, "poisoned": poisoned}
WRONG_TYPES = (None, True, 0, -1, 2**63 - 1, 1.5, "", "x", [], {}, ["x"], {"id": "x"})


def retyped(template: dict):
    """(path, value, body): the template with one member of another type, for every member
    at any depth and every type of WRONG_TYPES; the systematic twin of `confused`."""
    for where in [p for p in _leaf_paths(template) if p]:
        for value in WRONG_TYPES:
            body = json.loads(json.dumps(template))
            parent = body
            for step in where[:-1]:
                parent = parent[step]
            parent[where[-1]] = value
            yield where, value, body


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: bytes
    headers: dict
    signed: bool
    poisoned: bool = False

    @property
    def must_be_refused(self) -> bool:
        """Signed, posted to a route, carrying a poison: the edge must answer 400."""
        return self.poisoned and self.signed and self.path in ROUTES

    def __repr__(self) -> str:  # hypothesis prints the falsifying example
        return f"Case({self.method} {self.path} signed={self.signed} body={self.body[:300]!r})"


@st.composite
def cases(draw, secret=CLIENT_SECRET, signed_share=0.5, kinds=(*MUTATIONS, "json", "bytes")):
    """A request; valid bodies mutated by `kinds` are re-signed (share `signed_share`) and go
    to a route that takes them (a poisoned one always, others half the time)."""
    kind = draw(st.sampled_from(kinds))
    path = draw(paths)
    if kind in MUTATIONS:
        routes, template = draw(st.sampled_from(TEMPLATES))
        if kind == "poisoned" or draw(st.booleans()):
            path = draw(st.sampled_from(routes))
        raw = _render(draw(MUTATIONS[kind](template)))
    elif kind == "json":
        raw = json.dumps(draw(json_values)).encode()
    else:
        raw = draw(st.binary(max_size=300))
    method = "GET" if path == "/healthz" else draw(st.sampled_from(["POST"] * 9 + ["PUT"]))
    headers = {"Content-Type": draw(st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))}  # fmt: skip
    valid = draw(st.floats(0, 1, exclude_max=True)) < signed_share
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
    return Case(method, path, raw, headers, valid and method == "POST", kind == "poisoned")


@dataclass
class FuzzResult:
    examples: int = 0
    statuses: Counter = field(default_factory=Counter)
    unsigned: int = 0
    refused: int = 0  # signed poisoned bodies answered 400 with nothing stored
    slowest: float = 0.0  # seconds, of any one answer

    def describe(self) -> str:
        return (
            f"{self.examples} requests ({self.unsigned} without a valid signature, "
            f"{self.refused} signed and poisoned), statuses "
            f"{dict(sorted(self.statuses.items()))}, slowest answer {self.slowest:.2f} s"
        )


def fuzz(
    url: str,
    row_counts: Callable[[], dict],
    examples: int,
    seed_value: int = 4,
    signed_share: float = 0.5,
    secret: str = CLIENT_SECRET,
    kinds: tuple[str, ...] = (*MUTATIONS, "json", "bytes"),
) -> FuzzResult:
    """Run the properties; raises AssertionError (hypothesis' shrunk example) on a violation.

    Every answer is < 500 and comes within STALL_SECONDS; an unsigned request and a signed
    poisoned one change no row, and the latter is a 400; the daemon is healthy afterwards.
    """
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
    @given(case=cases(secret, signed_share, kinds))
    def check(case: Case) -> None:
        unchanged = not case.signed or case.must_be_refused
        before = row_counts() if unchanged else None
        started = time.monotonic()
        try:
            status, answer = conn.request(case.method, case.path, case.body, case.headers)
        except (OSError, http.client.HTTPException) as error:
            raise AssertionError(f"no answer (daemon down?): {error!r}") from error
        took = time.monotonic() - started
        result.examples += 1
        result.statuses[status] += 1
        result.slowest = max(result.slowest, took)
        assert status < 500, f"{status} {answer[:300]!r}"
        assert took < STALL_SECONDS, f"the answer took {took:.1f} s"
        if case.must_be_refused:
            assert status == 400, f"a poisoned body got {status} {answer[:300]!r}"
            result.refused += 1
        if not case.signed:
            result.unsigned += 1
        if unchanged:
            after = row_counts()
            assert after == before, f"{case!r} changed the database: {before} -> {after}"

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
        sandbox, envoy = Sandbox(work), EnvoySim(work)  # Envoy reachable, as at a real site
        state = work / "state"
        prepare_install(state)
        daemon = Daemon(state, sandbox.url, envoy.url).start()
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
            envoy.stop()
            sandbox.stop()
    tracebacks = log.count("Traceback")
    print(f"   {result.describe()}; daemon alive: {alive}; tracebacks in its log: {tracebacks}")
    verdicts.check(
        "never a 5xx or a stall; nothing stored unsigned or poisoned (a 400); healthy after",
        error is None and alive,
        str(error) if error else result.describe(),
    )
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
