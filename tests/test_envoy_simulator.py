"""The Envoy simulator: its signature, the body shapes it builds, its fake APIs and its CLI."""

import json
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from sandbox import envoy
from sandbox.envoy import USER_TOKEN, entry_event, invite_event, meta, route_body, sign

PLUGIN_API = "/api/v2/plugin-services"


class _Recorder(BaseHTTPRequestHandler):
    """Stands in for the daemon: keeps each raw request and answers 200 {"message": "ok"}."""

    received: list

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, dict(self.headers), raw))
        answer = b'{"message":"ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def daemon_stub():
    handler = type("Handler", (_Recorder,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.received
    server.shutdown()
    server.server_close()
    thread.join()


def _plugin_token(sim) -> str:
    answer = requests.post(
        sim.url + "/a/auth/v0/token",
        auth=("sim-client", "sim-secret"),
        json={"grant_type": "client_credentials", "scope": "plugin,token.refresh"},
        timeout=5,
    )
    assert answer.status_code == 200
    return answer.json()["access_token"]


def _user_get(sim, path, **params):
    headers = {"Authorization": f"Bearer {USER_TOKEN}"}
    return requests.get(sim.url + path, params=params, headers=headers, timeout=5)


def _entry(**overrides):
    fields = {
        "entry_id": "19",
        "full_name": "Ada Lovelace",
        "email": "ada@example.com",
        "flow_id": "flow-visitor",
        "signed_in_at": datetime(2024, 5, 1, 13, 45, 7, tzinfo=UTC),
    }
    return entry_event(**{**fields, **overrides})


# -- signature and body shapes ---------------------------------------------------------------


def test_sign_reproduces_the_protocol_test_vector():
    body = b'{"meta":{"event":"entry_sign_in"},"payload":{"id":"1","type":"entries"}}'
    assert sign("test-secret", body) == "ODKM4kpCleKKkWKnKcGlTC7y/HcXhzA48+SzXIkIAxU="


@pytest.mark.parametrize(
    "signed_in_at",
    [
        datetime(2024, 5, 1, 13, 45, 7, tzinfo=UTC),
        datetime(2024, 5, 1, 9, 45, 7, tzinfo=timezone(timedelta(hours=-4))),
        datetime(2024, 5, 1, 13, 45, 7),
        1714571107,
    ],
)
def test_entry_times_are_utc_in_envoys_space_separated_format(signed_in_at):
    attributes = _entry(signed_in_at=signed_in_at)["payload"]["attributes"]
    assert attributes["signed-in-at"] == "2024-05-01 13:45:07"
    assert attributes["signed-out-at"] is None


def test_entry_event_has_dash_cased_attributes_and_relationships():
    body = _entry(
        event="entry_sign_out",
        signed_out_at=datetime(2024, 5, 1, 15, 0, tzinfo=UTC),
        invite_id="55",
        employee_id="e-1",
        phone="+1 555 0100",
        photo_url="https://example.com/ada.jpg",
        host="Erin Employee",
        host_email="erin@example.com",
    )
    payload = body["payload"]
    assert payload["id"] == "19" and payload["type"] == "entries"
    attributes = payload["attributes"]
    assert attributes["full-name"] == "Ada Lovelace"
    assert attributes["phone-number"] == "+1 555 0100"
    assert attributes["signed-out-at"] == "2024-05-01 15:00:00"
    assert attributes["thumbnails"] == dict.fromkeys(
        ("original", "large", "small"), "https://example.com/ada.jpg"
    )
    assert attributes["flow-name"] == "Visitor"
    assert attributes["employee-screening-flow"] is False
    assert attributes["host-email"] == "erin@example.com"
    assert attributes["user-data"] == []
    assert payload["relationships"] == {
        "flow": {"data": {"type": "flows", "id": "flow-visitor"}},
        "invite": {"data": {"type": "invites", "id": "55"}},
        "employee": {"data": {"type": "employees", "id": "e-1"}},
        "location": {"data": {"type": "locations", "id": "loc-1"}},
    }
    assert body["meta"]["event"] == "entry_sign_out"
    assert body["meta"]["job"]["identifier"] == "vr:entry:19"


def test_walk_in_entry_has_no_invite_or_employee_relationship():
    relationships = _entry()["payload"]["relationships"]
    assert set(relationships) == {"flow", "location"}


def test_event_meta_carries_job_location_company_and_installer_token():
    body_meta = _entry(install_id="install-9", config={"proxy_site_id": "s-1"})["meta"]
    assert body_meta["install_id"] == "install-9"
    assert body_meta["config"] == {"proxy_site_id": "s-1"}
    assert body_meta["job"]["name"] == "entry_sign_in"
    assert len(body_meta["job"]["id"]) == 36  # a uuid4
    assert body_meta["location"]["id"] == "loc-1"
    assert body_meta["location"]["type"] == "locations"
    assert body_meta["location"]["attributes"]["timezone"] == "America/New_York"
    assert body_meta["company"]["attributes"]["name"]
    assert body_meta["zone"] is None
    assert body_meta["auth"]["token_type"] == "Bearer"
    assert body_meta["auth"]["access_token"] == USER_TOKEN


def test_each_event_gets_a_new_job_id_unless_given():
    assert _entry()["meta"]["job"]["id"] != _entry()["meta"]["job"]["id"]
    assert _entry(job_id="job-7")["meta"]["job"]["id"] == "job-7"


def test_company_level_install_has_no_location_and_auth_may_be_null():
    body_meta = meta("entry_sign_in", location_id=None, access_token=None)
    assert "location" not in body_meta
    assert body_meta["auth"] is None


def test_numeric_ids_option_sends_numbers_where_envoy_might():
    body = _entry(
        entry_id=19,
        flow_id=7,
        invite_id=55,
        install_id=3,
        location_id=12,
        numeric_ids=True,
    )
    assert body["payload"]["id"] == 19
    assert body["payload"]["relationships"]["flow"]["data"]["id"] == 7
    assert body["payload"]["relationships"]["invite"]["data"]["id"] == 55
    assert body["meta"]["install_id"] == 3
    assert body["meta"]["location"]["id"] == 12


def test_ids_are_strings_by_default_even_if_given_as_numbers():
    body = _entry(entry_id=19, flow_id=7)
    assert body["payload"]["id"] == "19"
    assert body["payload"]["relationships"]["flow"]["data"]["id"] == "7"


def test_employee_entry_marks_the_screening_flow():
    attributes = _entry(event="employee_entry_sign_in", employee_screening=True)["payload"][
        "attributes"
    ]
    assert attributes["employee-screening-flow"] is True
    assert attributes["flow-name"] == "Employee registration"


def test_entries_carry_an_approval_status_and_block_list_events_when_asked():
    assert "approval-status" not in _entry()["payload"]["attributes"]
    body = _entry(event="entry_blacklist_review", approval_status="pending")
    assert body["meta"]["event"] == "entry_blacklist_review"
    status = body["payload"]["attributes"]["approval-status"]
    assert status == {"status": "pending", "auto-approved": False, "report": []}


def test_the_cli_sends_block_list_events_with_an_approval_status():
    args = envoy.build_parser().parse_args(
        ["event", "entry_blacklist_deny", "--name", "Eve", "--flow", "f-1",
         "--approval-status", "denied"]
    )  # fmt: skip
    body = envoy._event_body(args)
    assert body["meta"]["event"] == "entry_blacklist_deny"
    assert body["payload"]["attributes"]["approval-status"]["status"] == "denied"


def test_invite_event_has_iso_arrival_and_invite_attributes():
    body = invite_event(
        "invite_updated",
        invite_id="55",
        full_name="Ada Lovelace",
        email="ada@example.com",
        flow_id="flow-visitor",
        expected_arrival=datetime(2024, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=-4))),
        changed_fields=["expected-arrival-time"],
        employee_id="e-2",
    )
    payload = body["payload"]
    assert payload["type"] == "invites"
    attributes = payload["attributes"]
    assert attributes["expected-arrival-time"] == "2024-05-01T13:30:00.000Z"
    assert datetime.fromisoformat(attributes["expected-arrival-time"]) == datetime(
        2024, 5, 1, 13, 30, tzinfo=UTC
    )
    assert attributes["flow-id"] == "flow-visitor"
    assert attributes["changed-fields"] == ["expected-arrival-time"]
    assert attributes["arrived"] is False
    assert "preregistration-complete" in attributes
    assert payload["relationships"]["employee"]["data"] == {"type": "employees", "id": "e-2"}
    assert "entry" not in payload["relationships"]
    assert body["meta"]["event"] == "invite_updated"
    assert body["meta"]["job"]["identifier"] == "vr:invite:55"


def test_invite_arrival_from_epoch_seconds():
    body = invite_event(
        invite_id=1,
        full_name="A",
        email=None,
        flow_id="f",
        expected_arrival=1714570200,
    )
    assert body["payload"]["attributes"]["expected-arrival-time"] == "2024-05-01T13:30:00.000Z"


def test_route_body_for_an_options_route_has_params_and_no_payload():
    body = route_body(
        "/envoy/options/flows",
        params={"search": "vis", "page": 1},
        config={"proxy_org_id": "o-1"},
        forwarded_bearer_token="dash-token",
    )
    assert "payload" not in body
    assert body["meta"]["route"] == "/envoy/options/flows"
    assert body["meta"]["params"] == {"search": "vis", "page": 1}
    assert body["meta"]["config"] == {"proxy_org_id": "o-1"}
    assert body["meta"]["forwarded_bearer_token"] == "dash-token"
    assert body["meta"]["auth"]["access_token"] == USER_TOKEN
    assert body["meta"]["location"]["id"] == "loc-1"


def test_route_body_for_a_validation_route_carries_the_step_payload():
    body = route_body("/envoy/setup/site", payload={"proxy_site_id": "s-1"}, auth=False)
    assert body["payload"] == {"proxy_site_id": "s-1"}
    assert body["meta"]["auth"] is None
    assert "forwarded_bearer_token" not in body["meta"]


# -- the fake plugin API ---------------------------------------------------------------------


def test_token_endpoint_checks_client_credentials_and_counts_tokens(envoy_sim):
    refused = requests.post(
        envoy_sim.url + "/a/auth/v0/token",
        auth=("sim-client", "wrong"),
        json={"grant_type": "client_credentials"},
        timeout=5,
    )
    assert refused.status_code == 401
    assert envoy_sim.tokens_issued == 0

    envoy_sim.token_expires_in = 120
    answer = requests.post(
        envoy_sim.url + "/a/auth/v0/token",
        auth=("sim-client", "sim-secret"),
        json={"grant_type": "client_credentials", "scope": "plugin,token.refresh"},
        timeout=5,
    )
    assert answer.status_code == 200
    assert answer.json()["expires_in"] == 120
    assert answer.json()["token_type"] == "Bearer"
    assert envoy_sim.tokens_issued == 1


def test_plugin_endpoints_refuse_a_missing_or_unknown_token(envoy_sim):
    url = f"{envoy_sim.url}{PLUGIN_API}/jobs/job-1"
    assert requests.patch(url, json={"status": "done"}, timeout=5).status_code == 401
    headers = {"Authorization": "Bearer not-issued"}
    answer = requests.patch(url, json={"status": "done"}, headers=headers, timeout=5)
    assert answer.status_code == 401
    assert envoy_sim.jobs == {}


def test_job_updates_are_recorded_per_job_in_order(envoy_sim):
    headers = {"Authorization": f"Bearer {_plugin_token(envoy_sim)}"}
    for job_id, status in [("job-1", "ongoing"), ("job-2", "ignored"), ("job-1", "done")]:
        answer = requests.patch(
            f"{envoy_sim.url}{PLUGIN_API}/jobs/{job_id}",
            json={"status": status, "status_message": status},
            headers=headers,
            timeout=5,
        )
        assert answer.status_code == 204
    assert [body["status"] for body in envoy_sim.jobs["job-1"]] == ["ongoing", "done"]
    assert envoy_sim.jobs["job-2"] == [{"status": "ignored", "status_message": "ignored"}]


def test_job_updates_are_taken_as_json_api_as_envoy_takes_them(envoy_sim):
    headers = {
        "Authorization": f"Bearer {_plugin_token(envoy_sim)}",
        "Content-Type": "application/vnd.api+json",
    }
    answer = requests.patch(
        f"{envoy_sim.url}{PLUGIN_API}/jobs/job-1",
        data=json.dumps({"status": "done"}),
        headers=headers,
        timeout=5,
    )
    assert answer.status_code == 204
    assert envoy_sim.jobs["job-1"] == [{"status": "done"}]
    assert envoy_sim.calls[-1].content_type == "application/vnd.api+json"


def test_job_update_with_an_unknown_status_is_refused(envoy_sim):
    headers = {"Authorization": f"Bearer {_plugin_token(envoy_sim)}"}
    answer = requests.patch(
        f"{envoy_sim.url}{PLUGIN_API}/jobs/job-1",
        json={"status": "finished"},
        headers=headers,
        timeout=5,
    )
    assert answer.status_code == 422
    assert envoy_sim.jobs == {}


def test_purposes_are_recorded_per_install(envoy_sim):
    headers = {"Authorization": f"Bearer {_plugin_token(envoy_sim)}"}
    answer = requests.put(
        f"{envoy_sim.url}{PLUGIN_API}/installs/install-1/purpose",
        json={"purpose": "identity-verification"},
        headers=headers,
        timeout=5,
    )
    assert answer.status_code == 204
    assert envoy_sim.purposes == {"install-1": ["identity-verification"]}


def test_install_config_put_merges_and_null_removes_a_key(envoy_sim):
    headers = {"Authorization": f"Bearer {_plugin_token(envoy_sim)}"}
    url = f"{envoy_sim.url}{PLUGIN_API}/installs/install-1/config"
    requests.put(url, json={"a": 1, "b": 2}, headers=headers, timeout=5)
    requests.put(url, json={"b": None, "c": 3}, headers=headers, timeout=5)
    assert requests.get(url, headers=headers, timeout=5).json() == {"data": {"a": 1, "c": 3}}


def test_fail_next_answers_the_matching_calls_then_recovers(envoy_sim):
    envoy_sim.fail_next(2, 429, path="/api/v3/flows", retry_after=3)
    assert _user_get(envoy_sim, "/api/v3/employees/e-1").status_code == 200
    first = _user_get(envoy_sim, "/api/v3/flows")
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "3"
    assert _user_get(envoy_sim, "/api/v3/flows").status_code == 429
    assert _user_get(envoy_sim, "/api/v3/flows").status_code == 200
    assert [call.path for call in envoy_sim.calls].count("/api/v3/flows") == 3


def test_reset_forgets_records_tokens_faults_and_data(envoy_sim):
    _plugin_token(envoy_sim)
    envoy_sim.fail_next(5)
    envoy_sim.reset()
    assert envoy_sim.tokens_issued == 0
    assert envoy_sim.calls == []
    assert _user_get(envoy_sim, "/api/v3/flows").json()["data"] == []


# -- the fake user API -----------------------------------------------------------------------


def test_flows_are_json_api_for_the_location_with_the_employee_flow_marked(envoy_sim):
    envoy_sim.set_flows("loc-2", [{"id": "flow-other", "name": "Other", "employee": False}])
    answer = _user_get(envoy_sim, "/api/v3/flows", **{"filter[location]": "loc-1"})
    flows = answer.json()["data"]
    assert [flow["id"] for flow in flows] == [
        "flow-visitor",
        "flow-contractor",
        "flow-interview",
        "flow-employee",
    ]
    assert flows[0]["type"] == "flows"
    assert flows[0]["attributes"]["name"] == "Visitor"
    assert [flow["attributes"]["employee-centric"] for flow in flows] == [
        False,
        False,
        False,
        True,
    ]


def test_flows_page_by_limit_and_offset(envoy_sim):
    params = {"filter[location]": "loc-1", "page[limit]": 3, "page[offset]": 2}
    body = _user_get(envoy_sim, "/api/v3/flows", **params).json()
    assert [flow["id"] for flow in body["data"]] == ["flow-interview", "flow-employee"]
    assert body["meta"]["total"] == 4


def test_user_api_refuses_a_wrong_token(envoy_sim):
    answer = requests.get(
        envoy_sim.url + "/api/v3/flows", headers={"Authorization": "Bearer nope"}, timeout=5
    )
    assert answer.status_code == 401


def test_employees_page_through_all_130(envoy_sim):
    pages = [
        _user_get(
            envoy_sim,
            "/api/v3/employees",
            **{"filter[locations]": "loc-1", "page[limit]": 100, "page[offset]": offset},
        ).json()["data"]
        for offset in (0, 100, 200)
    ]
    assert [len(page) for page in pages] == [100, 30, 0]
    ids = [employee["id"] for page in pages for employee in page]
    assert len(set(ids)) == 130
    assert pages[0][0]["attributes"] == {
        "name": "Erin Employee",
        "email": "erin@example.com",
        "phone-number": None,
        "deleted": False,
    }


def test_employee_search_matches_name_or_email_ignoring_case(envoy_sim):
    def search(text):
        params = {"filter[locations]": "loc-1", "filter[query]": text}
        return [e["id"] for e in _user_get(envoy_sim, "/api/v3/employees", **params).json()["data"]]

    assert search("STAFF") == ["e-2"]
    assert search("alex@") == ["e-3"]
    assert search("Employee 12") == [f"e-{n + 3}" for n in range(120, 128)]


def test_employee_by_id_or_404(envoy_sim):
    found = _user_get(envoy_sim, "/api/v3/employees/e-2").json()["data"]
    assert found["attributes"]["name"] == "Sam Staff"
    assert _user_get(envoy_sim, "/api/v3/employees/e-999").status_code == 404


# -- sending to the daemon -------------------------------------------------------------------


def test_post_sends_compact_json_signed_with_the_client_secret(envoy_sim, daemon_stub):
    url, received = daemon_stub
    body = _entry()
    answer = envoy_sim.post(url, "/envoy/events", body)
    assert answer.status_code == 200
    path, headers, raw = received[0]
    assert path == "/envoy/events"
    assert raw == json.dumps(body, separators=(",", ":")).encode()
    assert headers["X-Envoy-Signature"] == sign("sim-secret", raw)


def test_post_can_sign_with_another_secret_or_not_at_all(envoy_sim, daemon_stub):
    url, received = daemon_stub
    envoy_sim.post(url, "/envoy/events", _entry(), secret="other")
    envoy_sim.post(url, "/envoy/events", _entry(), sign_body=False)
    assert received[0][1]["X-Envoy-Signature"] == sign("other", received[0][2])
    assert "X-Envoy-Signature" not in received[1][1]


def test_cli_event_signs_sends_and_prints_the_answer(daemon_stub, capsys):
    url, received = daemon_stub
    argv = ["--daemon", url, "--secret", "S", "event", "invite_created", "--name", "Ada"]
    argv += ["--flow", "flow-visitor", "--arrival", "2024-05-01T09:30:00-04:00"]
    argv += ["--config-json", '{"invite_required": true}']
    assert envoy.main(argv) == 0
    printed = capsys.readouterr()
    assert printed.out.splitlines()[0] == "200"
    assert "--secret is visible to every local user" in printed.err
    _path, headers, raw = received[0]
    assert headers["X-Envoy-Signature"] == sign("S", raw)
    body = json.loads(raw)
    assert body["meta"]["config"] == {"invite_required": True}
    assert body["payload"]["attributes"]["expected-arrival-time"] == "2024-05-01T13:30:00.000Z"


def test_cli_event_reads_the_secret_from_the_environment(daemon_stub, monkeypatch, capsys):
    url, received = daemon_stub
    monkeypatch.setenv("ENVOY_CLIENT_SECRET", "from-env")
    argv = ["event", "entry_sign_out", "--name", "Ada", "--flow", "f", "--entry-id", "19"]
    assert envoy.main([*argv, "--daemon", url]) == 0
    assert "warning" not in capsys.readouterr().err
    _path, headers, raw = received[0]
    assert headers["X-Envoy-Signature"] == sign("from-env", raw)
    assert json.loads(raw)["payload"]["attributes"]["signed-out-at"] is not None


def test_cli_serve_runs_the_fake_apis_until_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.envoy", "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().split()[3]
        answer = requests.get(
            url + "/api/v3/employees/e-1",
            headers={"Authorization": f"Bearer {USER_TOKEN}"},
            timeout=5,
        )
        assert answer.json()["data"]["attributes"]["name"] == "Erin Employee"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
        process.stdout.close()
