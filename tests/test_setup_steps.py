"""The five setup steps through signed requests (ENVOY_PROTOCOL.md §5, §8): what each answers,
what it stores, and how it refuses; the secret never comes back."""

import logging
import socket
import time

import pytest

import db
from daemon.envoy.manifest import STEPS
from daemon.envoy.mapping import normalise_mapping
from daemon.rules.request import BadRequest
from daemon.rules.settings import Settings
from sandbox.envoy import PLUGIN_API, route_body

SECRET = "app-secret"
ACCESS = {"proxy_app_key": "app-key", "proxy_app_secret": SECRET, "proxy_org_id": "org-1"}


def _step(daemon, step, payload, config=None, **kwargs):
    path = f"/envoy/setup/{step}"
    kwargs.setdefault("install_id", daemon.install_id)
    body = route_body(path, payload=payload, config=config or {}, **kwargs)
    return daemon.send(body, path=path)


def _ok(answer) -> dict:
    assert answer.status_code == 200, answer.text
    return answer.json()


def _refused(answer, *words) -> str:
    assert answer.status_code == 400, answer.text
    message = answer.json()["message"]
    for word in words:
        assert word in message
    return message


def _install(daemon, install_id=None) -> db.Install | None:
    with db.database.connection_context():
        return db.Install.get_or_none(install_id=install_id or daemon.install_id)


def _stored_secret(daemon) -> str | None:
    install = _install(daemon)
    if install is None or install.proxy_secret is None:
        return None
    return daemon.ctx.secretbox.decrypt(install.proxy_secret)


def _through_site(daemon) -> None:
    _ok(_step(daemon, "proxy-access", ACCESS))
    _ok(_step(daemon, "site", {"proxy_site_id": "site-1"}))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- validate first: a refused step stores nothing ----------------------------------------------


def _row(daemon) -> dict | None:
    install = _install(daemon)
    return None if install is None else dict(install.__data__)


ELSEWHERE = {"company_id": "company-2", "location_id": "loc-2", "timezone": "Asia/Tokyo"}


@pytest.mark.parametrize(
    ("step", "payload", "word"),
    [
        ("proxy-access", {**ACCESS, "proxy_org_id": "org-404"}, "not visible"),
        ("proxy-access", {**ACCESS, "proxy_app_secret": "wrong-secret-42"}, "rejected"),
        ("site", {"proxy_site_id": "site-404"}, "does not exist"),
        ("visitor-mapping", {"visitor_mapping": {"flow-visitor": "grp-all"}}, "global"),
        ("protect", {"protect_access_duration_minutes": 721}, "between"),
        ("customization", {"access_duration_minutes": 1441}, "between"),
    ],
)
def test_a_refused_step_leaves_the_install_row_as_it_was(daemon, step, payload, word):
    _through_site(daemon)
    before = _row(daemon)
    _refused(_step(daemon, step, payload, **ELSEWHERE), word)
    assert _row(daemon) == before


@pytest.mark.parametrize(
    ("step", "payload"),
    [
        ("proxy-access", {**ACCESS, "proxy_org_id": "org-404"}),
        ("proxy-access", {"proxy_app_key": "app-key", "proxy_org_id": "org-1"}),
        ("site", {"proxy_site_id": "site-1"}),
        ("visitor-mapping", {"visitor_mapping": {"flow-visitor": "grp-visitors"}}),
    ],
)
def test_a_refused_first_step_creates_no_install(daemon, step, payload):
    assert _step(daemon, step, payload).status_code == 400
    assert _install(daemon) is None


# -- step 1 ------------------------------------------------------------------------------------


def test_proxy_access_answers_key_and_org_and_keeps_the_secret_encrypted(daemon):
    answer = _step(daemon, "proxy-access", ACCESS)
    assert _ok(answer) == {"proxy_org_id": "org-1", "proxy_app_key": "app-key"}
    assert SECRET not in answer.text
    install = _install(daemon)
    assert install.proxy_secret and SECRET not in install.proxy_secret
    assert _stored_secret(daemon) == SECRET
    assert install.config == {"proxy_org_id": "org-1", "proxy_app_key": "app-key"}
    assert install.company_id == "company-1" and install.location_id == "loc-1"


def test_a_wrong_secret_is_refused_and_nothing_is_stored(daemon):
    answer = _step(daemon, "proxy-access", {**ACCESS, "proxy_app_secret": "wrong-secret-42"})
    _refused(answer, "rejected the App Key")
    assert "wrong-secret-42" not in answer.text
    assert _stored_secret(daemon) is None


@pytest.mark.parametrize("org_id", ["org-2", "org-404"])
def test_an_org_the_app_cannot_see_is_refused(daemon, org_id):
    answer = _step(daemon, "proxy-access", {**ACCESS, "proxy_org_id": org_id})
    _refused(answer, f"organization {org_id} is not visible", "org-1")
    assert _stored_secret(daemon) is None


def test_proxy_dropping_connections_is_a_clear_refusal(daemon):
    daemon.proxy.add_fault(drop=True)
    _refused(_step(daemon, "proxy-access", ACCESS), "could not be reached")


def test_proxy_on_a_closed_port_is_a_clear_refusal(daemon):
    closed = f"http://127.0.0.1:{_free_port()}"
    daemon.ctx.config = daemon.ctx.config.replace(proxy_api_url=closed)
    _refused(_step(daemon, "proxy-access", ACCESS), "could not be reached")


def test_the_secret_appears_in_no_answer_and_no_log_line(daemon, caplog):
    caplog.set_level(logging.DEBUG)
    answers = [
        _step(daemon, "proxy-access", ACCESS),
        _step(daemon, "proxy-access", {**ACCESS, "proxy_app_secret": "bad-secret-77"}),
        _step(daemon, "proxy-access", {**ACCESS, "proxy_org_id": "org-2"}),
        _step(daemon, "proxy-access", {**ACCESS, "proxy_app_secret": ""}),
        _step(daemon, "site", {"proxy_site_id": "site-1"}),
    ]
    assert [a.status_code for a in answers] == [200, 400, 400, 200, 200]
    for secret in (SECRET, "bad-secret-77"):
        assert all(secret not in answer.text for answer in answers)
        assert secret not in caplog.text
        assert secret not in str(_install(daemon).config)
    assert "Proxy access checked" in caplog.text  # the log did record the steps


@pytest.mark.parametrize("stored", [False, True])
def test_a_secret_pasted_into_the_org_field_is_never_echoed(daemon, caplog, stored):
    """The org refusal quotes the org id, which was the secret the admin pasted there."""
    caplog.set_level(logging.DEBUG)
    if stored:  # a revisit: the secret field is hidden, the stored secret is the one used
        _ok(_step(daemon, "proxy-access", ACCESS))
    secret = "" if stored else SECRET
    answer = _step(daemon, "proxy-access", {**ACCESS, "proxy_app_secret": secret,
                                            "proxy_org_id": SECRET})  # fmt: skip
    _refused(answer, "Organization ID")
    assert SECRET not in answer.text
    assert SECRET not in caplog.text
    assert "***" in answer.json()["message"]


@pytest.mark.parametrize("hidden", [{"proxy_app_secret": ""}, {"proxy_app_secret": None}, {}])
def test_a_revisit_with_the_secret_hidden_keeps_the_stored_one(daemon, hidden):
    _ok(_step(daemon, "proxy-access", ACCESS))
    first = _install(daemon).proxy_secret
    revisit = {"proxy_app_key": "app-key", "proxy_org_id": "org-1", **hidden}
    assert _ok(_step(daemon, "proxy-access", revisit))["proxy_org_id"] == "org-1"
    assert _install(daemon).proxy_secret == first
    assert _stored_secret(daemon) == SECRET


def test_without_a_stored_secret_an_empty_one_is_asked_for(daemon):
    payload = {"proxy_app_key": "app-key", "proxy_org_id": "org-1", "proxy_app_secret": ""}
    _refused(_step(daemon, "proxy-access", payload), "App Key Secret is required")


def test_a_new_app_key_needs_its_own_secret(daemon):
    _ok(_step(daemon, "proxy-access", ACCESS))
    payload = {"proxy_app_key": "other-key", "proxy_org_id": "org-2"}
    _refused(_step(daemon, "proxy-access", payload), "App Key changed")
    payload["proxy_app_secret"] = "other-secret"
    assert _ok(_step(daemon, "proxy-access", payload))["proxy_app_key"] == "other-key"
    assert _stored_secret(daemon) == "other-secret"


@pytest.mark.parametrize("missing", ["proxy_app_key", "proxy_org_id"])
def test_key_and_org_are_required(daemon, missing):
    payload = {**ACCESS, missing: " "}
    _refused(_step(daemon, "proxy-access", payload), "is required")


def test_a_step_without_payload_is_refused(daemon):
    _refused(_step(daemon, "proxy-access", None), "payload")


# -- step 2 ------------------------------------------------------------------------------------


def test_site_answers_id_and_name_using_the_stored_access(daemon):
    _ok(_step(daemon, "proxy-access", ACCESS))
    # meta.config empty: Envoy has not echoed step 1 yet; our own snapshot is enough.
    answer = _ok(_step(daemon, "site", {"proxy_site_id": "site-2"}))
    assert answer == {"proxy_site_id": "site-2", "proxy_site_name": "Warehouse"}
    assert _install(daemon).config["proxy_site_name"] == "Warehouse"


@pytest.mark.parametrize("site_id", ["site-404", "site-9"])
def test_a_site_outside_the_org_is_refused(daemon, site_id):
    _ok(_step(daemon, "proxy-access", ACCESS))
    _refused(_step(daemon, "site", {"proxy_site_id": site_id}), f"site {site_id} does not exist")


def test_site_before_proxy_access_asks_for_step_one(daemon):
    _refused(_step(daemon, "site", {"proxy_site_id": "site-1"}), "Proxy Access step")


def test_site_reports_a_secret_revoked_since_step_one(daemon):
    _ok(_step(daemon, "proxy-access", ACCESS))
    daemon.proxy.seed({"apps": [{"key": "app-key", "secret": "rotated", "orgs": ["org-1"]}]})
    _refused(_step(daemon, "site", {"proxy_site_id": "site-1"}), "rejected the App Key")


# -- step 3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        (
            {"flow-visitor": "grp-visitors", "flow-contractor": ["grp-contractors", "grp-vip"]},
            {"flow-visitor": ["grp-visitors"], "flow-contractor": ["grp-contractors", "grp-vip"]},
        ),
        ({"flow-visitor": "grp-visitors, grp-vip"}, {"flow-visitor": ["grp-visitors", "grp-vip"]}),
        (
            [["flow-visitor", "grp-visitors"], ["flow-visitor", "grp-vip"], [42, "grp-vip"]],
            {"flow-visitor": ["grp-visitors", "grp-vip"], "42": ["grp-vip"]},
        ),
        (
            [{"key": "flow-visitor", "value": ["grp-vip", "grp-visitors", "grp-vip"]}],
            {"flow-visitor": ["grp-vip", "grp-visitors"]},
        ),
        (
            [{"left": "flow-visitor", "right": "grp-visitors,grp-contractors"}],
            {"flow-visitor": ["grp-visitors", "grp-contractors"]},
        ),
        ([{"flow": "flow-visitor", "group": "grp-vip"}], {"flow-visitor": ["grp-vip"]}),
        (
            [
                {
                    "key": {"label": "Visitor", "value": "flow-visitor"},
                    "value": {"label": "VIP", "value": "grp-vip"},
                }
            ],
            {"flow-visitor": ["grp-vip"]},
        ),
        ('{"flow-visitor": ["grp-visitors"]}', {"flow-visitor": ["grp-visitors"]}),
    ],
    ids=[
        "dict",
        "comma-string",
        "pairs",
        "key-value",
        "left-right",
        "flow-group",
        "options",
        "json",
    ],
)
def test_every_mapping_shape_is_normalised(daemon, shape, expected):
    _through_site(daemon)
    answer = _ok(_step(daemon, "visitor-mapping", {"visitor_mapping": shape}))
    assert answer == {"visitor_mapping": expected}
    assert list(answer["visitor_mapping"]) == list(expected)  # flow order kept
    assert _install(daemon).config["visitor_mapping"] == expected


@pytest.mark.parametrize(
    ("group", "words"),
    [
        ("grp-nope", ("grp-nope", "does not exist")),
        ("grp-warehouse-visitors", ("grp-warehouse-visitors", "does not exist")),
        ("grp-all", ("Everyone (grp-all)", "global")),
    ],
)
def test_unknown_and_global_groups_are_refused_by_name(daemon, group, words):
    _through_site(daemon)
    payload = {"visitor_mapping": {"flow-visitor": ["grp-visitors", group]}}
    _refused(_step(daemon, "visitor-mapping", payload), *words)
    assert "visitor_mapping" not in _install(daemon).config


@pytest.mark.parametrize("empty", [{}, [], None, ""])
def test_an_empty_mapping_is_refused(daemon, empty):
    _through_site(daemon)
    _refused(_step(daemon, "visitor-mapping", {"visitor_mapping": empty}), "at least one")


def test_mapping_before_a_site_asks_for_the_site_step(daemon):
    _ok(_step(daemon, "proxy-access", ACCESS))
    payload = {"visitor_mapping": {"flow-visitor": "grp-visitors"}}
    _refused(_step(daemon, "visitor-mapping", payload), "Site step")


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"flow-visitor": []}, ("flow-visitor has no Proxy group",)),
        ([["flow-visitor"]], ("row 1",)),
        ([{"name": "x"}], ("row 1",)),
        ("not json", ("mapping of flows",)),
        (42, ("mapping of flows",)),
        ([[None, "grp-vip"]], ("no visitor flow",)),
    ],
)
def test_unreadable_mappings_say_what_is_wrong(value, words):
    with pytest.raises(BadRequest) as refused:
        normalise_mapping(value)
    for word in words:
        assert word in str(refused.value)


# -- step 4 ------------------------------------------------------------------------------------


def test_protect_defaults(daemon):
    assert _ok(_step(daemon, "protect", {})) == {
        "protect_enabled": False,
        "protect_excluded_employees": [],
        "protect_limit_access": False,
        "protect_access_duration_minutes": 480,
        "protect_access_hours": None,
    }


def test_protect_values_arrive_as_strings_or_native_types(daemon):
    payload = {
        "protect_enabled": "true",
        "protect_excluded_employees": [{"label": "Erin", "value": "e-1"}, 7, "e-1"],
        "protect_limit_access": True,
        "protect_access_duration_minutes": "720",
        "protect_access_hours": " 8:00 - 18:30 ",
    }
    assert _ok(_step(daemon, "protect", payload)) == {
        "protect_enabled": True,
        "protect_excluded_employees": ["e-1", "7"],
        "protect_limit_access": True,
        "protect_access_duration_minutes": 720,
        "protect_access_hours": "08:00-18:30",
    }


@pytest.mark.parametrize(
    ("employees", "expected"), [("e-1, e-2", ["e-1", "e-2"]), ("e-3", ["e-3"]), (None, [])]
)
def test_excluded_employees_in_any_shape_become_a_list_of_ids(daemon, employees, expected):
    payload = {"protect_excluded_employees": employees}
    assert _ok(_step(daemon, "protect", payload))["protect_excluded_employees"] == expected


def test_access_hours_may_cross_midnight(daemon):
    payload = {"protect_access_hours": "22:00-06:00"}
    assert _ok(_step(daemon, "protect", payload))["protect_access_hours"] == "22:00-06:00"


def test_empty_access_hours_remove_the_key(daemon):
    _ok(_step(daemon, "protect", {"protect_access_hours": "09:00-17:00"}))
    assert (
        _ok(_step(daemon, "protect", {"protect_access_hours": " "}))["protect_access_hours"] is None
    )
    assert "protect_access_hours" not in _install(daemon).config


@pytest.mark.parametrize(
    ("hours", "words"),
    [
        ("25:00-06:00", "HH:MM-HH:MM"),
        ("8-18", "HH:MM-HH:MM"),
        ("08:00 to 18:00", "HH:MM-HH:MM"),
        ("08:00-08:00", "same time"),
    ],
)
def test_bad_access_hours_are_refused(daemon, hours, words):
    answer = _step(daemon, "protect", {"protect_access_hours": hours})
    _refused(answer, words, "22:00-06:00 across midnight")


@pytest.mark.parametrize("minutes", [29, "721", 0])
def test_protect_duration_out_of_range_names_the_range(daemon, minutes):
    payload = {"protect_access_duration_minutes": minutes}
    _refused(_step(daemon, "protect", payload), "between 30 and 720 minutes")


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"protect_access_duration_minutes": "eight hours"}, ("whole number",)),
        ({"protect_enabled": "maybe"}, ("on or off",)),
    ],
)
def test_unreadable_protect_values_are_refused(daemon, payload, words):
    _refused(_step(daemon, "protect", payload), *words)


# -- step 5 ------------------------------------------------------------------------------------

CUSTOM = {
    "invite_required": "true",
    "proxy_notifications": True,
    "created_by_envoy": "false",
    "early_access_minutes": "30",
    "access_duration_minutes": 240,
    "verification_require_credential": 1,
}


def test_customization_normalises_and_registers_the_purpose(daemon):
    answer = _ok(_step(daemon, "customization", CUSTOM))
    assert answer == {
        "invite_required": True,
        "proxy_notifications": True,
        "created_by_envoy": False,
        "early_access_minutes": 30,
        "access_duration_minutes": 240,
        "verification_require_credential": True,
    }
    assert daemon.sim.purposes == {daemon.install_id: ["identity-verification"]}
    assert _install(daemon).purpose_registered_at is not None


def test_customization_defaults(daemon):
    assert _ok(_step(daemon, "customization", {})) == {
        "invite_required": False,
        "proxy_notifications": False,
        "created_by_envoy": False,
        "early_access_minutes": 0,
        "access_duration_minutes": 480,
        "verification_require_credential": False,
    }


def test_the_purpose_is_registered_once_across_two_runs(daemon):
    _ok(_step(daemon, "customization", CUSTOM))
    _ok(_step(daemon, "customization", {**CUSTOM, "invite_required": False}))
    assert daemon.sim.purposes == {daemon.install_id: ["identity-verification"]}


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("early_access_minutes", 1441, "between 0 and 1440"),
        ("early_access_minutes", -5, "between 0 and 1440"),
        ("access_duration_minutes", "4", "between 5 and 1440"),
        ("access_duration_minutes", 1441, "between 5 and 1440"),
    ],
)
def test_customization_ranges(daemon, key, value, words):
    _refused(_step(daemon, "customization", {**CUSTOM, key: value}), words)
    assert daemon.sim.purposes == {}


def test_a_purpose_failure_keeps_the_settings_and_shows_on_the_install(daemon, caplog):
    purpose_path = f"{PLUGIN_API}/installs/{daemon.install_id}/purpose"
    daemon.sim.fail_next(1, 422, path=purpose_path)
    answer = _ok(_step(daemon, "customization", CUSTOM))
    assert set(answer) == set(STEPS["customization"].answers)
    assert answer["access_duration_minutes"] == 240
    install = _install(daemon)
    assert install.config["access_duration_minutes"] == 240
    assert install.purpose_registered_at is None
    assert install.last_error.startswith("identity-verification purpose not registered")
    assert "422" in install.last_error
    assert "purpose not registered" in caplog.text
    # The next run of the last step registers it and clears the error.
    _ok(_step(daemon, "customization", CUSTOM))
    install = _install(daemon)
    assert install.purpose_registered_at is not None and install.last_error is None
    assert daemon.sim.purposes == {daemon.install_id: ["identity-verification"]}


def test_without_an_envoy_client_id_the_settings_are_kept_and_the_reason_recorded(daemon):
    daemon.ctx.envoy = None
    answer = _ok(_step(daemon, "customization", CUSTOM))
    assert answer["invite_required"] is True
    assert "ENVOY_CLIENT_ID" in _install(daemon).last_error
    assert daemon.sim.purposes == {}


# -- the edge and the whole walk ---------------------------------------------------------------


def test_a_bad_signature_is_401_and_stores_nothing(daemon):
    body = route_body("/envoy/setup/proxy-access", payload=ACCESS)
    answer = daemon.send(body, path="/envoy/setup/proxy-access", secret="not-the-secret")
    assert answer.status_code == 401
    assert _install(daemon) is None


def test_an_unknown_step_is_404(daemon):
    assert _step(daemon, "payment", {}).status_code == 404


def test_the_five_steps_leave_a_config_that_issues_credentials(daemon):
    """Envoy merges each answer into the config it sends with later steps and events."""
    config: dict = {}
    payloads = {
        "proxy-access": ACCESS,
        "site": {"proxy_site_id": "site-1"},
        "visitor-mapping": {"visitor_mapping": [{"key": "flow-visitor", "value": "grp-visitors"}]},
        "protect": {"protect_enabled": True, "protect_access_hours": "07:00-19:00"},
        "customization": {"access_duration_minutes": "120", "early_access_minutes": "15"},
    }
    for slug, payload in payloads.items():
        answer = _ok(_step(daemon, slug, payload, config=config))
        assert set(answer) == set(STEPS[slug].answers)
        config = {k: v for k, v in {**config, **answer}.items() if v is not None}
    assert "proxy_app_secret" not in config
    settings = Settings.from_config(config)
    assert settings.groups_for_flow("flow-visitor") == ["grp-visitors"]
    assert settings.access_duration_minutes == 120
    assert settings.protect_access_hours == "07:00-19:00"
    assert _install(daemon).config == config

    daemon.config = config
    sign_in = daemon.entry(
        entry_id="e-1",
        full_name="Ada Lovelace",
        email="ada@example.com",
        flow_id="flow-visitor",
        signed_in_at=time.time(),
    )
    assert daemon.deliver(sign_in).status_code == 200
    [person] = daemon.persons("ada@example.com")
    assert person["tags"] == ["visitor-lobby"]
