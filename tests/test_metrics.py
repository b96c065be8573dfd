"""`/metrics`: Prometheus text with events, Proxy latency, and grant and action gauges read
from the database at scrape time."""

import time

import requests
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

import db

FLOW = "flow-visitor"


def _scrape(daemon) -> dict:
    """{(sample name, frozen labels): value} from one scrape."""
    answer = requests.get(f"{daemon.url}/metrics", timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == CONTENT_TYPE_LATEST
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def test_metrics_after_visitor_events(daemon):
    daemon.install()
    signed_in = daemon.deliver(
        daemon.entry(
            entry_id="e-1",
            full_name="Ada",
            email="ada@example.com",
            flow_id=FLOW,
            signed_in_at=time.time(),
        )
    )
    assert signed_in.status_code == 200
    ignored = daemon.deliver(
        daemon.entry(
            entry_id="e-2",
            full_name="Bob",
            email="bob@example.com",
            flow_id="flow-unmapped",
            signed_in_at=time.time(),
        )
    )
    assert ignored.status_code == 400
    now = db.now_epoch()
    with db.database.connection_context(), db.database.atomic():
        for attempts, done, outcome in ((0, False, None), (7, False, None), (20, True, "dead")):
            db.Action.create(
                install_id=daemon.install_id,
                kind="job_update",
                payload={},
                due_at=now + 3600,
                next_attempt_at=now + 3600,
                attempts=attempts,
                done=done,
                outcome=outcome,
            )

    samples = _scrape(daemon)
    events = "envoy_proxy_events_total"
    assert _value(samples, events, event="entry_sign_in", status="202") == 1
    assert _value(samples, events, event="entry_sign_in", status="400") == 1
    assert _value(samples, "envoy_proxy_grants", state="active") == 1
    # Pending: the grant's revoke at the end of the visit, plus the two job updates above.
    assert _value(samples, "envoy_proxy_actions", status="pending") == 3
    assert _value(samples, "envoy_proxy_actions", status="failing") == 1
    assert _value(samples, "envoy_proxy_actions", status="dead") == 1
    latency = [
        (labels, value)
        for (name, labels), value in samples.items()
        if name == "envoy_proxy_proxy_call_seconds_count"
    ]
    assert latency and sum(value for _, value in latency) >= 1
    assert any(dict(labels)["status"].startswith("2") for labels, _ in latency)
    assert any(
        name == "envoy_proxy_proxy_call_seconds_bucket" and dict(labels)["le"] == "+Inf"
        for name, labels in samples
    )
    assert any(name == "envoy_proxy_action_lateness_seconds_count" for name, _ in samples)


def test_gauges_follow_the_database_not_the_process(daemon):
    daemon.install()
    assert _value(_scrape(daemon), "envoy_proxy_actions", status="pending") == 0
    now = db.now_epoch()
    with db.database.connection_context(), db.database.atomic():
        db.Grant.create(
            install_id=daemon.install_id,
            kind="visitor",
            subject="invites:x",
            starts_at=now + 60,
            state="pending",
            created_at=now,
            updated_at=now,
        )
    assert _value(_scrape(daemon), "envoy_proxy_grants", state="pending") == 1


def test_metrics_need_no_credentials_even_with_a_password_set(daemon):
    daemon.ctx.config = daemon.ctx.config.replace(admin_password="pw")
    assert requests.get(f"{daemon.url}/metrics", timeout=5).status_code == 200
    assert requests.get(f"{daemon.url}/status", timeout=5).status_code == 401


def test_metrics_ask_for_the_status_login_when_configured(daemon):
    daemon.ctx.config = daemon.ctx.config.replace(admin_password="pw", metrics_login=True)
    answer = requests.get(f"{daemon.url}/metrics", timeout=5)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert "envoy_proxy_" not in answer.text
    scrape = requests.get(f"{daemon.url}/metrics", auth=("admin", "pw"), timeout=5)
    assert scrape.status_code == 200 and "envoy_proxy_" in scrape.text


def test_metrics_login_without_a_password_keeps_metrics_closed(daemon):
    daemon.ctx.config = daemon.ctx.config.replace(metrics_login=True)
    assert requests.get(f"{daemon.url}/metrics", timeout=5).status_code == 403
