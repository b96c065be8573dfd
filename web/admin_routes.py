"""The admin's views: `/status` (HTML), `/status.json` (the same facts), the Activity view
(`/status/activity`, `/status/activity.json`: one person's story from the audit trail) and
`/metrics`.

The status pages ask for HTTP Basic auth as user `admin` with ENVOY_PROXY_ADMIN_PASSWORD and
stay closed (403) while no password is set. Failed logins are logged with their source
address and slowed down per address (web/throttle.py). `/metrics` is open (keep it local
through the reverse proxy) unless ENVOY_PROXY_METRICS_LOGIN asks for the same login.
Handlers only check, read one report and format it.
"""

import hmac
import json
import logging
import os
import threading
from urllib.parse import quote

from bottle import Bottle, HTTPResponse, SimpleTemplate, parse_auth, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import db
from daemon.context import Context
from daemon.ops.audit_report import activity
from daemon.ops.status_report import duration, gather, size
from web.responses import json_response
from web.throttle import LoginThrottle

log = logging.getLogger("envoy_proxy.web")

ADMIN_USER = "admin"
REALM = "envoy-proxy"
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
# Even if a value ever escaped the template's escaping, the browser would run no script.
HTML_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The Activity view's search form submits to itself; nothing else changes.
ACTIVITY_HEADERS = {
    **HTML_HEADERS,
    "Content-Security-Policy": HTML_HEADERS["Content-Security-Policy"].replace(
        "form-action 'none'", "form-action 'self'"
    ),
}
NOT_CONFIGURED = (
    "the status page is disabled: set ENVOY_PROXY_ADMIN_PASSWORD (or --admin-password) "
    "and restart the daemon to enable it; then sign in as user 'admin'"
)


def credentials_match(header_auth, password: str) -> bool:
    """Compare user and password in constant time, both of them, whatever the first says."""
    user, given = header_auth or ("", "")
    user, given = user or "", given or ""
    user_ok = hmac.compare_digest(user.encode("utf-8"), ADMIN_USER.encode("utf-8"))
    password_ok = hmac.compare_digest(given.encode("utf-8"), password.encode("utf-8"))
    return user_ok & password_ok


def when(stamp: dict | None) -> str:
    return stamp["local"] if stamp else "—"


class _Once:
    def __init__(self):
        self._lock = threading.Lock()
        self._done = False

    def __call__(self) -> bool:
        with self._lock:
            first, self._done = not self._done, True
            return first


def _details(details: dict | None) -> str:
    return "" if not details else json.dumps(details, sort_keys=True, ensure_ascii=False)


def _denied(as_json: bool, status: int, message: str, headers=None) -> HTTPResponse:
    if as_json:
        answer = json_response(status, {"message": message})
        for name, value in (headers or {}).items():
            answer.set_header(name, value)
        return answer
    return HTTPResponse(
        body=message + "\n",
        status=status,
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "Cache-Control": "no-store",
            **(headers or {}),
        },
    )


def source_address() -> str:
    """The client's address as Waitress gives it: the reverse proxy's X-Forwarded-For only
    when ENVOY_PROXY_TRUSTED_PROXY names that proxy (Bottle's `remote_addr` would believe any
    client's header)."""
    return request.environ.get("REMOTE_ADDR") or "-"


def install(app: Bottle, ctx: Context) -> None:
    template = SimpleTemplate(name="status", lookup=[TEMPLATES])
    activity_template = SimpleTemplate(name="activity", lookup=[TEMPLATES])
    warn_once = _Once()
    throttle = LoginThrottle()

    def check(as_json: bool) -> HTTPResponse | None:
        password = ctx.config.admin_password  # read each time: a test may swap the config
        if not password:
            if warn_once():
                log.warning("GET %s refused: %s", request.path, NOT_CONFIGURED)
            return _denied(as_json, 403, NOT_CONFIGURED)
        address = source_address()
        wait = throttle.wait(address)
        if wait:
            message = f"too many failed logins from {address}; try again in {wait} s"
            return _denied(as_json, 429, message, {"Retry-After": str(wait)})
        header = request.get_header("Authorization", "")
        # The header only: Bottle's `request.auth` would also believe a REMOTE_USER.
        if credentials_match(parse_auth(header), password):
            throttle.succeeded(address)
            return None
        if header:  # a browser's first request, before it asks for the password, is no guess
            failures = throttle.failed(address)
            log.warning("GET %s from %s: wrong admin credentials (%d in a row)", request.path,
                        address, failures)  # fmt: skip
        return _denied(
            as_json,
            401,
            "sign in as user 'admin' with ENVOY_PROXY_ADMIN_PASSWORD",
            {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )

    def facts() -> dict:
        health = ctx.health.check()  # before the report's read transaction: it probes a write
        with db.database.connection_context():
            return gather(
                db.now_epoch(),
                started_at=ctx.started_at,
                health=health,
                scheduler_next_due=ctx.scheduler_next_due(),
                secrets=ctx.config.secrets(),
                retention_days=ctx.config.retention_days,
                retention_runs=ctx.retention_runs(),
                this_instance=ctx.runner.claimer,
            )

    def status_html():
        denied = check(as_json=False)
        if denied is not None:
            return denied
        body = template.render(facts=facts(), when=when, duration=duration, size=size)
        return HTTPResponse(body=body, status=200, headers=HTML_HEADERS)

    def status_json():
        denied = check(as_json=True)
        if denied is not None:
            return denied
        return HTTPResponse(
            body=json.dumps(facts(), indent=1, ensure_ascii=False),
            status=200,
            headers={
                "Content-Type": "application/json; charset=utf-8",
                "Cache-Control": "no-store",
            },
        )

    def story() -> dict:
        with db.database.connection_context():
            return activity(request.query.getunicode("q", default="") or "")

    def activity_html():
        denied = check(as_json=False)
        if denied is not None:
            return denied
        body = activity_template.render(activity=story(), details=_details, quote=quote)
        return HTTPResponse(body=body, status=200, headers=ACTIVITY_HEADERS)

    def activity_json():
        denied = check(as_json=True)
        if denied is not None:
            return denied
        return json_response(200, story())

    def metrics():
        if ctx.config.metrics_login:
            denied = check(as_json=False)
            if denied is not None:
                return denied
        # The grant and action gauges read the database at scrape time.
        with db.database.connection_context():
            body = generate_latest(ctx.metrics.registry)
        return HTTPResponse(
            body=body,
            status=200,
            headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"},
        )

    app.route("/status", "GET", status_html)
    app.route("/status.json", "GET", status_json)
    app.route("/status/activity", "GET", activity_html)
    app.route("/status/activity.json", "GET", activity_json)
    app.route("/metrics", "GET", metrics)
