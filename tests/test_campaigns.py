"""Short variants of the fault campaigns in bench/ (marked slow): crashes, duplicates and
order, a Proxy outage. Each runs the real daemon process against the Proxy sandbox and checks
Proxy's final state against the oracle (bench/oracle.py), and that every job answered 202 got
exactly one final job update. The long variants: `python -m bench.<campaign>`."""

import threading
import time

import pytest

from bench import crash_campaign, duplicates, outage, verify
from bench.common import (
    INSTALL_ID,
    SITE_CONFIG,
    Daemon,
    KeepAlive,
    Sandbox,
    prepare_install,
    run_load,
    signed,
    wait_for,
)
from bench.oracle import Oracle, future_actives, timeline
from sandbox.envoy import entry_event


@pytest.fixture
def sandbox(tmp_path):
    proxy = Sandbox(tmp_path)
    yield proxy
    proxy.stop()


# (seed, pace): unpaced, the events would all be answered within a second or two; paced lanes
# make the SIGKILLs fall among the deliveries, and between a 202 and its job update.
CRASH_RUNS = [pytest.param(11, 0.2, id="seed11"), pytest.param(21, 0.1, id="seed21")]
DUPLICATE_SEEDS = [12, 22]


def _every_job_finished(result) -> None:
    """Every job answered 202 ends with exactly one final Envoy job update (as the daemon's
    outbox records them sent)."""
    jobs = result.verdict.jobs
    assert jobs.owed > 0, "the campaign gave no job a 202: nothing was checked"
    assert jobs.missing == [] and jobs.dead == 0, result.describe()
    assert jobs.repeated == 0, result.describe()


@pytest.mark.slow
@pytest.mark.parametrize(("seed", "pace"), CRASH_RUNS)
def test_sigkills_at_random_moments_lose_nothing_and_double_no_one(tmp_path, sandbox, seed, pace):
    result = crash_campaign.run(tmp_path, events=120, seed=seed, kill_every=(0.7, 1.6), lanes=8,
                                sandbox=sandbox, pace=pace)  # fmt: skip
    assert result.kills >= 2, result.describe()
    assert result.lost == 0 and result.strays == 0, result.describe()
    assert result.answered + result.given_up == result.events, result.describe()
    assert result.verdict.drained and result.verdict.dead_revokes == 0, result.describe()
    assert result.verdict.problems == [], result.describe()
    assert result.verdict.timeline_judged > 0, result.describe()
    _every_job_finished(result)


@pytest.mark.slow
@pytest.mark.parametrize("seed", DUPLICATE_SEEDS)
def test_duplicated_and_shuffled_deliveries_converge_to_the_oracle(tmp_path, sandbox, seed):
    result = duplicates.run(tmp_path, events=150, seed=seed, window=10, lanes=8, sandbox=sandbox)
    assert result.together > 0, result.describe()
    assert result.inbox == result.answered_jobs == result.events, result.describe()
    assert result.verdict.drained and result.verdict.dead_revokes == 0, result.describe()
    assert result.verdict.problems == [], result.describe()
    assert result.verdict.timeline_judged > 0, result.describe()
    _every_job_finished(result)


@pytest.mark.slow
def test_proxy_outage_then_429_storm_converges_and_gives_up_no_ending(tmp_path, sandbox):
    result = outage.run(tmp_path, events=100, seed=13, outage=4, storms=1, storm_seconds=3,
                        retry_after=1, lanes=8, drain_timeout=60, sandbox=sandbox)  # fmt: skip
    assert 503 not in result.statuses, "Envoy gets 202 while Proxy is down, never a 5xx"
    assert result.inbox == result.answered_jobs == result.events, result.describe()
    assert result.verdict.drained, result.describe()
    assert result.verdict.dead_revokes == 0, "an ending is never given up"
    assert result.verdict.problems == [], result.describe()
    assert result.verdict.timeline_judged > 0, result.describe()
    _every_job_finished(result)


def _event(name: str, at: float, **extra) -> tuple[bytes, dict]:
    return signed(entry_event(name, entry_id="e-1", full_name="Ada", email="ada@example.com",
                              flow_id="flow-visitor", signed_in_at=at, config=SITE_CONFIG,
                              install_id=INSTALL_ID, **extra))  # fmt: skip


def _post(daemon: Daemon, body_and_headers: tuple[bytes, dict]) -> int | None:
    try:
        return KeepAlive(daemon.url).request("POST", "/envoy/events", *body_and_headers)[0]
    except OSError:
        return None


def _ada(sandbox) -> dict:
    [person] = [p for p in sandbox.persons() if p["email"] == "ada@example.com"]
    return person


def _ada_ended(sandbox) -> bool:
    """Ada's access is taken away: suspended, without the groups the daemon added."""
    person = _ada(sandbox)
    statuses = person["scheduledStatuses"]
    return bool(statuses) and statuses[-1]["status"] == "suspended" and person["tags"] == []


def test_crash_after_import_still_takes_the_groups_away_at_the_end(tmp_path, sandbox):
    """Found by the crash campaign: the groups an interrupted import added were never removed."""
    state = tmp_path / "state"
    prepare_install(state)
    daemon = Daemon(state, sandbox.url).start()
    now = time.time()
    try:
        daemon.wait_ready()
        # The import lands; the daemon dies on its next call, before recording anything.
        sandbox.add_fault(hang=True, count=1, path_prefix="/mobile-access")
        sign_in = threading.Thread(target=_post, args=(daemon, _event("entry_sign_in", now)))
        sign_in.start()
        assert wait_for(lambda: sandbox.state()["faults"][0]["count"] == 0, 10, 0.05)
        daemon.kill()
        sandbox.clear_faults()
        sign_in.join()
        daemon.start().wait_ready()  # the catch-up finishes the issue
        assert _post(daemon, _event("entry_sign_out", now, signed_out_at=time.time())) == 202
        assert wait_for(lambda: _ada_ended(sandbox), 10, 0.05), _ada(sandbox)
    finally:
        daemon.stop()
    person = _ada(sandbox)
    assert person["scheduledStatuses"][-1]["status"] == "suspended"
    assert person["tags"] == [], "the end of the visit removes the groups the daemon added"


def test_sign_out_after_a_half_done_issue_still_ends_access(tmp_path, sandbox):
    """Found by the outage campaign: a sign-out cancelled a grant whose issue had already
    imported the person, who then stayed active."""
    state = tmp_path / "state"
    prepare_install(state)
    daemon = Daemon(state, sandbox.url).start()
    now = time.time()
    try:
        daemon.wait_ready()
        # The import succeeds; the next call (Proxy's safety net) is refused for 30 s.
        sandbox.add_fault(status=429, retry_after=30, count=1, path_prefix="/mobile-access")
        assert _post(daemon, _event("entry_sign_in", now)) == 202
        assert wait_for(lambda: sandbox.state()["faults"][0]["count"] == 0, 10, 0.05)
        assert _post(daemon, _event("entry_sign_out", now, signed_out_at=time.time())) == 202
        assert wait_for(lambda: _ada_ended(sandbox), 10, 0.05), _ada(sandbox)
    finally:
        daemon.stop()
    person = _ada(sandbox)
    statuses = person["scheduledStatuses"]
    assert statuses and statuses[-1]["status"] == "suspended", f"still active: {person}"
    assert person["tags"] == []


def test_verification_approves_healthy_visitors_while_the_sweep_runs(tmp_path, sandbox):
    """Found by bench/verify.py: with a sweep every second, 4 lobby iPads at once get 412s."""
    state = tmp_path / "state"
    config = prepare_install(state, verification_require_credential=True)
    daemon = Daemon(state, sandbox.url, ENVOY_PROXY_SWEEP_SECONDS=1).start()
    try:
        daemon.wait_ready()
        result = run_load(daemon.url, verify.hook_calls(100, "race", config), clients=4)
    finally:
        daemon.stop()
    assert result.statuses == {200: 100}, result.describe()


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _visit_of_a_minute(t0: float) -> Oracle:
    oracle = Oracle(SITE_CONFIG)
    body = dict(full_name="Ada", email="ada@example.com", flow_id="flow-visitor",
                signed_in_at=t0, config=SITE_CONFIG, install_id=INSTALL_ID)  # fmt: skip
    oracle.apply(entry_event("entry_sign_in", entry_id="e-1", **body), t0)
    oracle.apply(entry_event("entry_sign_out", entry_id="e-1", signed_out_at=t0 + 60, **body),
                 t0 + 60)  # fmt: skip
    return oracle


def test_the_timeline_check_names_access_that_came_back_after_its_window():
    """Issue 16, item 1, as the campaigns now see it: suspended at the sign-out, `active`
    again ten minutes later from an older schedule entry."""
    t0 = 1_900_000_000
    person = {"email": "ada@example.com", "createdAt": t0, "tags": [], "scheduledStatuses": [
        {"status": "suspended", "scheduledDate": _iso(t0 + 61)},
        {"status": "active", "scheduledDate": _iso(t0 + 600)},
        {"status": "suspended", "scheduledDate": _iso(t0 + 1200)},
    ]}  # fmt: skip
    [problem], _ = timeline(_visit_of_a_minute(t0), [person], t0 + 1800, tolerance=20)
    assert problem.startswith("timeline: ada@example.com is active at")
    person["scheduledStatuses"][1]["status"] = "suspended"
    problems, judged = timeline(_visit_of_a_minute(t0), [person], t0 + 1800, tolerance=20)
    assert problems == [] and judged > 0
    person["scheduledStatuses"].append({"status": "active", "scheduledDate": _iso(t0 + 3600)})
    assert future_actives([person], t0 + 1800) != []
