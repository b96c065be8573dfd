"""The handful of long-lived objects the domain needs, built once by the composition root."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from daemon.config import Config
from daemon.envoy_client import EnvoyPluginClient
from daemon.inbox import Inbox
from daemon.metrics import Metrics
from daemon.priority import WebhooksFirst
from daemon.proxy_access import ProxyAccess
from daemon.secretbox import SecretBox


@dataclass
class Context:
    config: Config
    secretbox: SecretBox
    proxy: ProxyAccess
    envoy: EnvoyPluginClient | None
    metrics: Metrics = field(default_factory=Metrics)
    inbox: Inbox = field(default_factory=Inbox)
    priority: WebhooksFirst = field(default_factory=WebhooksFirst)
    # Called with an epoch after a commit that may make work due sooner (the alarm clock).
    rearm: Callable[[int | None], None] = lambda at: None
    # True while the scheduler thread lives and swept recently (status page, watchdog).
    scheduler_healthy: Callable[[], bool] = lambda: True
    scheduler_next_due: Callable[[], int | None] = lambda: None
    started_at: float = field(default_factory=time.time)

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
