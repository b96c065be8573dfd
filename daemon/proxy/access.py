"""Proxy clients per install, built from its settings and its decrypted App Key Secret.

Clients are cached (one keep-alive session per install and purpose) and rebuilt when the
install's key, secret, org or site change. Group tags are cached briefly: every credential
needs them, and they change only when an admin edits Proxy.
"""

import copy
import hashlib
import threading
import time

from daemon.proxy.client import ProxyClient
from daemon.proxy.clock import ProxyClock
from daemon.rules.settings import Settings
from daemon.secretbox import SecretBox
from db import Install

TAG_CACHE_SECONDS = 600


class NotConfigured(RuntimeError):
    """The install lacks what a Proxy call needs; the message says which setup step to run."""


class ProxyAccess:
    def __init__(self, base_url: str, secretbox: SecretBox, observe=None, retry_budget=10.0):
        self.base_url = base_url
        self.secretbox = secretbox
        self.observe = observe
        self.retry_budget = retry_budget
        self._clients: dict[tuple, ProxyClient] = {}
        self._tags: dict[tuple, tuple[float, str]] = {}
        # Per Proxy org, shared by all its clients: the assumed endpoints its tenant lacks
        # (learnt once) and its clock (learnt from every answer).
        self._missing_endpoints: dict[str, set] = {}
        self._clocks: dict[str, ProxyClock] = {}
        self._lock = threading.Lock()

    def limited(self, retry_budget: float) -> "ProxyAccess":
        """The same clients and caches, with calls that give up within `retry_budget` s."""
        view = copy.copy(self)
        view.retry_budget = retry_budget
        return view

    def client(self, install: Install) -> ProxyClient:
        settings = Settings.lenient(install.config or {})  # endings must reach Proxy
        if not (settings.proxy_app_key and install.proxy_secret and settings.proxy_org_id):
            raise NotConfigured("Proxy access is not set up: complete the Proxy Access step")
        if not settings.proxy_site_id:
            raise NotConfigured("no Proxy site is selected: complete the Site step")
        return self._cached(install, settings)

    def org_client(self, install: Install, config: dict | None = None) -> ProxyClient:
        """A client for the install's org, scoped to its site only when one is chosen.

        For setup steps and dropdowns, which run before the site is picked. `config` (the
        request's `meta.config`) wins over the stored snapshot, key by key.
        """
        settings = Settings.lenient({**(install.config or {}), **(config or {})})
        if not (settings.proxy_app_key and install.proxy_secret and settings.proxy_org_id):
            raise NotConfigured("Proxy access is not set up: complete the Proxy Access step")
        return self._cached(install, settings)

    def _cached(self, install: Install, settings: Settings) -> ProxyClient:
        retry_budget = self.retry_budget
        fingerprint = hashlib.sha256(install.proxy_secret.encode()).hexdigest()[:16]
        key = (
            install.install_id,
            settings.proxy_app_key,
            fingerprint,
            settings.proxy_org_id,
            settings.proxy_site_id,
            retry_budget,
        )
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = ProxyClient(
                    self.base_url,
                    settings.proxy_app_key,
                    self.secretbox.decrypt(install.proxy_secret),
                    org_id=settings.proxy_org_id,
                    site_id=settings.proxy_site_id,
                    read_timeout=min(10.0, max(1.0, retry_budget)),
                    retry_budget=retry_budget,
                    observe=self.observe,
                    missing_endpoints=self._missing_endpoints.setdefault(
                        settings.proxy_org_id, set()
                    ),
                    clock=self._clocks.setdefault(settings.proxy_org_id, ProxyClock()),
                )
                self._clients[key] = client
        return client

    def group_tags(self, client: ProxyClient, group_ids) -> dict[str, str]:
        """Tag of each group id, from the cache (per org and site) or Proxy."""
        tags = {}
        now = time.monotonic()
        for group_id in group_ids:
            cache_key = (client.org_id, client.site_id, group_id)  # a group belongs to its org
            cached = self._tags.get(cache_key)
            if cached and now - cached[0] < TAG_CACHE_SECONDS:
                tags[group_id] = cached[1]
                continue
            tag = client.get_group(group_id)["tag"]
            self._tags[cache_key] = (now, tag)
            tags[group_id] = tag
        return tags

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
