"""The outbound session (daemon/http_session.py): enough kept connections for every thread
that calls at once."""

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

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


class _Redirecting(BaseHTTPRequestHandler):
    """Answers /moved with a redirect to /target, and records every path it is asked for."""

    seen: ClassVar[list] = []

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/target")
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_plain_call_returns_a_redirect_instead_of_following_it_with_the_credentials():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    session = session_for(url)
    try:
        _Redirecting.seen = []
        answer = session.request("GET", f"{url}/moved", auth=("key", "secret"), timeout=5)
        assert answer.status_code == 302
        assert [path for path, _ in _Redirecting.seen] == ["/moved"]
        assert _Redirecting.seen[0][1].startswith("Basic ")

        _Redirecting.seen = []  # any other option takes requests' full path, which follows
        assert session.get(f"{url}/moved", timeout=5).status_code == 200
        assert [path for path, _ in _Redirecting.seen] == ["/moved", "/target"]
    finally:
        session.close()
        server.shutdown()
        server.server_close()
