"""The handful of long-lived objects the domain needs, built once by the composition root."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from daemon.access.runner import Runner
from daemon.config import Config
from daemon.envoy.client import EnvoyPluginClient
from daemon.health import Health
from daemon.ops.metrics import Metrics
from daemon.proxy.access import ProxyAccess
from daemon.secretbox import SecretBox


@dataclass
class Context:
    config: Config
    secretbox: SecretBox
    proxy: ProxyAccess
    envoy: EnvoyPluginClient | None
    metrics: Metrics = field(default_factory=Metrics)
    runner: Runner = field(default_factory=Runner)
    # Called with an epoch after a commit that may make work due sooner (the alarm clock).
    rearm: Callable[[int | None], None] = lambda at: None
    scheduler_next_due: Callable[[], int | None] = lambda: None
    # How the retention passes went lately (scheduler.Runs), for /status; None: not running.
    retention_runs: Callable[[], object] = lambda: None
    started_at: float = field(default_factory=time.time)
    # Is due work getting done, and if not why (/healthz, the watchdog, /status).
    health: Health = field(default_factory=Health)

    @classmethod
    def build(cls, config: Config, secretbox: SecretBox) -> "Context":
        metrics = Metrics().with_database()
        envoy = None
        if config.client_id:
            envoy = EnvoyPluginClient(config.envoy_base_url, config.client_id, config.client_secret)
        return cls(
            config=config,
            secretbox=secretbox,
            proxy=ProxyAccess(config.proxy_api_url, secretbox, observe=metrics.proxy_call),
            envoy=envoy,
            metrics=metrics,
        )
