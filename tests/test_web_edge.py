"""The web edge: signature first, body cap, JSON errors, health; bad input changes nothing."""

import io
import json

import pytest
import requests

import db
from sandbox.envoy import entry_event, sign
from web.app import create_app
from web.signature import expected_signature, signature_is_valid


def test_signature_matches_the_protocol_test_vector():
    body = b'{"meta":{"event":"entry_sign_in"},"payload":{"id":"1","type":"entries"}}'
    assert expected_signature("test-secret", body) == "ODKM4kpCleKKkWKnKcGlTC7y/HcXhzA48+SzXIkIAxU="
    assert signature_is_valid("test-secret", body, "ODKM4kpCleKKkWKnKcGlTC7y/HcXhzA48+SzXIkIAxU=")
    assert not signature_is_valid("", body, expected_signature("", body))


def _stored_nothing():
    with db.database.connection_context():
        return db.Event.select().count() == 0 and db.Install.select().count() == 0


def _post_raw(daemon, raw: bytes, signature: str | None, path="/envoy/events"):
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Envoy-Signature"] = signature
    return requests.post(daemon.url + path, data=raw, headers=headers, timeout=10)


@pytest.mark.parametrize("signature", [None, "", "bm9wZQ==", "not base64 at all"])
def test_missing_or_wrong_signature_is_401_and_nothing_is_stored(daemon, signature):
    daemon.install()
    body = json.dumps(
        entry_event(
            entry_id="1",
            full_name="A",
            email="a@example.com",
            flow_id="flow-visitor",
            signed_in_at=0,
        )
    ).encode()
    answer = _post_raw(daemon, body, signature)
    assert answer.status_code == 401
    assert answer.headers["Content-Type"] == "application/json"
    with db.database.connection_context():
        assert db.Event.select().count() == 0 and db.Grant.select().count() == 0


def test_signature_over_other_bytes_is_refused(daemon):
    body = b'{"meta": {}}'
    answer = _post_raw(daemon, body + b" ", sign("sim-secret", body))
    assert answer.status_code == 401


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"payload": {}}', "no `meta` object"),
        (b'{"meta": []}', "no `meta` object"),
        (b'{"meta": {"event": "entry_sign_in"}}', "install_id"),
        (b'{"meta": {"install_id": "i", "event": "entry_sign_in"}}', "job.id"),
        (b'{"meta": {"install_id": "i", "event": "entry_sign_in", "job": {"id": "j"}}}', "payload"),
        (
            b'{"meta": {"install_id": "i", "event": "entry_sign_in", "job": {"id": "j"}},'
            b' "payload": {"type": "entries"}}',
            "payload.id",
        ),
    ],
)
def test_malformed_signed_bodies_get_a_clear_400_and_nothing_is_stored(daemon, raw, message):
    answer = _post_raw(daemon, raw, sign("sim-secret", raw))
    assert answer.status_code == 400
    assert message in answer.json()["message"]
    assert _stored_nothing()


def test_a_body_over_the_cap_is_413_json(daemon):
    daemon.ctx.config = daemon.ctx.config.replace(max_body_bytes=2048)
    raw = json.dumps({"meta": {"pad": "x" * 4096}}).encode()
    answer = _post_raw(daemon, raw, sign("sim-secret", raw))
    assert answer.status_code == 413
    assert answer.json() == {"message": "request body too large"}
    assert _stored_nothing()


def test_unknown_routes_and_methods_answer_json(daemon):
    missing = requests.get(daemon.url + "/nope", timeout=5)
    assert missing.status_code == 404 and "message" in missing.json()
    wrong_method = requests.get(daemon.url + "/envoy/events", timeout=5)
    assert wrong_method.status_code == 405 and "message" in wrong_method.json()


def test_healthz_reports_ok_with_the_schema_version(daemon):
    answer = requests.get(daemon.url + "/healthz", timeout=5)
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert answer.json()["schema"] == db.SCHEMA_VERSION


def test_healthz_is_503_when_the_database_does_not_answer(daemon, monkeypatch):
    def broken():
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(db, "schema_version", broken)
    answer = requests.get(daemon.url + "/healthz", timeout=5)
    assert answer.status_code == 503
    assert answer.json()["status"] == "unhealthy"
    assert answer.json()["reasons"] == ["the database cannot be read (RuntimeError)"]


def test_a_crash_inside_a_handler_is_a_json_500_without_details(daemon, monkeypatch):
    import daemon.access.intake as events

    def explode(*args, **kwargs):
        raise RuntimeError("secret-internal-detail")

    monkeypatch.setattr(events, "visit_of", explode)
    body = entry_event(
        entry_id="1", full_name="A", email="a@example.com", flow_id="f", signed_in_at=0
    )
    answer = daemon.send(body)
    assert answer.status_code == 500
    assert "secret-internal-detail" not in answer.text
    assert answer.json()["message"].startswith("internal error")


def test_a_crash_is_logged_for_the_masker_never_printed_raw(daemon, caplog):
    """Bottle's catch-all printed the traceback to the server's error stream, unmasked."""
    app = create_app(daemon.ctx)

    def crash():
        raise RuntimeError("proxy secret s3cret-value leaked into an error")

    app.route("/crash", "GET", crash)
    errors = io.StringIO()
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/crash", "wsgi.errors": errors}
    started = []
    body = b"".join(app(environ, lambda status, headers, *exc: started.append(status)))
    assert started == ["500 Internal Server Error"]
    assert json.loads(body)["message"].startswith("internal error")
    assert errors.getvalue() == ""
    [crashed] = [r for r in caplog.records if r.getMessage() == "GET /crash crashed"]
    assert crashed.exc_info is not None  # so the log's masking formatter sees the traceback
