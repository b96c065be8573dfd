"""The requests Session every outbound client of ours uses."""

import requests
from requests.adapters import HTTPAdapter

# Connections kept per host: the outbox's workers in both scheduler threads, the webhooks and
# the hook may all call at once (requests keeps 10, and discards and reopens the rest).
POOL_SIZE = 32


def session_for(base_url: str) -> requests.Session:
    """A keep-alive session that reads the environment's proxy and CA bundle settings once.

    requests reads them again on every call (0.16-0.2 ms of CPU each, BENCHMARKS.md §1);
    every call of a client goes to its base URL's host, for which the answer is the same.
    A change to those variables takes effect at the next start.
    """
    session = requests.Session()
    for scheme in ("http://", "https://"):
        session.mount(scheme, HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE))
    settings = session.merge_environment_settings(base_url, {}, None, None, None)
    session.trust_env = False
    session.proxies, session.verify = settings["proxies"], settings["verify"]
    return session
