"""The requests Session every outbound client of ours uses."""

import requests
from requests.adapters import HTTPAdapter

# Connections kept per host: the runner's 64 workers (`runner.WORKERS`), the identity hook's
# deciders and the webhooks may all call at once; requests keeps 10 by default, and discards and
# reopens the rest (with 32 here, a burst logged "Connection pool is full" ~900 times).
POOL_SIZE = 80


class _NoRedirects(requests.Session):
    """A session that returns a redirect instead of following it.

    Our calls carry credentials (Proxy's Basic auth, Envoy's bearer token, the client secret
    in the token request's body). requests keeps the Authorization header on a redirect to the
    same host and re-sends the body on a 307/308, to wherever the Location points; no API we
    call redirects, so a redirect is a misconfigured URL and the clients report it as an error.
    """

    def get_redirect_target(self, resp):
        return None


def session_for(base_url: str) -> requests.Session:
    """A keep-alive session for one API whose proxy and CA bundle come from the environment
    once, at start.

    Reading them once also keeps requests from consulting ~/.netrc, whose credentials would
    replace the bearer token of a call that has no `auth` of its own.
    """
    session = _NoRedirects()
    for scheme in ("http://", "https://"):
        session.mount(scheme, HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE))
    settings = session.merge_environment_settings(base_url, {}, None, None, None)
    session.trust_env = False
    session.proxies, session.verify = settings["proxies"], settings["verify"]
    return session
