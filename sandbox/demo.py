"""`envoy-proxy demo`: the whole product on one machine, watchable in about two minutes.

Starts the Proxy sandbox and the Envoy simulator in this process and the daemon as a real
`envoy-proxy serve` process (the production code path), runs the five setup steps as Envoy
would, then plays a timed scenario — walk-ins, an invite with early access, sign-outs, an
access duration lapsing, an employee under Protect, a Proxy outage that heals — and checks
the sandbox's final state against what the rules say it must be.

It follows what Envoy sees: an event whose Proxy work is due now is answered 202 at once, and
its outcome arrives later as a job update (the simulator records them); an event with nothing
due now (an invite for later) gets its final answer directly. The demo lives with the
sandbox, outside the product package: `envoy-proxy demo` loads it only when asked.
"""

import argparse
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

import db
from sandbox.envoy import EnvoySimulator, entry_event, invite_event, route_body
from sandbox.proxy import DEFAULT_SEED, SEED_INSTALL_CONFIG, ProxySandbox

INSTALL = "demo-install"
SCENARIO_SECONDS = 120
BAR_WIDTH = 30
JOB_UPDATE_WAIT = 2.0  # seconds a step waits for its job update before moving on
FINAL_JOB_STATUSES = ("done", "ignored", "failed")

SETUP = (
    ("proxy-access", {"proxy_app_key": "app-key", "proxy_app_secret": "app-secret",
                      "proxy_org_id": "org-1"}),
    ("site", {"proxy_site_id": "site-1"}),
    ("visitor-mapping", {"visitor_mapping": SEED_INSTALL_CONFIG["visitor_mapping"]}),
    ("protect", {"protect_enabled": True, "protect_limit_access": True,
                 "protect_access_duration_minutes": 480, "protect_excluded_employees": ["e-3"]}),
    ("customization", {"proxy_notifications": True, "created_by_envoy": True,
                       "early_access_minutes": 15, "access_duration_minutes": 5}),
)  # fmt: skip

# Who must hold an active credential when the scenario is over (everyone else: suspended).
EXPECTED_ACTIVE = {"cleo@example.com", "grace@example.com"}
EXPECTED_ENDED = {
    "ada@example.com", "ben@example.com", "hugo@example.com", "erin@example.com",
}  # fmt: skip


@dataclass(frozen=True)
class Step:
    at: float  # seconds into the scenario (before pacing)
    text: str
    action: str  # name of a Demo method
    kwargs: dict


def _timeline(now: float, pace: float) -> list[Step]:
    arrival_soon = now + 15 * 60 + 45 * pace  # early access (15 min) opens 45 s into the demo
    arrived_long_ago = now - 5 * 60 + 35 * pace  # a 5-minute access that lapses 35 s in
    return [
        Step(2, "Ada walks in (Visitor flow): a credential in Visitors", "sign_in",
             {"entry": "d-1", "name": "Ada Lovelace", "email": "ada@example.com",
              "flow": "flow-visitor"}),
        Step(6, "Ben walks in (Contractor flow): Contractors + VIP", "sign_in",
             {"entry": "d-2", "name": "Ben Builder", "email": "ben@example.com",
              "flow": "flow-contractor"}),
        Step(10, "Grace is invited for 15 min from now: early access opens at 45 s", "invite",
             {"invite": "i-1", "name": "Grace Hopper", "email": "grace@example.com",
              "arrival": arrival_soon}),
        Step(14, "Hugo's invite started 4.5 min ago: his 5-minute access lapses at 35 s",
             "invite", {"invite": "i-2", "name": "Hugo Late", "email": "hugo@example.com",
                        "arrival": arrived_long_ago}),
        Step(18, "Erin (employee) signs in under Envoy Protect", "employee",
             {"entry": "d-3", "email": "erin@example.com", "event": "employee_entry_sign_in"}),
        Step(26, "Ada signs out: her access ends now", "sign_out",
             {"entry": "d-1", "name": "Ada Lovelace", "email": "ada@example.com",
              "flow": "flow-visitor"}),
        Step(38, "Hugo's access duration has lapsed", "expect",
             {"email": "hugo@example.com", "status": "suspended"}),
        Step(42, "Proxy goes down (503 for 20 s)", "outage", {"seconds": 20}),
        Step(46, "Cleo walks in during the outage: Envoy hears 202, the job update waits",
             "sign_in", {"entry": "d-4", "name": "Cleo Patience", "email": "cleo@example.com",
                         "flow": "flow-visitor"}),
        Step(50, "Grace's early access is due while Proxy is down", "note", {}),
        Step(64, "Proxy is back", "heal", {}),
        Step(70, "Ben signs out", "sign_out",
             {"entry": "d-2", "name": "Ben Builder", "email": "ben@example.com",
              "flow": "flow-contractor"}),
        Step(80, "Erin signs out: Protect limits access, so it ends", "employee",
             {"entry": "d-3", "email": "erin@example.com", "event": "employee_entry_sign_out"}),
        Step(90, "Grace's early access is active after the outage", "expect",
             {"email": "grace@example.com", "status": "active"}),
        Step(100, "Cleo's credential was issued after the outage", "expect",
             {"email": "cleo@example.com", "status": "active"}),
    ]  # fmt: skip


def _bar(elapsed: float, total: float) -> str:
    done = min(BAR_WIDTH, int(BAR_WIDTH * elapsed / total))
    return f"[{'#' * done}{'.' * (BAR_WIDTH - done)}] {elapsed:5.0f}s/{total:.0f}s"


class Demo:
    def __init__(self, listen: str, pace: float, state_dir: Path, out=sys.stdout):
        self.listen, self.pace, self.state_dir, self.out = listen, pace, state_dir, out
        self.password = secrets.token_urlsafe(12)
        self.proxy = ProxySandbox()
        self.envoy = EnvoySimulator()
        self.daemon: subprocess.Popen | None = None
        self.config: dict = {}
        self.problems: list[str] = []
        self.answered_later: dict[str, str] = {}  # job id -> the step, for jobs answered 202

    @property
    def url(self) -> str:
        return f"http://{self.listen}"

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> None:
        self.proxy.start()
        self.proxy.seed(DEFAULT_SEED)
        self.envoy.start().load_demo_data()
        env = {
            **os.environ,
            "ENVOY_CLIENT_ID": self.envoy.client_id,
            "ENVOY_CLIENT_SECRET": self.envoy.client_secret,
            "ENVOY_BASE_URL": self.envoy.url,
            "PROXY_API_URL": self.proxy.url,
            "ENVOY_PROXY_DB": str(self.state_dir / "envoy-proxy.sqlite3"),
            "ENVOY_PROXY_KEY_FILE": str(self.state_dir / "envoy-proxy.key"),
            "ENVOY_PROXY_LISTEN": self.listen,
            "ENVOY_PROXY_ADMIN_PASSWORD": self.password,
            "ENVOY_PROXY_SWEEP_SECONDS": "5",
            "ENVOY_PROXY_LOG_LEVEL": "WARNING",
        }
        self.say(f"Proxy sandbox   {self.proxy.url}")
        self.say(f"Envoy simulator {self.envoy.url}")
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "daemon", "serve"],
            env=env,
            stdout=(self.state_dir / "daemon.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        self._wait_healthy()
        self.say(f"daemon          {self.url} (log: {self.state_dir / 'daemon.log'})")

    def _wait_healthy(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited; see {self.state_dir / 'daemon.log'}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("the daemon did not become healthy")

    def stop(self) -> None:
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
        self.envoy.stop()
        self.proxy.stop()

    # -- what Envoy does -------------------------------------------------------------------

    def _post(self, path: str, body: dict) -> requests.Response:
        return self.envoy.post(self.url, path, body)

    def setup(self) -> None:
        self.say("\nSetup, as an admin clicks through Envoy's five steps:")
        for step, values in SETUP:
            body = route_body(f"/envoy/setup/{step}", payload=values, config=self.config,
                              install_id=INSTALL)  # fmt: skip
            answer = self._post(f"/envoy/setup/{step}", body)
            if answer.status_code != 200:
                raise RuntimeError(f"setup step {step} failed: {answer.text}")
            self.config.update(answer.json())
            shown = ", ".join(f"{k}={v}" for k, v in answer.json().items())
            self.say(f"  ✓ {step:16} {shown}")

    def _event(self, body: dict) -> str:
        """Send one event; its answer, and for a 202 its job update if it comes soon."""
        answer = self._post("/envoy/events", body)
        text = _outcome(str(answer.status_code), answer.json())
        if answer.status_code != 202:
            return text
        job_id = body["meta"]["job"]["id"]
        self.answered_later[job_id] = f"{body['meta']['event']} of {_who(body)}"
        update = self._job_update(job_id, time.monotonic() + JOB_UPDATE_WAIT)
        if update is None:
            return f"{answer.status_code} → job pending: Proxy has not answered yet"
        return f"{answer.status_code} → job {_outcome(update['status'], update)}"

    def _job_update(self, job_id: str, deadline: float) -> dict | None:
        """The job's final update from the simulator, waiting until `deadline` (monotonic)."""
        while True:
            final = [
                u for u in self.envoy.jobs.get(job_id, []) if u["status"] in FINAL_JOB_STATUSES
            ]
            if final or time.monotonic() >= deadline:
                return final[-1] if final else None
            time.sleep(0.05)

    def sign_in(self, entry, name, email, flow) -> str:
        return self._event(entry_event(entry_id=entry, full_name=name, email=email, flow_id=flow,
                                       signed_in_at=time.time(), config=self.config,
                                       install_id=INSTALL))  # fmt: skip

    def sign_out(self, entry, name, email, flow) -> str:
        return self._event(entry_event("entry_sign_out", entry_id=entry, full_name=name,
                                       email=email, flow_id=flow, signed_in_at=time.time() - 60,
                                       signed_out_at=time.time(), config=self.config,
                                       install_id=INSTALL))  # fmt: skip

    def invite(self, invite, name, email, arrival) -> str:
        return self._event(invite_event(invite_id=invite, full_name=name, email=email,
                                        flow_id="flow-visitor", expected_arrival=arrival,
                                        config=self.config, install_id=INSTALL))  # fmt: skip

    def employee(self, entry, email, event) -> str:
        now = time.time()
        return self._event(entry_event(event, entry_id=entry, full_name="Erin Employee",
                                       email=email, flow_id="flow-employee", employee_id="e-1",
                                       employee_screening=True, signed_in_at=now - 1,
                                       signed_out_at=now if event.endswith("out") else None,
                                       config=self.config, install_id=INSTALL))  # fmt: skip

    def outage(self, seconds) -> str:
        self.proxy.add_fault(status=503, seconds=seconds * self.pace)
        return "sandbox answers 503"

    def heal(self) -> str:
        self.proxy.clear_faults()
        return "sandbox answers again"

    def note(self) -> str:
        return "the scheduler keeps trying with backoff"

    def expect(self, email, status) -> str:
        actual = self._status(email)
        if actual != status:
            self.problems.append(f"{email}: expected {status}, found {actual}")
        return f"{email} is {actual}" + ("" if actual == status else f" (expected {status})")

    def _status(self, email: str) -> str:
        persons = self.proxy.persons(email)
        if len(persons) != 1:
            return f"{len(persons)} persons"
        return persons[0]["status"]

    # -- the scenario ----------------------------------------------------------------------

    def play(self) -> None:
        total = SCENARIO_SECONDS * self.pace
        self.say(f"\nScenario (about {total:.0f} s):")
        started = time.monotonic()
        for step in _timeline(time.time(), self.pace):
            wait = started + step.at * self.pace - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            outcome = getattr(self, step.action)(**step.kwargs)
            elapsed = time.monotonic() - started
            self.say(f"{_bar(elapsed, total)}  {step.text}\n{'':{BAR_WIDTH + 14}}→ {outcome}")
        self._converge(started + total)

    def _converge(self, deadline: float) -> None:
        """Give the outbox until the end of the scenario (and up to a minute more) to settle:
        the sandbox as the rules say, and every job answered 202 told its outcome."""
        limit = max(deadline, time.monotonic()) + 60
        while time.monotonic() < limit and (self._mismatches() or self._jobs_untold()):
            time.sleep(1)

    def _jobs_untold(self) -> list[str]:
        return [job for job in self.answered_later if self._job_update(job, 0) is None]

    def _mismatches(self) -> list[str]:
        found = []
        for email in sorted(EXPECTED_ACTIVE | EXPECTED_ENDED):
            want = "active" if email in EXPECTED_ACTIVE else "suspended"
            have = self._status(email)
            if have != want:
                found.append(f"{email}: expected {want}, found {have}")
        return found

    def summary(self) -> bool:
        db.open_database(str(self.state_dir / "envoy-proxy.sqlite3"))
        try:
            grants = list(db.Grant.select())
            actions = list(db.Action.select().where(db.Action.done == True))  # noqa: E712
            dead = db.Action.select().where(db.Action.outcome == "dead").count()
        finally:
            db.close_database()
        issued = sum(1 for g in grants if g.proxy_person_id)
        ended = sum(1 for g in grants if g.state == "ended")
        late = [a.done_at - a.due_at for a in actions if a.done_at and a.outcome == "done"]
        mismatches = self._mismatches()
        self.say("\nSummary")
        self.say(f"  credentials issued {issued}, ended {ended}, failed actions {dead}")
        if late:
            self.say(f"  lateness due → done: median {statistics.median(late):.0f} s, "
                     f"max {max(late)} s (the outage accounts for the max)")  # fmt: skip
        untold = self._jobs_untold()
        told = len(self.answered_later) - len(untold)
        self.say(f"  jobs answered 202: {len(self.answered_later)}, told their outcome by a "
                 f"job update: {told}")  # fmt: skip
        for problem in self.problems + mismatches:
            self.say(f"  ✗ {problem}")
        for job in untold:
            self.say(f"  ✗ no job update for the {self.answered_later[job]}")
        if not untold:
            self.say("  ✓ every job answered 202 got its job update")
        ok = not mismatches and not untold
        self.say("  ✓ the sandbox matches the rules" if not mismatches
                 else "  ✗ the sandbox does not match")  # fmt: skip
        return ok

    def serve_until_interrupted(self) -> None:
        self.say(f"\nStatus page: {self.url}/status  (user admin, password {self.password})")
        self.say(f"Metrics:     {self.url}/metrics\nPress Ctrl-C to stop.")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()


def _outcome(status: str, answer: dict) -> str:
    """`status message · window` from an answer or a job update (Envoy's field names)."""
    message = answer.get("message") or answer.get("status_message") or ""
    window = next((a["value"] for a in answer.get("attachments") or []), "")
    return f"{status} {message}" + (f" · {window}" if window else "")


def _who(body: dict) -> str:
    return body["payload"]["attributes"].get("full-name") or body["payload"]["id"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="envoy-proxy demo", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080", help="daemon address, host:port")
    parser.add_argument(
        "--pace",
        type=float,
        default=1.0,
        help="scale the scenario's timeline (0.25 runs it four times faster)",
    )
    parser.add_argument("--state-dir", type=Path, help="where the demo keeps its database")
    parser.add_argument("--exit", action="store_true", help="stop after the summary")
    args = parser.parse_args(argv)  # fmt: skip
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="envoy-proxy-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    demo = Demo(args.listen, args.pace, state_dir)
    try:
        demo.start()
        demo.setup()
        demo.play()
        ok = demo.summary()
        if not args.exit:
            demo.serve_until_interrupted()
    except KeyboardInterrupt:
        return 130
    except (RuntimeError, requests.RequestException) as error:
        print(f"envoy-proxy demo: {error}", file=sys.stderr)
        return 1
    finally:
        demo.stop()
    return 0 if ok else 1
