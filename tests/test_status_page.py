"""The admin status page and its JSON twin: closed without a password, Basic auth, the facts,
and names that carry HTML or script shown as text (a real headless Chromium looks)."""

import hmac
import logging
import sqlite3
import time
from pathlib import Path

import pytest
import requests

import db
from web import admin_routes
from web.throttle import FREE_FAILURES

FLOW = "flow-visitor"
INJECTED_NAME = (
    'Eve <img src=x onerror="window.__pwned=1;alert(1)">'
    "</script><script>window.__pwned=2;alert(2)</script>"
)
INJECTED_COMPANY = "<svg onload=\"window.__pwned=3\">Acme & Sons 'Ltd'</svg>"


def _sign_in(daemon, entry_id, email, full_name="Ada Lovelace"):
    answer = daemon.send(
        daemon.entry(
            entry_id=entry_id,
            email=email,
            full_name=full_name,
            flow_id=FLOW,
            signed_in_at=time.time(),
        )
    )
    assert answer.status_code in (200, 202), answer.text
    daemon.run_due()  # a 202 leaves the issue to the due work
    return answer


def _with_password(daemon, password="pw"):
    daemon.ctx.config = daemon.ctx.config.replace(admin_password=password)
    return ("admin", password)


def _activity(daemon):
    """An active visitor, an upcoming one, a failing and a dead action, a verification."""
    daemon.install()
    _sign_in(daemon, "e-1", "ada@example.com")
    arrival = int(time.time()) + 3 * 3600
    answer = daemon.send(
        daemon.invite(
            invite_id="i-1",
            full_name="Grace Hopper",
            email="grace@example.com",
            flow_id=FLOW,
            expected_arrival=arrival,
        )
    )
    assert answer.status_code == 200, answer.text
    now = db.now_epoch()
    with db.database.connection_context(), db.database.atomic():
        db.Install.update(
            company_name="Acme", location_name="Lobby", last_event_at=now, last_error=None
        ).execute()
        failing = db.Action.create(
            install_id=daemon.install_id,
            kind="job_update",
            payload={"job_id": "j-1"},
            due_at=now - 600,
            next_attempt_at=now + 600,
            attempts=6,
            last_error="Envoy answered 503 (sim-secret must never show)",
        )
        dead = db.Action.create(
            install_id=daemon.install_id,
            kind="job_update",
            payload={"job_id": "j-2"},
            due_at=now - 900,
            next_attempt_at=now - 900,
            attempts=20,
            done=True,
            outcome="dead",
            done_at=now - 60,
            last_error="gave up after 20 attempts",
        )
        entry = db.WatchlistEntry.create(email="mallory@example.com", reason="banned")
        db.Verification.create(
            install_id=daemon.install_id,
            entry_id="e-9",
            decision="review",
            reason="on the watchlist",
            watchlist_entry=entry,
            duration_ms=12,
            decided_at=now,
        )
    return {"failing": failing.id, "dead": dead.id, "arrival": arrival}


def test_the_page_is_closed_until_a_password_is_set_and_says_how(daemon, caplog):
    caplog.set_level(logging.WARNING, logger="envoy_proxy")
    for _ in range(3):
        page = requests.get(f"{daemon.url}/status", timeout=5)
        assert page.status_code == 403
        assert "ENVOY_PROXY_ADMIN_PASSWORD" in page.text
        assert page.headers["Content-Type"].startswith("text/plain")
    answer = requests.get(f"{daemon.url}/status.json", timeout=5)
    assert answer.status_code == 403
    assert "ENVOY_PROXY_ADMIN_PASSWORD" in answer.json()["message"]
    # Even a correct-looking login does not open a page without a password.
    assert requests.get(f"{daemon.url}/status", auth=("admin", ""), timeout=5).status_code == 403
    said = [r for r in caplog.records if "ENVOY_PROXY_ADMIN_PASSWORD" in r.getMessage()]
    assert len(said) == 1, "the log says it once, not on every request"


@pytest.mark.parametrize(
    "auth", [None, ("admin", "wrong"), ("root", "pw"), ("admin", "pw "), ("admin", "pwx")]
)
def test_wrong_or_missing_credentials_get_401_with_a_basic_challenge(daemon, auth):
    _with_password(daemon)
    for path in ("/status", "/status.json"):
        answer = requests.get(f"{daemon.url}{path}", auth=auth, timeout=5)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"].startswith('Basic realm="envoy-proxy"')
        assert "pw" not in answer.text.replace("password", "")


def test_malformed_authorization_headers_are_refused_not_crashed(daemon):
    _with_password(daemon)
    for header in ("Basic", "Basic !!!not-base64", "Bearer abc", "Basic Zm9v", "Basic 6Lyw"):
        answer = requests.get(f"{daemon.url}/status", headers={"Authorization": header}, timeout=5)
        assert answer.status_code == 401, header


def test_right_credentials_open_both_pages(daemon):
    auth = _with_password(daemon)
    page = requests.get(f"{daemon.url}/status", auth=auth, timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    assert "envoy-proxy status" in page.text
    facts = requests.get(f"{daemon.url}/status.json", auth=auth, timeout=5).json()
    assert facts["database"]["schema_version"] == db.SCHEMA_VERSION


def test_user_and_password_are_both_compared_in_constant_time(daemon, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(admin_routes.hmac, "compare_digest", spy)
    _with_password(daemon, "s3cret")
    requests.get(f"{daemon.url}/status", auth=("nobody", "s3cret"), timeout=5)
    # A wrong user still costs the password comparison: no early exit to time.
    assert calls == [(b"nobody", b"admin"), (b"s3cret", b"s3cret")]
    calls.clear()
    assert admin_routes.credentials_match(("admin", "s3cret"), "s3cret")
    assert not admin_routes.credentials_match(None, "s3cret")
    assert len(calls) == 4


@pytest.mark.sqlite_only
def test_the_page_answers_while_a_writer_holds_the_database(daemon):
    """The report is one read transaction (DEFERRED): it never waits for the write lock."""
    auth = _with_password(daemon)
    writer = sqlite3.connect(daemon.ctx.config.db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        answer = requests.get(f"{daemon.url}/status.json", auth=auth, timeout=5)
        assert answer.status_code == 200
        assert time.monotonic() - started < 2  # the busy timeout is 10 s
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_credentials_come_from_the_header_only():
    assert not admin_routes.credentials_match(("admin", None), "pw")  # a REMOTE_USER shape
    assert not admin_routes.credentials_match((None, None), "pw")
    assert admin_routes.credentials_match(("admin", "pw"), "pw")


def test_json_facts_after_visitor_activity(daemon):
    made = _activity(daemon)
    auth = _with_password(daemon, "pw-for-status")
    answer = requests.get(f"{daemon.url}/status.json", auth=auth, timeout=5)
    assert answer.status_code == 200, answer.text
    facts = answer.json()
    assert facts["version"]
    assert facts["database"]["path"] == daemon.ctx.config.db
    assert facts["database"]["size_bytes"] > 0
    assert facts["scheduler"]["alive"] is None  # no scheduler in this harness
    assert facts["health"] == {"healthy": True, "reasons": [], "runs": None}
    assert facts["uptime_seconds"] >= 0
    [install] = facts["installs"]
    assert install["install_id"] == daemon.install_id
    assert install["company_name"] == "Acme"
    assert install["site_name"] == "Lobby Tower"
    assert install["flows"] == ["flow-contractor", "flow-visitor"]
    assert install["flows_count"] == 2
    assert install["purpose_registered"] is False
    assert install["timezone"] == "America/New_York"
    [active] = facts["grants"]["active"]
    assert active["full_name"] == "Ada Lovelace" and active["email"] == "ada@example.com"
    assert active["proxy_person_id"]
    # Instants: an epoch and ISO for scripts, the install's local time for people.
    starts = active["starts_at"]
    assert isinstance(starts["epoch"], int) and starts["iso"].endswith("Z")
    assert starts["local"].endswith(("EST", "EDT"))
    [upcoming] = facts["grants"]["upcoming"]
    assert upcoming["full_name"] == "Grace Hopper"
    assert upcoming["activates_at"]["epoch"] == made["arrival"] - 30 * 60
    [failing] = facts["actions"]["failing"]
    assert failing["id"] == made["failing"] and failing["attempts"] == 6
    assert "***" in failing["reason"] and "sim-secret" not in failing["reason"]
    [dead] = facts["actions"]["dead"]
    assert dead["id"] == made["dead"] and dead["reason"] == "gave up after 20 attempts"
    counts = facts["counts"]
    assert counts["grants_active"] == 1 and counts["grants_pending"] == 1
    assert counts["actions_failing"] == 1 and counts["actions_dead"] == 1
    assert counts["watchlist"] == facts["watchlist"]["size"] == 1
    [decision] = facts["verifications"]
    assert decision["decision"] == "review" and decision["watchlist_entry_id"] is not None
    # Never a secret: not the Proxy secret, its ciphertext, the client secret, the password.
    with db.database.connection_context():
        ciphertext = db.Install.get().proxy_secret
    for secret in ("app-secret", ciphertext, "sim-secret", "pw-for-status"):
        assert secret not in answer.text
    page = requests.get(f"{daemon.url}/status", auth=auth, timeout=5).text
    for secret in ("app-secret", ciphertext, "sim-secret", "pw-for-status"):
        assert secret not in page
    assert "Grace Hopper" in page and "ada@example.com" in page


def test_lists_are_bounded(daemon):
    daemon.install()
    now = db.now_epoch()
    with db.database.connection_context(), db.database.atomic():
        db.Grant.insert_many(
            [
                dict(
                    install_id=daemon.install_id,
                    kind="visitor",
                    subject=f"entries:{i}",
                    full_name=f"Visitor {i}",
                    group_ids=[],
                    added_group_ids=[],
                    starts_at=now,
                    state="active",
                    created_at=now,
                    updated_at=now,
                )
                for i in range(130)
            ]
        ).execute()
    auth = _with_password(daemon)
    facts = requests.get(f"{daemon.url}/status.json", auth=auth, timeout=5).json()
    assert facts["counts"]["grants_active"] == 130
    assert len(facts["grants"]["active"]) == facts["limit"] == 100
    assert facts["grants"]["active"][0]["full_name"] == "Visitor 129"  # newest first
    page = requests.get(f"{daemon.url}/status", auth=auth, timeout=5).text
    assert "Showing 100 of 130." in page


def _injected(daemon):
    daemon.install()
    _sign_in(daemon, "e-66", "eve@example.com", full_name=INJECTED_NAME)
    with db.database.connection_context(), db.database.atomic():
        db.Install.update(company_name=INJECTED_COMPANY, last_error="<b>bold</b>").execute()


def test_html_and_script_in_data_are_escaped_in_the_markup(daemon):
    _injected(daemon)
    auth = _with_password(daemon)
    page = requests.get(f"{daemon.url}/status", auth=auth, timeout=5).text
    assert "<img" not in page and "<svg" not in page and "<b>bold" not in page
    assert page.count("<script") == 0
    assert "&lt;img src=x onerror=&quot;window.__pwned=1;alert(1)&quot;&gt;" in page
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned=2" in page
    assert "Acme &amp; Sons &#039;Ltd&#039;" in page


def test_the_template_never_prints_raw_values():
    assert "{{!" not in Path(admin_routes.TEMPLATES, "status.tpl").read_text(encoding="utf-8")


def test_a_real_browser_shows_injected_names_as_text_and_runs_nothing(
    daemon, tmp_path, admin_browser
):
    _injected(daemon)
    _with_password(daemon, "browser-pw")
    browser = admin_browser("browser-pw")
    page = browser.page
    response = page.goto(f"{daemon.url}/status", wait_until="load")
    assert response.status == 200
    page.wait_for_timeout(200)  # room for an onerror handler, had one been parsed
    text = page.inner_text("body")
    assert INJECTED_NAME in text
    assert INJECTED_COMPANY in text
    assert page.evaluate("typeof window.__pwned") == "undefined"
    # The markup holds no element the data could have made (CSP aside).
    assert page.locator("img").count() == 0
    assert page.locator("svg").count() == 0
    assert page.locator("script").count() == 0
    shot = tmp_path / "status.png"
    page.screenshot(path=str(shot), full_page=True)
    assert browser.dialogs == []
    assert browser.errors == []
    assert shot.exists() and shot.stat().st_size > 1000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failed_logins_are_slowed_down_per_address_and_logged_with_it(daemon, caplog):
    """About 1,100 guesses a second were possible. A forged X-Forwarded-For changes nothing:
    it is believed only from the configured reverse proxy (Waitress sets REMOTE_ADDR)."""
    caplog.set_level(logging.WARNING, logger="envoy_proxy")
    auth = _with_password(daemon)
    for n in range(FREE_FAILURES + 1):
        forged = {"X-Forwarded-For": f"203.0.113.{n}"}
        answer = requests.get(f"{daemon.url}/status", auth=("admin", f"guess-{n}"),
                              headers=forged, timeout=5)  # fmt: skip
        assert answer.status_code == 401
    refused = requests.get(f"{daemon.url}/status.json", auth=auth, timeout=5)
    assert refused.status_code == 429, "not even the right password is tried meanwhile"
    assert int(refused.headers["Retry-After"]) >= 1
    assert "too many failed logins" in refused.json()["message"]
    failures = [
        r.getMessage() for r in caplog.records if "wrong admin credentials" in r.getMessage()
    ]
    assert len(failures) == FREE_FAILURES + 1
    assert all("from 127.0.0.1" in line for line in failures)
    assert not any("guess-" in r.getMessage() for r in caplog.records)


def test_a_browsers_first_request_without_credentials_is_no_failed_guess(daemon):
    auth = _with_password(daemon)
    for _ in range(FREE_FAILURES + 3):
        assert requests.get(f"{daemon.url}/status", timeout=5).status_code == 401
    assert requests.get(f"{daemon.url}/status", auth=auth, timeout=5).status_code == 200
