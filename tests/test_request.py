"""What the daemon reads from an Envoy request's `meta` (daemon/rules/request.py)."""

from daemon.rules.request import EnvoyRequest
from sandbox.envoy import meta

ZONE = {"id": "z-1", "type": "zones", "attributes": {"name": "Tower", "time-zone": "Europe/Paris"}}


def _request(**meta_kwargs) -> EnvoyRequest:
    body_meta = meta("entry_sign_in", **meta_kwargs)
    return EnvoyRequest.from_body({"meta": body_meta, "payload": None})


def test_the_zone_is_the_locations():
    request = _request(timezone="America/Chicago")
    request.meta["zone"] = ZONE
    assert request.timezone == "America/Chicago"


def test_without_a_location_the_zone_comes_from_meta_zone():
    request = _request(location_id=None)
    request.meta["zone"] = ZONE
    assert request.timezone == "Europe/Paris"


def test_a_location_without_a_zone_falls_back_to_meta_zone():
    request = _request()
    del request.meta["location"]["attributes"]["timezone"]
    request.meta["zone"] = ZONE
    assert request.timezone == "Europe/Paris"


def test_no_zone_anywhere_is_none():
    request = _request(location_id=None)
    assert request.meta["zone"] is None
    assert request.timezone is None
