"""The daemon's settings from one schema: environment variables, `--flags`, defaults, help.

The names of the environment variables are pinned by ENVOY_PROTOCOL.md §8 (other tools set
them). The CLI flags, `--help`, validation and the README's table all derive from `OPTIONS`.
"""

import argparse
import logging
import os
import urllib.parse
from dataclasses import dataclass
from typing import Any

from daemon.rules.settings import as_bool

log = logging.getLogger("envoy_proxy.config")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it and says what is expected."""


@dataclass(frozen=True)
class Option:
    name: str
    env: str
    default: Any
    help: str
    type: type = str
    secret: bool = False
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("client_id", "ENVOY_CLIENT_ID", "", "Envoy plugin client id (Dev Dashboard)."),
    Option(
        "client_secret",
        "ENVOY_CLIENT_SECRET",
        "",
        "Envoy plugin client secret: verifies webhook signatures and fetches plugin tokens.",
        secret=True,
        required=True,
    ),
    Option("envoy_base_url", "ENVOY_BASE_URL", "https://app.envoy.com", "Envoy API base URL."),
    Option(
        "proxy_api_url",
        "PROXY_API_URL",
        "https://api.proxy.com",
        "Proxy API base URL (confirm it against your Proxy tenant).",
    ),
    Option(
        "db",
        "ENVOY_PROXY_DB",
        "envoy-proxy.sqlite3",
        "SQLite database file, or a postgresql:// URL (README, Database).",
    ),
    Option("listen", "ENVOY_PROXY_LISTEN", "127.0.0.1:8080", "Address to serve on, host:port."),
    Option(
        "admin_password",
        "ENVOY_PROXY_ADMIN_PASSWORD",
        "",
        "Password of user 'admin' for /status; the page answers 403 while it is unset.",
        secret=True,
    ),
    Option(
        "key_file",
        "ENVOY_PROXY_KEY_FILE",
        "envoy-proxy.key",
        "Key that encrypts Proxy secrets at rest; created 0600 on first start.",
    ),
    Option(
        "verify_deadline",
        "ENVOY_PROXY_VERIFY_DEADLINE",
        10.0,
        "Seconds within which the identity-verification hook answers (at most 25).",
        type=float,
        minimum=1.0,
        maximum=25.0,
    ),
    Option(
        "max_body_bytes",
        "ENVOY_PROXY_MAX_BODY_BYTES",
        1_048_576,
        "Largest request body accepted, in bytes.",
        type=int,
        minimum=1024,
    ),
    Option(
        "threads",
        "ENVOY_PROXY_THREADS",
        16,
        "Threads answering requests; a webhook holds one only while it is stored (Proxy is"
        " called by the runner, never while Envoy waits).",
        type=int,
        minimum=2,
        maximum=32,
    ),
    Option(
        "sweep_seconds",
        "ENVOY_PROXY_SWEEP_SECONDS",
        30,
        "Interval of the safety-net sweep of due work, in seconds.",
        type=int,
        minimum=1,
        maximum=300,
    ),
    Option(
        "overdue_seconds",
        "ENVOY_PROXY_OVERDUE_SECONDS",
        300,
        "Due work (or an ending that keeps failing) this many seconds late makes /healthz"
        " answer 503 and stops the systemd watchdog pings.",
        type=int,
        minimum=30,
        maximum=86400,
    ),
    Option(
        "retention_days",
        "ENVOY_PROXY_RETENTION_DAYS",
        30,
        "Days after a visit ends before its names, emails, phones and photos are erased here"
        " and its Proxy person (one we created) is removed; 0 keeps them forever.",
        type=int,
        minimum=0,
        maximum=3650,
    ),
    Option(
        "trusted_proxy",
        "ENVOY_PROXY_TRUSTED_PROXY",
        "",
        "Address of the reverse proxy whose X-Forwarded-* headers are trusted.",
    ),
    Option("log_level", "ENVOY_PROXY_LOG_LEVEL", "INFO", "Log level (DEBUG, INFO, WARNING)."),
    Option(
        "metrics_login",
        "ENVOY_PROXY_METRICS_LOGIN",
        False,
        "Whether /metrics asks for the status page's login (user 'admin'); off, it is open:"
        " keep it local through the reverse proxy.",
        type=bool,
    ),
)

_BY_NAME = {option.name: option for option in OPTIONS}


def url_passwords(location: str) -> list[str]:
    """The password of a `postgresql://user:password@host/…` URL, as written and as decoded
    (either may turn up in a message); none for a file name."""
    if "://" not in location:
        return []
    written = urllib.parse.urlsplit(location).netloc.rpartition("@")[0].partition(":")[2]
    return [p for p in dict.fromkeys((written, urllib.parse.unquote(written))) if p]


@dataclass(frozen=True)
class Config:
    """Validated settings. `repr` never shows a secret."""

    values: dict

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        shown = {
            k: ("***" if _BY_NAME[k].secret and v else v) for k, v in sorted(self.values.items())
        }
        for password in url_passwords(shown.get("db") or ""):
            shown["db"] = shown["db"].replace(password, "***")
        return f"Config({shown})"

    def secrets(self) -> list[str]:
        """Every value to mask: the secret settings and a password in the database URL."""
        named = [self.values[o.name] for o in OPTIONS if o.secret and self.values[o.name]]
        return named + url_passwords(self.values.get("db") or "")

    def replace(self, **changes: Any) -> "Config":
        return Config({**self.values, **changes})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option; a flag overrides its environment variable."""
    for option in OPTIONS:
        shown_default = "(unset)" if option.secret else repr(option.default)
        visible = (
            " Prefer the environment: every local user sees flags (ps)." if option.secret else ""
        )
        parser.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            metavar=option.type.__name__.upper(),
            help=f"{option.help} Env {option.env}; default {shown_default}.{visible}",
        )


def _convert(option: Option, raw: Any) -> Any:
    if option.type is str:
        return str(raw).strip()
    if option.type is bool:
        value = as_bool(raw, default=None)
        if value is None:
            raise ConfigError(f"{option.env} / {option.flag}: expected true or false, got {raw!r}")
        return value
    try:
        value = option.type(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{option.env} / {option.flag}: expected a {option.type.__name__}, got {raw!r}"
        ) from None
    if option.minimum is not None and value < option.minimum:
        raise ConfigError(f"{option.env} / {option.flag}: must be at least {option.minimum}")
    if option.maximum is not None and value > option.maximum:
        raise ConfigError(f"{option.env} / {option.flag}: must be at most {option.maximum}")
    return value


def load(args: argparse.Namespace | None = None, environ=None, *, require=True) -> Config:
    """Settings from flags, then environment, then defaults; raise ConfigError if invalid."""
    environ = os.environ if environ is None else environ
    values = {}
    for option in OPTIONS:
        raw = getattr(args, option.name, None) if args is not None else None
        if raw is not None and option.secret:
            log.warning(
                "%s was given on the command line, where every local user can read it (ps, "
                "/proc); set %s in the environment file (0600) instead",
                option.flag,
                option.env,
            )
        if raw is None:
            raw = environ.get(option.env)
        if raw is None or raw == "":
            raw = option.default
        values[option.name] = _convert(option, raw)
        if require and option.required and not values[option.name]:
            raise ConfigError(
                f"{option.env} is not set: it is required ({option.help.rstrip('.')}); "
                f"set it in the environment or pass {option.flag}"
            )
    return Config(values)


def markdown_table() -> str:
    """The configuration table of the README, derived from the schema (a test compares)."""
    rows = ["| variable | flag | default | meaning |", "|---|---|---|---|"]
    for option in OPTIONS:
        default = "(unset)" if option.secret or option.default == "" else f"`{option.default}`"
        rows.append(f"| `{option.env}` | `{option.flag}` | {default} | {option.help} |")
    return "\n".join(rows)
