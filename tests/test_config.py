"""Settings come from one schema: environment, flags, defaults, validation, docs."""

import argparse
import re
from pathlib import Path

import pytest

from daemon import config
from daemon.__main__ import build_parser, main


def test_flags_win_over_environment_and_defaults_fill_the_rest():
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(["--listen", "0.0.0.0:9000"])
    cfg = config.load(args, {"ENVOY_CLIENT_SECRET": "s", "ENVOY_PROXY_LISTEN": "127.0.0.1:1"})
    assert cfg.listen == "0.0.0.0:9000"
    assert cfg.envoy_base_url == "https://app.envoy.com"
    assert cfg.verify_deadline == 10.0


def test_missing_client_secret_is_one_clear_line():
    with pytest.raises(config.ConfigError) as error:
        config.load(None, {})
    assert "ENVOY_CLIENT_SECRET is not set" in str(error.value)
    assert "\n" not in str(error.value)


def test_serve_without_secret_exits_2_naming_what_is_missing(capsys, monkeypatch):
    monkeypatch.delenv("ENVOY_CLIENT_SECRET", raising=False)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ENVOY_CLIENT_SECRET" in err


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("ENVOY_PROXY_VERIFY_DEADLINE", "60", "at most 25"),
        ("ENVOY_PROXY_VERIFY_DEADLINE", "soon", "expected a float"),
        ("ENVOY_PROXY_MAX_BODY_BYTES", "10", "at least"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env, value, message):
    with pytest.raises(config.ConfigError, match=message) as error:
        config.load(None, {"ENVOY_CLIENT_SECRET": "s", env: value})
    assert env in str(error.value)


def test_repr_never_shows_secrets():
    cfg = config.load(
        None, {"ENVOY_CLIENT_SECRET": "hunter22", "ENVOY_PROXY_ADMIN_PASSWORD": "pw-9"}
    )
    assert "hunter22" not in repr(cfg) and "pw-9" not in repr(cfg)
    assert set(cfg.secrets()) == {"hunter22", "pw-9"}


def test_help_lists_every_environment_variable(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    for option in config.OPTIONS:
        assert option.env in text, option.env


def test_the_pinned_environment_names_exist():
    pinned = {
        "ENVOY_CLIENT_ID", "ENVOY_CLIENT_SECRET", "ENVOY_BASE_URL", "PROXY_API_URL",
        "ENVOY_PROXY_DB", "ENVOY_PROXY_LISTEN", "ENVOY_PROXY_ADMIN_PASSWORD",
        "ENVOY_PROXY_KEY_FILE", "ENVOY_PROXY_VERIFY_DEADLINE",
    }  # fmt: skip
    assert pinned <= {option.env for option in config.OPTIONS}


def test_readme_configuration_table_matches_the_schema():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("<!-- config-table:start -->")[1].split("<!-- config-table:end -->")[0]
    assert table.strip() == config.markdown_table()


@pytest.mark.parametrize("flag", ["--client-secret", "--admin-password"])
def test_a_secret_given_as_a_flag_is_warned_about_never_shown(flag, caplog):
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args([flag, "flag-secret-123"])
    cfg = config.load(args, {"ENVOY_CLIENT_SECRET": "env-secret"})
    assert "flag-secret-123" in cfg.secrets()
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert flag in warning.getMessage() and "environment" in warning.getMessage()
    assert "flag-secret-123" not in caplog.text


def test_secrets_from_the_environment_draw_no_warning(caplog):
    config.load(None, {"ENVOY_CLIENT_SECRET": "env-secret", "ENVOY_PROXY_ADMIN_PASSWORD": "pw"})
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize(
    ("raw", "value"), [("", False), ("true", True), ("0", False), ("on", True)]
)
def test_metrics_login_is_a_switch(raw, value):
    environ = {"ENVOY_CLIENT_SECRET": "s", "ENVOY_PROXY_METRICS_LOGIN": raw}
    assert config.load(None, environ).metrics_login is value


def test_a_switch_that_is_neither_on_nor_off_is_refused():
    with pytest.raises(config.ConfigError, match="ENVOY_PROXY_METRICS_LOGIN"):
        config.load(None, {"ENVOY_CLIENT_SECRET": "s", "ENVOY_PROXY_METRICS_LOGIN": "maybe"})
