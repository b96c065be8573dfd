"""A real HTTP server that gives answers no sandbox gives (redirects, odd Retry-After headers,
error texts that echo a credential), and records what it was asked."""

import contextlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    headers: dict = field(default_factory=dict)
    body: dict | None = None
    raw: bytes | None = None  # sent as is instead of `body` (an unreadable answer)


@dataclass
class Asked:
    method: str
    path: str
    authorization: str | None
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    def _answer(self):
        server = self.server
        length = int(self.headers.get("Content-Length") or 0)
        server.asked.append(
            Asked(
                self.command, self.path, self.headers.get("Authorization"), self.rfile.read(length)
            )
        )
        answer = server.answer_for(self.path)
        body = b"" if answer.body is None else json.dumps(answer.body).encode()
        if answer.raw is not None:
            body = answer.raw
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def scripted(answers: dict[str, Answer], default: Answer | None = None):
    """Serve `answers` by path prefix (the first that matches; else `default`, else 404) on
    127.0.0.1; yields the server, whose `.url` to call and `.asked` to read."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.asked = []

    def answer_for(path):
        for prefix, answer in answers.items():
            if path.startswith(prefix):
                return answer
        return default or Answer(404, body={"error": "not_found"})

    server.answer_for = answer_for
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
