"""Proxy clients per install, built from its settings and its decrypted App Key Secret.

Clients are cached (one keep-alive session per install and purpose) and rebuilt when the
install's key, secret, org or site change. A grant of an org the install has left is served
with the credentials kept for that org (`ProxyAccount`, see daemon/access/accounts.py). Group
tags are cached briefly: every credential needs them, and they change only when an admin
edits Proxy.
"""

import copy
import hashlib
import threading
import time

from daemon.proxy.client import ProxyClient
from daemon.proxy.clock import ProxyClock
from daemon.rules.settings import Settings
from daemon.secretbox import SecretBox
from db import Install, ProxyAccount

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

    def client(self, install: Install, org_id: str | None = None) -> ProxyClient:
        """The install's client for its site, in its current org; or, for a grant of an org
        the install has left (`org_id`, the grant's), the credentials kept for that org."""
        settings = Settings.lenient(install.config or {})  # endings must reach Proxy
        if org_id and settings.proxy_org_id and org_id != settings.proxy_org_id:
            return self._left_org_client(install.install_id, org_id)
        if not (settings.proxy_app_key and install.proxy_secret and settings.proxy_org_id):
            raise NotConfigured("Proxy access is not set up: complete the Proxy Access step")
        if not settings.proxy_site_id:
            raise NotConfigured("no Proxy site is selected: complete the Site step")
        return self._cached(install.install_id, settings.proxy_app_key, install.proxy_secret,
                            settings.proxy_org_id, settings.proxy_site_id)  # fmt: skip

    def org_client(self, install: Install, config: dict | None = None) -> ProxyClient:
        """A client for the install's org, scoped to its site only when one is chosen.

        For setup steps and dropdowns, which run before the site is picked. `config` (the
        request's `meta.config`) wins over the stored snapshot, key by key.
        """
        settings = Settings.lenient({**(install.config or {}), **(config or {})})
        if not (settings.proxy_app_key and install.proxy_secret and settings.proxy_org_id):
            raise NotConfigured("Proxy access is not set up: complete the Proxy Access step")
        return self._cached(install.install_id, settings.proxy_app_key, install.proxy_secret,
                            settings.proxy_org_id, settings.proxy_site_id)  # fmt: skip

    def _left_org_client(self, install_id: str, org_id: str) -> ProxyClient:
        account = ProxyAccount.get_or_none(
            (ProxyAccount.install_id == install_id) & (ProxyAccount.org_id == org_id)
        )
        if account is None or not account.site_id:
            raise NotConfigured(
                f"this install has left Proxy organization {org_id} and its credentials "
                "for it are no longer kept"
            )
        return self._cached(install_id, account.app_key, account.secret, org_id, account.site_id)

    def _cached(self, install_id, app_key, sealed_secret, org_id, site_id) -> ProxyClient:
        retry_budget = self.retry_budget
        fingerprint = hashlib.sha256(sealed_secret.encode()).hexdigest()[:16]
        key = (install_id, app_key, fingerprint, org_id, site_id, retry_budget)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = ProxyClient(
                    self.base_url,
                    app_key,
                    self.secretbox.decrypt(sealed_secret),
                    org_id=org_id,
                    site_id=site_id,
                    read_timeout=min(10.0, max(1.0, retry_budget)),
                    retry_budget=retry_budget,
                    observe=self.observe,
                    missing_endpoints=self._missing_endpoints.setdefault(org_id, set()),
                    clock=self._clocks.setdefault(org_id, ProxyClock()),
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
