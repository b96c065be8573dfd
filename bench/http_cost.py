"""Client-side CPU per HTTP call, for the outbox's choice of client (BENCHMARKS.md §1, 1b).

Each client POSTs a small JSON body to the bare Bottle+Waitress server (its own process, so
its CPU is not counted) over one keep-alive connection: a default requests Session (which
reads the environment's proxy and CA settings at every call), the daemon's session
(`daemon.http_session`: a plain Session, those settings read once), urllib3 directly, and
http.client.

    python -m bench.http_cost [--calls 2000]
"""

import argparse
import http.client
import sys
import time
from urllib.parse import urlsplit

import requests
import urllib3

from bench.common import BareServer, print_header, workdir
from daemon.http_session import session_for

BODY = b'{"status": "suspended", "scheduledDate": "2026-11-22T12:00:00Z"}'
HEADERS = {"Content-Type": "application/json"}


def cpu_per_call(call, calls: int) -> float:
    for _ in range(100):
        call()
    began = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - began) / calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    print_header(f"HTTP client CPU per call, {args.calls} POSTs on one keep-alive connection")
    with workdir("http-cost") as work:
        bare = BareServer(work, threads=4)
        url = f"{bare.url}/healthz"
        plain, ours, pool = requests.Session(), session_for(bare.url), urllib3.PoolManager()
        split = urlsplit(bare.url)
        connection = http.client.HTTPConnection(split.hostname, split.port)

        def raw_call():
            connection.request("POST", "/healthz", body=BODY, headers=HEADERS)
            connection.getresponse().read()

        clients = {
            "requests, environment read per call": lambda: plain.post(url, data=BODY,
                                                                        headers=HEADERS),
            "requests, daemon.http_session": lambda: ours.post(url, data=BODY, headers=HEADERS),
            "urllib3": lambda: pool.request("POST", url, body=BODY, headers=HEADERS),
            "http.client": raw_call,
        }  # fmt: skip
        try:
            for name, call in clients.items():
                print(f"   {name}: {cpu_per_call(call, args.calls) * 1e6:.0f} µs of CPU per call")
        finally:
            bare.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
