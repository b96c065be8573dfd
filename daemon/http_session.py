"""The requests Session every outbound client of ours uses."""

import requests
from requests.adapters import HTTPAdapter

# Connections kept per host: the outbox's workers in both scheduler threads, the webhooks and
# the hook may all call at once (requests keeps 10, and discards and reopens the rest).
POOL_SIZE = 32


class _DirectSession(requests.Session):
    """A session whose plain calls skip what our clients never use: merging session-level
    headers, cookies and parameters into each call, and following redirects.

    `Session.request` merges seven settings per call (with requests 2.34 each goes through
    a runtime-checked Protocol, slow on Python 3.11) and runs hooks and cookie extraction
    after it: 0.75 ms of CPU per call against 0.60 ms here (BENCHMARKS.md §1). The call is
    prepared as requests prepares it and sent by the mounted adapter, with the proxies and
    CA bundle read once. A call with any other option takes the full path.
    """

    def request(self, method, url, params=None, data=None, headers=None, json=None,
                auth=None, timeout=None, **options):  # fmt: skip
        if options:
            return super().request(method, url, params=params, data=data, headers=headers,
                                   json=json, auth=auth, timeout=timeout, **options)  # fmt: skip
        prepared = requests.Request(method, url, headers=headers, params=params, data=data,
                                    json=json, auth=auth or self.auth).prepare()  # fmt: skip
        response = self.get_adapter(url).send(
            prepared, timeout=timeout, verify=self.verify, proxies=self.proxies
        )
        response.content  # noqa: B018 (read it all, as Session.send does: frees the connection)
        return response


def session_for(base_url: str) -> requests.Session:
    """A keep-alive session that reads the environment's proxy and CA bundle settings once.

    requests reads them again on every call (0.16-0.2 ms of CPU each, BENCHMARKS.md §1);
    every call of a client goes to its base URL's host, for which the answer is the same.
    A change to those variables takes effect at the next start.
    """
    session = _DirectSession()
    for scheme in ("http://", "https://"):
        session.mount(scheme, HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE))
    settings = session.merge_environment_settings(base_url, {}, None, None, None)
    session.trust_env = False
    session.proxies, session.verify = settings["proxies"], settings["verify"]
    return session
