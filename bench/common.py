"""What every benchmark and campaign shares: the processes, a load generator, the measures.

The daemon runs as a real process (`python -m daemon serve`) on a database prepared before it
starts; the Proxy sandbox and the Envoy simulator run as processes of their own, so that the
process under test is measured alone (RSS, CPU). Every loop here is bounded in count and time.

`python -m bench.common hello --listen HOST:PORT` serves the bare Bottle+Waitress baseline.
"""

import argparse
import contextlib
import hashlib
import http.client
import itertools
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests

from daemon.config import OPTIONS
from sandbox.proxy import SEED_INSTALL_CONFIG as SITE_CONFIG

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "sim-client"
CLIENT_SECRET = "bench-client-secret"
INSTALL_ID = "install-1"
PROXY_SECRET = "app-secret"  # the sandbox's DEFAULT_SEED app
# As the daemon serves by default (ENVOY_PROXY_THREADS); the bare baseline uses the same.
DAEMON_THREADS = next(option.default for option in OPTIONS if option.name == "threads")
GROUP_TAGS = {"grp-visitors": "visitor-lobby", "grp-contractors": "contractor", "grp-vip": "vip"}


# --- the machine, numbers and verdicts -------------------------------------------------------


def machine_info() -> dict:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def code_revision() -> str:
    """The commit under test, and whether the daemon's code differs from it (read-only git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", "daemon", "db", "web", "scheduler", "sandbox"],
            cwd=ROOT, capture_output=True,
        ).stdout  # fmt: skip
    except OSError:
        return "unknown"
    if not diff:
        return head or "unknown"
    return f"{head} + uncommitted changes (diff {hashlib.sha256(diff).hexdigest()[:8]})"


def print_header(title: str) -> None:
    info = machine_info()
    print(f"== {title}")
    print(
        f"   machine: nproc={info['nproc']} cpu={info['cpu']!r} "
        f"python={info['python']} date={info['date']}; code {code_revision()}",
        flush=True,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between the closest ranks; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process used so far, from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_mib(pid: int) -> dict[str, float]:
    """VmHWM (peak resident) and VmRSS of a process, in MiB, from /proc/PID/status."""
    found = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                found[name] = int(value.split()[0]) / 1024
    return found


class Verdicts:
    """PASS/FAIL lines, one per target; `exit_code()` is non-zero when any failed."""

    def __init__(self) -> None:
        self.results: list[tuple[str, bool, str]] = []

    def check(self, target: str, ok: bool, measured: str) -> bool:
        self.results.append((target, ok, measured))
        print(f"{'PASS' if ok else 'FAIL'} {target}: {measured}", flush=True)
        return ok

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.results)

    def exit_code(self) -> int:
        return 0 if self.ok else 1


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll until `condition()` holds or `timeout` seconds pass; True if it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- processes -------------------------------------------------------------------------------


class Service:
    """A child process with its output in a log file; stopped by its own pid only."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None):
        self.log_path = log_path
        self.started = time.monotonic()
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=log
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or closed."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def _wait_http(service: Service, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.log_path.name} exited early:\n{service.log()[-3000:]}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


class SandboxClient:
    """The Proxy sandbox's control routes over HTTP (works for a process or in-process one)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self._session = requests.Session()

    def _call(self, method: str, route: str, body: dict | None = None) -> dict:
        answer = self._session.request(
            method, f"{self.url}/_sandbox/{route}", json=body, timeout=120
        )
        answer.raise_for_status()
        return answer.json()

    def state(self) -> dict:
        return self._call("GET", "state")

    def seed(self, data: dict) -> None:
        self._call("POST", "seed", data)

    def seed_persons(self, persons: list[dict], chunk: int = 2000) -> None:
        for start in range(0, len(persons), chunk):
            self.seed({"persons": persons[start : start + chunk]})

    def add_fault(self, **fault) -> dict:
        return self._call("POST", "faults", fault)

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def persons(self) -> list[dict]:
        return self.state()["persons"]


class Sandbox(SandboxClient):
    """`python -m daemon sandbox proxy --listen 127.0.0.1:PORT --demo-seed` as a process."""

    def __init__(self, workdir: Path):
        port = free_port()
        self.service = Service(
            _sandbox_command("sandbox", "proxy", "--listen", f"127.0.0.1:{port}", "--demo-seed"),
            workdir / "sandbox.log",
        )
        super().__init__(f"http://127.0.0.1:{port}")
        _wait_http(self.service, f"{self.url}/_sandbox/state", 20)

    def stop(self) -> None:
        self.service.stop()


class EnvoySim:
    """`python -m daemon simulate serve`: the fake Envoy plugin API that takes job updates."""

    def __init__(self, workdir: Path):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.service = Service(
            _sandbox_command("simulate", "serve", "--listen", f"127.0.0.1:{port}",
                             "--secret", CLIENT_SECRET, "--client-id", CLIENT_ID),
            workdir / "envoy-sim.log",
        )  # fmt: skip
        _wait_http(self.service, f"{self.url}/api/v3/flows", 20)

    def stop(self) -> None:
        self.service.stop()


DATABASE_URL_FILE = "database.url"


def database_location(state: Path) -> str:
    """The daemon's database: its file in `state`, or the PostgreSQL URL that a campaign of
    several instances wrote into `state/database.url`."""
    url = state / DATABASE_URL_FILE
    return url.read_text().strip() if url.exists() else str(state / "daemon.sqlite3")


def open_db(state: Path):
    """The daemon's database opened in this process, through our own db layer."""
    import db

    db.open_database(database_location(state))
    return db


@contextlib.contextmanager
def daemon_db(state: Path):
    """The daemon's database opened in this process for a block (a WAL reader beside it)."""
    db = open_db(state)
    try:
        with db.database.connection_context():
            yield db
    finally:
        db.close_database()


def prepare_install(state: Path, **config) -> dict:
    """What the setup steps leave behind (config, encrypted secret), written before start."""
    from daemon.secretbox import SecretBox

    state.mkdir(parents=True, exist_ok=True)
    db = open_db(state)
    config = {**SITE_CONFIG, **config}
    try:
        with db.database.connection_context():
            db.migrate()
            box = SecretBox.from_key_file(str(state / "secret.key"))
            with db.database.atomic():  # replaced (a plain delete and insert: either engine)
                db.Install.delete().where(db.Install.install_id == INSTALL_ID).execute()
                db.Install.insert(
                    install_id=INSTALL_ID,
                    config=config,
                    proxy_secret=box.encrypt(PROXY_SECRET),
                    timezone="America/New_York",
                    created_at=0,
                    updated_at=0,
                ).execute()
    finally:
        db.close_database()
    return config


def insert_many(model, rows: Iterable, chunk: int = 500, fields=None) -> int:
    """Bulk insert through peewee in chunks, each chunk in its own transaction; rows are
    dicts, or tuples in the order of `fields`."""
    count = 0
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == chunk:
            with model._meta.database.atomic():
                model.insert_many(batch, fields=fields).execute()
            count += len(batch)
            batch = []
    if batch:
        with model._meta.database.atomic():
            model.insert_many(batch, fields=fields).execute()
        count += len(batch)
    return count


def person_id(i: int) -> str:
    """The sandbox id of the person of bulk-filled grant i + 1."""
    return f"pp-{i}"


def scale_person(i: int) -> dict:
    """The sandbox seed of the person of bulk-filled grant i + 1 (active, visitor tag), as our
    import made it: its `details` carry our marker (a person without it existed before us,
    and a visit never changes its status)."""
    return {"id": person_id(i), "orgId": "org-1", "siteId": "site-1", "name": f"Scale {i}",
            "email": f"scale-{i}@example.com", "tags": ["visitor-lobby"],
            "details": {"envoyId": f"entries:s{i}"}}  # fmt: skip


def fill_active_grants(db, ends: list[int], now: int) -> None:
    """Active grants 1..N (N = len(ends)), as issued 10 minutes ago into grp-visitors: each
    with its issue action done and its revoke action pending at `ends[i]`."""
    grant_fields = [
        db.Grant.id, db.Grant.install_id, db.Grant.kind, db.Grant.subject, db.Grant.entry_id,
        db.Grant.email, db.Grant.full_name, db.Grant.group_ids, db.Grant.proxy_person_id,
        db.Grant.added_group_ids, db.Grant.starts_at, db.Grant.ends_at, db.Grant.state,
        db.Grant.version, db.Grant.created_at, db.Grant.updated_at, db.Grant.person_ours,
    ]  # fmt: skip
    then = now - 600

    def grants():
        for i, end in enumerate(ends):
            yield (
                i + 1, INSTALL_ID, "visitor", f"entries:s{i}", f"s{i}", f"scale-{i}@example.com",
                f"Scale {i}", ["grp-visitors"], person_id(i), ["grp-visitors"], then, end,
                "active", 1, then, then, True,
            )  # fmt: skip

    action_fields = [
        db.Action.id, db.Action.grant, db.Action.install_id, db.Action.kind, db.Action.lock_key,
        db.Action.payload, db.Action.due_at, db.Action.next_attempt_at, db.Action.attempts,
        db.Action.done, db.Action.outcome, db.Action.done_at, db.Action.created_at,
    ]  # fmt: skip

    def actions():
        for i, end in enumerate(ends):
            key = f"{INSTALL_ID}:scale-{i}@example.com"
            yield (2 * i + 1, i + 1, INSTALL_ID, "issue", key, {}, then, then, 1, True, "done",
                   then + 1, then)  # fmt: skip
            yield (2 * i + 2, i + 1, INSTALL_ID, "revoke", key, {}, end, end, 0, False, None,
                   None, then)  # fmt: skip

    with db.database.connection_context():
        insert_many(db.Grant, grants(), chunk=2000, fields=grant_fields)
        insert_many(db.Action, actions(), chunk=4000, fields=action_fields)


def set_ends(db, due: dict[int, int]) -> None:
    """Move the ends (grant and revoke action) of the given grant ids to the given epochs."""
    with db.database.connection_context(), db.database.atomic():
        for grant_id, at in due.items():
            db.Grant.update(ends_at=at).where(db.Grant.id == grant_id).execute()
            db.Action.update(due_at=at, next_attempt_at=at).where(
                (db.Action.grant == grant_id) & (db.Action.kind == "revoke")
            ).execute()


SANDBOX_PATCHES: list[str] = []  # bench/experiment.py patches for the sandbox processes


class _SandboxPatches(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        SANDBOX_PATCHES[:] = [values] if values else []
        setattr(namespace, self.dest, values)


def add_daemon_args(parser) -> None:
    """`--daemon-args`: how to start the daemon, e.g. with a patch of bench/experiment.py;
    `--sandbox-patches`: patches of bench/experiment.py for the sandbox and simulator."""
    parser.add_argument(
        "--daemon-args",
        default="-m daemon serve",
        help='python arguments that start the daemon (default "-m daemon serve"; e.g. '
        '"-m bench.experiment switch_interval serve")',
    )
    parser.add_argument(
        "--sandbox-patches",
        action=_SandboxPatches,
        default="",
        help="bench/experiment.py patches applied to the Proxy sandbox and the Envoy "
        "simulator processes",
    )


def _sandbox_command(*words: str) -> list[str]:
    """`python -m daemon WORDS…`, through bench.experiment when sandbox patches are set."""
    if SANDBOX_PATCHES:
        return [sys.executable, "-m", "bench.experiment", *SANDBOX_PATCHES, *words]
    return [sys.executable, "-m", "daemon", *words]


class Daemon:
    """`python -m daemon serve` on a free port with its state in `state` (prepared before)."""

    def __init__(self, state: Path, proxy_url: str, envoy_url: str | None = None, **env):
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "ENVOY_CLIENT_SECRET": CLIENT_SECRET,
            "ENVOY_PROXY_LISTEN": f"127.0.0.1:{self.port}",
            "ENVOY_PROXY_DB": database_location(state),
            "ENVOY_PROXY_KEY_FILE": str(state / "secret.key"),
            "PROXY_API_URL": proxy_url,
            "ENVOY_PROXY_LOG_LEVEL": "INFO",
            **({"ENVOY_CLIENT_ID": CLIENT_ID, "ENVOY_BASE_URL": envoy_url} if envoy_url else {}),
            **{k: str(v) for k, v in env.items()},
        }
        self.service: Service | None = None
        self.starts = 0

    def start(self, args: Sequence[str] = ("-m", "daemon", "serve")) -> "Daemon":
        """Start the process; `args` may name a wrapper (a profiler, an experiment)."""
        self.starts += 1
        self.service = Service(
            [sys.executable, *args], self.state / f"daemon-{self.starts}.log", self.env
        )
        return self

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds from the process start to the first 200 from /healthz."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.service.alive():
                raise RuntimeError(f"daemon exited early:\n{self.service.log()[-3000:]}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return time.monotonic() - self.service.started
            except requests.RequestException:
                pass
            time.sleep(0.005)
        raise RuntimeError(f"daemon not ready within {timeout} s:\n{self.service.log()[-3000:]}")

    @property
    def pid(self) -> int:
        return self.service.pid

    def memory(self) -> dict[str, float]:
        return memory_mib(self.pid)

    def kill(self) -> None:
        self.service.kill()

    def stop(self) -> int | None:
        return self.service.stop() if self.service else None

    def logs(self) -> str:
        return "".join(
            path.read_text(errors="replace") for path in sorted(self.state.glob("daemon-*.log"))
        )


@contextlib.contextmanager
def workdir(name: str):
    """A fresh directory for one run's state and logs, kept when BENCH_KEEP is set."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=f"envoy-proxy-{name}-"))
    try:
        yield path
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"   (kept {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


# --- profiles --------------------------------------------------------------------------------


class Profiler:
    """`py-spy record` attached to a process (pip install py-spy; needs ptrace rights).

    `idle`: collapsed stacks of every thread, waiting ones included (a thread that sleeps in
    SQLite's busy handler or waits on a lock is then the finding, not noise); otherwise only
    the thread holding the GIL, i.e. where the CPU goes. Sampling does not pause the process.
    """

    def __init__(self, pid: int, out: Path, seconds: int = 30, idle: bool = True, native=False):
        self.out = out
        args = ["py-spy", "record", "--pid", str(pid), "--format", "raw",
                "--rate", "200", "--duration", str(seconds), "--output", str(out),
                "--nonblocking", "--idle" if idle else "--gil"]  # fmt: skip
        if native:
            args.append("--native")
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # attached before the load starts

    def finish(self, top: int = 25) -> str:
        """Stop recording; the functions most often on a stack, self and inclusive."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return summarize_stacks(self.out, top)


def summarize_stacks(path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    if not path.exists():
        return f"(no profile at {path})"
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1] for f in stack.split(";")[1:]]
        total += samples
        if frames:
            own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    lines = [f"   {total} samples; self time:"]
    lines += [f"   {n / total:6.1%}  {f}" for f, n in own.most_common(top)]
    lines.append("   inclusive:")
    lines += [f"   {n / total:6.1%}  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


# --- Envoy's side: signed bodies and a keep-alive load generator -----------------------------


def signed(body: dict, secret: str = CLIENT_SECRET) -> tuple[bytes, dict]:
    """The raw compact JSON Envoy sends and its headers with X-Envoy-Signature."""
    from sandbox.envoy import sign

    raw = json.dumps(body, separators=(",", ":")).encode()
    return raw, {"Content-Type": "application/json", "X-Envoy-Signature": sign(secret, raw)}


def sign_ins(
    count: int, tag: str, config: dict, path: str = "/envoy/events"
) -> list[tuple[str, str, bytes, dict]]:
    """`count` walk-in sign-ins with distinct entries and emails, signed as Envoy does, for
    `path` (the events route, or the identity-verification hook, which takes the same body)."""
    from sandbox.envoy import entry_event

    now = time.time()
    batch = []
    for i in range(count):
        body = entry_event(
            entry_id=f"{tag}-{i}",
            full_name=f"Visitor {tag} {i}",
            email=f"{tag}-{i}@example.com",
            flow_id="flow-visitor",
            signed_in_at=now,
            config=config,
            install_id=INSTALL_ID,
            job_id=str(uuid.uuid4()),
        )
        raw, headers = signed(body)
        batch.append(("POST", path, raw, headers))
    return batch


class KeepAlive:
    """One keep-alive HTTP/1.1 connection; reconnects after the server closed it."""

    def __init__(self, url: str, timeout: float = 30):
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        """(status, body); raises OSError/HTTPException when no answer came."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self._conn.request(method, path, body=body, headers=headers or {})
            response = self._conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()  # a half-sent request leaves the connection unusable
            raise
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # seconds, answered requests only
    statuses: Counter = field(default_factory=Counter)  # status, or "error"
    first_sent: float = 0.0  # time.time()
    elapsed: float = 0.0  # seconds from the first send to the last answer
    answers: dict = field(default_factory=dict)  # index -> (status, body) when kept
    sent: dict = field(default_factory=dict)  # index -> time.time() of the send (run_paced)

    @property
    def answered(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.answered / self.elapsed if self.elapsed else 0.0

    def describe(self) -> str:
        return (
            f"{self.answered} answered in {self.elapsed:.2f} s = {self.rate:.0f}/s, "
            f"p50 {percentile(self.latencies, 50) * 1000:.1f} ms, "
            f"p99 {percentile(self.latencies, 99) * 1000:.1f} ms, "
            f"statuses {dict(sorted(self.statuses.items(), key=str))}"
        )


def run_load(
    url: str | Sequence[str],
    requests_: Sequence[tuple[str, str, bytes | None, dict]],
    clients: int = 16,
    time_limit: float = 300,
    keep_answers: bool = False,
) -> LoadResult:
    """Send `(method, path, body, headers)` requests from `clients` threads, each with its own
    keep-alive connection, each request once, in order of the list; stop at `time_limit`.
    Several URLs (instances behind a balancer): request i goes to URL i mod their number, each
    client keeping a connection to each."""
    urls = [url] if isinstance(url, str) else list(url)
    result = LoadResult()
    lock = threading.Lock()
    counter = itertools.count()
    deadline = time.monotonic() + time_limit
    start_gate = threading.Barrier(clients + 1)
    last_answer = [0.0]

    def client() -> None:
        connections = [KeepAlive(u) for u in urls]
        start_gate.wait()
        while time.monotonic() < deadline:
            index = next(counter)
            if index >= len(requests_):
                break
            method, path, body, headers = requests_[index]
            sent = time.monotonic()
            try:
                status, data = connections[index % len(urls)].request(method, path, body, headers)
            except (OSError, http.client.HTTPException):
                with lock:
                    result.statuses["error"] += 1
                continue
            answered = time.monotonic()
            with lock:
                result.latencies.append(answered - sent)
                result.statuses[status] += 1
                last_answer[0] = max(last_answer[0], answered)
                if keep_answers:
                    result.answers[index] = (status, data)
        for connection in connections:
            connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began, result.first_sent = time.monotonic(), time.time()
    for thread in threads:
        thread.join(timeout=time_limit + 60)
    result.elapsed = max(0.0, last_answer[0] - began)
    return result


def run_paced(
    url: str,
    requests_: Sequence[tuple[str, str, bytes | None, dict]],
    rate: float,
    clients: int = 16,
) -> LoadResult:
    """Send request i at i / `rate` seconds after the start, from `clients` threads with
    keep-alive connections: an open load, as a lobby's iPads make it. A latency counts from
    the instant the request was due, so a client that fell behind shows as latency rather
    than as a lower rate; `sent` holds each request's wall-clock send time."""
    result = LoadResult()
    lock = threading.Lock()
    counter = itertools.count()
    start_gate = threading.Barrier(clients + 1)
    began = [0.0]

    def client() -> None:
        connection = KeepAlive(url)
        start_gate.wait()
        while (index := next(counter)) < len(requests_):
            due = began[0] + index / rate
            time.sleep(max(0.0, due - time.monotonic()))
            method, path, body, headers = requests_[index]
            sent = time.time()
            try:
                status, _ = connection.request(method, path, body, headers)
            except (OSError, http.client.HTTPException):
                with lock:
                    result.statuses["error"] += 1
                continue
            answered = time.monotonic()
            with lock:
                result.latencies.append(answered - due)
                result.statuses[status] += 1
                result.sent[index] = sent
                result.elapsed = max(result.elapsed, answered - began[0])
        connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    began[0], result.first_sent = time.monotonic(), time.time()
    start_gate.wait()
    for thread in threads:
        thread.join(timeout=len(requests_) / rate + 120)
    return result


# --- the bare baseline -----------------------------------------------------------------------


def hello_app():
    """Bottle's smallest useful app: read the body, answer a small JSON document."""
    from bottle import Bottle, HTTPResponse, request

    app = Bottle()

    @app.route("/envoy/events", "POST")
    def events():
        request.body.read()
        return HTTPResponse(
            body=b'{"message":"hello"}', status=200, headers={"Content-Type": "application/json"}
        )

    @app.route("/healthz", "GET")
    def healthz():
        return {"status": "ok"}

    return app


class BareServer:
    """The hello-world app served by Waitress with the daemon's thread count, as a process."""

    def __init__(self, workdir: Path, threads: int = DAEMON_THREADS):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.service = Service(
            [sys.executable, "-m", "bench.common", "hello", "--listen", f"127.0.0.1:{port}",
             "--threads", str(threads)],
            workdir / "bare.log",
        )  # fmt: skip
        _wait_http(self.service, self.url + "/healthz", 20)

    def stop(self) -> None:
        self.service.stop()


def _exit_on_signal(signum, frame):
    raise SystemExit(0)  # Waitress drains and returns only when a handler raises


def _serve_hello(argv: list[str]) -> int:
    import waitress

    parser = argparse.ArgumentParser(prog="bench.common hello")
    parser.add_argument("--listen", default="127.0.0.1:8099")
    parser.add_argument("--threads", type=int, default=DAEMON_THREADS)
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    server = waitress.create_server(hello_app(), host=host, port=int(port), threads=args.threads)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        server.run()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["hello"]:
        sys.exit(_serve_hello(sys.argv[2:]))
    sys.exit("usage: python -m bench.common hello --listen HOST:PORT [--threads N]")
