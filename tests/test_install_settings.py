"""An install's settings are refused out of range where they are read (one set of bounds for
Settings, the setup forms and their validation), and nothing that shows stored data crashes on
an absurd value: it shows the problem instead."""

import pytest

import db
from daemon.__main__ import main
from daemon.envoy.manifest import STEPS
from daemon.ops import status_report
from daemon.rules.settings import MINUTE_BOUNDS, ConfigOutOfRange, Settings, config_problem
from daemon.rules.times import iso_utc, local_clock, local_time, local_window, parse_instant

ABSURD = 10**10  # minutes: the hand-edited value of issue 15


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("access_duration_minutes", ABSURD),
        ("access_duration_minutes", "0"),
        ("access_duration_minutes", -480),
        ("early_access_minutes", -5),
        ("early_access_minutes", "100000"),
        ("protect_access_duration_minutes", ABSURD),
        ("protect_access_duration_minutes", 721),
    ],
)
def test_a_duration_out_of_range_is_refused_with_412_naming_key_and_bounds(key, value):
    with pytest.raises(ConfigOutOfRange) as refused:
        Settings.from_config({key: value})
    least, most = MINUTE_BOUNDS[key]
    assert refused.value.status == 412
    assert key in str(refused.value) and f"{least}..{most}" in str(refused.value)


def test_durations_in_range_as_strings_or_numbers_are_read_and_absent_ones_default():
    settings = Settings.from_config(
        {"access_duration_minutes": "5", "early_access_minutes": 1440, "protect_enabled": "on"}
    )
    assert settings.access_duration_minutes == 5 and settings.early_access_minutes == 1440
    assert Settings.from_config({}).access_duration_minutes == 480


def test_the_lenient_reading_clamps_so_that_endings_still_reach_proxy():
    config = {"access_duration_minutes": ABSURD, "early_access_minutes": -5, "proxy_org_id": 7}
    settings = Settings.lenient(config)
    assert settings.access_duration_minutes == MINUTE_BOUNDS["access_duration_minutes"][1]
    assert settings.early_access_minutes == 0 and settings.proxy_org_id == "7"


def test_the_setup_forms_and_their_validation_use_the_same_bounds():
    fields = {field.key: field for step in STEPS.values() for field in step.fields}
    for key, (least, most) in MINUTE_BOUNDS.items():
        assert (fields[key].minimum, fields[key].maximum) == (least, most), key


def test_config_problem_names_the_setting_or_is_none():
    assert "access_duration_minutes" in config_problem({"access_duration_minutes": ABSURD})
    assert config_problem({"access_duration_minutes": 60}) is None
    assert config_problem("not a dict") is None


# -- times: unreadable in, never a crash out ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        float("inf"),
        float("-inf"),
        float("nan"),
        10**30,
        1e300,
        -1,
        "9999-12-31T23:59:59-05:00",  # year 10000 in UTC
        "0001-01-01T00:00:00+05:00",  # before year 1 in UTC
        "3000-01-02 00:00:00",
    ],
)
def test_absurd_instants_are_unreadable_not_a_crash(value):
    assert parse_instant(value) is None


def test_envoy_instants_still_read():
    assert parse_instant("2024-03-10 07:30:00") == 1710055800
    assert parse_instant("2024-03-10T02:30:00-05:00") == 1710055800
    assert parse_instant(1710055800.9) == 1710055800


@pytest.mark.parametrize("epoch", [10**15, -(10**15), 10**30])
def test_formatting_an_absurd_epoch_shows_it_instead_of_raising(epoch):
    for text in (
        local_time(epoch, "Europe/Paris"),
        local_clock(epoch, None),
        iso_utc(epoch),
        local_window(0, epoch, "America/New_York"),
        local_window(epoch, None, None),
    ):
        assert f"epoch {epoch} (out of range)" in text


def test_a_window_within_a_day_stays_short():
    assert local_window(1710055800, 1710059400, "America/New_York") == (
        "03:30–04:30 (America/New_York)"
    )


# -- what shows stored data --------------------------------------------------------------------


@pytest.fixture
def absurd_store(tmp_path):
    """A database holding what a hand-edited config left: the config and a far grant."""
    path = str(tmp_path / "absurd.sqlite3")
    db.open_database(path)
    now = db.now_epoch()
    with db.database.connection_context():
        db.migrate()
        db.Install.create(
            install_id="install-1",
            timezone="Europe/Paris",
            config={"access_duration_minutes": ABSURD, "proxy_site_name": "HQ"},
            created_at=now,
            updated_at=now,
        )
        db.Grant.create(
            install_id="install-1",
            kind="visitor",
            subject="entries:e-1",
            full_name="Ada",
            starts_at=now,
            ends_at=now + ABSURD * 60,
            state="active",
            created_at=now,
            updated_at=now,
        )
    yield path
    db.close_database()


def test_the_status_facts_show_the_stored_problem_instead_of_crashing(absurd_store):
    with db.database.connection_context():
        facts = status_report.gather(db.now_epoch())
    install = facts["installs"][0]
    assert "access_duration_minutes" in install["config_problem"]
    assert install["last_error"] == install["config_problem"]
    ends = facts["grants"]["active"][0]["ends_at"]
    assert "out of range" in ends["local"] and "out of range" in ends["iso"]


@pytest.mark.parametrize("command", ["status", "grants"])
def test_the_cli_shows_the_stored_problem_instead_of_crashing(absurd_store, capsys, command):
    assert main([command, "--db", absurd_store]) == 0
    out = capsys.readouterr().out
    assert "out of range" in out
    if command == "status":
        assert "access_duration_minutes" in out


# -- signed requests ---------------------------------------------------------------------------


def _absurd_entry(daemon) -> dict:
    daemon.install()
    config = {**daemon.config, "access_duration_minutes": ABSURD}
    return daemon.entry(
        entry_id="e-1",
        full_name="Ada",
        email="ada@example.com",
        flow_id="flow-visitor",
        signed_in_at=db.now_epoch(),
        config=config,
    )


def test_an_identity_check_under_an_absurd_config_is_412_with_the_reason(daemon):
    answer = daemon.send(_absurd_entry(daemon), path="/envoy/hooks/identity-verification")
    assert answer.status_code == 412, answer.text
    assert "access_duration_minutes" in answer.json()["message"]
    assert daemon.persons("ada@example.com") == []


def test_an_event_under_an_absurd_config_is_412_and_stores_nothing(daemon):
    answer = daemon.send(_absurd_entry(daemon))
    assert answer.status_code == 412, answer.text
    assert "access_duration_minutes" in answer.json()["message"]
    with db.database.connection_context():
        assert db.Event.select().count() == 0 and db.Grant.select().count() == 0
        assert db.Install.get_by_id("install-1").config == daemon.config


def test_an_event_under_a_stored_absurd_config_is_412_and_stores_nothing(daemon):
    daemon.install(access_duration_minutes=ABSURD)
    body = daemon.entry(
        entry_id="e-1",
        full_name="Ada",
        email="ada@example.com",
        flow_id="flow-visitor",
        signed_in_at=db.now_epoch(),
        config={},  # Envoy sent none: the stored snapshot is the install's config
    )
    answer = daemon.send(body)
    assert answer.status_code == 412, answer.text
    assert "access_duration_minutes" in answer.json()["message"]
    with db.database.connection_context():
        assert db.Event.select().count() == 0 and db.Grant.select().count() == 0


def test_endings_still_reach_proxy_under_a_stored_absurd_config(daemon):
    """Revoking goes through the install's Proxy client: it must not refuse the config."""
    daemon.install(access_duration_minutes=ABSURD)
    with db.database.connection_context():
        install = db.Install.get_by_id(daemon.install_id)
    assert daemon.ctx.proxy.client(install).site_id == daemon.config["proxy_site_id"]
