"""What cannot be stored is refused at the edge with a 400 that says why, and nothing is
stored: lone surrogates (in values and keys), deep nesting, non-finite and oversized numbers.
Checked on the parsing function and on signed requests to every route."""

import json

import pytest
import requests

import db
from daemon.rules.request import BadRequest
from daemon.rules.visits import usable_email
from sandbox.envoy import route_body, sign
from web.json_body import MAX_DEPTH, nesting_depth, parse_body


def _refusal(raw: bytes) -> str:
    with pytest.raises(BadRequest) as refused:
        parse_body(raw)
    assert refused.value.status == 400
    return str(refused.value)


# -- the parsing function ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (rb'{"meta": {"company": {"attributes": {"name": "Acme \ud800"}}}}', "meta.company"),
        (rb'{"meta": {"location": {"attributes": {"timezone": "\udfff"}}}}', "timezone"),
        (rb'{"meta": {"plugin_id": "p\ud83d"}}', "`meta.plugin_id`"),
        (rb'{"payload": {"attributes": {"full-name": ["ok", "\ude00x"]}}}', "full-name.1"),
        (rb'{"meta": {"\ud800": 1}}', "a key in `meta`"),
        (rb'{"\udc00": 1}', "a key in the body"),
    ],
)
def test_a_lone_surrogate_anywhere_is_refused_naming_where(raw, where):
    message = _refusal(raw)
    assert "not valid Unicode" in message and where in message


def test_a_surrogate_pair_is_an_ordinary_character():
    assert parse_body(rb'{"name": "Ann \ud83d\ude00"}') == {"name": "Ann \U0001f600"}
    assert parse_body(rb'{"text": "\\ud800"}') == {"text": "\\ud800"}  # an escaped backslash


def test_nesting_up_to_the_limit_parses_and_beyond_is_refused():
    inside = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert parse_body(f'{{"a": {inside}}}'.encode())["a"]
    deeper = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert "nested more than 64" in _refusal(f'{{"a": {deeper}}}'.encode())


def test_nesting_far_past_the_recursion_limit_is_refused_not_crashed():
    assert "nested" in _refusal(b'{"a": ' + b"[" * 200_000)


def test_brackets_inside_strings_and_escaped_quotes_are_not_nesting():
    text = r'{"a": "[[[{{{\"[[[", "b": ["\\", "]]]"]}'
    assert nesting_depth(text) == 2
    assert parse_body(text.encode())["a"] == '[[[{{{"[[['


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_constants_are_refused(constant):
    assert constant.decode() in _refusal(b'{"a": {"signed-in-at": ' + constant + b"}}")


@pytest.mark.parametrize(
    "number", [b"1e400", b"-1e400", b"9223372036854775808", b"-9223372036854775809", b"9" * 5000]
)
def test_numbers_that_cannot_be_stored_are_refused(number):
    assert "too large" in _refusal(b'{"a": ' + number + b"}")


def test_numbers_that_fit_are_kept():
    body = parse_body(b'{"a": -9223372036854775808, "b": 9223372036854775807, "c": 1.5e300}')
    assert body == {"a": -(2**63), "b": 2**63 - 1, "c": 1.5e300}


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"\xed\xa0\x80", "not UTF-8"), (b"[]", "JSON object"), (b'{"a": }', "not valid JSON")],
)
def test_other_bad_bodies_keep_their_reasons(raw, message):
    assert message in _refusal(raw)


# -- signed requests ---------------------------------------------------------------------------


def _stored_nothing() -> bool:
    with db.database.connection_context():
        return all(
            getattr(db, table).select().count() == 0
            for table in ("Install", "Event", "Grant", "Action", "Verification")
        )


def _post(daemon, raw: bytes, path: str):
    headers = {"Content-Type": "application/json", "X-Envoy-Signature": sign("sim-secret", raw)}
    return requests.post(daemon.url + path, data=raw, headers=headers, timeout=10)


def _protect_step(**meta_changes) -> dict:
    body = route_body("/envoy/setup/protect", payload={"protect_enabled": True})
    body["meta"].update(meta_changes)
    return body


def _entry(daemon) -> dict:
    return daemon.entry(
        entry_id="e-1", full_name="A", email="a@example.com", flow_id="f", signed_in_at=1e9
    )


POISONED = [
    ("company", {"id": "c-1", "attributes": {"name": "Acme \ud800"}}),
    ("location", {"id": "loc-1", "attributes": {"name": "HQ", "timezone": "Europe/Paris\udc00"}}),
    ("plugin_id", "plugin-\ud83d"),
    ("config", {"\ud800": 1}),
]


@pytest.mark.parametrize(("key", "value"), POISONED, ids=[key for key, _ in POISONED])
def test_a_setup_step_with_a_lone_surrogate_in_meta_is_400_and_stores_nothing(daemon, key, value):
    raw = json.dumps(_protect_step(**{key: value})).encode()  # ensure_ascii: `\ud800` escapes
    answer = _post(daemon, raw, "/envoy/setup/protect")
    assert answer.status_code == 400, answer.text
    assert "not valid Unicode" in answer.json()["message"]
    assert _stored_nothing()


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/envoy/setup/customization", {"access_duration_minutes": "Infinity"}),
        ("/envoy/options/durations", None),
        ("/envoy/hooks/identity-verification", None),
    ],
)
def test_deep_nesting_on_any_route_is_400_and_stores_nothing(daemon, path, payload):
    body = json.dumps(route_body(path, payload=payload))
    raw = (body[:-1] + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}").encode()
    answer = _post(daemon, raw, path)
    assert answer.status_code == 400, answer.text
    assert "nested" in answer.json()["message"]
    assert _stored_nothing()


@pytest.mark.parametrize("value", ["Infinity", "NaN", "1e400", "1" + "0" * 30])
def test_a_non_finite_or_huge_sign_in_time_on_the_identity_hook_is_400(daemon, value):
    daemon.install()
    body = _entry(daemon)
    body["payload"]["attributes"]["signed-in-at"] = "@"
    raw = json.dumps(body).replace('"@"', value)
    answer = _post(daemon, raw.encode(), "/envoy/hooks/identity-verification")
    assert answer.status_code == 400, answer.text
    with db.database.connection_context():
        assert db.Verification.select().count() == 0


def test_an_event_with_a_lone_surrogate_is_400_and_stores_nothing(daemon):
    body = _entry(daemon)
    body["meta"]["company"]["attributes"]["name"] = "Acme \ud800"
    answer = _post(daemon, json.dumps(body).encode(), "/envoy/events")
    assert answer.status_code == 400, answer.text
    assert "meta.company.attributes.name" in answer.json()["message"]
    assert _stored_nothing()


def test_an_address_longer_than_rfc_5321_allows_is_not_usable():
    assert usable_email(f"{'a' * 64}@{'b' * 182}.example") is None  # 255 characters
    assert usable_email(f" {'a' * 64}@{'b' * 181}.Example ") == f"{'a' * 64}@{'b' * 181}.example"


def test_an_address_that_cannot_be_stored_is_not_usable():
    """Employee emails come from Envoy's user API, parsed with Python's json too."""
    assert usable_email("ann\ud800@example.com") is None


def test_a_pathological_email_is_answered_at_once_not_after_a_minute(daemon):
    """Before: the email pattern backtracked quadratically, ~1 min of CPU for this body."""
    body = _entry(daemon)
    body["payload"]["attributes"]["email"] = "a@" + "b." * 100_000 + "@"
    answer = daemon.send(body, path="/envoy/hooks/identity-verification", timeout=10)
    assert answer.status_code < 500, answer.text
