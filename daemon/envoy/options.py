"""The dropdowns of the setup steps (ENVOY_PROTOCOL.md §5): `/envoy/options/<name>` answers
one page of `[{"label", "value"}]`, `/envoy/selected/<name>` the options of values saved before.

Which dropdowns exist, and which are searchable or paginated, comes from the manifest's
`DROPDOWNS`; this module only says where each one's options come from. An upstream failure is
a 400 with a message the admin can act on, never a 500.
"""

from collections.abc import Callable
from dataclasses import dataclass

import requests

from daemon.envoy.client import EnvoyError, EnvoyUserClient
from daemon.envoy.manifest import DROPDOWNS, PAGE_SIZE
from daemon.envoy.setup_steps import org_client, proxy_failure
from daemon.proxy.client import MAX_LIMIT, ProxyClient, ProxyError, ProxyNotFound
from daemon.rules.request import Answer, BadRequest, EnvoyRequest
from daemon.rules.settings import as_id_list, as_int

MAX_PAGES = 50  # upstream pages read for one answer: 5,000 groups or flows
MAX_SELECTED = 100  # values looked up for one selected-values call

DURATIONS = (30, 60, 120, 240, 480, 720, 1440)
EARLY_ACCESS = (0, 15, 30, 60, 120)
PROTECT_DURATIONS = (30, 60, 120, 240, 480, 720)


@dataclass(frozen=True)
class Query:
    search: str | None = None
    page: int = 1


def option(label, value) -> dict:
    return {"label": str(label), "value": str(value)}


def minutes_label(minutes: int) -> str:
    """30 → "30 minutes", 60 → "1 hour", 90 → "1 h 30 min", 0 → "None"."""
    if minutes == 0:
        return "None"
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} minutes"
    if not rest:
        return f"{hours} hour" + ("s" if hours > 1 else "")
    return f"{hours} h {rest} min"


def _static(values: tuple[int, ...]) -> Callable:
    def options(ctx, request, query):
        return [option(minutes_label(minutes), minutes) for minutes in values]

    return options


# -- Proxy: sites and groups -------------------------------------------------------------------


def _proxy(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except ProxyError as error:
        raise proxy_failure(error) from None


def _sites(ctx, request: EnvoyRequest, query: Query) -> list[dict]:
    client = org_client(ctx, request)
    sites = _proxy(client.list_sites, search=query.search, page=query.page, limit=PAGE_SIZE)
    return [option(site["name"] or site["id"], site["id"]) for site in sites]


def _selected_sites(ctx, request: EnvoyRequest, values: list[str]) -> list[dict]:
    client = org_client(ctx, request)
    found = (_proxy(client.find_site, value) for value in values)
    return [option(site["name"] or site["id"], site["id"]) for site in found if site]


def _site_client(ctx, request: EnvoyRequest) -> ProxyClient:
    client = org_client(ctx, request)
    if not client.site_id:
        raise BadRequest("no Proxy site is selected: complete the Site step first")
    return client


def _site_groups(client: ProxyClient, search: str | None) -> list[dict]:
    """The site's own groups (global ones left out), read whole so that pages stay even."""
    groups = []
    for page in range(1, MAX_PAGES + 1):
        batch = _proxy(client.list_groups, search, page, MAX_LIMIT, include_global=True)
        groups += [group for group in batch if not group["isGlobal"]]
        if len(batch) < MAX_LIMIT:
            break
    return groups


def _groups(ctx, request: EnvoyRequest, query: Query) -> list[dict]:
    groups = _site_groups(_site_client(ctx, request), query.search)
    start = (query.page - 1) * PAGE_SIZE
    return [option(group["name"], group["id"]) for group in groups[start : start + PAGE_SIZE]]


def _selected_groups(ctx, request: EnvoyRequest, values: list[str]) -> list[dict]:
    client = _site_client(ctx, request)
    options = []
    for value in values:
        try:
            group = client.get_group(value)
        except ProxyNotFound:
            continue
        except ProxyError as error:
            raise proxy_failure(error) from None
        if not group["isGlobal"]:
            options.append(option(group["name"], group["id"]))
    return options


# -- Envoy's user API: flows and employees ---------------------------------------------------


def _user_call(ctx, request: EnvoyRequest, work: Callable) -> list[dict]:
    """Run `work(client, location_id)` with the installer's (or dashboard user's) token."""
    location_id = request.location_id
    if location_id is None:
        raise BadRequest("this install has no location: flows and employees belong to one")
    with requests.Session() as session:
        client = EnvoyUserClient.from_meta(ctx.config.envoy_base_url, request.meta, session=session)
        if client is None:
            raise BadRequest("Envoy did not send a user token; reopen the setup")
        try:
            return work(client, location_id)
        except EnvoyError as error:
            if error.status in (401, 403):
                raise BadRequest(
                    "Envoy refused the user token (it may have expired); reopen the setup"
                ) from None
            raise BadRequest(f"Envoy's user API failed: {error}") from None


def _flows(ctx, request: EnvoyRequest, query: Query) -> list[dict]:
    def visitor_flows(client: EnvoyUserClient, location_id: str) -> list[dict]:
        flows = []
        for page in range(MAX_PAGES):
            batch = client.list_flows(location_id, limit=MAX_LIMIT, offset=page * MAX_LIMIT)
            flows += [flow for flow in batch if not flow["employee"]]
            if len(batch) < MAX_LIMIT:
                break
        return [option(flow["name"] or flow["id"], flow["id"]) for flow in flows]

    return _user_call(ctx, request, visitor_flows)


def _employee_option(employee: dict) -> dict:
    name = employee["name"] or employee["id"]
    label = f"{name} ({employee['email']})" if employee.get("email") else name
    return option(label, employee["id"])


def _employees(ctx, request: EnvoyRequest, query: Query) -> list[dict]:
    def page(client: EnvoyUserClient, location_id: str) -> list[dict]:
        employees = client.list_employees(
            location_id,
            query=query.search,
            limit=PAGE_SIZE,
            offset=(query.page - 1) * PAGE_SIZE,
        )
        return [_employee_option(employee) for employee in employees]

    return _user_call(ctx, request, page)


def _selected_employees(ctx, request: EnvoyRequest, values: list[str]) -> list[dict]:
    def lookup(client: EnvoyUserClient, location_id: str) -> list[dict]:
        found = (client.get_employee(value) for value in values)
        return [_employee_option(employee) for employee in found if employee]

    return _user_call(ctx, request, lookup)


# -- the table and the two routes ------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    options: Callable[..., list[dict]]
    selected: Callable[..., list[dict]] | None = None


SOURCES: dict[str, Source] = {
    "sites": Source(_sites, _selected_sites),
    "groups": Source(_groups, _selected_groups),
    "flows": Source(_flows),
    "employees": Source(_employees, _selected_employees),
    "durations": Source(_static(DURATIONS)),
    "early-access": Source(_static(EARLY_ACCESS)),
    "protect-durations": Source(_static(PROTECT_DURATIONS)),
}


def _query(params: dict, searchable: bool, paginated: bool) -> Query:
    search = params.get("search")
    search = str(search).strip() if searchable and isinstance(search, str | int) else ""
    page = 1
    if paginated and params.get("page") not in (None, ""):
        page = as_int(params.get("page"), 0)
        if page < 1:
            raise BadRequest("`params.page` must be a page number from 1")
    return Query(search=search or None, page=page)


def handle_options(ctx, request: EnvoyRequest, name: str) -> Answer:
    """`/envoy/options/<name>`: one page of options (a static list is all on page 1)."""
    dropdown, source = DROPDOWNS.get(name), SOURCES.get(name)
    if dropdown is None or source is None:
        return Answer.message(404, f"unknown dropdown {name!r}")
    if not dropdown.paginated and as_int(request.params.get("page"), 1) > 1:
        return Answer(200, [])  # a client that pages anyway gets an end, not a repeat
    query = _query(request.params, dropdown.searchable, dropdown.paginated)
    return Answer(200, source.options(ctx, request, query))


def handle_selected(ctx, request: EnvoyRequest, name: str) -> Answer:
    """`/envoy/selected/<name>`: the options of `params.value` (a string or a list)."""
    dropdown, source = DROPDOWNS.get(name), SOURCES.get(name)
    if dropdown is None or source is None or source.selected is None or not dropdown.paginated:
        return Answer.message(404, f"dropdown {name!r} has no selected-values route")
    values = as_id_list(request.params.get("value"))[:MAX_SELECTED]
    if not values:
        return Answer(200, [])
    return Answer(200, source.selected(ctx, request, values))
