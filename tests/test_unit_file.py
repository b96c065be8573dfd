"""The committed systemd unit: Type=notify with a watchdog, the console script, the state
directory and the hardening; `systemd-analyze verify` accepts it where systemd is installed."""

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "envoy-proxy.service"
EXEC = "/opt/envoy-proxy/venv/bin/envoy-proxy"


def _unit() -> configparser.ConfigParser:
    # strict=False: systemd allows repeated keys; interpolation off: `%` is systemd's own.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def _all(section: str, key: str) -> list[str]:
    """Every value of a key systemd lets repeat (configparser keeps only the last)."""
    values, current = [], None
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.partition("=")[0] == key:
            values.append(line.partition("=")[2])
    return values


def _environment() -> dict:
    return dict(value.partition("=")[::2] for value in _all("Service", "Environment"))


def test_the_unit_runs_the_console_script_as_a_notify_service_with_a_watchdog():
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["ExecStart"].split() == [EXEC, "serve"]
    assert Path(EXEC).name == "envoy-proxy"  # the console script setup.py installs
    setup = (UNIT.parent / "setup.py").read_text()
    assert '"envoy-proxy = daemon.__main__:main"' in setup
    assert service["WatchdogSec"] == "60"
    assert service["Restart"] == "on-failure"
    assert service["RestartSec"] == "5"
    # A refusal at start (exit 2) is not retried in a loop: only the admin can fix it.
    assert service["RestartPreventExitStatus"] == "2"
    # Waitress drains for up to 5 s, then the scheduler stops: well within the stop timeout.
    assert int(service["TimeoutStopSec"]) >= 15


def test_the_unit_keeps_its_state_in_its_own_directory():
    service = _unit()["Service"]
    assert service["EnvironmentFile"] == "/etc/envoy-proxy/env"
    assert service["StateDirectory"] == "envoy-proxy"
    assert service["WorkingDirectory"] == "/var/lib/envoy-proxy"
    assert service["DynamicUser"] == "yes"
    environment = _environment()
    assert environment["ENVOY_PROXY_DB"] == "/var/lib/envoy-proxy/envoy-proxy.sqlite3"
    assert environment["ENVOY_PROXY_KEY_FILE"] == "/var/lib/envoy-proxy/secret.key"
    assert service["UMask"] == "0077"


def test_the_unit_is_hardened():
    service = _unit()["Service"]
    expected = {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "SystemCallFilter": "@system-service",
        "CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert service[key] == value, key
    assert service["RestrictAddressFamilies"].split() == ["AF_UNIX", "AF_INET", "AF_INET6"]
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    # verify checks that ExecStart's program exists: point it at a stand-in of the same name.
    script = tmp_path / "envoy-proxy"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    unit = tmp_path / "envoy-proxy.service"
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(EXEC) == 1 + text.count(f"{EXEC} status")  # ExecStart, and the comment
    unit.write_text(text.replace(f"ExecStart={EXEC}", f"ExecStart={script}"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "envoy-proxy.service" not in result.stderr, result.stderr  # no warnings about it
