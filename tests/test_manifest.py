"""The Dev Dashboard manifest: built from the same tables the routes use, every URL in it is
served, and its config keys are exactly the ones ENVOY_PROTOCOL.md §8 pins."""

import json

import pytest
import requests

from daemon.__main__ import main
from daemon.access import uninstall
from daemon.envoy.manifest import DROPDOWNS, EVENTS, FIELD_TYPES, STEPS, build
from daemon.envoy.options import SOURCES
from daemon.envoy.setup_steps import VALIDATORS
from daemon.rules.policy import VISITOR_EVENTS
from daemon.rules.protect import EMPLOYEE_EVENTS

BASE = "https://envoy.example.com/proxy"

# ENVOY_PROTOCOL.md §8, "Install config keys": other tools read these names.
PINNED_CONFIG_KEYS = {
    "proxy_org_id",
    "proxy_app_key",
    "proxy_site_id",
    "proxy_site_name",
    "visitor_mapping",
    "protect_enabled",
    "protect_excluded_employees",
    "protect_limit_access",
    "protect_access_duration_minutes",
    "protect_access_hours",
    "invite_required",
    "proxy_notifications",
    "created_by_envoy",
    "early_access_minutes",
    "access_duration_minutes",
    "verification_require_credential",
}
PINNED_STEP_ROUTES = {
    "/envoy/setup/proxy-access",
    "/envoy/setup/site",
    "/envoy/setup/visitor-mapping",
    "/envoy/setup/protect",
    "/envoy/setup/customization",
}
PINNED_DROPDOWNS = {
    "sites",
    "groups",
    "flows",
    "employees",
    "durations",
    "early-access",
    "protect-durations",
}


def _urls(manifest: dict) -> set[str]:
    """Every URL the manifest tells an admin to enter."""
    urls = {event["url"] for event in manifest["events"]}
    urls |= {hook["url"] for hook in manifest["hooks"]}
    for step in manifest["steps"]:
        urls.add(step["validation_url"])
        for field in step["fields"]:
            for doc in (field, field.get("right", {})):
                urls |= {doc[k] for k in ("options_url", "selected_values_url") if k in doc}
    for dropdown in manifest["dropdowns"]:
        urls |= {dropdown[k] for k in ("options_url", "selected_values_url") if k in dropdown}
    return urls


def test_every_url_in_the_manifest_is_a_signed_route_of_the_app(daemon):
    manifest = build(daemon.url)
    urls = _urls(manifest)
    assert len(urls) == 1 + 1 + 5 + 7 + 3
    for url in sorted(urls):
        # Unsigned: an existing route answers 401 before anything else, a missing one 404.
        assert requests.post(url, json={}, timeout=5).status_code == 401, url


def test_the_config_keys_are_the_pinned_ones():
    answered = [key for step in STEPS.values() for key in step.answers]
    assert len(answered) == len(set(answered))  # no key is saved by two steps
    assert set(answered) == PINNED_CONFIG_KEYS
    field_keys = {field.key for step in STEPS.values() for field in step.fields}
    assert field_keys - PINNED_CONFIG_KEYS == {"proxy_app_secret"}
    assert "proxy_app_secret" not in answered


def test_steps_and_dropdowns_are_the_pinned_ones_and_all_have_handlers():
    assert {step.path for step in STEPS.values()} == PINNED_STEP_ROUTES
    assert list(STEPS)[-1] == "customization"  # the last step registers the purpose
    assert set(VALIDATORS) == set(STEPS)
    assert set(DROPDOWNS) == set(SOURCES) == PINNED_DROPDOWNS
    paginated = {name for name, dropdown in DROPDOWNS.items() if dropdown.paginated}
    assert paginated == {"sites", "groups", "employees"}
    assert all(SOURCES[name].selected for name in paginated)


def test_fields_are_well_formed():
    for step in STEPS.values():
        for field in step.fields:
            assert field.type in FIELD_TYPES, field.key
            assert (field.type in ("select", "mapping")) == bool(field.options), field.key
            assert (field.type == "mapping") == bool(field.right_options), field.key
            for name in (field.options, field.right_options):
                assert name is None or name in DROPDOWNS
            if field.minimum is not None:
                assert field.minimum <= field.default <= field.maximum


@pytest.mark.parametrize("name", ["durations", "early-access", "protect-durations"])
def test_preset_values_fit_the_range_of_their_field(name):
    [field] = [f for step in STEPS.values() for f in step.fields if f.options == name]
    values = [int(option["value"]) for option in SOURCES[name].options(None, None, None)]
    assert all(field.minimum <= value <= field.maximum for value in values)
    assert field.default in values


def test_the_json_manifest_lists_events_hook_steps_and_dropdowns(capsys):
    assert main(["manifest", "--base-url", BASE + "/", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["base_url"] == BASE
    assert [event["event"] for event in manifest["events"]] == list(EVENTS)
    assert {event["url"] for event in manifest["events"]} == {BASE + "/envoy/events"}
    assert manifest["hooks"] == [
        {"purpose": "identity-verification", "url": BASE + "/envoy/hooks/identity-verification"}
    ]
    site_field = manifest["steps"][1]["fields"][0]
    assert site_field == {
        "label": "Proxy site",
        "key": "proxy_site_id",
        "type": "select",
        "required": True,
        "options_url": BASE + "/envoy/options/sites",
        "searchable": True,
        "paginated": True,
        "selected_values_url": BASE + "/envoy/selected/sites",
    }
    mapping = manifest["steps"][2]["fields"][0]
    assert mapping["type"] == "mapping"
    assert mapping["options_url"] == BASE + "/envoy/options/flows"
    assert mapping["right"]["options_url"] == BASE + "/envoy/options/groups"
    assert [d["name"] for d in manifest["dropdowns"]] == list(DROPDOWNS)


def test_the_text_manifest_names_every_url_and_key(monkeypatch, capsys):
    monkeypatch.delenv("ENVOY_CLIENT_SECRET", raising=False)  # no daemon configuration needed
    assert main(["manifest", "--base-url", BASE]) == 0
    text = capsys.readouterr().out
    for url in _urls(build(BASE)):
        assert url in text
    for step in STEPS.values():
        assert step.title in text
        for field in step.fields:
            assert f"key {field.key}," in text
    assert "identity-verification" in text


@pytest.mark.parametrize("url", ["ftp://host/x", "host/x", "https://host/x?y=1"])
def test_a_bad_base_url_is_a_usage_error(url, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["manifest", "--base-url", url])
    assert exited.value.code == 2
    assert "--base-url" in capsys.readouterr().err


def test_the_manifest_subscribes_every_event_the_daemon_handles():
    """The block list's review and deny must reach the daemon, or access would stay on."""
    assert set(EVENTS) == set(VISITOR_EVENTS + EMPLOYEE_EVENTS) | {uninstall.EVENT}
    assert {"entry_blacklist_review", "entry_blacklist_deny"} <= set(EVENTS)
