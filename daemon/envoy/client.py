"""Clients for Envoy's APIs: the plugin API (token, job updates, purpose, install config) and
the user API (flows and employees, with the installer's token).

Both retry 429 and 5xx with exponential backoff and jitter inside a time budget, honour
`Retry-After` (daemon/retry.py), and never let the client secret or a token reach a log line,
an exception or a repr.
"""

import logging
import threading
import time
from urllib.parse import quote

import requests

from daemon import __version__
from daemon.http_session import session_for
from daemon.masking import mask
from daemon.retry import Budget, retry_after_seconds

log = logging.getLogger("envoy_proxy.envoy")

USER_AGENT = f"envoy-proxy/{__version__}"
TOKEN_PATH = "/a/auth/v0/token"  # noqa: S105 (a path, not a password)
PLUGIN_API = "/api/v2/plugin-services"
JOB_STATUSES = frozenset({"done", "ignored", "failed", "ongoing"})
TOKEN_REFRESH_MARGIN = 600.0  # refresh the plugin token when less than 10 minutes remain
DEFAULT_TOKEN_LIFETIME = 3600  # used if Envoy's token answer has no expires_in
# What Envoy's SDK sends on every call but the token's: its APIs speak JSON:API.
JSON_API = "application/vnd.api+json"


class EnvoyError(Exception):
    """Envoy refused a call or could not be reached; `status` is the HTTP status or None."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _quoted(value) -> str:
    return quote(str(value), safe="")


def _asked_wait(response: requests.Response | None) -> float:
    """The seconds a 429 asks us to wait (0 for anything else)."""
    if response is None or response.status_code != 429:
        return 0.0
    return retry_after_seconds(response.headers.get("Retry-After"))


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _error_detail(response: requests.Response) -> str:
    """A short human reason from an Envoy error body (JSON:API errors, OAuth or message)."""
    if response.is_redirect:
        return f"redirected to {response.headers['Location']}; check the Envoy API URL"
    try:
        body = response.json()
    except ValueError:
        return response.reason or ""
    if not isinstance(body, dict):
        return response.reason or ""
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        return str(first.get("detail") or first.get("title") or "")
    for key in ("message", "error_description", "error"):
        if body.get(key):
            return str(body[key])
    return response.reason or ""


class _EnvoyAPI:
    """One requests Session, timeouts on every call, retries inside a budget."""

    def __init__(self, base_url: str, *, timeout, retry_budget: float, session):
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._retry_budget = retry_budget
        self._session = session or session_for(self.base_url)

    def _secrets(self) -> list[str]:
        """Strings that must never appear in an error message."""
        return []

    def _attempt(self, method: str, path: str, headers: dict, kwargs: dict):
        """One HTTP exchange: (response, None), or (None, failure name) if nothing came back."""
        started = time.monotonic()
        try:
            response = self._session.request(
                method, self.base_url + path, headers=headers, timeout=self._timeout, **kwargs
            )
        except requests.RequestException as exc:
            return None, type(exc).__name__
        elapsed_ms = (time.monotonic() - started) * 1000
        log.debug("Envoy %s %s -> %s in %.0f ms", method, path, response.status_code, elapsed_ms)
        return response, None

    def _send(self, method: str, path: str, *, headers=None, **kwargs) -> requests.Response:
        """Send one call; retry 429, 5xx and connection failures while the budget lasts.

        Returns the last response (maybe an error status); raises EnvoyError only when Envoy
        could not be reached at all.
        """
        budget = Budget(self._retry_budget)
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        while True:
            response, failure = self._attempt(method, path, all_headers, kwargs)
            if response is not None and not _retryable(response.status_code):
                return response
            delay = budget.pause(_asked_wait(response))
            if delay is None:
                if response is None:
                    raise EnvoyError(f"Envoy unreachable for {method} {path}: {failure}")
                return response
            outcome = failure or response.status_code
            log.warning(
                "Envoy %s %s -> %s; retry %d in %.2f s", method, path, outcome, budget.retries,
                delay,
            )  # fmt: skip
            time.sleep(delay)

    def _check(self, response: requests.Response, method: str, path: str) -> requests.Response:
        """The response if it is a success; else an EnvoyError with Envoy's reason, masked.

        A redirect is an error too: it is not followed (daemon/http_session.py), so nothing
        was done."""
        if not 200 <= response.status_code < 300:
            detail = mask(_error_detail(response), self._secrets())[:200]
            raise EnvoyError(
                f"Envoy answered {response.status_code} to {method} {path}: {detail}",
                status=response.status_code,
            )
        return response


class EnvoyPluginClient(_EnvoyAPI):
    """Envoy's plugin API with a cached plugin token (client-credentials grant)."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout=(3.05, 10.0),
        retry_budget: float = 10.0,
        session: requests.Session | None = None,
    ):
        super().__init__(base_url, timeout=timeout, retry_budget=retry_budget, session=session)
        self.client_id = str(client_id)
        self._client_secret = client_secret
        self._token_lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def __repr__(self) -> str:
        return f"EnvoyPluginClient({self.base_url!r}, client_id={self.client_id!r})"

    def _secrets(self) -> list[str]:
        return [self._client_secret, self._token or ""]

    def token(self) -> str:
        """The plugin token, fetched once and refreshed when less than 10 minutes remain."""
        with self._token_lock:
            if self._token is None or time.time() >= self._refresh_at:
                self._token, lifetime = self._fetch_token()
                # A short-lived token is refreshed at half-life, so never once per request.
                self._refresh_at = time.time() + lifetime - min(TOKEN_REFRESH_MARGIN, lifetime / 2)
            return self._token

    def _fetch_token(self) -> tuple[str, float]:
        body = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "scope": "plugin,token.refresh",
        }
        response = self._send(
            "POST", TOKEN_PATH, auth=(self.client_id, self._client_secret), json=body
        )
        self._check(response, "POST", TOKEN_PATH)
        try:
            answer = response.json()
            token = str(answer["access_token"])
            lifetime = float(answer.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, KeyError, TypeError):
            raise EnvoyError("Envoy's token answer has no usable access_token") from None
        log.info(
            "Envoy plugin token obtained for client %s (expires in %.0f s)",
            self.client_id,
            lifetime,
        )
        return token, lifetime

    def _drop_token(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        """A plugin API call; a 401 drops the cached token and retries once with a new one."""
        token = self.token()
        response = self._send(method, path, headers=_bearer(token), **kwargs)
        if response.status_code == 401:
            log.info("Envoy rejected the plugin token on %s %s; fetching a new one", method, path)
            self._drop_token(token)
            response = self._send(method, path, headers=_bearer(self.token()), **kwargs)
        return self._check(response, method, path)

    def update_job(
        self,
        job_id,
        status: str,
        *,
        message: str | None = None,
        failure_reason: str | None = None,
        attachments: list | None = None,
    ) -> None:
        """Set a job's outcome in Envoy's dashboard (done, ignored, failed or ongoing)."""
        if status not in JOB_STATUSES:
            raise ValueError(f"job status must be one of {sorted(JOB_STATUSES)}, not {status!r}")
        fields = {
            "status": status,
            "status_message": message,
            "failure_reason": failure_reason,
            "attachments": attachments,
        }
        body = {key: value for key, value in fields.items() if value is not None}
        self._call("PATCH", f"{PLUGIN_API}/jobs/{_quoted(job_id)}", json=body)

    def register_purpose(self, install_id, purpose: str = "identity-verification") -> None:
        self._call(
            "PUT", f"{PLUGIN_API}/installs/{_quoted(install_id)}/purpose", json={"purpose": purpose}
        )

    def get_install_config(self, install_id) -> dict:
        response = self._call("GET", f"{PLUGIN_API}/installs/{_quoted(install_id)}/config")
        body = response.json()
        return body.get("data", body) if isinstance(body, dict) else {}

    def put_install_config(self, install_id, config: dict) -> None:
        """Merge `config` into the install's config (a key set to None is removed)."""
        self._call("PUT", f"{PLUGIN_API}/installs/{_quoted(install_id)}/config", json=config)


def _bearer(token: str) -> dict:
    """A token-bearing call's headers: JSON:API, as Envoy's SDK sends them (a body's type
    too; requests would label it application/json)."""
    return {"Authorization": f"Bearer {token}", "Accept": JSON_API, "Content-Type": JSON_API}


def _flow(resource: dict) -> dict:
    attributes = resource.get("attributes") or {}
    employee = bool(
        attributes.get("employee-centric")
        or attributes.get("employee-screening-flow")
        or "employee" in str(attributes.get("type") or "").lower()
    )
    return {
        "id": str(resource["id"]),
        "name": str(attributes.get("name") or ""),
        "employee": employee,
    }


def _employee(resource: dict) -> dict:
    attributes = resource.get("attributes") or {}
    return {
        "id": str(resource["id"]),
        "name": str(attributes.get("name") or ""),
        "email": attributes.get("email"),
    }


def _resources(body) -> list[dict]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return []
    return [item for item in data if isinstance(item, dict) and item.get("id") is not None]


class EnvoyUserClient(_EnvoyAPI):
    """Envoy's user API (JSON:API) with the installer's or dashboard user's token."""

    def __init__(
        self,
        base_url: str,
        access_token: str,
        *,
        timeout=(3.05, 10.0),
        retry_budget: float = 5.0,
        session: requests.Session | None = None,
    ):
        super().__init__(base_url, timeout=timeout, retry_budget=retry_budget, session=session)
        self._access_token = access_token

    @classmethod
    def from_meta(cls, base_url: str, meta: dict, **kwargs) -> "EnvoyUserClient | None":
        """A client with `meta.auth.access_token`, else `meta.forwarded_bearer_token`; or None."""
        auth = meta.get("auth")
        token = auth.get("access_token") if isinstance(auth, dict) else None
        if not (isinstance(token, str) and token):
            token = meta.get("forwarded_bearer_token")
        return cls(base_url, token, **kwargs) if isinstance(token, str) and token else None

    def __repr__(self) -> str:
        return f"EnvoyUserClient({self.base_url!r})"

    def _secrets(self) -> list[str]:
        return [self._access_token]

    def _get(self, path: str, params: dict | None = None) -> requests.Response:
        response = self._send("GET", path, headers=_bearer(self._access_token), params=params)
        return self._check(response, "GET", path)

    def list_flows(self, location_id, *, limit: int = 100, offset: int = 0) -> list[dict]:
        """One page of the location's flows as `{"id", "name", "employee"}`."""
        params = {
            "filter[location]": str(location_id),
            "page[limit]": limit,
            "page[offset]": offset,
        }
        return [_flow(item) for item in _resources(self._get("/api/v3/flows", params).json())]

    def list_employees(
        self, location_id, *, query: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict]:
        """One page of the location's employees as `{"id", "name", "email"}`."""
        params = {
            "filter[locations]": str(location_id),
            "page[limit]": limit,
            "page[offset]": offset,
        }
        if query:
            params["filter[query]"] = query
        body = self._get("/api/v3/employees", params).json()
        return [_employee(item) for item in _resources(body)]

    def get_employee(self, employee_id) -> dict | None:
        """The employee as `{"id", "name", "email"}`, or None when Envoy does not know them."""
        path = f"/api/v3/employees/{_quoted(employee_id)}"
        response = self._send("GET", path, headers=_bearer(self._access_token))
        if response.status_code == 404:
            return None
        data = self._check(response, "GET", path).json().get("data")
        return _employee(data) if isinstance(data, dict) and data.get("id") is not None else None
