"""An install's settings, read from Envoy's `meta.config`.

The setup steps store normalised values, but config can be edited by hand or come from an
older version of the plugin: values may be strings or native types, so each is coerced, and
anything unreadable falls back to its default rather than failing an event. A readable
duration outside its bounds is refused (`ConfigOutOfRange`): access of 10^10 minutes is a
typo, not a wish, and would overflow every date computed from it. The bounds live here and
nowhere else: the setup steps' forms (the manifest) and their validation take them from
`MINUTE_BOUNDS`.
"""

from dataclasses import dataclass, field

from daemon.rules.request import BadRequest

DEFAULT_ACCESS_MINUTES = 480
DEFAULT_PROTECT_MINUTES = 480

# key -> (least, most) minutes; the README's "Configuration in Envoy" documents the same.
MINUTE_BOUNDS = {
    "access_duration_minutes": (5, 1440),
    "early_access_minutes": (0, 1440),
    "protect_access_duration_minutes": (30, 720),
}
_MINUTE_DEFAULTS = {
    "access_duration_minutes": DEFAULT_ACCESS_MINUTES,
    "early_access_minutes": 0,
    "protect_access_duration_minutes": DEFAULT_PROTECT_MINUTES,
}


class ConfigOutOfRange(BadRequest):
    """A setting outside its bounds: 412 (Envoy shows the job failed, with this reason) so
    that the admin fixes the setup; nothing of the request is stored."""

    def __init__(self, key: str, minutes: int):
        least, most = MINUTE_BOUNDS[key]
        super().__init__(
            f"{key} = {minutes} is outside {least}..{most} minutes: "
            "run the plugin's setup again to fix this install's settings",
            412,
        )


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


def _checked_minutes(config: dict, key: str) -> int:
    minutes = as_int(config.get(key), _MINUTE_DEFAULTS[key])
    least, most = MINUTE_BOUNDS[key]
    if not least <= minutes <= most:
        raise ConfigOutOfRange(key, minutes)
    return minutes


def _clamped_minutes(config: dict, key: str) -> int:
    least, most = MINUTE_BOUNDS[key]
    return min(most, max(least, as_int(config.get(key), _MINUTE_DEFAULTS[key])))


def config_problem(config) -> str | None:
    """Why a stored config would be refused, for the status page and the CLI; None if fine."""
    try:
        Settings.from_config(config if isinstance(config, dict) else {})
    except ConfigOutOfRange as problem:
        return str(problem)
    return None


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
        """The settings; ConfigOutOfRange (412) if a duration is outside MINUTE_BOUNDS."""
        return cls._read(config, _checked_minutes)

    @classmethod
    def lenient(cls, config: dict) -> "Settings":
        """The settings with every duration clamped into its bounds, never refused: for the
        work that must go on whatever the config says (reaching Proxy to end access)."""
        return cls._read(config, _clamped_minutes)

    @classmethod
    def _read(cls, config: dict, minutes) -> "Settings":
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
            protect_access_duration_minutes=minutes(config, "protect_access_duration_minutes"),
            protect_access_hours=text("protect_access_hours"),
            invite_required=as_bool(config.get("invite_required")),
            proxy_notifications=as_bool(config.get("proxy_notifications")),
            created_by_envoy=as_bool(config.get("created_by_envoy")),
            early_access_minutes=minutes(config, "early_access_minutes"),
            access_duration_minutes=minutes(config, "access_duration_minutes"),
            verification_require_credential=as_bool(config.get("verification_require_credential")),
        )

    def groups_for_flow(self, flow_id: str | None) -> list[str]:
        return self.visitor_mapping.get(flow_id, []) if flow_id else []
