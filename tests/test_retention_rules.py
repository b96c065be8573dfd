"""Retention's rules without Proxy: the setting, what a pass selects, how texts are scrubbed,
and what /status says."""

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import db
from daemon import config
from daemon.access import retention
from daemon.access.retention import ERASED, scrub
from scheduler import Runs

DAY = 86400
NOW = 1_900_000_000
DAYS = 30


# ---------------------------------------------------------------------------- the setting


def test_thirty_days_by_default_and_zero_means_forever():
    assert config.load(None, {"ENVOY_CLIENT_SECRET": "s"}).retention_days == 30
    cfg = config.load(None, {"ENVOY_CLIENT_SECRET": "s", "ENVOY_PROXY_RETENTION_DAYS": "0"})
    assert cfg.retention_days == 0
    assert "kept forever" in retention.describe(0)["summary"]


@pytest.mark.parametrize(
    ("value", "message"),
    [("-1", "at least 0"), ("a month", "expected a int"), ("99999", "at most 3650")],
)
def test_a_bad_retention_is_refused_at_start_with_the_variable_named(value, message):
    with pytest.raises(config.ConfigError, match=message) as error:
        config.load(None, {"ENVOY_CLIENT_SECRET": "s", "ENVOY_PROXY_RETENTION_DAYS": value})
    assert "ENVOY_PROXY_RETENTION_DAYS" in str(error.value)


def test_status_states_the_retention_plainly(daemon):
    daemon.ctx.config = daemon.ctx.config.replace(admin_password="pw", retention_days=0)
    auth = ("admin", "pw")
    facts = requests.get(f"{daemon.url}/status.json", auth=auth, timeout=5).json()
    assert facts["retention"]["days"] == 0
    page = requests.get(f"{daemon.url}/status", auth=auth, timeout=5).text
    assert "kept forever (ENVOY_PROXY_RETENTION_DAYS=0)" in page


def test_status_shows_a_failing_retention_pass_with_its_error_masked(daemon):
    daemon.ctx.config = daemon.ctx.config.replace(admin_password="s3cret-pw")
    runs = Runs(last_failure_at=1_800_000_000, last_error="ProxyError: s3cret-pw leaked",
                consecutive_failures=2)  # fmt: skip
    daemon.ctx.retention_runs = lambda: runs
    auth = ("admin", "s3cret-pw")
    facts = requests.get(f"{daemon.url}/status.json", auth=auth, timeout=5).json()["retention"]
    assert facts["days"] == 30 and facts["last_pass_at"] is None
    assert facts["last_error"] == "ProxyError: *** leaked"
    page = requests.get(f"{daemon.url}/status", auth=auth, timeout=5).text
    assert "Retention pass" in page and "FAILING" in page


# ---------------------------------------------------------------------------- scrubbing

_WORDS = st.text(st.characters(codec="utf-8", exclude_characters="@"), max_size=30)
_ADDRESSES = st.emails().map(str)


@given(before=_WORDS, address=_ADDRESSES, after=_WORDS)
def test_no_address_survives_scrubbing_and_the_rest_of_the_text_does(before, address, after):
    text = f"{before} {address} {after}"
    cleaned = scrub(text)
    assert "@" not in cleaned and address not in cleaned
    assert cleaned == f"{scrub(before)} {ERASED} {scrub(after)}"
    assert scrub(cleaned) == cleaned
    assert scrub(before) == before  # a text that quotes no one is kept as it is


@given(name=st.text("abcdefghijklmnopqrstuvwxyz ", min_size=3, max_size=20).filter(str.strip),
       address=_ADDRESSES)  # fmt: skip
def test_json_answers_keep_their_shape_and_lose_the_person(name, address):
    answer = {"message": f"no Proxy person has the email {address}",
              "attachments": [{"label": "w", "value": name.upper()}]}  # fmt: skip
    cleaned = scrub(answer, [name])
    assert cleaned["attachments"] == [{"label": "w", "value": ERASED}]
    assert address not in cleaned["message"] and "@" not in cleaned["message"]


# ---------------------------------------------------------------------------- what a pass picks

_GRANTS = st.lists(
    st.tuples(
        st.sampled_from(["pending", "active", "ended", "cancelled"]),
        st.integers(min_value=-60, max_value=60),  # days from now that the window ends
        st.booleans(),  # whether it has a Proxy person (one that existed before us)
    ),
    min_size=1,
    max_size=12,
)


class _NoProxy:
    """The pass must not need Proxy for grants without a person of ours."""

    def limited(self, budget):
        raise AssertionError("Proxy was asked")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=_GRANTS)
def test_a_pass_erases_exactly_the_closed_grants_past_the_retention(database, rows):
    db.Grant.delete().execute()
    ids = []
    for n, (state, ends_in_days, ours) in enumerate(rows):
        grant = db.Grant.create(
            install_id="install-1", kind="visitor", subject=f"entries:{n}",
            email=f"v{n}@example.com", full_name=f"Visitor {n}", phone="+1555",
            starts_at=NOW - 90 * DAY, ends_at=NOW + ends_in_days * DAY, state=state,
            proxy_person_id=None if not ours else f"p_{n}", person_ours=False,
        )  # fmt: skip
        ids.append(grant.id)
    ctx = type("Ctx", (), {"proxy": _NoProxy()})()
    retention.erase_expired(ctx, retention.cutoff(NOW, DAYS), NOW)
    for grant_id, (state, ends_in_days, _) in zip(ids, rows, strict=True):
        grant = db.Grant.get_by_id(grant_id)
        expired = state in ("ended", "cancelled") and ends_in_days < -DAYS
        assert (grant.email is None) == expired, (state, ends_in_days)
        assert (grant.full_name is None, grant.phone is None) == (expired, expired)
        assert grant.state == state and grant.ends_at == NOW + ends_in_days * DAY


def test_a_table_added_to_the_list_is_erased_by_age_alone(database, monkeypatch):
    """How the audit trail joins: one entry, no `closed` (a record of what happened)."""
    extra = retention.PersonalData(
        db.Verification, erase=(), scrub=(db.Verification.reason,), since=db.Verification.decided_at
    )
    monkeypatch.setattr(retention, "PERSONAL_DATA", (*retention.PERSONAL_DATA, extra))
    for n, age_days in enumerate((DAYS + 1, DAYS - 1)):
        db.Verification.create(install_id="install-1", entry_id=str(n), decision="review",
                               reason="asked by ada@example.com", duration_ms=1,
                               decided_at=NOW - age_days * DAY)  # fmt: skip
    erased = retention.erase_expired(None, retention.cutoff(NOW, DAYS), NOW)
    assert erased.rows["verification"] == 1
    old, recent = db.Verification.select().order_by(db.Verification.entry_id)
    assert (old.reason, recent.reason) == (f"asked by {ERASED}", "asked by ada@example.com")
