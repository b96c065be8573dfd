"""Bad input on every route (bench/fuzz.py's properties, fast): valid bodies mutated and
re-signed; never a 5xx or a stall, nothing stored from an unsigned or a poisoned request (a
poisoned one is a 400), the daemon healthy afterwards. Seeded, without deadlines, so that a
CI run is repeatable; the long variant is `python -m bench.fuzz` against the real process."""

import json

import pytest

import db
from bench.fuzz import TABLES, TEMPLATES, fuzz, retyped
from sandbox.envoy import route_body


def _row_counts() -> dict:
    with db.database.connection_context():
        return {name: getattr(db, name).select().count() for name in TABLES}


def test_fuzzed_bodies_headers_and_signatures_never_break_the_daemon(daemon):
    daemon.install()
    result = fuzz(daemon.url, _row_counts, examples=250, seed_value=9, secret="sim-secret")
    assert result.unsigned > 50 and result.examples == 250 and result.refused > 10
    assert result.statuses[401] > 0 and result.statuses[200] > 0, result.describe()


def test_valid_bodies_poisoned_and_re_signed_are_400_and_store_nothing(daemon):
    """Lone surrogates, deep nesting, non-finite and oversized numbers, anywhere in a body
    a route takes: refused at the edge (before the fix: 500s, and rows stored)."""
    daemon.install()
    result = fuzz(
        daemon.url,
        _row_counts,
        examples=150,
        seed_value=15,
        signed_share=1.0,
        secret="sim-secret",
        kinds=("poisoned",),
    )
    assert result.refused > 120, result.describe()  # the rest were PUTs: 405
    assert set(result.statuses) <= {400, 405}, result.describe()


@pytest.mark.parametrize("auth", [True, "token", ["token"]])
def test_a_meta_auth_that_is_not_an_object_is_a_4xx_not_a_500(daemon, auth):
    """Found by bench/fuzz.py: EnvoyUserClient.from_meta called .get() on any `meta.auth`."""
    daemon.install()
    body = route_body("/options", params={"search": "Lobby"})
    body["meta"]["auth"] = auth
    answer = daemon.send(body, path="/envoy/options/flows")
    assert answer.status_code < 500, json.dumps(answer.json())


def _fresh(body: dict, where: tuple, number: int) -> dict:
    """A job id and an entry id of its own (unless one is the member retyped), so that the
    body is planned, not answered as a duplicate of the first."""
    job = body["meta"].get("job") if isinstance(body.get("meta"), dict) else None
    if isinstance(job, dict) and where != ("meta", "job", "id"):
        job["id"] = f"sweep-{number}"
    if isinstance(body.get("payload"), dict) and where != ("payload", "id"):
        body["payload"]["id"] = f"sweep-{number}"
    return body


def test_every_member_of_a_sign_in_with_any_other_type_is_answered_below_500(daemon):
    """Every member of a valid sign-in, at any depth, given each of WRONG_TYPES in turn,
    re-signed, to both routes that take a sign-in."""
    daemon.install()
    routes, template = TEMPLATES[0]
    for number, (where, value, body) in enumerate(retyped(template)):
        for path in routes:
            answer = daemon.send(_fresh(body, where, number), path=path)
            assert answer.status_code < 500, (path, where, value, answer.text)
