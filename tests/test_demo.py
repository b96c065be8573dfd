"""The README's first command: the demo plays its whole scenario and the sandbox agrees."""

import subprocess
import sys

import pytest

from tests.fixtures.daemon_process import free_port


@pytest.mark.slow
def test_demo_plays_the_scenario_and_the_sandbox_matches_the_rules(tmp_path):
    listen = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "demo", "--pace", "0.25", "--exit",
         "--listen", listen, "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in ("proxy-access", "site", "visitor-mapping", "protect", "customization"):
        assert f"✓ {step}" in out
    assert "202 → job done Proxy credential active" in out  # a sign-in, told by a job update
    assert "202 → job pending" in out  # the outage was felt: Cleo's job waits for Proxy
    assert "✓ every job answered 202 got its job update" in out
    assert "✓ the sandbox matches the rules" in out
    assert "failed actions 0" in out
