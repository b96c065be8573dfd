"""The outbound session (daemon/http_session.py): enough kept connections for every thread
that calls at once, and credentials never carried along a redirect."""

import logging
import threading

import pytest

from daemon.http_session import POOL_SIZE, session_for
from tests.scripted import Answer, scripted


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


@pytest.mark.parametrize("status", [302, 307])
@pytest.mark.parametrize("options", [{}, {"allow_redirects": True}])
def test_a_call_returns_a_redirect_instead_of_following_it_with_the_credentials(status, options):
    moved = {"/moved": Answer(status, headers={"Location": "/target"})}
    with scripted(moved, default=Answer(200)) as server:
        session = session_for(server.url)
        try:
            answer = session.request(
                "POST", f"{server.url}/moved", auth=("key", "secret"), json={"secret": "body"},
                timeout=5, **options,
            )  # fmt: skip
        finally:
            session.close()
    assert answer.status_code == status
    assert [(asked.method, asked.path) for asked in server.asked] == [("POST", "/moved")]
    assert server.asked[0].authorization.startswith("Basic ")
