"""What Envoy's dashboard is told about a grant (daemon/access/jobs.py)."""

import db
from daemon.access.jobs import grant_attachments


def test_a_window_ended_before_its_start_is_never_shown_backwards():
    """A sign-out ahead of the invite's early access once read `03:53–02:08` in Envoy."""
    grant = db.Grant(kind="visitor", starts_at=1_800_003_600, ends_at=1_800_000_000, group_ids=[])
    [window] = grant_attachments(grant, None)
    start, _, end = window["value"].partition(" (")[0].partition("–")
    assert start <= end, window["value"]
