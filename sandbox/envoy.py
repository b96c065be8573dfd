"""Envoy simulator for tests, the demo and the benchmarks.

It builds Envoy-shaped bodies (ENVOY_PROTOCOL.md §2-3), signs and sends them to the daemon, and
serves a fake Envoy plugin API (token, jobs, purpose, install config) and user API (flows,
employees) on a real HTTP server, recording what the daemon did and injecting faults on demand.

    ENVOY_CLIENT_SECRET=S python -m sandbox.envoy --daemon http://127.0.0.1:8080 \
        event entry_sign_in --name "Ada" --email ada@example.com --flow FLOW
    python -m sandbox.envoy serve --listen 127.0.0.1:8090
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import signal
import socketserver
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bottle
import requests

CLIENT_ID = "sim-client"
CLIENT_SECRET = "sim-secret"
USER_TOKEN = "sim-user-token"
PLUGIN_ID = "plugin-envoy-proxy"
DEFAULT_TIMEZONE = "America/New_York"
TOKEN_PATH = "/a/auth/v0/token"
PLUGIN_API = "/api/v2/plugin-services"
JOB_STATUSES = frozenset({"done", "ignored", "failed", "ongoing"})
DEFAULT_PAGE_LIMIT = 25
MAX_PAGE_LIMIT = 100
ENTRY_EVENTS = (
    "entry_sign_in",
    "entry_sign_out",
    "entry_blacklist_review",
    "entry_blacklist_deny",
    "employee_entry_sign_in",
    "employee_entry_sign_out",
)
INVITE_EVENTS = ("invite_created", "invite_updated", "invite_removed", "upcoming_visit")
UNINSTALL_EVENT = "plugin_uninstalled"


# ---------------------------------------------------------------------------------------------
# Signing and body builders


def sign(secret: str, body: bytes) -> str:
    """X-Envoy-Signature: Base64(HMAC-SHA256(key=secret, msg=raw body))."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _utc(value: datetime | float) -> datetime:
    """An aware UTC datetime from a datetime (naive means UTC) or epoch seconds."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromtimestamp(value, UTC)


def entry_time(value: datetime | float | str | None) -> str | None:
    """Envoy's entry time format, `YYYY-MM-DD HH:MM:SS` in UTC; strings pass unchanged."""
    if value is None or isinstance(value, str):
        return value
    return _utc(value).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(value: datetime | float | str) -> str:
    """ISO 8601 in UTC with milliseconds and `Z`, as Envoy writes invite times."""
    if isinstance(value, str):
        return value
    return _utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _id(value, numeric: bool):
    """An id as Envoy may send it: a string, or a number when `numeric` and it is digits."""
    text = str(value)
    return int(text) if numeric and text.isdigit() else text


def _ref(kind: str, value, numeric: bool) -> dict:
    return {"data": {"type": kind, "id": _id(value, numeric)}}


def _common_meta(
    *, install_id, config, location_id, timezone, company_id, plugin_id, access_token, numeric_ids
) -> dict:
    meta = {"plugin_id": plugin_id, "install_id": _id(install_id, numeric_ids)}
    meta["config"] = dict(config or {})
    if location_id is not None:  # company-level installs have no location
        meta["location"] = {
            "id": _id(location_id, numeric_ids),
            "type": "locations",
            "attributes": {"name": "Simulated HQ", "timezone": timezone},
        }
    meta["company"] = {
        "id": _id(company_id, numeric_ids),
        "type": "companies",
        "attributes": {"name": "Simulated Company"},
    }
    meta["zone"] = None
    meta["auth"] = (
        None
        if access_token is None
        else {
            "token_type": "Bearer",
            "access_token": access_token,
            "expires_in": 3600,
            "refresh_token": None,
        }
    )
    return meta


def meta(
    event: str,
    *,
    install_id="install-1",
    config: dict | None = None,
    location_id="loc-1",
    timezone: str = DEFAULT_TIMEZONE,
    job_id: str | None = None,
    job_identifier: str | None = None,
    company_id="company-1",
    plugin_id: str = PLUGIN_ID,
    access_token: str | None = USER_TOKEN,
    numeric_ids: bool = False,
) -> dict:
    """An event's `meta`; `location_id=None` for a company-level install, `access_token=None`
    for `auth: null`."""
    common = _common_meta(
        install_id=install_id,
        config=config,
        location_id=location_id,
        timezone=timezone,
        company_id=company_id,
        plugin_id=plugin_id,
        access_token=access_token,
        numeric_ids=numeric_ids,
    )
    job = {
        "id": job_id or str(uuid.uuid4()),
        "name": event,
        "identifier": job_identifier or f"vr:{event}",
    }
    return {"event": event, **common, "job": job}


RESOURCE_TYPES = {
    "invite": "invites",
    "employee": "employees",
    "location": "locations",
    "entry": "entries",
}
JOB_NOUNS = {"entries": "entry", "invites": "invite"}


def _resource_event(
    event, kind, resource_id, attributes, flow_id, related, numeric_ids, meta_kwargs
) -> dict:
    """`{meta, payload}` of an event about one JSON:API resource (an entry or an invite)."""
    relationships = {"flow": _ref("flows", flow_id, numeric_ids)}
    for name, related_id in related.items():
        if related_id is not None:
            relationships[name] = _ref(RESOURCE_TYPES[name], related_id, numeric_ids)
    payload = {
        "id": _id(resource_id, numeric_ids),
        "type": kind,
        "attributes": attributes,
        "relationships": relationships,
    }
    body_meta = meta(
        event,
        location_id=related.get("location"),
        numeric_ids=numeric_ids,
        job_identifier=f"vr:{JOB_NOUNS[kind]}:{resource_id}",
        **meta_kwargs,
    )
    return {"meta": body_meta, "payload": payload}


def entry_event(
    event: str = "entry_sign_in",
    *,
    entry_id,
    full_name: str,
    email: str | None,
    flow_id,
    signed_in_at,
    signed_out_at=None,
    invite_id=None,
    employee_id=None,
    phone: str | None = None,
    photo_url: str | None = None,
    employee_screening: bool = False,
    flow_name: str | None = None,
    host: str | None = None,
    host_email: str | None = None,
    user_data: list | None = None,
    approval_status: str | dict | None = None,
    location_id="loc-1",
    numeric_ids: bool = False,
    **meta_kwargs,
) -> dict:
    """An entry event body; `meta_kwargs` go to `meta()` (install_id, config, job_id…).

    `approval_status`: the entry's `approval-status`, a status word ("approved", "pending",
    "denied"…) or the whole object; absent when None, as on entries nobody screened."""
    attributes = {
        "full-name": full_name,
        "email": email,
        "phone-number": phone,
        "signed-in-at": entry_time(signed_in_at),
        "signed-out-at": entry_time(signed_out_at),
        "thumbnails": {"original": photo_url, "large": photo_url, "small": photo_url},
        "flow-name": flow_name or ("Employee registration" if employee_screening else "Visitor"),
        "employee-screening-flow": employee_screening,
        "host": host,
        "host-email": host_email,
        "private-notes": None,
        "user-data": list(user_data or []),
    }
    if isinstance(approval_status, str):
        approval_status = {
            "status": approval_status,
            "auto-approved": False,
            "report": [],
        }
    if approval_status is not None:
        attributes["approval-status"] = approval_status
    related = {"invite": invite_id, "employee": employee_id, "location": location_id}
    return _resource_event(
        event, "entries", entry_id, attributes, flow_id, related, numeric_ids, meta_kwargs
    )


def uninstall_event(*, install_id="install-1", **meta_kwargs) -> dict:
    """`plugin_uninstalled`: the install in `meta`, the plugin install as the payload."""
    body_meta = meta(UNINSTALL_EVENT, install_id=install_id, **meta_kwargs)
    return {"meta": body_meta, "payload": {"id": body_meta["install_id"], "type": "installs"}}


def invite_event(
    event: str = "invite_created",
    *,
    invite_id,
    full_name: str,
    email: str | None,
    flow_id,
    expected_arrival,
    entry_id=None,
    employee_id=None,
    changed_fields: list[str] | None = None,
    photo_url: str | None = None,
    arrived: bool = False,
    preregistration_complete: bool = True,
    employee_screening: bool = False,
    flow_name: str | None = None,
    location_id="loc-1",
    numeric_ids: bool = False,
    **meta_kwargs,
) -> dict:
    """An invite event body; `meta_kwargs` go to `meta()` (install_id, config, job_id…)."""
    attributes = {
        "full-name": full_name,
        "email": email,
        "expected-arrival-time": iso_time(expected_arrival),
        "flow-id": _id(flow_id, numeric_ids),
        "flow-name": flow_name or ("Employee registration" if employee_screening else "Visitor"),
        "employee-screening-flow": employee_screening,
        "arrived": arrived,
        "preregistration-complete": preregistration_complete,
        "changed-fields": list(changed_fields or []),
        "photo-url": photo_url,
        "private-notes": None,
        "user-data": [],
    }
    related = {"employee": employee_id, "location": location_id, "entry": entry_id}
    return _resource_event(
        event, "invites", invite_id, attributes, flow_id, related, numeric_ids, meta_kwargs
    )


def route_body(
    route: str,
    *,
    payload: dict | None = None,
    params: dict | None = None,
    config: dict | None = None,
    install_id="install-1",
    location_id="loc-1",
    timezone: str = DEFAULT_TIMEZONE,
    auth: bool = True,
    forwarded_bearer_token: str | None = None,
    company_id="company-1",
    numeric_ids: bool = False,
) -> dict:
    """A setup route body (validation, options, selected values); no `payload` key if None."""
    common = _common_meta(
        install_id=install_id,
        config=config,
        location_id=location_id,
        timezone=timezone,
        company_id=company_id,
        plugin_id=PLUGIN_ID,
        access_token=USER_TOKEN if auth else None,
        numeric_ids=numeric_ids,
    )
    body_meta = {"route": route, **common, "params": dict(params or {})}
    if forwarded_bearer_token is not None:
        body_meta["forwarded_bearer_token"] = forwarded_bearer_token
    body = {"meta": body_meta}
    if payload is not None:
        body["payload"] = payload
    return body


# ---------------------------------------------------------------------------------------------
# The fake Envoy APIs


class Call(NamedTuple):
    method: str
    path: str
    user_agent: str
    accept: str = ""
    content_type: str = ""


@dataclass
class _Fault:
    remaining: int
    status: int
    path: str | None
    retry_after: float | None

    def matches(self, path: str) -> bool:
        return self.path is None or path.startswith(self.path)


def _json_error(status: int, title: str, **headers) -> bottle.HTTPResponse:
    body = json.dumps({"errors": [{"status": str(status), "title": title}]})
    return bottle.HTTPResponse(
        body, status=status, headers={"Content-Type": "application/json", **headers}
    )


# Envoy's APIs take JSON:API bodies (what its SDK sends) as well as plain JSON.
JSON_TYPES = ("application/json", "application/vnd.api+json")


def _json_body() -> dict:
    """The request's JSON object (Bottle's `request.json` knows application/json only)."""
    content_type = bottle.request.content_type.split(";")[0].strip().lower()
    try:
        body = json.loads(bottle.request.body.read()) if content_type in JSON_TYPES else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _json_error(400, "expected a JSON object body")
    return body


def _page(items: list) -> dict:
    """JSON:API page of `items` by page[limit] / page[offset]."""
    query = bottle.request.query
    try:
        limit = int(query.get("page[limit]", DEFAULT_PAGE_LIMIT))
        offset = int(query.get("page[offset]", 0))
    except ValueError:
        raise _json_error(400, "page[limit] and page[offset] must be integers") from None
    if limit < 1 or offset < 0:
        raise _json_error(400, "page[limit] must be positive and page[offset] not negative")
    limit = min(limit, MAX_PAGE_LIMIT)
    return {"data": items[offset : offset + limit], "meta": {"total": len(items)}}


def _no_content() -> bottle.HTTPResponse:
    return bottle.HTTPResponse(status=204)


def _flow_resource(flow: dict, location_id: str) -> dict:
    return {
        "id": flow["id"],
        "type": "flows",
        "attributes": {
            "name": flow["name"],
            "employee-centric": bool(flow.get("employee")),
            "enabled": True,
        },
        "relationships": {"location": {"data": {"type": "locations", "id": location_id}}},
    }


def _employee_resource(employee: dict, location_ids: list[str]) -> dict:
    return {
        "id": employee["id"],
        "type": "employees",
        "attributes": {
            "name": employee["name"],
            "email": employee.get("email"),
            "phone-number": None,
            "deleted": False,
        },
        "relationships": {
            "locations": {"data": [{"type": "locations", "id": loc} for loc in location_ids]}
        },
    }


def _matches(employee: dict, search: str) -> bool:
    """filter[query]: a case-insensitive substring of the name or the email."""
    return search in employee["name"].lower() or search in (employee.get("email") or "").lower()


class _QuietHandler(WSGIRequestHandler):
    # Headers and body leave in separate writes: without this, each answer waits ~40 ms
    # for the client's delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        """Tests and the demo read the recorders; an access log on stderr is only noise."""


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall on a slow resolver;
        # the name is unused here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]
        self.setup_environ()


class EnvoySimulator:
    """A fake Envoy: its plugin and user APIs over HTTP, recorders, faults, and a sender."""

    def __init__(
        self,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        *,
        user_token: str = USER_TOKEN,
        token_expires_in: int = 3600,
    ):
        self.client_id = client_id
        self.client_secret = client_secret
        self.user_token = user_token
        self._default_expires_in = token_expires_in
        self._lock = threading.Lock()
        self._server: _ThreadingServer | None = None
        self._thread: threading.Thread | None = None
        self._session = requests.Session()
        self.url: str | None = None
        self.app = self._build_app()
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> "EnvoySimulator":
        self._server = make_server(
            host, port, self.app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="envoy-simulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None
        self._session.close()

    def reset(self) -> "EnvoySimulator":
        """Forget recorded calls, tokens, jobs, purposes, configs, data and pending faults."""
        with self._lock:
            self.token_expires_in = self._default_expires_in
            self.tokens_issued = 0
            self._plugin_tokens: set[str] = set()
            self.jobs: dict[str, list[dict]] = {}
            self.purposes: dict[str, list[str]] = {}
            self.install_configs: dict[str, dict] = {}
            self.calls: list[Call] = []
            self._faults: list[_Fault] = []
            self._flows: dict[str, list[dict]] = {}
            self._employees: dict[str, list[dict]] = {}
        return self

    # -- data and faults ---------------------------------------------------------------------

    def set_flows(self, location_id: str, flows: list[dict]) -> None:
        """Flows of a location, as `{"id", "name", "employee": bool}`."""
        with self._lock:
            self._flows[str(location_id)] = [dict(flow) for flow in flows]

    def set_employees(self, location_id: str, employees: list[dict]) -> None:
        """Employees of a location, as `{"id", "name", "email"}` (ids are served as given)."""
        with self._lock:
            self._employees[str(location_id)] = [dict(employee) for employee in employees]

    def load_demo_data(self, location_id: str = "loc-1") -> "EnvoySimulator":
        """The demo location: four flows (one for employees) and 130 employees."""
        self.set_flows(
            location_id,
            [
                {"id": "flow-visitor", "name": "Visitor", "employee": False},
                {"id": "flow-contractor", "name": "Contractor", "employee": False},
                {"id": "flow-interview", "name": "Interview", "employee": False},
                {"id": "flow-employee", "name": "Employee registration", "employee": True},
            ],
        )
        named = [
            {"id": "e-1", "name": "Erin Employee", "email": "erin@example.com"},
            {"id": "e-2", "name": "Sam Staff", "email": "sam@example.com"},
            {"id": "e-3", "name": "Alex Admin", "email": "alex@example.com"},
        ]
        numbered = [
            {
                "id": f"e-{n + 3}",
                "name": f"Employee {n:03d}",
                "email": f"employee{n:03d}@example.com",
            }
            for n in range(1, 128)
        ]
        self.set_employees(location_id, named + numbered)
        return self

    def fail_next(
        self,
        n: int,
        status: int = 503,
        *,
        path: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Answer the next `n` calls (to paths starting with `path`, if given) with `status`,
        with a Retry-After header when `retry_after` is given."""
        with self._lock:
            self._faults.append(_Fault(n, status, path, retry_after))

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- the HTTP app ------------------------------------------------------------------------

    def _build_app(self) -> bottle.Bottle:
        app = bottle.Bottle()
        app.install(self._observe)
        app.route(TOKEN_PATH, "POST", self._issue_token)
        app.route(f"{PLUGIN_API}/jobs/<job_id>", "PATCH", self._update_job)
        app.route(f"{PLUGIN_API}/installs/<install_id>/purpose", "PUT", self._register_purpose)
        app.route(f"{PLUGIN_API}/installs/<install_id>/config", "GET", self._get_config)
        app.route(f"{PLUGIN_API}/installs/<install_id>/config", "PUT", self._put_config)
        app.route("/api/v3/flows", "GET", self._list_flows)
        app.route("/api/v3/employees", "GET", self._list_employees)
        app.route("/api/v3/employees/<employee_id>", "GET", self._get_employee)
        return app

    def _observe(self, callback):
        """Bottle plugin: record every call, then answer an injected fault or the route."""

        def wrapper(*args, **kwargs):
            request = bottle.request
            header = request.headers.get
            call = Call(request.method, request.path, header("User-Agent", ""),
                        header("Accept", ""), header("Content-Type", ""))  # fmt: skip
            with self._lock:
                self.calls.append(call)
            fault = self._take_fault(request.path)
            if fault is None:
                return callback(*args, **kwargs)
            headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            return _json_error(fault.status, "injected fault", **headers)

        return wrapper

    def _bearer(self) -> str:
        scheme, _, token = bottle.request.headers.get("Authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" else ""

    def _require_plugin_token(self) -> None:
        with self._lock:
            valid = self._bearer() in self._plugin_tokens
        if not valid:
            raise _json_error(401, "invalid or missing plugin token")

    def _require_user_token(self) -> None:
        if self._bearer() != self.user_token:
            raise _json_error(401, "invalid or missing user token")

    def _issue_token(self):
        if bottle.request.auth != (self.client_id, self.client_secret):
            raise bottle.HTTPResponse(
                json.dumps({"error": "invalid_client", "error_description": "bad client"}),
                status=401,
                headers={"Content-Type": "application/json"},
            )
        body = _json_body()
        if body.get("grant_type") != "client_credentials":
            raise _json_error(400, "unsupported grant_type")
        with self._lock:
            self.tokens_issued += 1
            token = f"sim-plugin-token-{self.tokens_issued}-{uuid.uuid4().hex[:8]}"
            self._plugin_tokens.add(token)
            expires_in = self.token_expires_in
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "refresh_token": None,
            "scope": body.get("scope", ""),
        }

    def _update_job(self, job_id: str):
        self._require_plugin_token()
        body = _json_body()
        if body.get("status") not in JOB_STATUSES:
            raise _json_error(422, f"status must be one of {sorted(JOB_STATUSES)}")
        with self._lock:
            self.jobs.setdefault(job_id, []).append(body)
        return _no_content()

    def _register_purpose(self, install_id: str):
        self._require_plugin_token()
        purpose = _json_body().get("purpose")
        if not isinstance(purpose, str) or not purpose:
            raise _json_error(422, "purpose must be a non-empty string")
        with self._lock:
            self.purposes.setdefault(install_id, []).append(purpose)
        return _no_content()

    def _get_config(self, install_id: str):
        self._require_plugin_token()
        with self._lock:
            return {"data": dict(self.install_configs.get(install_id, {}))}

    def _put_config(self, install_id: str):
        """Merge into the install config; a key set to null is removed (as Envoy does)."""
        self._require_plugin_token()
        changes = _json_body()
        with self._lock:
            config = self.install_configs.setdefault(install_id, {})
            for key, value in changes.items():
                if value is None:
                    config.pop(key, None)
                else:
                    config[key] = value
        return _no_content()

    def _list_flows(self):
        self._require_user_token()
        location = bottle.request.query.get("filter[location]")
        with self._lock:
            resources = [
                _flow_resource(flow, loc)
                for loc, flows in self._flows.items()
                if location in (None, loc)
                for flow in flows
            ]
        return _page(resources)

    def _employee_locations(self) -> dict:
        """Employee id -> (employee, its location ids), in first-seen order."""
        found: dict[str, tuple[dict, list[str]]] = {}
        for loc, employees in self._employees.items():
            for employee in employees:
                found.setdefault(str(employee["id"]), (employee, []))[1].append(loc)
        return found

    def _list_employees(self):
        self._require_user_token()
        query = bottle.request.query
        locations = set(filter(None, (query.get("filter[locations]") or "").split(",")))
        search = (query.getunicode("filter[query]") or "").lower()
        with self._lock:
            everyone = list(self._employee_locations().values())
        resources = [
            _employee_resource(employee, locs)
            for employee, locs in everyone
            if (not locations or locations.intersection(locs)) and _matches(employee, search)
        ]
        return _page(resources)

    def _get_employee(self, employee_id: str):
        self._require_user_token()
        with self._lock:
            found = self._employee_locations().get(employee_id)
        if found is None:
            raise _json_error(404, "employee not found")
        return {"data": _employee_resource(*found)}

    # -- sending to the daemon ---------------------------------------------------------------

    def post(
        self,
        daemon_url: str,
        path: str,
        body: dict,
        *,
        secret: str | None = None,
        sign_body: bool = True,
        timeout: float = 30,
    ) -> requests.Response:
        """POST `body` as Envoy does: compact JSON, signed with the client secret.

        A kept-alive connection that the server closed while it was idle (Waitress closes idle
        channels; a time-travelled test makes every one look idle) is retried once on a new
        connection, as Envoy delivers again: the job id makes a repeat harmless."""
        raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if sign_body:
            headers["X-Envoy-Signature"] = sign(secret or self.client_secret, raw)
        url = daemon_url.rstrip("/") + path
        try:
            return self._session.post(url, data=raw, headers=headers, timeout=timeout)
        except requests.ConnectionError:
            self._session.close()
            return self._session.post(url, data=raw, headers=headers, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# Command line


def _instant(text: str) -> datetime:
    """A datetime from ISO 8601 or `YYYY-MM-DD HH:MM:SS` (naive means UTC)."""
    try:
        return _utc(datetime.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {text!r}") from None


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _event_body(args: argparse.Namespace) -> dict:
    common = {
        "full_name": args.name,
        "email": args.email,
        "flow_id": args.flow,
        "employee_id": args.employee_id,
        "install_id": args.install_id,
        "location_id": args.location_id,
        "timezone": args.timezone,
        "config": args.config_json,
        "job_id": args.job_id,
    }
    if args.event == UNINSTALL_EVENT:
        return uninstall_event(install_id=args.install_id, job_id=args.job_id)
    default_id = str(int(time.time()))
    if args.event in INVITE_EVENTS:
        return invite_event(
            args.event,
            invite_id=args.invite_id or default_id,
            entry_id=args.entry_id,
            expected_arrival=args.arrival or datetime.now(UTC),
            **common,
        )
    signing_out = args.event.endswith("sign_out")
    return entry_event(
        args.event,
        entry_id=args.entry_id or default_id,
        invite_id=args.invite_id,
        signed_in_at=args.signed_in_at or datetime.now(UTC),
        signed_out_at=datetime.now(UTC) if signing_out else None,
        employee_screening=args.event.startswith("employee_"),
        approval_status=args.approval_status,
        **common,
    )


def _send_event(args: argparse.Namespace) -> int:
    if args.secret:
        print("warning: --secret is visible to every local user (ps); prefer "
              "ENVOY_CLIENT_SECRET in the environment", file=sys.stderr)  # fmt: skip
    secret = args.secret or os.environ.get("ENVOY_CLIENT_SECRET")
    if not secret:
        print("no secret: pass --secret or set ENVOY_CLIENT_SECRET", file=sys.stderr)
        return 2
    simulator = EnvoySimulator(client_secret=secret)
    try:
        response = simulator.post(args.daemon, args.path, _event_body(args))
    except requests.RequestException as exc:
        print(f"could not reach {args.daemon}: {exc}", file=sys.stderr)
        return 2
    finally:
        simulator.stop()
    print(response.status_code)
    try:
        print(json.dumps(response.json(), indent=2, ensure_ascii=False))
    except ValueError:
        print(response.text)
    return 0 if response.status_code < 400 else 1


def _serve(args: argparse.Namespace) -> int:
    host, _, port = args.listen.rpartition(":")
    secret = args.secret or os.environ.get("ENVOY_CLIENT_SECRET") or CLIENT_SECRET
    simulator = EnvoySimulator(args.client_id, secret).load_demo_data()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    simulator.start(host or "127.0.0.1", int(port))
    print(f"Envoy simulator on {simulator.url} (client id {simulator.client_id})", flush=True)
    try:
        stopping.wait()
    finally:
        simulator.stop()
    return 0


def _add_shared_options(parser: argparse.ArgumentParser, default=None) -> None:
    parser.add_argument("--daemon", default=default, help="daemon base URL")
    parser.add_argument(
        "--secret",
        default=default,
        help="Envoy client secret (default $ENVOY_CLIENT_SECRET, which `ps` does not show)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="envoy-proxy simulate", description=__doc__.split("\n")[0]
    )
    _add_shared_options(parser)
    parser.set_defaults(daemon="http://127.0.0.1:8080")
    commands = parser.add_subparsers(dest="command", required=True)
    # --daemon and --secret may also follow the sub-command; unset there, they keep the above.
    event = commands.add_parser("event", help="sign and send one event to the daemon")
    _add_shared_options(event, default=argparse.SUPPRESS)
    event.add_argument("event", choices=(*ENTRY_EVENTS, *INVITE_EVENTS, UNINSTALL_EVENT))
    event.add_argument("--name", help="visitor's full name (required but for uninstalls)")
    event.add_argument("--email")
    event.add_argument("--flow", help="Envoy flow id (required but for uninstalls)")
    event.add_argument("--entry-id", help="entry id (default: the current epoch second)")
    event.add_argument("--invite-id", help="invite id (default for invites: epoch second)")
    event.add_argument("--employee-id", help="host, or the employee in Protect flows")
    event.add_argument(
        "--arrival", type=_instant, help="invite's expected arrival, ISO 8601 (default now)"
    )
    event.add_argument(
        "--signed-in-at", type=_instant, help="entry's sign-in time, ISO 8601 (default now)"
    )
    event.add_argument(
        "--approval-status", help="entry's approval-status word (approved, pending, denied…)"
    )
    event.add_argument("--install-id", default="install-1")
    event.add_argument("--location-id", default="loc-1")
    event.add_argument("--timezone", default=DEFAULT_TIMEZONE)
    event.add_argument(
        "--config-json", type=_json_object, default={}, help="meta.config as a JSON object"
    )
    event.add_argument("--job-id", help="meta.job.id (default: a new uuid)")
    event.add_argument("--path", default="/envoy/events", help="daemon route to post to")
    event.set_defaults(run=_send_event)

    serve = commands.add_parser(
        "serve",
        help="run the fake Envoy APIs until SIGTERM/SIGINT",
        argument_default=argparse.SUPPRESS,
    )
    _add_shared_options(serve)
    serve.add_argument("--listen", default="127.0.0.1:8090", help="host:port")
    serve.add_argument("--client-id", default=os.environ.get("ENVOY_CLIENT_ID") or CLIENT_ID)
    serve.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    visitor_event = getattr(args, "event", UNINSTALL_EVENT) != UNINSTALL_EVENT
    if visitor_event and not (args.name and args.flow):
        parser.error("--name and --flow are required for visitor events")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
