"""The Proxy client against the real Proxy sandbox: every operation, retries, faults, secrecy."""

import email.utils
import logging
import socket
import threading
import time
from datetime import UTC, datetime

import pytest

from daemon.proxy.client import (
    DEFAULT_RETRY_AFTER,
    IMPORT_PATH,
    ProxyAuthError,
    ProxyClient,
    ProxyError,
    ProxyNotFound,
    ProxyRateLimited,
    ProxyUnavailable,
    _imported,
)
from daemon.retry import MAX_RETRY_AFTER_SECONDS
from sandbox.proxy import many_sites
from tests.scripted import Answer, scripted

KEY = "app-key"
SECRET = "app-secret"
IMPORT = "/manage/persons/import"


@pytest.fixture(autouse=True)
def logs_never_show_the_secret(caplog):
    caplog.set_level(logging.DEBUG)
    yield caplog
    assert SECRET not in caplog.text
    assert all(SECRET not in record.getMessage() for record in caplog.records)


@pytest.fixture
def observed():
    return []


@pytest.fixture
def client(proxy_sandbox, observed):
    with make_client(proxy_sandbox.url, observe=recorder(observed)) as proxy:
        yield proxy


def recorder(observed):
    """An observe hook that appends each (method, path_template, status, seconds) to a list."""

    def observe(*attempt):
        observed.append(attempt)

    return observe


def make_client(url, *, secret=SECRET, **overrides):
    options = {
        "org_id": "org-1",
        "site_id": "site-1",
        "connect_timeout": 0.5,
        "read_timeout": 1.0,
        "retry_budget": 3.0,
    }
    return ProxyClient(url, KEY, secret, **{**options, **overrides})


def raised(error_type, call, *args, **kwargs):
    """Run a call that must fail, check the error never shows the secret, return it."""
    with pytest.raises(error_type) as caught:
        call(*args, **kwargs)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    return caught.value


def calls(sandbox, method, path):
    return [c for c in sandbox.state()["calls"] if c["method"] == method and c["path"] == path]


def epoch(iso):
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def settle(sandbox, observed, timeout=2.0):
    """Wait until the sandbox has logged every attempt the client made (slow calls finish late)."""
    deadline = time.monotonic() + timeout
    while len(sandbox.state()["calls"]) < len(observed) and time.monotonic() < deadline:
        time.sleep(0.02)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the operations ---------------------------------------------------------------------------


def test_list_orgs_returns_only_the_orgs_the_key_sees(client):
    assert [org["id"] for org in client.list_orgs()] == ["org-1"]


def test_a_bad_secret_is_an_auth_error_that_does_not_echo_it(proxy_sandbox):
    with make_client(proxy_sandbox.url, secret="wrong-secret") as proxy:
        error = raised(ProxyAuthError, proxy.list_orgs)
    assert error.status == 401
    assert error.description
    assert "wrong-secret" not in str(error)
    assert len(calls(proxy_sandbox, "GET", "/v1/orgs")) == 1


def test_list_sites_pages_and_searches_by_name(client):
    assert {site["id"] for site in client.list_sites()} == {"site-1", "site-2"}
    assert client.list_sites(search="Lobby") == [{"id": "site-1", "name": "Lobby Tower"}]
    assert len(client.list_sites(page=1, limit=1)) == 1
    assert client.list_sites(page=2, limit=1) != client.list_sites(page=1, limit=1)


def test_find_site_knows_the_orgs_sites_only(client):
    assert client.find_site("site-2") == {"id": "site-2", "name": "Warehouse"}
    assert client.find_site("site-9") is None  # another org's site
    assert client.find_site("no-such-site") is None


def test_find_site_walks_every_page(client, proxy_sandbox):
    proxy_sandbox.seed(many_sites(150))
    assert client.find_site("site-150") == {"id": "site-150", "name": "Site 150"}
    assert [c["query"]["page"] for c in calls(proxy_sandbox, "GET", "/manage/sites")] == ["1", "2"]


def test_list_groups_leaves_out_global_groups_unless_asked(client):
    assert {g["id"] for g in client.list_groups()} == {"grp-visitors", "grp-contractors", "grp-vip"}
    everyone = [g for g in client.list_groups(include_global=True) if g["isGlobal"]]
    assert everyone == [
        {"id": "grp-all", "name": everyone[0]["name"], "tag": "everyone", "isGlobal": True}
    ]


def test_list_groups_searches_by_name(client):
    vip = client.get_group("grp-vip")
    assert [g["id"] for g in client.list_groups(search=vip["name"])] == ["grp-vip"]


def test_get_group_gives_its_tag_and_404_is_not_found(client):
    assert client.get_group("grp-visitors")["tag"] == "visitor-lobby"
    error = raised(ProxyNotFound, client.get_group, "no-such-group")
    assert error.status == 404


def test_calls_that_need_a_site_refuse_to_start_without_one(proxy_sandbox):
    with make_client(proxy_sandbox.url, site_id=None) as proxy:
        with pytest.raises(ValueError, match="site_id"):
            proxy.list_groups()
        assert proxy.list_sites()  # sites need the org only
    assert proxy_sandbox.state()["calls"][-1]["path"] == "/manage/sites"


def test_find_person_by_email_ignores_case(client):
    person = client.find_person_by_email("ERIN@Example.COM")
    assert person["name"] == "Erin Employee"
    assert client.find_person_by_email("nobody@example.com") is None


def test_get_person_by_id_and_none_when_unknown(client):
    sam = client.find_person_by_email("sam@example.com")
    assert client.get_person(sam["id"])["email"] == "sam@example.com"
    assert client.get_person("no-such-person") is None


def test_import_person_creates_one_tagged_person_with_the_envoy_details(client, proxy_sandbox):
    person = client.import_person(
        name="Ada Lovelace",
        email="ada@example.com",
        tags=["visitor-lobby"],
        photo="https://example.com/ada.jpg",
        phone="+15550100",
        envoy_id="entries:42",
        created_by_envoy=True,
        send_invite=True,
    )
    assert person["id"]
    [stored] = proxy_sandbox.persons("ada@example.com")
    assert stored["id"] == person["id"]
    assert stored["name"] == "Ada Lovelace (Created by Envoy)"
    assert stored["tags"] == ["visitor-lobby"]
    assert stored["status"] == "active"
    assert stored["photo"] == "https://example.com/ada.jpg"
    assert stored["details"] == {
        "phoneNumber": "+15550100",
        "createdBy": "Created by Envoy",
        "envoyId": "entries:42",
    }


def test_import_person_never_doubles_the_created_by_suffix_nor_sends_long_photos(
    client, proxy_sandbox
):
    client.import_person(
        name="Bo (Created by Envoy)",
        email="bo@example.com",
        tags=["contractor"],
        photo="https://example.com/" + "x" * 300,
        created_by_envoy=True,
    )
    [stored] = proxy_sandbox.persons("bo@example.com")
    assert stored["name"] == "Bo (Created by Envoy)"
    assert not stored.get("photo")


def test_import_person_reuses_an_existing_person_without_posting(client, proxy_sandbox):
    person = client.import_person(name="Erin", email="Erin@Example.com", tags=["vip"])
    assert person["name"] == "Erin Employee"
    assert calls(proxy_sandbox, "POST", IMPORT) == []
    assert len(proxy_sandbox.persons("erin@example.com")) == 1


def sequence(sandbox):
    return [(c["method"], c["path"], c["status"]) for c in sandbox.state()["calls"]]


def test_import_person_known_absent_posts_at_once(client, proxy_sandbox):
    person = client.import_person(
        name="Ada", email="ada@example.com", tags=["visitor-lobby"], known_absent=True
    )
    assert [p["id"] for p in proxy_sandbox.persons("ada@example.com")] == [person["id"]]
    assert sequence(proxy_sandbox) == [("POST", IMPORT, 200)]


def test_import_person_known_absent_still_looks_up_after_an_ambiguous_failure(
    client, proxy_sandbox
):
    proxy_sandbox.add_fault(status=500, count=1, path_prefix=IMPORT)
    person = client.import_person(
        name="Ada", email="ada@example.com", tags=["visitor-lobby"], known_absent=True
    )
    assert [p["id"] for p in proxy_sandbox.persons("ada@example.com")] == [person["id"]]
    lookup = ("GET", "/manage/persons", 200)
    assert sequence(proxy_sandbox) == [("POST", IMPORT, 500), lookup, ("POST", IMPORT, 200)]


def test_a_refused_import_is_an_error_with_proxys_reason_and_is_not_repeated(client, proxy_sandbox):
    refused = raised(
        ProxyError, client.import_person, name="X", email="not-an-email", tags=["visitor-lobby"],
        known_absent=True,
    )  # fmt: skip
    assert type(refused) is ProxyError and refused.status == 400
    assert "email must be an email address" in str(refused)
    assert len(calls(proxy_sandbox, "POST", IMPORT)) == 1


def test_an_import_answer_must_name_the_person_sent():
    ada = {"id": "p1", "email": "Ada@example.com"}
    assert _imported({"items": [ada]}, "ada@example.com") == ada
    assert _imported({"items": [{"id": "p1"}]}, "ada@example.com")  # no email: trusted
    with pytest.raises(ProxyError, match="names 2 persons for 1"):
        _imported({"items": [ada, {"id": "p2"}]}, "ada@example.com")
    with pytest.raises(ProxyError, match="another person than was sent"):
        _imported({"items": [ada]}, "bob@example.com")
    with pytest.raises(ProxyError, match=f"POST {IMPORT_PATH}.*names 0 persons for 1"):
        _imported({}, "ada@example.com")


def test_concurrent_imports_post_one_person_each(client, proxy_sandbox):
    emails = [f"guest{i}@example.com" for i in range(8)]
    start = threading.Barrier(len(emails))
    outcomes = {}

    def run(email):
        start.wait()
        outcomes[email] = client.import_person(
            name=email, email=email, tags=["visitor-lobby"], known_absent=True
        )

    threads = [threading.Thread(target=run, args=(email,)) for email in emails]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    for address in emails:
        [stored] = proxy_sandbox.persons(address)
        assert outcomes[address]["id"] == stored["id"]
    assert len(calls(proxy_sandbox, "POST", IMPORT)) == len(emails)


def test_group_membership_is_added_and_removed(client, proxy_sandbox):
    sam = client.find_person_by_email("sam@example.com")
    client.add_to_group("grp-vip", sam["id"])
    assert "vip" in proxy_sandbox.persons("sam@example.com")[0]["tags"]
    client.remove_from_group("grp-vip", sam["id"])
    assert "vip" not in proxy_sandbox.persons("sam@example.com")[0]["tags"]


def test_adding_to_an_unknown_group_is_surfaced_without_retry(client, proxy_sandbox):
    sam = client.find_person_by_email("sam@example.com")
    path = f"/manage/groups/no-such-group/persons/{sam['id']}"
    error = raised(ProxyNotFound, client.add_to_group, "no-such-group", sam["id"])
    assert error.code
    assert len(calls(proxy_sandbox, "POST", path)) == 1


def test_remove_from_group_skips_an_endpoint_proxy_lacks_and_says_so_once(
    client, proxy_sandbox, caplog
):
    sam = client.find_person_by_email("sam@example.com")
    client.add_to_group("grp-vip", sam["id"])
    proxy_sandbox.add_fault(status=404, path_prefix="/manage/groups/grp-vip/persons/")
    client.remove_from_group("grp-vip", sam["id"])
    client.remove_from_group("grp-vip", sam["id"])
    skipped = [r for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) == 1
    assert len(calls(proxy_sandbox, "DELETE", f"/manage/groups/grp-vip/persons/{sam['id']}")) == 1


def test_a_tenant_without_the_assumed_endpoints_is_learnt_once_per_org(proxy_sandbox, caplog):
    """Without DELETE membership and GET person, every ending repeated the DELETE and logged
    the person as gone (issue 16, item 11): the person is looked for by email (documented)
    and what the org lacks is remembered for every client of that org."""
    learnt = set()
    with make_client(proxy_sandbox.url, missing_endpoints=learnt) as first:
        sam = first.find_person_by_email("sam@example.com")
        first.add_to_group("grp-vip", sam["id"])
        proxy_sandbox.add_fault(status=404, path_prefix="/manage/groups/grp-vip/persons/")
        proxy_sandbox.add_fault(status=404, path_prefix=f"/manage/persons/{sam['id']}")
        first.remove_from_group("grp-vip", sam["id"], email="sam@example.com")
    with make_client(proxy_sandbox.url, missing_endpoints=learnt) as second:
        second.remove_from_group("grp-contractors", sam["id"], email="sam@example.com")
    deletes = [c for c in proxy_sandbox.state()["calls"] if c["method"] == "DELETE"]
    assert len(deletes) == 1, "asked once for the org, then skipped by every client"
    assert len([r for r in caplog.records if "skipping" in r.getMessage()]) == 1
    assert not [r for r in caplog.records if "no longer exists" in r.getMessage()]


def test_remove_from_group_reports_an_unknown_person(client):
    error = raised(ProxyNotFound, client.remove_from_group, "grp-vip", "no-such-person")
    assert "no-such-person" in error.description


def test_resend_invite_reaches_proxy_once(client, proxy_sandbox):
    sam = client.find_person_by_email("sam@example.com")
    client.resend_invite(sam["id"])
    assert len(calls(proxy_sandbox, "POST", f"/manage/persons/{sam['id']}/resend")) == 1


def test_schedule_status_suspends_then_reactivates(client, proxy_sandbox):
    sam = client.find_person_by_email("sam@example.com")
    at = time.time() + 60
    answer = client.schedule_status(sam["id"], "suspended", at=at)
    assert answer["status"] == "suspended"
    assert epoch(answer["scheduledDate"]) == pytest.approx(at, abs=1)
    client.schedule_status(sam["id"], "active")
    scheduled = proxy_sandbox.persons("sam@example.com")[0]["scheduledStatuses"]
    assert [s["status"] for s in scheduled] == ["suspended", "active"]


def test_schedule_status_clamps_a_past_date_into_the_near_future(client):
    """Once Proxy's clock is known (any answer's Date), a status takes effect within 2.5 s."""
    sam = client.find_person_by_email("sam@example.com")
    before = time.time()
    answer = client.schedule_status(sam["id"], "suspended", at=before - 3600)
    assert before + 1 <= epoch(answer["scheduledDate"]) <= time.time() + 2.5


def test_schedule_status_reads_proxys_clock_again_when_a_date_is_refused(client, proxy_sandbox):
    sam = client.find_person_by_email("sam@example.com")  # the clock learnt at offset 0
    proxy_sandbox.set_clock(offset_seconds=15)  # then Proxy's clock jumps
    before = time.time()
    answer = client.schedule_status(sam["id"], "suspended")
    assert before + 15 <= epoch(answer["scheduledDate"]) <= time.time() + 15 + 5
    path = f"/mobile-access/persons/{sam['id']}/scheduled-statuses"
    assert [c["status"] for c in calls(proxy_sandbox, "POST", path)] == [400, 200]


def test_a_suspension_never_lands_before_an_active_we_scheduled(client, proxy_sandbox):
    """An issue retried through trouble placed its `active` seconds ahead; the sign-out that
    followed at once scheduled `suspended` sooner, and the person stayed active (found by
    the outage campaign)."""
    sam = client.find_person_by_email("sam@example.com")
    proxy_sandbox.set_clock(offset_seconds=15)  # the refused date is re-sent with more lead
    active = client.schedule_status(sam["id"], "active")
    suspended = client.schedule_status(sam["id"], "suspended")
    assert epoch(suspended["scheduledDate"]) >= epoch(active["scheduledDate"])


@pytest.mark.parametrize("offset", [3600, -7200])
def test_statuses_are_scheduled_on_proxys_clock_not_ours(client, proxy_sandbox, offset):
    """Our clock 1 h behind Proxy's: every revoke failed forever ("has to be a future date").
    2 h ahead: a sign-out's suspension was scheduled 2 h into Proxy's future (issue 16)."""
    proxy_sandbox.set_clock(offset_seconds=offset)
    sam = client.find_person_by_email("sam@example.com")  # an answer, with Proxy's Date
    answer = client.schedule_status(sam["id"], "suspended")
    proxy_now = time.time() + offset
    assert proxy_now <= epoch(answer["scheduledDate"]) <= proxy_now + 2.5
    path = f"/mobile-access/persons/{sam['id']}/scheduled-statuses"
    assert [c["status"] for c in calls(proxy_sandbox, "POST", path)] == [200]


def test_schedule_status_refuses_an_unknown_status(client):
    with pytest.raises(ValueError, match="status"):
        client.schedule_status("p-1", "deleted")


# -- reliability ------------------------------------------------------------------------------


def test_429_waits_at_least_retry_after_then_succeeds(client, proxy_sandbox):
    proxy_sandbox.add_fault(status=429, retry_after=1, count=1)
    started = time.monotonic()
    assert client.list_orgs()
    assert time.monotonic() - started >= 1.0
    assert [c["status"] for c in calls(proxy_sandbox, "GET", "/v1/orgs")] == [429, 200]


def test_429_longer_than_the_budget_raises_rate_limited_at_once(client, proxy_sandbox):
    proxy_sandbox.add_fault(status=429, retry_after=30, count=1)
    started = time.monotonic()
    error = raised(ProxyRateLimited, client.list_orgs)
    assert time.monotonic() - started < 1.0
    assert error.retry_after == 30
    assert isinstance(error, ProxyUnavailable)


def test_a_503_burst_is_retried_logged_and_every_attempt_observed(
    client, proxy_sandbox, observed, caplog
):
    proxy_sandbox.add_fault(status=503, count=2)
    assert client.list_groups()
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert retries[0].startswith("Proxy GET /manage/groups: HTTP 503 after")
    assert [c["status"] for c in calls(proxy_sandbox, "GET", "/manage/groups")] == [503, 503, 200]
    assert [(o[0], o[1], o[2]) for o in observed] == [
        ("GET", "/manage/groups", s) for s in (503, 503, 200)
    ]


def _http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


@pytest.mark.parametrize(
    ("header", "least", "most"),
    [
        ("7", 7, 7),
        (lambda: _http_date(time.time() + 120), 110, 120),  # the HTTP-date form
        (lambda: _http_date(time.time() - 60), 0, 0),
        (lambda: _http_date(time.time() + 10 * 365 * 86400), MAX_RETRY_AFTER_SECONDS, None),
        ("inf", DEFAULT_RETRY_AFTER, None),  # not a number of seconds: ignored
        ("99999999999999999999", MAX_RETRY_AFTER_SECONDS, None),
        ("soon", DEFAULT_RETRY_AFTER, None),
    ],
)
def test_a_429s_retry_after_is_read_in_both_forms_and_bounded(header, least, most):
    value = header() if callable(header) else header
    limited = {"/v1/orgs": Answer(429, headers={"Retry-After": value})}
    with scripted(limited) as proxy, make_client(proxy.url, retry_budget=0.5) as client:
        error = raised(ProxyRateLimited, client.list_orgs)
    assert least <= error.retry_after <= (least if most is None else most)


def test_a_redirect_is_an_error_and_is_not_followed():
    moved = Answer(301, headers={"Location": "http://elsewhere.invalid/v1"})
    with scripted({}, default=moved) as proxy, make_client(proxy.url) as client:
        error = raised(ProxyError, client.schedule_status, "person-1", "suspended")
    assert error.status == 301 and not isinstance(error, ProxyUnavailable)
    assert "redirected to http://elsewhere.invalid/v1" in str(error)
    assert len(proxy.asked) == 1


def test_a_secret_echoed_by_proxy_is_masked_in_errors_and_logs(caplog):
    echo = {"data": {"error": {"code": "bad_key", "description": f"{KEY}:{SECRET} is unknown"}}}
    answers = {"/v1/orgs": Answer(403, body=echo), "/manage/groups": Answer(503, body=echo)}
    with scripted(answers) as proxy, make_client(proxy.url, retry_budget=0.3) as client:
        refused = raised(ProxyError, client.list_orgs)
        unavailable = raised(ProxyUnavailable, client.list_groups)
    assert str(refused) == f"Proxy GET /v1/orgs answered HTTP 403 bad_key: {KEY}:*** is unknown"
    assert "***" in unavailable.description
    # the autouse fixture checks every log line for the secret


def test_a_rejected_request_is_not_retried(client, proxy_sandbox):
    proxy_sandbox.add_fault(status=400, count=1)
    error = raised(ProxyError, client.list_orgs)
    assert error.status == 400
    assert not isinstance(error, ProxyUnavailable)
    assert len(calls(proxy_sandbox, "GET", "/v1/orgs")) == 1


def test_a_slow_proxy_times_out_as_unavailable(proxy_sandbox, observed):
    proxy_sandbox.add_fault(latency_ms=400)
    options = {"read_timeout": 0.1, "retry_budget": 0.3, "observe": recorder(observed)}
    with make_client(proxy_sandbox.url, **options) as proxy:
        started = time.monotonic()
        error = raised(ProxyUnavailable, proxy.list_orgs)
    assert time.monotonic() - started < 1.0
    assert error.status is None
    assert len(observed) >= 2  # a GET is retried within the budget
    settle(proxy_sandbox, observed)


def test_resend_invite_is_not_repeated_after_a_read_timeout(proxy_sandbox, client):
    sam = client.find_person_by_email("sam@example.com")
    path = f"/manage/persons/{sam['id']}/resend"
    proxy_sandbox.add_fault(hang=True, path_prefix=path)
    with make_client(proxy_sandbox.url, read_timeout=0.2) as proxy:
        raised(ProxyUnavailable, proxy.resend_invite, sam["id"])
    proxy_sandbox.clear_faults()  # the hung call is answered now
    deadline = time.monotonic() + 2
    while not calls(proxy_sandbox, "POST", path) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [p["resends"] for p in proxy_sandbox.persons("sam@example.com")] == [1]
    assert len(calls(proxy_sandbox, "POST", path)) == 1


def test_resend_invite_is_repeated_after_a_503_but_not_after_a_500(client, proxy_sandbox):
    sam = client.find_person_by_email("sam@example.com")
    path = f"/manage/persons/{sam['id']}/resend"
    proxy_sandbox.add_fault(status=503, count=1, path_prefix=path)
    client.resend_invite(sam["id"])
    proxy_sandbox.add_fault(status=500, count=1, path_prefix=path)
    error = raised(ProxyUnavailable, client.resend_invite, sam["id"])
    assert error.status == 500
    assert [c["status"] for c in calls(proxy_sandbox, "POST", path)] == [503, 200, 500]


def test_idempotent_writes_are_repeated_after_a_500(client, proxy_sandbox, observed):
    sam = client.find_person_by_email("sam@example.com")
    path = f"/mobile-access/persons/{sam['id']}/scheduled-statuses"
    proxy_sandbox.add_fault(status=500, count=1, path_prefix=path)
    client.schedule_status(sam["id"], "suspended")
    assert [c["status"] for c in calls(proxy_sandbox, "POST", path)] == [500, 200]
    template = "/mobile-access/persons/{id}/scheduled-statuses"
    assert [o[1:3] for o in observed if o[0] == "POST"] == [(template, 500), (template, 200)]


def test_an_unreachable_proxy_is_unavailable_within_the_budget():
    with make_client(f"http://127.0.0.1:{free_port()}", retry_budget=0.5) as proxy:
        started = time.monotonic()
        raised(ProxyUnavailable, proxy.list_orgs)
    assert time.monotonic() - started < 1.5


def test_the_environments_proxy_settings_apply_to_every_call(proxy_sandbox, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nobody listens
    with make_client(proxy_sandbox.url, retry_budget=0.3) as proxy:
        raised(ProxyUnavailable, proxy.list_orgs)
        raised(ProxyUnavailable, proxy.list_sites)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with make_client(proxy_sandbox.url) as proxy:
        assert proxy.list_orgs() and proxy.list_sites()
    assert len(calls(proxy_sandbox, "GET", "/v1/orgs")) == 1


def test_a_dropped_import_is_retried_without_creating_a_twin(client, proxy_sandbox):
    proxy_sandbox.add_fault(drop=True, count=1, path_prefix=IMPORT)
    person = client.import_person(name="Ada", email="ada@example.com", tags=["visitor-lobby"])
    [stored] = proxy_sandbox.persons("ada@example.com")
    assert stored["id"] == person["id"]
    assert [c["status"] for c in calls(proxy_sandbox, "POST", IMPORT)] == [None, 200]


def test_a_5xx_on_import_is_checked_by_email_before_posting_again(client, proxy_sandbox):
    proxy_sandbox.add_fault(status=500, count=1, path_prefix=IMPORT)
    person = client.import_person(name="Ada", email="ada@example.com", tags=["visitor-lobby"])
    assert [p["id"] for p in proxy_sandbox.persons("ada@example.com")] == [person["id"]]
    lookup = ("GET", "/manage/persons", 200)
    assert sequence(proxy_sandbox) == [lookup, ("POST", IMPORT, 500), lookup, ("POST", IMPORT, 200)]


# -- secrecy ----------------------------------------------------------------------------------


def test_repr_shows_the_url_and_key_but_never_the_secret(client, proxy_sandbox):
    text = repr(client)
    assert proxy_sandbox.url in text
    assert KEY in text
    assert SECRET not in text


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(ValueError) as caught:
        ProxyClient(f"http://{KEY}:{SECRET}@127.0.0.1", KEY, SECRET)
    assert SECRET not in str(caught.value)


def test_an_unreadable_2xx_is_ambiguous_not_a_refusal():
    """Proxy answering 200 with a body that is not JSON made the action dead on its first try
    (Envoy told "failed") while the person may be active (issue 16, item 8)."""
    garbled = Answer(200, raw=b"<html>gateway</html>")
    with scripted({}, default=garbled) as proxy, make_client(proxy.url, retry_budget=0.3) as client:
        error = raised(ProxyError, client.schedule_status, "person-1", "suspended")
    assert isinstance(error, ProxyUnavailable), "retried by the outbox, never given up"


def test_an_import_answer_without_the_person_is_looked_up_not_refused():
    """An import answer that does not name the person is ambiguous: the person may exist."""
    person = {"id": "p_9", "email": "ada@example.com", "tags": [], "status": "active"}
    answers = {
        "/manage/persons/import": Answer(200, body={"items": []}),
        "/manage/persons": Answer(200, body={"items": [person]}),
    }
    with scripted(answers) as proxy, make_client(proxy.url, retry_budget=1.0) as client:
        found = client.import_person(name="Ada", email="ada@example.com", tags=[])
    assert found["id"] == "p_9"
