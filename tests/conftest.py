"""Shared fixtures: a migrated database in tmp_path, the Proxy sandbox, the Envoy simulator."""

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.database",
    "tests.fixtures.proxy_sandbox",
    "tests.fixtures.envoy_sim",
    "tests.fixtures.daemon",
    "tests.fixtures.daemon_process",
    "tests.fixtures.browser",
]
