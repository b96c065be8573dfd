"""The dropdowns through signed requests (ENVOY_PROTOCOL.md §5): pages, search, selected
values, static presets, and clear refusals when an upstream fails."""

import pytest

from daemon.envoy.manifest import PAGE_SIZE
from sandbox.envoy import USER_TOKEN, route_body
from sandbox.proxy import many_sites


def _options(daemon, name, params=None, selected=False, **kwargs):
    path = f"/envoy/{'selected' if selected else 'options'}/{name}"
    kwargs.setdefault("config", daemon.config)
    body = route_body(path, params=params, install_id=daemon.install_id, **kwargs)
    return daemon.send(body, path=path)


def _ok(answer) -> list[dict]:
    assert answer.status_code == 200, answer.text
    options = answer.json()
    assert isinstance(options, list)
    assert all(set(o) == {"label", "value"} and isinstance(o["value"], str) for o in options)
    return options


def _values(answer) -> list[str]:
    return [option["value"] for option in _ok(answer)]


def _refused(answer, *words) -> None:
    assert answer.status_code == 400, answer.text
    for word in words:
        assert word in answer.json()["message"]


@pytest.fixture
def installed(daemon):
    daemon.install()
    return daemon


# -- Proxy sites -------------------------------------------------------------------------------


def test_sites_come_in_pages_sorted_by_name(installed):
    installed.proxy.seed(many_sites(60))  # 62 sites in org-1
    pages = [_ok(_options(installed, "sites", {"page": page})) for page in (1, 2, "3", 4)]
    assert [len(page) for page in pages] == [PAGE_SIZE, PAGE_SIZE, 12, 0]
    labels = [option["label"] for page in pages for option in page]
    assert labels == sorted(labels, key=str.lower)
    assert pages[0][0] == {"label": "Lobby Tower", "value": "site-1"}
    assert pages[2][-1] == {"label": "Warehouse", "value": "site-2"}
    assert "site-9" not in {option["value"] for page in pages for option in page}


def test_sites_can_be_searched(installed):
    installed.proxy.seed(many_sites(60))
    assert _ok(_options(installed, "sites", {"search": "ware"})) == [
        {"label": "Warehouse", "value": "site-2"}
    ]
    assert len(_ok(_options(installed, "sites", {"search": "Site 00", "page": 1}))) == 9


def test_sites_work_from_the_stored_access_when_meta_config_is_empty(installed):
    assert _values(_options(installed, "sites", config={})) == ["site-1", "site-2"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("site-2", ["site-2"]), (["site-1", "site-404", "site-9"], ["site-1"]), ([], [])],
)
def test_selected_sites(installed, value, expected):
    assert _values(_options(installed, "sites", {"value": value}, selected=True)) == expected


def test_sites_before_proxy_access_ask_for_step_one(daemon):
    _refused(_options(daemon, "sites", config={}), "Proxy Access step")


def test_a_rejected_secret_is_a_clear_refusal(installed):
    installed.proxy.add_fault(status=401)
    _refused(_options(installed, "sites"), "rejected the App Key")


def test_proxy_down_is_a_clear_refusal_not_a_500(installed):
    installed.proxy.add_fault(status=503)
    _refused(_options(installed, "groups"), "could not be reached")


# -- Proxy groups ------------------------------------------------------------------------------


def test_groups_of_the_site_leave_out_global_and_other_sites_groups(installed):
    params = {"parent_resource_id": "flow-visitor"}
    assert _ok(_options(installed, "groups", params)) == [
        {"label": "Visitors", "value": "grp-visitors"},
        {"label": "Contractors", "value": "grp-contractors"},
        {"label": "VIP", "value": "grp-vip"},
    ]


def test_groups_can_be_searched_and_paged(installed):
    extra = [
        {"id": f"grp-{n:02d}", "orgId": "org-1", "siteId": "site-1", "name": f"Floor {n:02d}",
         "tag": f"floor-{n:02d}", "isGlobal": False}
        for n in range(1, 31)
    ] + [{"id": "grp-global-2", "orgId": "org-1", "name": "Floor all", "tag": "floors",
          "isGlobal": True}]  # fmt: skip
    installed.proxy.seed({"groups": extra})
    first, second = (_values(_options(installed, "groups", {"page": p})) for p in (1, 2))
    assert len(first) == PAGE_SIZE and len(second) == 33 - PAGE_SIZE
    assert not set(first) & set(second)
    assert _values(_options(installed, "groups", {"page": 3})) == []
    floors = _values(_options(installed, "groups", {"search": "floor", "page": 2}))
    assert floors == [f"grp-{n:02d}" for n in range(26, 31)]
    assert _values(_options(installed, "groups", {"search": "vi"})) == ["grp-visitors", "grp-vip"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("grp-vip", ["grp-vip"]), (["grp-all", "grp-nope", "grp-visitors"], ["grp-visitors"])],
)
def test_selected_groups_leave_out_unknown_and_global_ones(installed, value, expected):
    assert _values(_options(installed, "groups", {"value": value}, selected=True)) == expected


def test_groups_before_a_site_ask_for_the_site_step(installed):
    config = {k: v for k, v in installed.config.items() if k != "proxy_site_id"}
    installed.install(**{"proxy_site_id": None})
    _refused(_options(installed, "groups", config=config), "Site step")


# -- Envoy flows and employees -----------------------------------------------------------------


def test_flows_leave_out_employee_flows(installed):
    assert _ok(_options(installed, "flows")) == [
        {"label": "Visitor", "value": "flow-visitor"},
        {"label": "Contractor", "value": "flow-contractor"},
        {"label": "Interview", "value": "flow-interview"},
    ]


def test_flows_fall_back_to_the_forwarded_token(installed):
    answer = _options(installed, "flows", auth=False, forwarded_bearer_token=USER_TOKEN)
    assert "flow-visitor" in _values(answer)


def test_no_user_token_is_a_clear_refusal(installed):
    _refused(_options(installed, "flows", auth=False), "did not send a user token")


def test_a_refused_user_token_asks_to_reopen_the_setup(installed):
    answer = _options(installed, "employees", auth=False, forwarded_bearer_token="expired")
    _refused(answer, "refused the user token", "reopen the setup")


def test_an_envoy_user_api_failure_is_a_clear_refusal(installed):
    installed.sim.fail_next(1, 422, path="/api/v3/flows")
    _refused(_options(installed, "flows"), "user API failed")


def test_flows_need_a_location(installed):
    _refused(_options(installed, "flows", location_id=None), "no location")


def test_employees_come_in_pages(installed):
    pages = [_values(_options(installed, "employees", {"page": page})) for page in range(1, 8)]
    assert [len(page) for page in pages] == [25, 25, 25, 25, 25, 5, 0]
    assert pages[0][:3] == ["e-1", "e-2", "e-3"]
    assert len({value for page in pages for value in page}) == 130


def test_employees_can_be_searched(installed):
    assert _ok(_options(installed, "employees", {"search": "erin"})) == [
        {"label": "Erin Employee (erin@example.com)", "value": "e-1"}
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("e-2", ["e-2"]), (["e-1", "e-999", "e-130"], ["e-1", "e-130"]), (None, [])],
)
def test_selected_employees(installed, value, expected):
    params = {} if value is None else {"value": value}
    assert _values(_options(installed, "employees", params, selected=True)) == expected


# -- static presets and the edge ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("durations", ["30", "60", "120", "240", "480", "720", "1440"]),
        ("early-access", ["0", "15", "30", "60", "120"]),
        ("protect-durations", ["30", "60", "120", "240", "480", "720"]),
    ],
)
def test_static_presets(daemon, name, values):
    assert _values(_options(daemon, name, config={})) == values
    assert _values(_options(daemon, name, {"page": 2}, config={})) == []


def test_preset_labels_read_as_durations(daemon):
    labels = {o["value"]: o["label"] for o in _ok(_options(daemon, "early-access", config={}))}
    assert labels == {
        "0": "None",
        "15": "15 minutes",
        "30": "30 minutes",
        "60": "1 hour",
        "120": "2 hours",
    }


def test_unknown_dropdowns_and_static_selected_routes_are_404(daemon):
    assert _options(daemon, "colours", config={}).status_code == 404
    assert _options(daemon, "flows", {"value": "x"}, selected=True).status_code == 404
    assert _options(daemon, "durations", {"value": "30"}, selected=True).status_code == 404


def test_a_bad_page_number_is_refused(installed):
    _refused(_options(installed, "sites", {"page": "last"}), "page number")


def test_a_bad_signature_is_401(installed):
    body = route_body("/envoy/options/sites", config=installed.config)
    answer = installed.send(body, path="/envoy/options/sites", secret="forged")
    assert answer.status_code == 401
    assert installed.proxy.state()["calls"] == []
