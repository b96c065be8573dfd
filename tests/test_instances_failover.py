"""The failover campaign's short variant (bench/failover.py): three daemons on one PostgreSQL
database, one SIGKILLed while it holds claimed work, restarted."""

import pytest

from bench import failover


@pytest.mark.slow
def test_an_instance_killed_while_holding_work_loses_nothing_and_its_work_moves_on(
    tmp_path, postgres_server
):
    url = postgres_server.new_database(migrated=False)
    result = failover.run(tmp_path, url, events=100, seed=3, kill_every=(2.0, 3.0), lanes=8,
                          pace=0.3, proxy_latency_ms=300, max_kills=1)  # fmt: skip
    assert result.kills == 1 and result.takeovers.left_behind > 0, result.describe()
    assert result.ok, result.describe()
    assert result.takeover_ok, result.describe()
    postgres_server.drop_created()
