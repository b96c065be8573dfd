"""The Proxy sandbox speaks PROXY_API.md, checked over HTTP with plain requests."""

import json
import re
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from sandbox.proxy import FUTURE_DATE_RULE, ProxySandbox, many_sites

AUTH = ("app-key", "app-secret")
SITE_1 = {"orgId": "org-1", "siteId": "site-1"}
SITE_2 = {"orgId": "org-1", "siteId": "site-2"}
GROUPS = {**SITE_1, "type": "persons"}
REPO = Path(__file__).resolve().parents[1]


def call(sandbox, method, path, params=None, auth=AUTH, **kwargs):
    url = sandbox.url + path
    return requests.request(method, url, params=params, auth=auth, timeout=5, **kwargs)


def control(sandbox, method, name, body=None):
    """A /_sandbox/ control route: no auth, JSON in and out."""
    return requests.request(method, f"{sandbox.url}/_sandbox/{name}", json=body, timeout=5)


def error_of(response):
    return response.json()["data"]["error"]


def ids(response):
    return [item["id"] for item in response.json()["items"]]


def iso(epoch):
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def import_one(sandbox, email="ada@example.com", **fields):
    item = {"name": "Ada Lovelace", "email": email, **fields}
    body = {"sendInvite": True, "items": [item]}
    return call(sandbox, "POST", "/manage/persons/import", SITE_1, json=body)


def schedule(sandbox, person_id, status, epoch):
    body = {"status": status, "scheduledDate": iso(epoch)}
    path = f"/mobile-access/persons/{person_id}/scheduled-statuses"
    return call(sandbox, "POST", path, SITE_1, json=body)


# --- auth, orgs and scope --------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, ("app-key", "wrong"), ("nobody", "app-secret")])
def test_calls_without_valid_basic_auth_get_401_invalid_client(proxy_sandbox, auth):
    response = call(proxy_sandbox, "GET", "/v1/orgs", auth=auth)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert isinstance(response.json()["error_description"], str)


def test_an_app_sees_only_its_own_orgs(proxy_sandbox):
    mine = call(proxy_sandbox, "GET", "/v1/orgs").json()
    theirs = call(proxy_sandbox, "GET", "/v1/orgs", auth=("other-key", "other-secret")).json()

    assert mine == {"items": [{"organization": {"id": "org-1", "name": "Acme HQ"}}]}
    assert [i["organization"]["id"] for i in theirs["items"]] == ["org-2"]


def test_an_org_the_app_cannot_see_is_not_found(proxy_sandbox):
    hidden = call(proxy_sandbox, "GET", "/manage/sites", {"orgId": "org-2"})
    own = call(
        proxy_sandbox,
        "GET",
        "/manage/sites",
        {"orgId": "org-2"},
        auth=("other-key", "other-secret"),
    )

    assert hidden.status_code == 404
    assert error_of(hidden)["code"] == "not_found"
    assert ids(own) == ["site-9"]


def test_manage_calls_require_org_and_site_of_that_org(proxy_sandbox):
    no_site = call(proxy_sandbox, "GET", "/manage/persons", {"orgId": "org-1"})
    foreign_site = call(
        proxy_sandbox, "GET", "/manage/persons", {"orgId": "org-1", "siteId": "site-9"}
    )

    assert no_site.status_code == 400
    assert error_of(no_site) == {
        "code": "missing_parameter",
        "description": "the query parameter siteId is required",
    }
    assert foreign_site.status_code == 404


def test_unknown_query_parameters_and_paths_are_rejected(proxy_sandbox):
    drifted = call(proxy_sandbox, "GET", "/manage/sites", {"orgId": "org-1", "sort": "name"})
    unknown_path = call(proxy_sandbox, "GET", "/manage/nothing", SITE_1)
    wrong_method = call(proxy_sandbox, "PUT", "/manage/persons", SITE_1)

    assert (drifted.status_code, error_of(drifted)["code"]) == (400, "invalid_parameter")
    assert (unknown_path.status_code, error_of(unknown_path)["code"]) == (404, "not_found")
    assert wrong_method.status_code == 405


# --- sites and groups ------------------------------------------------------------------------


def test_sites_paginate_from_page_one_with_at_most_100_a_page(proxy_sandbox):
    proxy_sandbox.seed(many_sites(120))

    def page(number, limit=100):
        params = {"orgId": "org-1", "page": number, "limit": limit}
        return call(proxy_sandbox, "GET", "/manage/sites", params)

    assert [len(page(n).json()["items"]) for n in (1, 2, 3)] == [100, 22, 0]
    assert error_of(page(1, limit=101))["code"] == "invalid_parameter"
    assert page(0).status_code == 400


def test_site_search_is_a_case_insensitive_substring_sorted_by_name(proxy_sandbox):
    proxy_sandbox.seed(many_sites(120))

    def sites(name, **sort):
        params = {"orgId": "org-1", "filter": json.dumps({"name": name}), "limit": 100, **sort}
        return call(proxy_sandbox, "GET", "/manage/sites", params)

    assert ids(sites("LOBBY")) == ["site-1"]
    assert len(ids(sites("site 11"))) == 10
    assert ids(sites("o", sortBy="name", sortOrder="desc"))[:2] == ["site-2", "site-1"]
    assert sites("x", sortBy="id").status_code == 400
    bad_filter = call(proxy_sandbox, "GET", "/manage/sites", {"orgId": "org-1", "filter": "Lobby"})
    assert error_of(bad_filter)["code"] == "invalid_filter"


def test_groups_include_the_orgs_global_groups_flagged_for_every_site(proxy_sandbox):
    site_1 = call(proxy_sandbox, "GET", "/manage/groups", GROUPS).json()["items"]
    site_2 = call(proxy_sandbox, "GET", "/manage/groups", {**SITE_2, "type": "persons"})

    flags = {g["id"]: g["isGlobal"] for g in site_1}
    assert flags == {
        "grp-visitors": False,
        "grp-contractors": False,
        "grp-vip": False,
        "grp-all": True,
    }
    assert sorted(ids(site_2)) == ["grp-all", "grp-warehouse-visitors"]


def test_groups_paginate_and_search_by_name(proxy_sandbox):
    first = call(proxy_sandbox, "GET", "/manage/groups", {**GROUPS, "limit": 3})
    second = call(proxy_sandbox, "GET", "/manage/groups", {**GROUPS, "limit": 3, "page": 2})
    found = call(proxy_sandbox, "GET", "/manage/groups", {**GROUPS, "filter": '{"name": "VIS"}'})

    assert (len(ids(first)), len(ids(second))) == (3, 1)
    assert ids(found) == ["grp-visitors"]


def test_group_calls_require_type_persons(proxy_sandbox):
    missing = call(proxy_sandbox, "GET", "/manage/groups", SITE_1)
    wrong = call(proxy_sandbox, "GET", "/manage/groups/grp-vip", {**SITE_1, "type": "doors"})

    assert error_of(missing)["code"] == "missing_parameter"
    assert error_of(wrong)["code"] == "invalid_parameter"


def test_a_group_is_got_with_its_tag_and_only_from_its_site(proxy_sandbox):
    vip = call(proxy_sandbox, "GET", "/manage/groups/grp-vip", GROUPS)
    elsewhere = call(proxy_sandbox, "GET", "/manage/groups/grp-warehouse-visitors", GROUPS)

    assert vip.json() == {"id": "grp-vip", "name": "VIP", "tag": "vip", "isGlobal": False}
    assert elsewhere.status_code == 404


# --- persons ---------------------------------------------------------------------------------


def test_persons_are_found_by_email_case_insensitively_within_their_site(proxy_sandbox):
    params = {"filter": json.dumps({"email": "ERIN@Example.com"})}
    here = call(proxy_sandbox, "GET", "/manage/persons", {**SITE_1, **params})
    other_site = call(proxy_sandbox, "GET", "/manage/persons", {**SITE_2, **params})

    assert here.json()["items"] == [
        {
            "id": "p_1",
            "name": "Erin Employee",
            "email": "erin@example.com",
            "tags": ["staff"],
            "status": "active",
            "details": {},
        }
    ]
    assert ids(other_site) == []


def _found(sandbox, email):
    params = {**SITE_1, "filter": json.dumps({"email": email})}
    return ids(call(sandbox, "GET", "/manage/persons", params))


def test_the_email_lookup_follows_imports_and_seeds_that_replace_a_person(proxy_sandbox):
    imported = import_one(proxy_sandbox, email="Ada@Example.com").json()["items"][0]["id"]
    twin = import_one(proxy_sandbox, email="ada@example.com").json()["items"][0]["id"]
    erin = {"orgId": "org-1", "siteId": "site-1", "name": "Erin", "email": "ADA@example.com"}
    proxy_sandbox.seed({"persons": [{**erin, "id": "p_1"}]})  # p_1 was erin@example.com

    assert _found(proxy_sandbox, "ada@example.com") == ["p_1", imported, twin]  # listing order
    assert _found(proxy_sandbox, "erin@example.com") == []
    assert [p["id"] for p in proxy_sandbox.persons("ADA@EXAMPLE.COM")] == ["p_1", imported, twin]


def test_person_listings_without_a_filter_page_through_everyone_of_the_site(proxy_sandbox):
    person = {"orgId": "org-1", "siteId": "site-1", "name": "Many"}
    many = [{**person, "email": f"m{i}@example.com"} for i in range(150)]
    proxy_sandbox.seed({"persons": many})

    pages = [call(proxy_sandbox, "GET", "/manage/persons", {**SITE_1, "page": n, "limit": 100})
             for n in (1, 2)]  # fmt: skip

    assert [len(ids(page)) for page in pages] == [100, 52]
    assert ids(pages[0])[:2] == ["p_1", "p_2"]


def test_a_person_is_got_by_id_within_its_site(proxy_sandbox):
    sam = call(proxy_sandbox, "GET", "/manage/persons/p_2", SITE_1)
    elsewhere = call(proxy_sandbox, "GET", "/manage/persons/p_2", SITE_2)

    assert sam.json()["name"] == "Sam Staff"
    assert (elsewhere.status_code, error_of(elsewhere)["code"]) == (404, "not_found")


def test_import_creates_active_persons_and_records_the_invite(proxy_sandbox):
    details = {"phoneNumber": "+15550100", "createdBy": "Created by Envoy", "envoyId": "entries:42"}
    response = import_one(
        proxy_sandbox, tags=["visitor-lobby"], photo="https://x/p.png", details=details
    )

    [person] = response.json()["items"]
    assert re.fullmatch(r"p_\d+", person["id"])
    assert person["status"] == "active"
    assert person["tags"] == ["visitor-lobby"]
    assert person["details"] == details
    [stored] = proxy_sandbox.persons(email="ADA@example.com")
    assert (stored["siteId"], stored["invitesSent"], stored["resends"]) == ("site-1", 1, 0)


def test_import_allows_twins_because_proxy_has_no_idempotency(proxy_sandbox):
    import_one(proxy_sandbox)
    import_one(proxy_sandbox, email="Ada@Example.com")

    assert len(proxy_sandbox.persons(email="ada@example.com")) == 2


@pytest.mark.parametrize(
    ("item", "body", "fragment"),
    [
        ({"tags": ["nope"]}, {}, "'nope' is not the tag"),
        ({"tags": ["everyone"]}, {}, "'everyone' is not the tag"),
        ({"tags": ["visitor-warehouse"]}, {}, "'visitor-warehouse' is not the tag"),
        ({"photo": "https://x/" + "p" * 246}, {}, "photo must be under 256 characters"),
        ({"email": None}, {}, "email must be a non-empty string"),
        ({"details": {"phoneNumber": 5550100}}, {}, "details must be an object of strings"),
        ({"colour": "red"}, {}, "colour is not a known field"),
        ({}, {"sendInvite": "yes"}, "sendInvite must be true or false"),
        ({}, {"items": []}, "items must be a non-empty list"),
    ],
)
def test_import_rejects_invalid_bodies_and_creates_nobody(proxy_sandbox, item, body, fragment):
    full = {"sendInvite": False, "items": [{"name": "Ada", "email": "ada@example.com", **item}]}
    response = call(proxy_sandbox, "POST", "/manage/persons/import", SITE_1, json={**full, **body})

    assert response.status_code == 400
    assert error_of(response)["code"] == "validation_error"
    assert fragment in error_of(response)["description"]
    assert len(proxy_sandbox.persons()) == 2


def test_import_requires_a_json_body(proxy_sandbox):
    path = "/manage/persons/import"
    json_type = {"Content-Type": "application/json"}
    not_json = call(proxy_sandbox, "POST", path, SITE_1, data="{", headers=json_type)
    form = call(proxy_sandbox, "POST", path, SITE_1, data={"items": "x"})

    assert error_of(not_json)["code"] == "invalid_json"
    assert form.status_code == 415


def test_a_photo_url_of_255_characters_is_accepted(proxy_sandbox):
    photo = "https://x/" + "p" * 245

    assert import_one(proxy_sandbox, photo=photo).json()["items"][0]["photo"] == photo


def test_adding_and_removing_a_group_changes_the_persons_tags(proxy_sandbox):
    path = "/manage/groups/grp-vip/persons/p_1"

    added = call(proxy_sandbox, "POST", path, SITE_1)
    tags_with = proxy_sandbox.persons("erin@example.com")[0]["tags"]
    removed = call(proxy_sandbox, "DELETE", path, SITE_1)
    tags_without = proxy_sandbox.persons("erin@example.com")[0]["tags"]

    assert (added.json(), removed.json()) == ({}, {})
    assert (tags_with, tags_without) == (["staff", "vip"], ["staff"])


def test_global_groups_cannot_be_assigned(proxy_sandbox):
    response = call(proxy_sandbox, "POST", "/manage/groups/grp-all/persons/p_1", SITE_1)

    assert (response.status_code, error_of(response)["code"]) == (400, "global_group")


def test_membership_of_unknown_persons_or_groups_is_404(proxy_sandbox):
    no_person = call(proxy_sandbox, "POST", "/manage/groups/grp-vip/persons/p_404", SITE_1)
    no_group = call(proxy_sandbox, "DELETE", "/manage/groups/grp-404/persons/p_1", SITE_1)

    assert (no_person.status_code, no_group.status_code) == (404, 404)


def test_resending_the_invite_is_recorded(proxy_sandbox):
    response = call(proxy_sandbox, "POST", "/manage/persons/p_2/resend", SITE_1)

    assert response.json() == {}
    assert proxy_sandbox.persons("sam@example.com")[0]["resends"] == 1


# --- scheduled statuses and the clock --------------------------------------------------------


def test_status_is_the_latest_scheduled_status_passed_on_the_sandbox_clock(proxy_sandbox):
    now = time.time()
    suspended = schedule(proxy_sandbox, "p_1", "suspended", now + 60)
    schedule(proxy_sandbox, "p_1", "active", now + 120)

    def status(offset):
        proxy_sandbox.set_clock(offset_seconds=offset)
        return call(proxy_sandbox, "GET", "/manage/persons/p_1", SITE_1).json()["status"]

    assert suspended.json() == {
        "id": suspended.json()["id"],
        "status": "suspended",
        "scheduledDate": iso(now + 60),
    }
    assert [status(0), status(90), status(150)] == ["active", "suspended", "active"]


def test_scheduled_dates_must_be_after_the_sandbox_now(proxy_sandbox):
    now = time.time()
    past = schedule(proxy_sandbox, "p_1", "suspended", now - 1)
    proxy_sandbox.set_clock(offset_seconds=3600)
    behind_clock = schedule(proxy_sandbox, "p_1", "suspended", now + 60)
    ahead = schedule(proxy_sandbox, "p_1", "suspended", now + 7200)

    expected = {"code": "validation_error", "description": FUTURE_DATE_RULE}
    assert (past.status_code, error_of(past)) == (400, expected)
    assert error_of(behind_clock) == expected
    assert ahead.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"status": "gone", "scheduledDate": "2999-01-01T00:00:00Z"},
        {"status": "active", "scheduledDate": "2999-01-01T00:00:00+00:00"},
        {"status": "active"},
    ],
)
def test_scheduled_statuses_reject_malformed_bodies(proxy_sandbox, body):
    path = "/mobile-access/persons/p_1/scheduled-statuses"
    response = call(proxy_sandbox, "POST", path, SITE_1, json=body)

    assert error_of(response)["code"] == "validation_error"


def test_seeded_scheduled_statuses_count_and_the_clock_can_be_set_over_http(proxy_sandbox):
    then = time.time() + 86400
    scheduled = [{"status": "suspended", "scheduledDate": iso(then)}]
    person = {"orgId": "org-1", "siteId": "site-1", "name": "Val", "email": "val@example.com"}
    control(
        proxy_sandbox, "POST", "seed", {"persons": [{**person, "scheduledStatuses": scheduled}]}
    )

    before = proxy_sandbox.persons("val@example.com")[0]["status"]
    moved = control(proxy_sandbox, "POST", "clock", {"now": then + 1}).json()
    after = proxy_sandbox.persons("val@example.com")[0]["status"]

    assert (before, after) == ("active", "suspended")
    assert moved["now"] == pytest.approx(then + 1, abs=1)


def test_scheduled_status_ids_stay_unique_beside_seeded_ones(proxy_sandbox):
    date = iso(time.time() + 86400)
    seeded = [{"id": f"ss_{n}", "status": "suspended", "scheduledDate": date} for n in range(1, 9)]
    person = {"orgId": "org-1", "siteId": "site-1", "name": "Val", "email": "val@example.com"}
    proxy_sandbox.seed({"persons": [{**person, "scheduledStatuses": seeded}]})

    given = [schedule(proxy_sandbox, "p_1", "active", time.time() + 60).json()["id"]
             for _ in range(3)]  # fmt: skip

    assert len(set(given)) == 3
    assert not set(given) & {s["id"] for s in seeded}


# --- control routes --------------------------------------------------------------------------


def test_state_logs_api_calls_but_not_control_routes(proxy_sandbox):
    call(proxy_sandbox, "GET", "/manage/persons", SITE_1)
    call(proxy_sandbox, "GET", "/v1/orgs", auth=None)
    control(proxy_sandbox, "GET", "state")

    calls = proxy_sandbox.state()["calls"]

    assert [(c["method"], c["path"], c["status"]) for c in calls] == [
        ("GET", "/manage/persons", 200),
        ("GET", "/v1/orgs", 401),
    ]
    assert calls[0]["query"] == SITE_1


def test_reset_clears_data_faults_clock_and_calls(proxy_sandbox):
    proxy_sandbox.add_fault(status=503)
    proxy_sandbox.set_clock(offset_seconds=99)
    call(proxy_sandbox, "GET", "/v1/orgs")

    control(proxy_sandbox, "POST", "reset")
    state = proxy_sandbox.state()

    assert (state["persons"], state["sites"], state["calls"], state["faults"]) == ([], [], [], [])
    assert state["clock_offset"] == 0
    assert call(proxy_sandbox, "GET", "/v1/orgs").status_code == 401


def test_faults_are_set_and_cleared_over_http_and_validated(proxy_sandbox):
    added = control(proxy_sandbox, "POST", "faults", {"status": 503, "count": 5})
    failing = call(proxy_sandbox, "GET", "/v1/orgs").status_code
    control(proxy_sandbox, "DELETE", "faults")
    healed = call(proxy_sandbox, "GET", "/v1/orgs").status_code
    invalid = control(proxy_sandbox, "POST", "faults", {"status": 200})
    unknown = control(proxy_sandbox, "POST", "faults", {"status": 500, "flaky": True})

    assert added.json()["fault"]["count"] == 5
    assert (failing, healed) == (503, 200)
    assert (invalid.status_code, unknown.status_code) == (400, 400)


# --- faults ----------------------------------------------------------------------------------


def test_latency_fault_delays_api_calls_only(proxy_sandbox):
    proxy_sandbox.add_fault(latency_ms=200)

    started = time.monotonic()
    response = call(proxy_sandbox, "GET", "/v1/orgs")
    delayed = time.monotonic() - started
    started = time.monotonic()
    control(proxy_sandbox, "GET", "state")
    undelayed = time.monotonic() - started

    assert response.status_code == 200
    assert delayed >= 0.2
    assert undelayed < 0.2


def test_status_fault_for_the_next_count_calls_answers_html_5xx(proxy_sandbox):
    proxy_sandbox.add_fault(status=503, count=2)

    responses = [call(proxy_sandbox, "GET", "/v1/orgs") for _ in range(3)]

    assert [r.status_code for r in responses] == [503, 503, 200]
    assert responses[0].headers["Content-Type"] == "text/html"


def test_status_fault_hits_about_its_share_of_calls(proxy_sandbox):
    proxy_sandbox.add_fault(status=500, share=0.5)

    statuses = [call(proxy_sandbox, "GET", "/v1/orgs").status_code for _ in range(200)]

    assert set(statuses) == {200, 500}
    assert 50 < statuses.count(500) < 150


def test_status_fault_for_some_seconds_then_heals(proxy_sandbox):
    proxy_sandbox.add_fault(status=500, seconds=0.3)

    during = call(proxy_sandbox, "GET", "/v1/orgs").status_code
    time.sleep(0.4)
    after = call(proxy_sandbox, "GET", "/v1/orgs").status_code

    assert (during, after) == (500, 200)


def test_429_is_rate_limited_with_retry_after(proxy_sandbox):
    proxy_sandbox.add_fault(status=429, retry_after=7, count=1)

    response = call(proxy_sandbox, "GET", "/manage/persons", SITE_1)

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert error_of(response)["code"] == "rate_limited"


def test_faults_apply_only_under_their_path_prefix(proxy_sandbox):
    proxy_sandbox.add_fault(status=500, path_prefix="/manage/persons/import")

    assert import_one(proxy_sandbox).status_code == 500
    assert call(proxy_sandbox, "GET", "/manage/persons", SITE_1).status_code == 200
    assert len(proxy_sandbox.persons()) == 2


def test_drop_closes_the_connection_without_an_answer(proxy_sandbox):
    proxy_sandbox.add_fault(drop=True, count=1)

    with pytest.raises(requests.ConnectionError):
        call(proxy_sandbox, "GET", "/v1/orgs")

    assert proxy_sandbox.state()["calls"][-1]["status"] is None
    assert call(proxy_sandbox, "GET", "/v1/orgs").status_code == 200


def test_a_late_call_is_dropped_now_and_carried_out_later(proxy_sandbox):
    """Proxy processing a request after the client gave up: how twins are born."""
    proxy_sandbox.add_fault(late_ms=300, count=1, path_prefix="/manage/persons/import")
    with pytest.raises(requests.ConnectionError):
        import_one(proxy_sandbox, "late@example.com")
    assert proxy_sandbox.persons("late@example.com") == []
    deadline = time.monotonic() + 5
    while not proxy_sandbox.persons("late@example.com"):
        assert time.monotonic() < deadline, "the late call was never carried out"
        time.sleep(0.05)


def test_a_garbled_answer_is_a_200_whose_body_is_not_json_and_the_call_happened(proxy_sandbox):
    proxy_sandbox.add_fault(garble=True, count=1, path_prefix="/manage/persons/import")
    response = import_one(proxy_sandbox, "garbled@example.com")
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    assert len(proxy_sandbox.persons("garbled@example.com")) == 1


def _call_in_thread(sandbox, outcome):
    def run():
        try:
            outcome.append(call(sandbox, "GET", "/v1/orgs").status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_hang_holds_calls_until_the_faults_are_cleared(proxy_sandbox):
    proxy_sandbox.add_fault(hang=True)
    outcome = []

    thread = _call_in_thread(proxy_sandbox, outcome)
    thread.join(0.3)
    still_waiting = thread.is_alive()
    proxy_sandbox.clear_faults()
    thread.join(2)

    assert still_waiting
    assert outcome == [200]


def test_a_hanging_call_does_not_delay_stop():
    sandbox = ProxySandbox().start()
    sandbox.add_fault(hang=True)
    outcome = []
    thread = _call_in_thread(sandbox, outcome)
    time.sleep(0.1)

    started = time.monotonic()
    sandbox.stop()
    thread.join(2)

    assert time.monotonic() - started < 1
    assert isinstance(outcome[0], requests.ConnectionError)


# --- concurrency, start-up and the real process ----------------------------------------------


def test_concurrent_imports_are_all_kept_with_distinct_ids(proxy_sandbox):
    def import_ten(worker):
        for n in range(10):
            assert import_one(proxy_sandbox, email=f"w{worker}-{n}@example.com").status_code == 200

    threads = [threading.Thread(target=import_ten, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    imported = [p for p in proxy_sandbox.persons() if p["email"].startswith("w")]
    assert len(imported) == 80
    assert len({p["id"] for p in imported}) == 80


def test_the_sandbox_starts_in_well_under_a_second():
    started = time.monotonic()
    sandbox = ProxySandbox().start()
    elapsed = time.monotonic() - started
    sandbox.stop()

    assert elapsed < 1


def _wait_for_url(process, deadline):
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], deadline - time.monotonic())
        line = process.stderr.readline() if ready else ""
        if found := re.search(r"listening on (http://\S+)", line):
            return found.group(1)
    raise AssertionError("the sandbox process did not report its URL")


def test_the_sandbox_process_serves_and_exits_0_on_sigterm():
    command = [sys.executable, "-m", "sandbox.proxy", "--listen", "127.0.0.1:0", "--demo-seed"]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        url = _wait_for_url(process, time.monotonic() + 10)
        orgs = requests.get(f"{url}/v1/orgs", auth=AUTH, timeout=5)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=5)
    finally:
        process.kill()
        process.stderr.close()

    assert orgs.json()["items"][0]["organization"]["id"] == "org-1"
    assert code == 0
