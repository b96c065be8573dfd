"""An install's settings, read leniently from Envoy's `meta.config`.

The setup steps store normalised values, but config can be edited by hand or come from an
older version of the plugin: values may be strings or native types, so each is coerced, and
anything unreadable falls back to its default rather than failing an event.
"""

from dataclasses import dataclass, field

DEFAULT_ACCESS_MINUTES = 480
DEFAULT_PROTECT_MINUTES = 480


def as_bool(value, default: bool = False) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"true", "1", "yes", "on"}:
            return True
        if text in {"false", "0", "no", "off", ""}:
            return False
    return default


def as_int(value, default: int) -> int:
    if isinstance(value, bool) or value is None:
        return default
    try:
        return int(str(value).strip())
    except ValueError:
        return default


def as_id_list(value) -> list[str]:
    """A list of ids from a list, a single id, or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    elif not isinstance(value, list | tuple):
        value = [value]
    ids = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("value", item.get("id"))
        if isinstance(item, int | str) and not isinstance(item, bool) and str(item).strip():
            ids.append(str(item).strip())
    return list(dict.fromkeys(ids))


@dataclass(frozen=True)
class Settings:
    proxy_org_id: str | None = None
    proxy_app_key: str | None = None
    proxy_site_id: str | None = None
    proxy_site_name: str | None = None
    visitor_mapping: dict[str, list[str]] = field(default_factory=dict)
    protect_enabled: bool = False
    protect_excluded_employees: tuple[str, ...] = ()
    protect_limit_access: bool = False
    protect_access_duration_minutes: int = DEFAULT_PROTECT_MINUTES
    protect_access_hours: str | None = None
    invite_required: bool = False
    proxy_notifications: bool = False
    created_by_envoy: bool = False
    early_access_minutes: int = 0
    access_duration_minutes: int = DEFAULT_ACCESS_MINUTES
    verification_require_credential: bool = False

    @classmethod
    def from_config(cls, config: dict) -> "Settings":
        def text(key):
            value = config.get(key)
            return str(value).strip() if isinstance(value, int | str) and str(value) else None

        mapping = config.get("visitor_mapping")
        return cls(
            proxy_org_id=text("proxy_org_id"),
            proxy_app_key=text("proxy_app_key"),
            proxy_site_id=text("proxy_site_id"),
            proxy_site_name=text("proxy_site_name"),
            visitor_mapping={
                str(flow): as_id_list(groups)
                for flow, groups in (mapping.items() if isinstance(mapping, dict) else ())
                if as_id_list(groups)
            },
            protect_enabled=as_bool(config.get("protect_enabled")),
            protect_excluded_employees=tuple(as_id_list(config.get("protect_excluded_employees"))),
            protect_limit_access=as_bool(config.get("protect_limit_access")),
            protect_access_duration_minutes=as_int(
                config.get("protect_access_duration_minutes"), DEFAULT_PROTECT_MINUTES
            ),
            protect_access_hours=text("protect_access_hours"),
            invite_required=as_bool(config.get("invite_required")),
            proxy_notifications=as_bool(config.get("proxy_notifications")),
            created_by_envoy=as_bool(config.get("created_by_envoy")),
            early_access_minutes=max(0, as_int(config.get("early_access_minutes"), 0)),
            access_duration_minutes=max(
                1, as_int(config.get("access_duration_minutes"), DEFAULT_ACCESS_MINUTES)
            ),
            verification_require_credential=as_bool(config.get("verification_require_credential")),
        )

    def groups_for_flow(self, flow_id: str | None) -> list[str]:
        return self.visitor_mapping.get(flow_id, []) if flow_id else []
