"""The outbound session (daemon/http_session.py): enough kept connections for every thread
that calls at once."""

import logging
import threading

from daemon.http_session import POOL_SIZE, session_for


def test_concurrent_calls_reuse_kept_connections_instead_of_discarding_them(proxy_sandbox, caplog):
    proxy_sandbox.add_fault(latency_ms=200)  # every call in flight at the same time
    session = session_for(proxy_sandbox.url)
    url = f"{proxy_sandbox.url}/v1/orgs"
    statuses = []

    def call():
        statuses.append(session.get(url, timeout=10).status_code)

    threads = [threading.Thread(target=call) for _ in range(min(POOL_SIZE, 24))]
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert len(statuses) == len(threads)
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
    session.close()
