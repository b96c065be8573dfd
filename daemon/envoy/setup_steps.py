"""The validation routes of the five setup steps (ENVOY_PROTOCOL.md §5, §8).

Each step reads its form values leniently (strings or native types), checks them against
Proxy where that is the point, and only then saves anything (a refused step leaves the
install row as it was, or absent), and answers the normalised values, which Envoy merges into the
install config (null removes a key). The same values are merged into our `Install.config`, so
later steps and dropdowns work before Envoy echoes the config back. The App Key Secret goes to
`Install.proxy_secret`, encrypted, and never into an answer, a message or a log line.
"""

import logging
from typing import Any

from daemon.access import accounts, audit
from daemon.access.installs import remember_install
from daemon.envoy.client import EnvoyError
from daemon.envoy.manifest import PURPOSE, STEPS, Field
from daemon.envoy.mapping import normalise_mapping
from daemon.masking import mask
from daemon.proxy.access import NotConfigured
from daemon.proxy.client import (
    ProxyAuthError,
    ProxyClient,
    ProxyError,
    ProxyNotFound,
    ProxyUnavailable,
)
from daemon.rules.access_hours import parse_hours
from daemon.rules.request import Answer, BadRequest, EnvoyRequest, as_id
from daemon.rules.settings import as_bool, as_id_list, as_int
from daemon.secretbox import SecretBoxError
from db import Install, database, now_epoch

log = logging.getLogger("envoy_proxy.setup")

PURPOSE_FAILED = f"{PURPOSE} purpose not registered"


# -- shared helpers (the dropdowns use them too) ---------------------------------------------


SETUP_PROXY_BUDGET = 3.0


def proxy_budget(ctx) -> float:
    """How long a setup call waits for Proxy: a person is waiting in Envoy's dashboard."""
    return SETUP_PROXY_BUDGET


def proxy_failure(error: ProxyError) -> BadRequest:
    """A message an admin can act on; never the secret (the client scrubs Proxy's texts)."""
    if isinstance(error, ProxyAuthError):
        return BadRequest(
            "Proxy rejected the App Key or the App Key Secret: check them in your Proxy app "
            "details (Proxy Access step)"
        )
    if isinstance(error, ProxyUnavailable):
        detail = f"HTTP {error.status} {error.description}" if error.status else error.description
        return BadRequest(
            f"Proxy could not be reached or is not answering: {detail}; try again in a minute"
        )
    return BadRequest(f"Proxy refused the request: {error.description}")


def org_client(ctx, request: EnvoyRequest, install: Install | None = None) -> ProxyClient:
    """The install's Proxy client for its org (and site, once chosen), for setup and dropdowns."""
    install = install or Install.get_or_none(install_id=request.install_id)
    if install is None:
        raise BadRequest("Proxy access is not set up: complete the Proxy Access step first")
    try:
        return ctx.proxy.limited(proxy_budget(ctx)).org_client(install, request.config)
    except NotConfigured as error:
        raise BadRequest(str(error)) from None
    except SecretBoxError:
        raise BadRequest(
            "the stored App Key Secret cannot be decrypted (was the key file replaced?): "
            "run the Proxy Access step again"
        ) from None


def _payload(request: EnvoyRequest) -> dict:
    if not isinstance(request.payload, dict):
        raise BadRequest("the step's values are missing (no `payload` object)")
    return request.payload


def _scalar(value: Any) -> Any:
    """A select's value, also when it arrives as an option object `{"label", "value"}`."""
    return value.get("value") if isinstance(value, dict) else value


def _text(payload: dict, key: str) -> str | None:
    value = _scalar(payload.get(key))
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    return text or None


def _required_id(payload: dict, field: Field) -> str:
    value = as_id(_scalar(payload.get(field.key)))
    if value is None:
        raise BadRequest(f"{field.label} is required")
    return value


def _checkbox(payload: dict, field: Field) -> bool:
    value = payload.get(field.key)
    if value is None:
        return bool(field.default)
    checked = as_bool(value, default=None)
    if checked is None:
        raise BadRequest(f"{field.label} must be on or off, not {value!r}")
    return checked


def _minutes(payload: dict, field: Field) -> int:
    value = _scalar(payload.get(field.key))
    if value is None or (isinstance(value, str) and not value.strip()):
        return field.default
    minutes = as_int(value, None)
    if minutes is None:
        raise BadRequest(f"{field.label} must be a whole number of minutes, not {value!r}")
    if not field.minimum <= minutes <= field.maximum:
        raise BadRequest(
            f"{field.label} must be between {field.minimum} and {field.maximum} minutes"
        )
    return minutes


def _read(step_slug: str, payload: dict) -> dict:
    """The step's checkbox and minute fields, validated against the manifest's ranges."""
    values = {}
    for field in STEPS[step_slug].fields:
        if field.type == "checkbox":
            values[field.key] = _checkbox(payload, field)
        elif field.minimum is not None:
            values[field.key] = _minutes(payload, field)
    return values


def _save(request: EnvoyRequest, values: dict, **columns) -> Install:
    """Merge the answered values into our config snapshot (None removes), with any columns."""
    with database.atomic():
        install = remember_install(request, now_epoch())
        config = dict(install.config or {})
        for key, value in values.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        audit.setup_changed(install.install_id, install.config, config, "proxy_secret" in columns)
        Install.update(config=config, **columns).where(
            Install.install_id == install.install_id
        ).execute()
        return Install.get_by_id(install.install_id)


# -- step 1: Proxy access ----------------------------------------------------------------------


def _stored_secret(ctx, install: Install | None, app_key: str) -> str:
    """The secret kept from an earlier run (Envoy hides the field on a revisit)."""
    if install is None or not install.proxy_secret:
        raise BadRequest("App Key Secret is required")
    if (install.config or {}).get("proxy_app_key") not in (None, app_key):
        raise BadRequest("the App Key changed: enter its App Key Secret too")
    try:
        return ctx.secretbox.decrypt(install.proxy_secret)
    except SecretBoxError:
        raise BadRequest(
            "the stored App Key Secret cannot be decrypted (was the key file replaced?): "
            "enter it again"
        ) from None


def _check_org(ctx, app_key: str, secret: str, org_id: str) -> None:
    with ProxyClient(
        ctx.config.proxy_api_url,
        app_key,
        secret,
        read_timeout=proxy_budget(ctx),
        retry_budget=proxy_budget(ctx),
    ) as client:
        try:
            orgs = client.list_orgs()
        except ProxyError as error:
            raise proxy_failure(error) from None
    visible = [str(org["id"]) for org in orgs if org.get("id") is not None]
    if org_id not in visible:
        seen = ", ".join(visible) or "none"
        raise BadRequest(
            f"Proxy organization {org_id} is not visible to this App Key "
            f"(it sees: {seen}); check the Organization ID"
        )


def proxy_access(ctx, request: EnvoyRequest) -> dict:
    payload = _payload(request)
    step = STEPS["proxy-access"]
    new_secret = payload.get("proxy_app_secret")
    new_secret = new_secret.strip() if isinstance(new_secret, str) else ""
    secrets = [new_secret]
    try:
        app_key = _required_id(payload, step.field("proxy_app_key"))
        org_id = _required_id(payload, step.field("proxy_org_id"))
        install = Install.get_or_none(install_id=request.install_id)
        secrets.append(new_secret or _stored_secret(ctx, install, app_key))
        _check_org(ctx, app_key, secrets[-1], org_id)
    except BadRequest as refusal:
        # A secret pasted into another field would come back in the message (and the log).
        raise BadRequest(mask(str(refusal), secrets), refusal.status) from None
    answer = {"proxy_org_id": org_id, "proxy_app_key": app_key}
    columns = {}
    if new_secret:  # also a new start for an install that was uninstalled (a reinstall)
        columns = {"proxy_secret": ctx.secretbox.encrypt(new_secret), "uninstalled_at": None}
    left = accounts.org_left(install, org_id)
    if left is None:
        _save(request, answer, **columns)
    else:
        answer.update(dict.fromkeys(accounts.ORG_SCOPED_KEYS))  # null: Envoy drops them too
        _switch_org(request, install, left, answer, columns)
    log.info(
        "install %s: Proxy access checked (app key %s, org %s, secret %s)",
        request.install_id,
        app_key,
        org_id,
        "replaced" if new_secret else "kept",
    )
    return answer


def _switch_org(request: EnvoyRequest, install: Install, left: str, answer: dict, columns):
    """Save the new org's credentials, keeping the old org's while its grants are live, and
    ask the admin (status page, log, and every event's answer until then) for the steps whose
    values belonged to the old org."""
    now = now_epoch()
    notice = (
        f"{accounts.ORG_CHANGED} from {left} to {answer['proxy_org_id']}: run the Site "
        "and Visitor mapping steps again (access given in the old organization is still "
        "ended there)"
    )
    with database.atomic():
        accounts.keep_credentials(install, now)
        _save(request, answer, **columns, last_error=notice)
        accounts.release_unused(install.install_id, answer["proxy_org_id"])
    log.warning("install %s: %s", request.install_id, notice)


# -- step 2: site ----------------------------------------------------------------------------


def site(ctx, request: EnvoyRequest) -> dict:
    payload = _payload(request)
    site_id = _required_id(payload, STEPS["site"].field("proxy_site_id"))
    client = org_client(ctx, request)
    try:
        found = client.find_site(site_id)
    except ProxyError as error:
        raise proxy_failure(error) from None
    if found is None:
        raise BadRequest(
            f"Proxy site {site_id} does not exist in organization {client.org_id}; "
            "choose one from the list"
        )
    answer = {"proxy_site_id": site_id, "proxy_site_name": found.get("name") or site_id}
    _save(request, answer)
    return answer


# -- step 3: visitor mapping -----------------------------------------------------------------


def _check_group(client: ProxyClient, group_id: str) -> None:
    try:
        group = client.get_group(group_id)
    except ProxyNotFound:
        raise BadRequest(
            f"Proxy group {group_id} does not exist in the chosen site; choose another group"
        ) from None
    except ProxyError as error:
        raise proxy_failure(error) from None
    if group["isGlobal"]:
        raise BadRequest(
            f"Proxy group {group.get('name') or group_id} ({group_id}) is a global group: "
            "global groups cannot be given to visitors; choose a group of the site"
        )


def visitor_mapping(ctx, request: EnvoyRequest) -> dict:
    payload = _payload(request)
    mapping = normalise_mapping(payload.get("visitor_mapping"))
    if not mapping:
        raise BadRequest("map at least one visitor flow to a Proxy group")
    client = org_client(ctx, request)
    if not client.site_id:
        raise BadRequest("no Proxy site is selected: complete the Site step first")
    for group_id in dict.fromkeys(group for groups in mapping.values() for group in groups):
        _check_group(client, group_id)
    answer = {"visitor_mapping": mapping}
    _save(request, answer)
    Install.update(last_error=None).where(
        (Install.install_id == request.install_id)
        & Install.last_error.startswith(accounts.ORG_CHANGED)
    ).execute()  # the steps asked for after an org change are done
    return answer


# -- step 4: Envoy Protect -------------------------------------------------------------------


def _access_hours(payload: dict, field: Field) -> str | None:
    text = _text(payload, field.key)
    if text is None:
        return None
    try:
        start, end = parse_hours(text)
    except ValueError as error:
        raise BadRequest(f"{error}: e.g. 08:00-18:00, or 22:00-06:00 across midnight") from None
    return f"{start:%H:%M}-{end:%H:%M}"


def protect(ctx, request: EnvoyRequest) -> dict:
    payload = _payload(request)
    step = STEPS["protect"]
    values = _read("protect", payload)
    excluded = payload.get("protect_excluded_employees")
    answer = {
        "protect_enabled": values["protect_enabled"],
        "protect_excluded_employees": as_id_list(excluded),
        "protect_limit_access": values["protect_limit_access"],
        "protect_access_duration_minutes": values["protect_access_duration_minutes"],
        "protect_access_hours": _access_hours(payload, step.field("protect_access_hours")),
    }
    _save(request, answer)
    return answer


# -- step 5: customization, then the identity-verification purpose ---------------------------


def _register_purpose(ctx, install: Install) -> None:
    """Register the purpose once per install; a failure keeps the settings and is shown on
    the status page (the next run of the last step tries again)."""
    if install.purpose_registered_at is not None:
        return
    reason = None
    if ctx.envoy is None:
        reason = "ENVOY_CLIENT_ID is not set, so the daemon cannot call Envoy's plugin API"
    else:
        try:
            ctx.envoy.register_purpose(install.install_id, PURPOSE)
        except EnvoyError as error:
            reason = str(error)
    with database.atomic():
        if reason is None:
            last_error = install.last_error
            if (last_error or "").startswith(PURPOSE_FAILED):
                last_error = None  # ours, and now resolved
            Install.update(purpose_registered_at=now_epoch(), last_error=last_error).where(
                Install.install_id == install.install_id
            ).execute()
        else:
            Install.update(last_error=f"{PURPOSE_FAILED}: {reason}"[:500]).where(
                Install.install_id == install.install_id
            ).execute()
    if reason is None:
        log.info("install %s: %s purpose registered", install.install_id, PURPOSE)
    else:
        log.warning("install %s: %s: %s", install.install_id, PURPOSE_FAILED, reason)


def customization(ctx, request: EnvoyRequest) -> dict:
    answer = _read("customization", _payload(request))
    install = _save(request, answer)
    _register_purpose(ctx, install)
    return answer


VALIDATORS = {
    "proxy-access": proxy_access,
    "site": site,
    "visitor-mapping": visitor_mapping,
    "protect": protect,
    "customization": customization,
}


def handle_step(ctx, request: EnvoyRequest, step: str) -> Answer:
    """`/envoy/setup/<step>`: 200 with the values Envoy saves, or 400 with a message."""
    validate = VALIDATORS.get(step)
    if validate is None:
        return Answer.message(404, f"unknown setup step {step!r}")
    try:
        return Answer(200, validate(ctx, request))
    except BadRequest as refusal:
        # The admin sees the message in Envoy; the log keeps it for whoever helps them.
        log.info("install %s: setup step %s refused: %s", request.install_id, step, refusal)
        raise
