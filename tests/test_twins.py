"""No twin is left active (issue 16, item 4).

Reproduced on the old code: an import that Proxy carried out after the client gave up left a
second person; the grant knew only the first, and the twin kept the visitor group, active,
with no end.
"""

import time

FLOW = "flow-visitor"
EMAIL = "ada@example.com"


def _visit(daemon, event, **kwargs):
    body = daemon.entry(event, entry_id="e-1", email=EMAIL, full_name="Ada", flow_id=FLOW,
                        signed_in_at=time.time(), **kwargs)  # fmt: skip
    return daemon.deliver(body)


def _until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_twin_left_by_a_late_import_is_ended_with_the_visit(daemon):
    daemon.install()
    # Proxy carries the first import out 1.5 s after the daemon gave up on it.
    daemon.proxy.add_fault(late_ms=1500, count=1, path_prefix="/manage/persons/import")
    assert _visit(daemon, "entry_sign_in").status_code == 200
    _until(lambda: len(daemon.persons(EMAIL)) == 2)  # the twin lands
    assert _visit(daemon, "entry_sign_out", signed_out_at=time.time()).status_code == 200
    for person in daemon.persons(EMAIL):
        entries = sorted(person["scheduledStatuses"], key=lambda s: (s["scheduledDate"], s["id"]))
        assert person["tags"] == [], person["id"]
        assert entries and entries[-1]["status"] == "suspended", person["id"]


def test_an_ordinary_visit_costs_no_twin_search(daemon):
    daemon.install()
    _visit(daemon, "entry_sign_in")
    before = len(daemon.proxy.state()["calls"])
    _visit(daemon, "entry_sign_out", signed_out_at=time.time())
    lookups = [
        c for c in daemon.proxy.state()["calls"][before:]
        if c["method"] == "GET" and c["path"] == "/manage/persons"
    ]  # fmt: skip
    assert lookups == []
