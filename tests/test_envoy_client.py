"""The Envoy clients against the simulator: token caching, job updates, purpose, user API
lookups, retries, and secrets kept out of logs, errors and reprs."""

import email.utils
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from daemon import __version__
from daemon.envoy.client import JSON_API, EnvoyError, EnvoyPluginClient, EnvoyUserClient, _flow
from sandbox.envoy import USER_TOKEN, route_body
from tests.scripted import Answer, scripted

JOBS = "/api/v2/plugin-services/jobs"


def _plugin(sim, **kwargs) -> EnvoyPluginClient:
    return EnvoyPluginClient(sim.url, "sim-client", "sim-secret", **kwargs)


def _user(sim, **kwargs) -> EnvoyUserClient:
    return EnvoyUserClient(sim.url, USER_TOKEN, **kwargs)


def _count(sim, method, path_prefix) -> int:
    return sum(1 for c in sim.calls if c.method == method and c.path.startswith(path_prefix))


# -- plugin token ----------------------------------------------------------------------------


def test_token_is_fetched_once_and_reused(envoy_sim):
    client = _plugin(envoy_sim)
    for n in range(5):
        client.update_job(f"job-{n}", "done")
    assert client.token() == client.token()
    assert envoy_sim.tokens_issued == 1


def test_concurrent_callers_share_one_token_fetch(envoy_sim):
    client = _plugin(envoy_sim)
    threads = [threading.Thread(target=client.token) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert envoy_sim.tokens_issued == 1


def test_token_is_refreshed_when_less_than_ten_minutes_remain(envoy_sim):
    envoy_sim.token_expires_in = 3600
    with time_machine.travel(datetime(2024, 5, 1, 12, 0, tzinfo=UTC), tick=False) as clock:
        client = _plugin(envoy_sim)
        first = client.token()
        clock.shift(timedelta(minutes=49))
        assert client.token() == first
        clock.shift(timedelta(minutes=2))  # 51 minutes in: 9 minutes of life left
        assert client.token() != first
    assert envoy_sim.tokens_issued == 2


def test_short_lived_token_is_still_not_fetched_per_call(envoy_sim):
    envoy_sim.token_expires_in = 300
    client = _plugin(envoy_sim)
    for n in range(3):
        client.update_job(f"job-{n}", "done")
    assert envoy_sim.tokens_issued == 1


def test_token_request_uses_basic_auth_and_our_user_agent(envoy_sim):
    _plugin(envoy_sim).token()
    call = envoy_sim.calls[0]
    assert (call.method, call.path) == ("POST", "/a/auth/v0/token")
    assert call.user_agent == f"envoy-proxy/{__version__}"


def test_wrong_client_secret_is_an_error_that_does_not_show_it(envoy_sim):
    client = EnvoyPluginClient(envoy_sim.url, "sim-client", "wrong-secret-123")
    with pytest.raises(EnvoyError) as raised:
        client.token()
    assert raised.value.status == 401
    assert "wrong-secret-123" not in str(raised.value)
    assert "wrong-secret-123" not in repr(raised.value)
    assert _count(envoy_sim, "POST", "/a/auth/v0/token") == 1  # a 401 is not retried


# -- plugin API calls ------------------------------------------------------------------------


def test_update_job_sends_status_message_and_attachments_omitting_nones(envoy_sim):
    attachment = {"type": "text", "label": "Proxy access", "value": "09:45–12:00"}
    client = _plugin(envoy_sim)
    client.update_job("job-1", "ongoing", message="Granting access")
    client.update_job(
        "job-1", "failed", message="Proxy refused", failure_reason="proxy_4xx", attachments=[]
    )
    client.update_job("job-1", "done", message="Access granted", attachments=[attachment])
    assert envoy_sim.jobs["job-1"] == [
        {"status": "ongoing", "status_message": "Granting access"},
        {
            "status": "failed",
            "status_message": "Proxy refused",
            "failure_reason": "proxy_4xx",
            "attachments": [],
        },
        {"status": "done", "status_message": "Access granted", "attachments": [attachment]},
    ]


def test_plugin_and_user_api_calls_speak_json_api_as_envoys_sdk_does(envoy_sim):
    _plugin(envoy_sim).update_job("job-1", "done")
    _user(envoy_sim).list_flows("loc-1")
    token_call, job_call, flows_call = envoy_sim.calls
    assert (job_call.accept, job_call.content_type) == (JSON_API, JSON_API)
    assert flows_call.accept == JSON_API
    assert token_call.content_type == "application/json"  # the token is OAuth, not JSON:API
    assert envoy_sim.jobs["job-1"] == [{"status": "done"}]


def test_update_job_rejects_an_unknown_status_before_calling(envoy_sim):
    with pytest.raises(ValueError, match="job status"):
        _plugin(envoy_sim).update_job("job-1", "finished")
    assert envoy_sim.calls == []


def test_register_purpose_is_recorded_for_the_install(envoy_sim):
    client = _plugin(envoy_sim)
    client.register_purpose(42)
    client.register_purpose("install-1", "identity-verification")
    assert envoy_sim.purposes == {
        "42": ["identity-verification"],
        "install-1": ["identity-verification"],
    }


def test_install_config_round_trip(envoy_sim):
    client = _plugin(envoy_sim)
    client.put_install_config("install-1", {"proxy_site_id": "s-1", "invite_required": True})
    client.put_install_config("install-1", {"invite_required": None})
    assert client.get_install_config("install-1") == {"proxy_site_id": "s-1"}


# -- retries ---------------------------------------------------------------------------------


def test_503_is_retried_until_it_succeeds(envoy_sim):
    envoy_sim.fail_next(2, 503, path=JOBS)
    _plugin(envoy_sim).update_job("job-1", "done")
    assert _count(envoy_sim, "PATCH", JOBS) == 3
    assert len(envoy_sim.jobs["job-1"]) == 1


def test_429_waits_at_least_retry_after(envoy_sim):
    envoy_sim.fail_next(1, 429, path=JOBS, retry_after=1)
    started = time.monotonic()
    _plugin(envoy_sim).update_job("job-1", "done")
    assert time.monotonic() - started >= 1.0
    assert len(envoy_sim.jobs["job-1"]) == 1


def test_retry_after_beyond_the_budget_gives_up_at_once(envoy_sim):
    envoy_sim.fail_next(1, 429, path=JOBS, retry_after=30)
    client = _plugin(envoy_sim, retry_budget=0.5)
    client.token()
    started = time.monotonic()
    with pytest.raises(EnvoyError) as raised:
        client.update_job("job-1", "done")
    assert raised.value.status == 429
    assert time.monotonic() - started < 0.5


def test_persistent_5xx_fails_within_the_budget(envoy_sim):
    envoy_sim.fail_next(100, 502, path="/api/v3/flows")
    started = time.monotonic()
    with pytest.raises(EnvoyError) as raised:
        _user(envoy_sim, retry_budget=0.6).list_flows("loc-1")
    assert raised.value.status == 502
    assert time.monotonic() - started < 1.5
    assert _count(envoy_sim, "GET", "/api/v3/flows") >= 2


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_4xx_is_an_error_without_retry(envoy_sim, status):
    envoy_sim.fail_next(3, status, path=JOBS)
    with pytest.raises(EnvoyError) as raised:
        _plugin(envoy_sim).update_job("job-1", "done")
    assert raised.value.status == status
    assert _count(envoy_sim, "PATCH", JOBS) == 1


def test_401_on_the_plugin_api_fetches_a_new_token_and_retries_once(envoy_sim):
    client = _plugin(envoy_sim)
    client.token()
    envoy_sim.fail_next(1, 401, path=JOBS)
    client.update_job("job-1", "done")
    assert envoy_sim.tokens_issued == 2
    assert len(envoy_sim.jobs["job-1"]) == 1


def test_a_second_401_is_an_error(envoy_sim):
    envoy_sim.fail_next(5, 401, path=JOBS)
    with pytest.raises(EnvoyError) as raised:
        _plugin(envoy_sim).update_job("job-1", "done")
    assert raised.value.status == 401
    assert envoy_sim.tokens_issued == 2
    assert _count(envoy_sim, "PATCH", JOBS) == 2


def test_a_token_envoy_forgot_is_replaced(envoy_sim):
    client = _plugin(envoy_sim)
    client.update_job("job-1", "ongoing")
    envoy_sim.reset()  # Envoy no longer knows the cached token
    client.update_job("job-1", "done")
    assert envoy_sim.jobs == {"job-1": [{"status": "done"}]}


def test_unreachable_envoy_is_an_envoy_error(envoy_sim):
    client = EnvoyPluginClient("http://127.0.0.1:9", "sim-client", "sim-secret", retry_budget=0.3)
    with pytest.raises(EnvoyError) as raised:
        client.token()
    assert raised.value.status is None
    assert "unreachable" in str(raised.value)


# -- secrets ---------------------------------------------------------------------------------


def test_secret_and_tokens_stay_out_of_logs_errors_and_repr(envoy_sim, caplog):
    caplog.set_level(logging.DEBUG)
    client = _plugin(envoy_sim)
    envoy_sim.fail_next(1, 503, path=JOBS)
    envoy_sim.fail_next(1, 401, path=JOBS)
    client.update_job("job-1", "done")
    token = client.token()
    envoy_sim.fail_next(1, 404, path=JOBS)
    with pytest.raises(EnvoyError) as raised:
        client.update_job("job-2", "done")
    user = _user(envoy_sim)
    user.list_flows("loc-1")

    exposed = [caplog.text, str(raised.value), repr(raised.value), repr(client), repr(user)]
    for text in exposed:
        for secret in ("sim-secret", token, USER_TOKEN):
            assert secret not in text
    assert "envoy_proxy.envoy" in {record.name for record in caplog.records}


# -- user API --------------------------------------------------------------------------------


def test_from_meta_uses_the_installer_token_then_the_forwarded_one(envoy_sim):
    with_auth = route_body("/envoy/options/flows")["meta"]
    assert _flow_ids(EnvoyUserClient.from_meta(envoy_sim.url, with_auth)) != []

    forwarded = route_body("/envoy/options/flows", auth=False, forwarded_bearer_token=USER_TOKEN)
    assert _flow_ids(EnvoyUserClient.from_meta(envoy_sim.url, forwarded["meta"])) != []

    assert EnvoyUserClient.from_meta(envoy_sim.url, route_body("x", auth=False)["meta"]) is None


def _flow_ids(client) -> list[str]:
    return [flow["id"] for flow in client.list_flows("loc-1")]


def test_list_flows_marks_the_employee_flow(envoy_sim):
    flows = _user(envoy_sim).list_flows("loc-1")
    assert {flow["id"]: flow["employee"] for flow in flows} == {
        "flow-visitor": False,
        "flow-contractor": False,
        "flow-interview": False,
        "flow-employee": True,
    }
    assert flows[0]["name"] == "Visitor"


def test_list_flows_pages(envoy_sim):
    client = _user(envoy_sim)
    first = client.list_flows("loc-1", limit=2)
    second = client.list_flows("loc-1", limit=2, offset=2)
    assert [f["id"] for f in first + second] == [
        "flow-visitor",
        "flow-contractor",
        "flow-interview",
        "flow-employee",
    ]


@pytest.mark.parametrize(
    "attributes",
    [
        {"name": "Staff", "employee-centric": True},
        {"name": "Staff", "employee-screening-flow": True},
        {"name": "Staff", "type": "Employee registration"},
    ],
)
def test_employee_flows_are_recognised_in_any_known_form(attributes):
    assert _flow({"id": 7, "attributes": attributes}) == {
        "id": "7",
        "name": "Staff",
        "employee": True,
    }


def test_list_employees_pages_through_130(envoy_sim):
    client = _user(envoy_sim)
    first = client.list_employees("loc-1")
    second = client.list_employees("loc-1", offset=100)
    assert (len(first), len(second)) == (100, 30)
    assert first[0] == {"id": "e-1", "name": "Erin Employee", "email": "erin@example.com"}
    assert len({e["id"] for e in first + second}) == 130


def test_list_employees_searches_name_and_email(envoy_sim):
    client = _user(envoy_sim)
    assert [e["id"] for e in client.list_employees("loc-1", query="sam")] == ["e-2"]
    assert [e["id"] for e in client.list_employees("loc-1", query="alex@")] == ["e-3"]


def test_ids_are_normalised_to_strings(envoy_sim):
    envoy_sim.set_employees("loc-9", [{"id": 42, "name": "Numeric Nina", "email": None}])
    client = _user(envoy_sim)
    assert client.list_employees("loc-9") == [{"id": "42", "name": "Numeric Nina", "email": None}]
    assert client.get_employee(42) == {"id": "42", "name": "Numeric Nina", "email": None}


def test_get_employee_or_none(envoy_sim):
    client = _user(envoy_sim)
    assert client.get_employee("e-3") == {
        "id": "e-3",
        "name": "Alex Admin",
        "email": "alex@example.com",
    }
    assert client.get_employee("e-999") is None


def test_a_rejected_user_token_is_an_error(envoy_sim):
    with pytest.raises(EnvoyError) as raised:
        EnvoyUserClient(envoy_sim.url, "expired-user-token").list_flows("loc-1")
    assert raised.value.status == 401
    assert "expired-user-token" not in str(raised.value)


def test_user_api_429_is_retried(envoy_sim):
    envoy_sim.fail_next(1, 429, path="/api/v3/employees", retry_after=0)
    assert len(_user(envoy_sim).list_employees("loc-1", limit=5)) == 5
    assert _count(envoy_sim, "GET", "/api/v3/employees") == 2


# -- answers the simulator never gives --------------------------------------------------------

TOKEN = Answer(200, body={"access_token": "t0k3n-value"})


def test_a_redirect_is_an_error_and_is_not_followed():
    moved = Answer(307, headers={"Location": "http://elsewhere.invalid/jobs"})
    with scripted({"/api/": moved}, default=TOKEN) as envoy, pytest.raises(EnvoyError) as raised:
        _plugin(envoy).update_job("job-1", "done")
    assert raised.value.status == 307
    assert "redirected to http://elsewhere.invalid/jobs" in str(raised.value)
    assert [asked.method for asked in envoy.asked] == ["POST", "PATCH"]  # token, then the job


def test_a_secret_or_token_echoed_by_envoy_is_masked_in_the_error():
    echo = {"errors": [{"detail": "client sim-secret with token t0k3n-value may not do this"}]}
    forbidden = {"/api/": Answer(403, body=echo)}
    with scripted(forbidden, default=TOKEN) as envoy, pytest.raises(EnvoyError) as raised:
        _plugin(envoy).register_purpose("install-1")
    assert str(raised.value).endswith("client *** with token *** may not do this")


def test_retry_after_as_an_http_date_is_read():
    ahead = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1-2 s ahead
    limited = {"/api/": Answer(429, headers={"Retry-After": ahead})}
    with scripted(limited, default=TOKEN) as envoy:
        client = _plugin(envoy, retry_budget=0.5)
        client.token()
        started = time.monotonic()
        with pytest.raises(EnvoyError) as raised:
            client.update_job("job-1", "done")
        assert time.monotonic() - started < 0.5  # 1-2 s asked, 0.5 s of budget: no retry
    assert raised.value.status == 429
    assert [asked.method for asked in envoy.asked] == ["POST", "PATCH"]
