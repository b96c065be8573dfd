"""The one module through which the daemon talks to Proxy (see PROXY_API.md).

It owns the transport rules: timeouts on every call, retries only where repeating is safe,
typed errors carrying Proxy's own description, and an App Key Secret that never leaves the
Authorization header (not in URLs, logs, errors or reprs).
"""

import json
import logging
import math
import time
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import requests
from requests.auth import HTTPBasicAuth
from urllib3.exceptions import MaxRetryError, NewConnectionError

from daemon import __version__
from daemon.http_session import session_for
from daemon.masking import mask
from daemon.proxy.clock import ProxyClock
from daemon.retry import Budget, retry_after_seconds

logger = logging.getLogger("envoy_proxy.proxy")

MAX_LIMIT = 100
CREATED_BY_ENVOY = "Created by Envoy"
NAME_SUFFIX = f" ({CREATED_BY_ENVOY})"
STATUSES = ("active", "suspended")
FUTURE_DATE_RETRY_LEAD = 2.0  # seconds more, once, when Proxy found our date not future
FUTURE_DATE_ERROR = "has to be a future date"
MAX_PHOTO_URL = 256  # Proxy accepts photo URLs shorter than this
DEFAULT_RETRY_AFTER = 1.0  # a 429 without a usable Retry-After

IMPORT_PATH = "/manage/persons/import"

# Retry policies: what may be repeated after a failure Proxy may already have processed
# (read timeout, dropped connection, 5xx). Unsent requests and 429s are always repeatable.
IDEMPOTENT = "idempotent"  # GET, and writes whose repetition has the same effect
UNSAFE = "unsafe"  # a repeat could act twice: only a 503 (refused, not processed) is repeated
CHECKED = "checked"  # import: the caller checks by email before any repeat


class ProxyError(Exception):
    """A Proxy call failed; str() says what happened in words a person can read."""

    def __init__(self, description, *, status=None, code=None, call=None):
        self.description = description
        self.status = status
        self.code = code
        super().__init__(_message(call, status, code, description))


class ProxyAuthError(ProxyError):
    """Proxy rejected the App Key or its secret (401)."""


class ProxyNotFound(ProxyError):
    """Proxy answered 404."""


class ProxyUnavailable(ProxyError):
    """Proxy could not be reached or kept failing (timeouts, dropped connections, 5xx)."""


class ProxyRateLimited(ProxyUnavailable):
    """Proxy asked us to wait (429) longer than the remaining retry budget; `retry_after`:
    the seconds it asked for (bounded)."""

    def __init__(self, description, *, retry_after, **kwargs):
        self.retry_after = retry_after
        super().__init__(description, **kwargs)


def _message(call, status, code, description):
    where = f"Proxy {call}" if call else "Proxy"
    if status is None:
        return f"{where}: {description}"
    answer = f"HTTP {status} {code}" if code else f"HTTP {status}"
    return f"{where} answered {answer}: {description}"


class ProxyClient:
    """A Proxy API client for one App Key, org and site, with its own keep-alive session."""

    def __init__(
        self,
        base_url,
        app_key,
        app_secret,
        *,
        org_id=None,
        site_id=None,
        connect_timeout=3.05,
        read_timeout=10.0,
        retry_budget=10.0,
        session=None,
        observe=None,
        missing_endpoints: set | None = None,
        clock: ProxyClock | None = None,
    ):
        """`missing_endpoints`: the assumed endpoints this org's tenant lacks, learnt once and
        shared by every client of the org (ProxyAccess keeps one set per org); `clock`: the
        org's clock as its answers tell it, shared the same way."""
        parts = urlsplit(base_url)
        if parts.username or parts.password:
            raise ValueError("the Proxy base URL must not carry credentials")
        self.base_url = base_url.rstrip("/")
        self.app_key = app_key
        self.org_id = org_id
        self.site_id = site_id
        self._auth = HTTPBasicAuth(app_key, app_secret)
        self._timeout = (connect_timeout, read_timeout)
        self._retry_budget = retry_budget
        self._session = session or session_for(self.base_url)
        self._headers = {"User-Agent": f"envoy-proxy/{__version__}", "Accept": "application/json"}
        self._observe = observe
        self._missing_endpoints = set() if missing_endpoints is None else missing_endpoints
        self.clock = clock or ProxyClock()

    def __repr__(self):
        return f"ProxyClient(base_url={self.base_url!r}, app_key={self.app_key!r})"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        """Close the keep-alive connections."""
        self._session.close()

    # -- organisations, sites, groups ------------------------------------------------------

    def list_orgs(self) -> list[dict]:
        """The organisations these credentials see, as [{"id", "name"}]; 401 if they are bad."""
        data = self._request("GET", "/v1/orgs")
        orgs = (item.get("organization") or {} for item in data.get("items", []))
        return [{"id": org.get("id"), "name": org.get("name")} for org in orgs]

    def list_sites(self, search=None, page=1, limit=MAX_LIMIT) -> list[dict]:
        """One page of the org's sites, as [{"id", "name"}], optionally filtered by name."""
        params = {
            "orgId": self._org(),
            **_page(page, limit),
            "sortBy": "name",
            "sortOrder": "asc",
            **_filter(name=search),
        }
        data = self._request("GET", "/manage/sites", params=params)
        return [{"id": site.get("id"), "name": site.get("name")} for site in data.get("items", [])]

    def find_site(self, site_id) -> dict | None:
        """The org's site with this id, or None."""
        for sites in self._pages(self.list_sites):
            for site in sites:
                if site["id"] == site_id:
                    return site
        return None

    def list_groups(self, search=None, page=1, limit=MAX_LIMIT, include_global=False) -> list[dict]:
        """One page of the site's person groups; global groups only if asked for."""
        params = {**self._scope(), "type": "persons", **_page(page, limit), **_filter(name=search)}
        data = self._request("GET", "/manage/groups", params=params)
        groups = [_group(item) for item in data.get("items", [])]
        return [group for group in groups if include_global or not group["isGlobal"]]

    def get_group(self, group_id) -> dict:
        """The group {"id", "name", "tag", "isGlobal"}; ProxyNotFound if it does not exist."""
        params = {**self._scope(), "type": "persons"}
        data = self._request("GET", "/manage/groups/{id}", id=group_id, params=params)
        return _group(data)

    # -- persons ---------------------------------------------------------------------------

    def find_person_by_email(self, email) -> dict | None:
        """The first person whose email matches (case-insensitively), or None."""
        return next(iter(self.find_persons_by_email(email)), None)

    def find_persons_by_email(self, email) -> list[dict]:
        """Every person whose email matches (case-insensitively): twins included.

        The server's filter only narrows the search: each returned item is checked here.
        """
        wanted = email.strip().casefold()
        return [
            person
            for persons in self._pages(self._person_page, email=email.strip())
            for person in persons
            if (person.get("email") or "").strip().casefold() == wanted
        ]

    def get_person(self, person_id) -> dict | None:
        """The person with this id, or None if Proxy does not know it."""
        try:
            return self._request("GET", "/manage/persons/{id}", id=person_id, params=self._scope())
        except ProxyNotFound:
            return None

    def import_person(
        self,
        *,
        name,
        email,
        tags,
        photo=None,
        phone=None,
        envoy_id=None,
        created_by_envoy=False,
        send_invite=False,
        known_absent=False,
        on_ambiguous=None,
    ) -> dict:
        """Create a person in Proxy, or return the existing one with this email.

        Proxy has no idempotency keys, so the POST is never repeated blindly: after an
        ambiguous failure the person is looked up by email first, and only re-posted if absent.
        `known_absent`: the caller has just looked this email up and found no one, so the
        lookup before the first POST is skipped (one call fewer per new person); the lookup
        after an ambiguous failure still runs. `on_ambiguous`: called when a POST's fate was
        unknown: Proxy may still carry it out later and leave a twin.
        """
        if not known_absent:
            existing = self.find_person_by_email(email)
            if existing is not None:
                logger.info(
                    "Proxy person %s already exists for this email; not importing",
                    existing.get("id"),
                )
                return existing
        body = _import_body(
            name, email, tags, photo, phone, envoy_id, created_by_envoy, send_invite
        )
        budget = Budget(self._retry_budget)
        while True:
            started = time.monotonic()
            try:
                return self._post_import(body, budget)
            except ProxyRateLimited:
                raise  # Proxy did not process it, and the budget is spent
            except ProxyUnavailable as failure:
                if on_ambiguous is not None:
                    on_ambiguous()
                # The person may exist now. Pausing first gives an in-flight POST time to land
                # before the lookup; without budget left, the caller's next try looks it up.
                self._pause_or_raise(failure, "POST", IMPORT_PATH, started, budget)
                existing = self.find_person_by_email(email)
                if existing is not None:
                    logger.info(
                        "Proxy POST %s: person %s was created despite: %s",
                        IMPORT_PATH,
                        existing.get("id"),
                        failure.description,
                    )
                    return existing

    def add_to_group(self, group_id, person_id) -> None:
        """Put the person in the group (repeating it is harmless)."""
        path = "/manage/groups/{id}/persons/{person_id}"
        self._request("POST", path, id=group_id, person_id=person_id, params=self._scope())

    def remove_from_group(self, group_id, person_id, email=None) -> None:
        """Take the person out of the group; skipped (logged once per org) if Proxy lacks the
        endpoint.

        A 404 means the endpoint is missing only when the group and the person both exist.
        The person is looked for by `email` when given: the documented list call, since a
        tenant without this assumed endpoint may lack the assumed `GET /manage/persons/{id}`
        too (every ending then repeated the DELETE and logged the person as gone).
        """
        path = "/manage/groups/{id}/persons/{person_id}"
        if path in self._missing_endpoints:
            return
        try:
            self._request("DELETE", path, id=group_id, person_id=person_id, params=self._scope())
        except ProxyNotFound as error:
            self.get_group(group_id)  # raises ProxyNotFound for an unknown group
            if not self._person_exists(person_id, email):
                raise error from None
            if path not in self._missing_endpoints:
                self._missing_endpoints.add(path)
                logger.warning(
                    "Proxy org %s has no DELETE %s endpoint; skipping removals from groups",
                    self.org_id,
                    path,
                )

    def _person_exists(self, person_id, email) -> bool:
        if email:  # every person with the email: twins share it
            return any(p.get("id") == person_id for p in self.find_persons_by_email(email))
        return self.get_person(person_id) is not None

    def resend_invite(self, person_id) -> None:
        """Ask Proxy to email the person the app invitation again (never sent twice by us)."""
        path = "/manage/persons/{id}/resend"
        self._request("POST", path, id=person_id, params=self._scope(), policy=UNSAFE)

    def delete_person(self, person_id, email) -> str:
        """Remove the person from Proxy: "deleted", "gone" (Proxy no longer has it) or
        "missing" (the tenant lacks this assumed endpoint: learnt once per org).

        As for group removals, a 404 means the endpoint is missing only when the person,
        looked up by `email` (the documented call), still exists; a 405 always does.
        """
        return self._remove_or_learn("DELETE", person_id, email)

    def anonymise_person(self, person_id, email, *, name, placeholder_email, details) -> str:
        """Overwrite the person's name, email, photo and details where Proxy cannot delete:
        "anonymised", "gone" or "missing" (as for `delete_person`)."""
        body = {"name": name, "email": placeholder_email, "photo": None, "details": details}
        return self._remove_or_learn("PATCH", person_id, email, body)

    def _remove_or_learn(self, method, person_id, email, body=None) -> str:
        path = "/manage/persons/{id}"
        endpoint = f"{method} {path}"
        if endpoint in self._missing_endpoints:
            return "missing"
        try:
            self._request(
                method, path, id=person_id, params=self._scope(), json_body=body,
                policy=IDEMPOTENT,
            )  # fmt: skip
            return "deleted" if method == "DELETE" else "anonymised"
        except ProxyError as error:
            if error.status not in (404, 405):
                raise
            if error.status == 404 and not self._person_exists(person_id, email):
                return "gone"
        if endpoint not in self._missing_endpoints:
            self._missing_endpoints.add(endpoint)
            logger.warning("Proxy org %s has no %s endpoint", self.org_id, endpoint)
        return "missing"

    def schedule_status(self, person_id, status, at=None) -> dict:
        """Schedule "active" or "suspended" at `at` (UTC epoch on our clock; None = now).

        Sent on Proxy's clock (`ProxyClock`, from its answers' `Date`), never sooner than
        its "future date" rule allows: 1-2.5 s ahead once the clock is known (5 s before).
        If Proxy still finds the date past, the clock is learnt again from that very answer
        and the status sent once more at once.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        try:
            return self._post_status(person_id, status, self.clock.earliest(at))
        except ProxyError as error:
            if not _says_date_not_future(error):
                raise
            logger.info("Proxy found the date not in the future; its clock is read again")
            self.clock.keep_latest()  # the refusal's own Date says where Proxy's clock is
            when = self.clock.earliest(at) + FUTURE_DATE_RETRY_LEAD
            return self._post_status(person_id, status, when)

    # -- helpers for the operations --------------------------------------------------------

    def _post_status(self, person_id, status, when):
        """One scheduled status; a suspension never before an `active` we scheduled."""
        if status == "suspended":
            when = self.clock.after_actives(person_id, when)
        body = {"status": status, "scheduledDate": _iso(when)}
        path = "/mobile-access/persons/{id}/scheduled-statuses"
        answer = self._request("POST", path, id=person_id, params=self._scope(), json_body=body)
        if status == "active":
            self.clock.note_active(person_id, math.ceil(when))
        return answer

    def _post_import(self, body, budget) -> dict:
        """One person's import POST (repeated only where it surely was not processed)."""
        data = self._request(
            "POST", IMPORT_PATH, params=self._scope(), json_body=body, policy=CHECKED,
            budget=budget,
        )  # fmt: skip
        return _imported(data, body["items"][0]["email"])

    def _person_page(self, email, page, limit):
        params = {**self._scope(), **_page(page, limit), **_filter(email=email)}
        return self._request("GET", "/manage/persons", params=params).get("items", [])

    @staticmethod
    def _pages(fetch, **kwargs):
        """Yield the pages of a list call until the first page shorter than the limit."""
        page = 1
        while True:
            items = fetch(page=page, limit=MAX_LIMIT, **kwargs)
            yield items
            if len(items) < MAX_LIMIT:
                return
            page += 1

    def _org(self):
        if not self.org_id:
            raise ValueError("this Proxy call needs an org_id")
        return self.org_id

    def _scope(self):
        if not self.site_id:
            raise ValueError("this Proxy call needs a site_id")
        return {"orgId": self._org(), "siteId": self.site_id}

    # -- transport -------------------------------------------------------------------------

    def _request(
        self,
        method,
        template,
        *,
        params=None,
        json_body=None,
        policy=IDEMPOTENT,
        budget=None,
        **ids,
    ):
        """Send one logical call, repeating what the policy allows within the budget."""
        path = template.format(**{key: quote(str(value), safe="") for key, value in ids.items()})
        budget = budget or Budget(self._retry_budget)
        while True:
            started = time.monotonic()
            try:
                return self._attempt(method, template, path, params, json_body, policy)
            except _Repeatable as repeatable:
                self._pause_or_raise(repeatable.error, method, template, started, budget)

    def _attempt(self, method, template, path, params, json_body, policy):
        """One HTTP exchange: the decoded answer; raises _Repeatable or a final ProxyError."""
        call = f"{method} {template}"
        started, sent_at = time.monotonic(), time.time()
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                params=params,
                json=json_body,
                headers=self._headers,
                auth=self._auth,
                timeout=self._timeout,
            )
        except requests.RequestException as exc:
            self._record(method, template, None, started)
            if isinstance(exc, ValueError):  # a malformed URL: configuration, not transient
                raise ProxyError("the Proxy URL is not usable", call=call) from None
            failure = ProxyUnavailable(_describe(exc), call=call)
            if _never_sent(exc) or _may_repeat(policy, None):
                raise _Repeatable(failure) from exc
            raise failure from exc
        self._record(method, template, response.status_code, started)
        self.clock.observe(response.headers.get("Date"), sent_at, time.time())
        if 200 <= response.status_code < 300:
            return self._decode(response, call)
        error = self._error(response, call)
        status = response.status_code
        if status == 429 or (status >= 500 and _may_repeat(policy, status)):
            raise _Repeatable(error)
        raise error

    def _pause_or_raise(self, failure, method, template, started, budget):
        """Sleep the backoff (at least a 429's Retry-After) if it fits in the budget, else
        raise the failure."""
        asked = failure.retry_after if isinstance(failure, ProxyRateLimited) else 0.0
        delay = budget.pause(asked)
        if delay is None:
            self._log_give_up(failure, method, template, started)
            raise failure
        logger.warning(
            "Proxy %s %s: %s after %.2fs; retrying in %.2fs",
            method,
            template,
            _reason(failure),
            time.monotonic() - started,
            delay,
        )
        time.sleep(delay)

    @staticmethod
    def _log_give_up(failure, method, template, started):
        logger.error(
            "Proxy %s %s: %s after %.2fs; giving up",
            method,
            template,
            _reason(failure),
            time.monotonic() - started,
        )

    def _record(self, method, template, status, started):
        seconds = time.monotonic() - started
        logger.debug("Proxy %s %s: %s in %.3fs", method, template, status or "no answer", seconds)
        if self._observe is None:
            return
        try:
            self._observe(method, template, status, seconds)
        except Exception:
            logger.exception("the Proxy metrics hook failed")

    def _decode(self, response, call):
        """A 2xx answer's body. One that cannot be read is ambiguous, not a refusal: Proxy may
        have done what was asked, so the caller looks again and retries (issue 16, item 8)."""
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise ProxyUnavailable(
                "the answer is not JSON", status=response.status_code, call=call
            ) from None

    def _error(self, response, call):
        """The typed error for a non-2xx answer, carrying Proxy's description."""
        status = response.status_code
        code, description = _error_details(response)
        kwargs = {"status": status, "code": code, "call": call}
        # Proxy's text may echo the secret back.
        description = mask(description, [self._auth.password])
        if status == 429:
            retry_after = retry_after_seconds(
                response.headers.get("Retry-After"), default=DEFAULT_RETRY_AFTER
            )
            return ProxyRateLimited(description, retry_after=retry_after, **kwargs)
        if status >= 500:
            return ProxyUnavailable(description, **kwargs)
        error_type = {401: ProxyAuthError, 404: ProxyNotFound}.get(status, ProxyError)
        return error_type(description, **kwargs)


class _Repeatable(Exception):
    """An attempt failed in a way the call's policy allows repeating."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def _may_repeat(policy, status):
    """Whether a failure Proxy may have processed (status None: no answer) may be repeated."""
    return policy == IDEMPOTENT or (policy == UNSAFE and status == 503)


def _never_sent(exc):
    """Whether the request surely never reached Proxy (so repeating it is always safe)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    return (
        isinstance(exc, requests.exceptions.ConnectionError)
        and isinstance(reason, MaxRetryError)
        and isinstance(reason.reason, NewConnectionError)
    )


def _describe(exc):
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "could not connect in time (ConnectTimeout)"
    if isinstance(exc, requests.exceptions.Timeout):
        return "no answer in time (ReadTimeout)"
    if _never_sent(exc):
        return "could not connect (connection refused or unreachable)"
    return f"connection dropped or failed ({type(exc).__name__})"


def _says_date_not_future(error):
    return (
        error.status is not None
        and 400 <= error.status < 500
        and FUTURE_DATE_ERROR in error.description
    )


def _reason(failure):
    return f"HTTP {failure.status}" if failure.status else failure.description


def _error_details(response):
    """(code, description) from Proxy's error shapes; code None when the body has neither."""
    if response.is_redirect:  # not followed (daemon/http_session.py): the URL is wrong
        return None, f"redirected to {response.headers['Location']}; check the Proxy API URL"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        if isinstance(body.get("error"), str):  # the OAuth-style 401 shape
            return body["error"], str(body.get("error_description") or body["error"])
        data = body.get("data")
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict):
            return error.get("code"), str(error.get("description") or error.get("code") or "")
    return None, response.reason or f"HTTP {response.status_code}"


def _page(page, limit):
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    if page < 1:
        raise ValueError("page numbers start at 1")
    return {"page": page, "limit": limit}


def _filter(**fields):
    present = {key: value for key, value in fields.items() if value}
    return {"filter": json.dumps(present, separators=(",", ":"))} if present else {}


def _group(item):
    return {
        "id": item.get("id"),
        "name": item.get("name"),
        "tag": item.get("tag"),
        "isGlobal": bool(item.get("isGlobal")),
    }


def _iso(epoch):
    """An instant as ISO-8601 UTC with Z, rounded up to the next whole second."""
    return datetime.fromtimestamp(math.ceil(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _import_body(name, email, tags, photo, phone, envoy_id, created_by_envoy, send_invite):
    if created_by_envoy and not name.endswith(NAME_SUFFIX):
        name += NAME_SUFFIX
    details = {
        "phoneNumber": phone,
        "createdBy": CREATED_BY_ENVOY if created_by_envoy else None,
        "envoyId": envoy_id,
    }
    details = {key: value for key, value in details.items() if value}
    item = {"name": name, "email": email, "tags": list(tags)}
    if photo and len(photo) < MAX_PHOTO_URL:
        item["photo"] = photo
    if details:
        item["details"] = details
    return {"sendInvite": bool(send_invite), "items": [item], "tags": list(tags)}


def _imported(data, email) -> dict:
    """The one person the import answer lists, checked against the email sent (where the answer
    gives one): it becomes a grant's person."""
    persons = data.get("items") if isinstance(data, dict) else None
    persons = persons if isinstance(persons, list) else []
    if len(persons) != 1 or not isinstance(persons[0], dict) or not persons[0].get("id"):
        # Ambiguous: the person may exist now. The import looks the email up and retries.
        raise ProxyUnavailable(
            f"the import answer names {len(persons)} persons for 1 sent",
            call=f"POST {IMPORT_PATH}",
        )
    [person] = persons
    if (person.get("email") or email).casefold() != email.casefold():
        raise ProxyError(
            "the import answer lists another person than was sent", call=f"POST {IMPORT_PATH}"
        )
    return person
