"""What to enter in Envoy's Dev Dashboard, kept as data: events, the hook, setup steps with
their fields, and dropdowns.

The setup routes (`daemon.envoy.setup_steps`) and the dropdown routes
(`daemon.envoy.options`) read these same tables (labels, ranges, defaults,
searchable/paginated), so the printed manifest cannot drift from what the daemon serves.
`envoy-proxy manifest --base-url URL` prints it.
"""

import argparse
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from daemon import __version__
from daemon.rules.settings import MINUTE_BOUNDS

EVENTS_PATH = "/envoy/events"
HOOK_PATH = "/envoy/hooks/identity-verification"
PURPOSE = "identity-verification"
EVENTS = (
    "entry_sign_in",
    "entry_sign_out",
    "entry_blacklist_review",
    "entry_blacklist_deny",
    "employee_entry_sign_in",
    "employee_entry_sign_out",
    "invite_created",
    "invite_updated",
    "invite_removed",
    "upcoming_visit",
    "plugin_uninstalled",
)
PAGE_SIZE = 25  # options per page of a paginated dropdown
FIELD_TYPES = ("text", "password", "checkbox", "select", "mapping")


@dataclass(frozen=True)
class Dropdown:
    """An options source; paginated ones also have a selected-values route."""

    name: str
    label: str
    searchable: bool = False
    paginated: bool = False

    @property
    def options_path(self) -> str:
        return f"/envoy/options/{self.name}"

    @property
    def selected_path(self) -> str | None:
        return f"/envoy/selected/{self.name}" if self.paginated else None


@dataclass(frozen=True)
class Field:
    """One form field of a setup step. `options` names a dropdown (the left side of a
    mapping); `right_options` the mapping's right side. Integers carry their range."""

    key: str
    label: str
    type: str
    required: bool = False
    options: str | None = None
    right_options: str | None = None
    multiple: bool = False
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    help: str = ""


@dataclass(frozen=True)
class Step:
    """A form step: its fields, and the config keys its validation route answers."""

    slug: str
    title: str
    fields: tuple[Field, ...]
    answers: tuple[str, ...]

    @property
    def path(self) -> str:
        return f"/envoy/setup/{self.slug}"

    def field(self, key: str) -> Field:
        return next(field for field in self.fields if field.key == key)


DROPDOWNS: dict[str, Dropdown] = {
    dropdown.name: dropdown
    for dropdown in (
        Dropdown("sites", "Proxy sites of the organization", searchable=True, paginated=True),
        Dropdown("groups", "Proxy groups of the site, not global", searchable=True, paginated=True),
        Dropdown("flows", "Envoy visitor flows of the location"),
        Dropdown("employees", "Envoy employees of the location", searchable=True, paginated=True),
        Dropdown("durations", "Access duration presets"),
        Dropdown("early-access", "Early access presets"),
        Dropdown("protect-durations", "Protect access duration presets"),
    )
}

STEPS: dict[str, Step] = {
    step.slug: step
    for step in (
        Step(
            "proxy-access",
            "Proxy Access",
            (
                Field("proxy_app_key", "App Key", "text", required=True),
                Field(
                    "proxy_app_secret",
                    "App Key Secret",
                    "password",
                    required=True,
                    help="kept encrypted by the daemon; never saved in Envoy's config; "
                    "leave empty on a revisit to keep the stored one",
                ),
                Field("proxy_org_id", "Organization ID", "text", required=True),
            ),
            answers=("proxy_org_id", "proxy_app_key"),
        ),
        Step(
            "site",
            "Site",
            (Field("proxy_site_id", "Proxy site", "select", required=True, options="sites"),),
            answers=("proxy_site_id", "proxy_site_name"),
        ),
        Step(
            "visitor-mapping",
            "Visitor Mapping",
            (
                Field(
                    "visitor_mapping",
                    "Visitor flow → Proxy groups",
                    "mapping",
                    required=True,
                    options="flows",
                    right_options="groups",
                ),
            ),
            answers=("visitor_mapping",),
        ),
        Step(
            "protect",
            "Envoy Protect",
            (
                Field("protect_enabled", "Enable Envoy Protect", "checkbox", default=False),
                Field(
                    "protect_excluded_employees",
                    "Employees excluded from Protect",
                    "select",
                    options="employees",
                    multiple=True,
                    default=[],
                ),
                Field(
                    "protect_limit_access",
                    "Limit employee access to a time frame",
                    "checkbox",
                    default=False,
                ),
                Field(
                    "protect_access_duration_minutes",
                    "Employee access duration",
                    "select",
                    options="protect-durations",
                    default=480,
                    minimum=MINUTE_BOUNDS["protect_access_duration_minutes"][0],
                    maximum=MINUTE_BOUNDS["protect_access_duration_minutes"][1],
                ),
                Field(
                    "protect_access_hours",
                    "Daily access hours (HH:MM-HH:MM, 24-hour, location time)",
                    "text",
                    help="optional; a window may cross midnight, e.g. 22:00-06:00",
                ),
            ),
            answers=(
                "protect_enabled",
                "protect_excluded_employees",
                "protect_limit_access",
                "protect_access_duration_minutes",
                "protect_access_hours",
            ),
        ),
        Step(
            "customization",
            "Customization",
            (
                Field("invite_required", "Invite required", "checkbox", default=False),
                Field(
                    "proxy_notifications",
                    "Proxy credential notifications",
                    "checkbox",
                    default=False,
                ),
                Field(
                    "created_by_envoy",
                    'Add "Created by Envoy" in Proxy',
                    "checkbox",
                    default=False,
                ),
                Field(
                    "early_access_minutes",
                    "Early access",
                    "select",
                    options="early-access",
                    default=0,
                    minimum=MINUTE_BOUNDS["early_access_minutes"][0],
                    maximum=MINUTE_BOUNDS["early_access_minutes"][1],
                ),
                Field(
                    "access_duration_minutes",
                    "Access duration",
                    "select",
                    options="durations",
                    default=480,
                    minimum=MINUTE_BOUNDS["access_duration_minutes"][0],
                    maximum=MINUTE_BOUNDS["access_duration_minutes"][1],
                ),
                Field(
                    "verification_require_credential",
                    "Identity verification: require a Proxy credential",
                    "checkbox",
                    default=False,
                ),
            ),
            answers=(
                "invite_required",
                "proxy_notifications",
                "created_by_envoy",
                "early_access_minutes",
                "access_duration_minutes",
                "verification_require_credential",
            ),
        ),
    )
}


# -- the manifest as a document ------------------------------------------------------------


def _dropdown_doc(base: str, name: str) -> dict:
    dropdown = DROPDOWNS[name]
    doc = {
        "name": dropdown.name,
        "options_url": base + dropdown.options_path,
        "searchable": dropdown.searchable,
        "paginated": dropdown.paginated,
    }
    if dropdown.selected_path:
        doc["selected_values_url"] = base + dropdown.selected_path
    return doc


def _field_doc(base: str, field: Field) -> dict:
    doc: dict[str, Any] = {
        "label": field.label,
        "key": field.key,
        "type": field.type,
        "required": field.required,
    }
    if field.multiple:
        doc["multiple"] = True
    if field.options:
        dropdown = _dropdown_doc(base, field.options)
        doc.update({k: v for k, v in dropdown.items() if k != "name"})
    if field.right_options:
        doc["right"] = {"type": "select", **_dropdown_doc(base, field.right_options)}
    if field.default is not None:
        doc["default"] = field.default
    if field.minimum is not None:
        doc["range"] = [field.minimum, field.maximum]
    if field.help:
        doc["help"] = field.help
    return doc


def build(base_url: str) -> dict:
    """The whole manifest with absolute URLs under `base_url` (no trailing slash)."""
    base = base_url.rstrip("/")
    return {
        "plugin": "envoy-proxy",
        "version": __version__,
        "base_url": base,
        "events": [{"event": event, "url": base + EVENTS_PATH} for event in EVENTS],
        "hooks": [{"purpose": PURPOSE, "url": base + HOOK_PATH}],
        "steps": [
            {
                "title": step.title,
                "validation_url": base + step.path,
                "fields": [_field_doc(base, field) for field in step.fields],
                "saves": list(step.answers),
            }
            for step in STEPS.values()
        ],
        "dropdowns": [_dropdown_doc(base, name) for name in DROPDOWNS],
    }


def _flags(doc: dict) -> str:
    return ", ".join(
        flag if doc.get(flag) else f"not {flag}" for flag in ("searchable", "paginated")
    )


def _default(value: Any) -> str | None:
    if isinstance(value, bool):
        return "default " + ("on" if value else "off")
    if value in (None, [], ""):
        return None
    return f"default {value}"


def render_text(manifest: dict) -> str:
    lines = [
        f"Envoy Dev Dashboard entries for envoy-proxy {manifest['version']}",
        f"Base URL: {manifest['base_url']}",
        "",
        "Events (worker URL of each):",
    ]
    width = max(len(event["event"]) for event in manifest["events"])
    lines += [f"  {e['event']:<{width}}  {e['url']}" for e in manifest["events"]]
    lines += ["", "Synchronous hook (add the purpose, then its URL):"]
    lines += [f"  purpose {hook['purpose']}: {hook['url']}" for hook in manifest["hooks"]]
    lines += ["", "Setup steps (form steps, in this order; the last one registers the purpose):"]
    for number, step in enumerate(manifest["steps"], 1):
        lines += [f"  {number}. {step['title']}", f"     validation URL: {step['validation_url']}"]
        for field in step["fields"]:
            lines += _field_lines(field)
    lines += ["", "Dropdowns:"]
    for dropdown in manifest["dropdowns"]:
        lines.append(f"  {dropdown['name']}: {dropdown['options_url']} ({_flags(dropdown)})")
        if "selected_values_url" in dropdown:
            lines.append(f"    selected values: {dropdown['selected_values_url']}")
    return "\n".join(lines) + "\n"


def _field_lines(field: dict) -> list[str]:
    kind = field["type"] + (" (multiple)" if field.get("multiple") else "")
    extras = ["required"] if field["required"] else []
    if "range" in field:
        extras.append("{}–{}".format(*field["range"]))
    if _default(field.get("default")):
        extras.append(_default(field["default"]))
    head = ", ".join([f"key {field['key']}", kind, *extras])
    lines = [f"     - {field['label']}: {head}"]
    if "options_url" in field:
        side = "left options" if field["type"] == "mapping" else "options"
        lines.append(f"         {side} URL: {field['options_url']} ({_flags(field)})")
        if "selected_values_url" in field:
            lines.append(f"         selected values URL: {field['selected_values_url']}")
    if "right" in field:
        right = field["right"]
        lines.append(f"         right side: select, options URL {right['options_url']} ")
        lines[-1] += f"({_flags(right)})"
        if "selected_values_url" in right:
            lines.append(f"         right side selected values URL: {right['selected_values_url']}")
    if field.get("help"):
        lines.append(f"         note: {field['help']}")
    return lines


# -- the command -----------------------------------------------------------------------------


def base_url(text: str) -> str:
    """argparse type: an absolute http(s) URL without query or fragment."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"expected an absolute https:// URL, got {text!r}")
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError("the base URL must not have a query or a fragment")
    return text.strip().rstrip("/")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        type=base_url,
        required=True,
        help="public URL under which Envoy reaches the daemon, e.g. https://host/prefix",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")


def run(args: argparse.Namespace) -> int:
    manifest = build(args.base_url)
    if args.json:
        print(json.dumps(manifest, indent=2, ensure_ascii=False))
    else:
        print(render_text(manifest), end="")
    return 0
