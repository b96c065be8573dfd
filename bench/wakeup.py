"""How late an instance runs work that another instance committed (issue 18).

One daemon on PostgreSQL; this process plays another instance that commits work (Envoy job
updates due 0-4 s after they are committed, often sooner than the next heartbeat; one every
0.5 s) and dies before it is due, so the daemon learns of it only from the database. Its
heartbeat re-arms its alarm for the earliest due instant every 3 s (daemon.ops.instances);
without that, only its alarm's other wake-ups and the 30 s sweep would find it. Prints the
lateness (done - due, whole seconds as the outbox records them).

    python -m bench.wakeup [--actions 40]
    python -m bench.wakeup --daemon-args "-m bench.experiment no_heartbeat_poll serve"
"""

import argparse
import random
import sys
import time

from bench.common import (
    DATABASE_URL_FILE,
    Daemon,
    EnvoySim,
    Verdicts,
    daemon_db,
    percentile,
    prepare_install,
    print_header,
    wait_for,
    workdir,
)
from bench.failover import postgres_database
from daemon.ops.instances import HEARTBEAT_SECONDS


def _commit(state, due_at: int, n: int) -> None:
    from daemon.access import outbox

    with daemon_db(state) as db, db.database.atomic():
        outbox.enqueue("job_update", "install-1", due_at,
                       payload={"job_id": f"wakeup-{n}", "status": "done"})  # fmt: skip


def run(work, url: str, actions: int, seed: int = 1, daemon_args=("-m", "daemon", "serve")):
    """Each action's lateness in seconds."""
    rng = random.Random(seed)
    state = work / "state"
    state.mkdir()
    (state / DATABASE_URL_FILE).write_text(url)
    prepare_install(state)
    envoy = EnvoySim(work)
    daemon = Daemon(state, "http://127.0.0.1:9", envoy.url)
    try:
        daemon.start(daemon_args).wait_ready()
        for n in range(actions):
            _commit(state, int(time.time()) + rng.randint(0, 4), n)
            time.sleep(0.5)
        with daemon_db(state) as db:
            pending = db.Action.select().where(db.Action.kind == "job_update")

            def all_done() -> bool:
                return all(action.done for action in pending.clone())

            wait_for(all_done, 90, 0.5)
            return [a.done_at - a.due_at for a in pending.clone() if a.done_at is not None]
    finally:
        daemon.stop()
        envoy.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wakeup", description=__doc__)
    parser.add_argument("--actions", type=int, default=40)
    parser.add_argument("--daemon-args", default="-m daemon serve")
    args = parser.parse_args(argv)
    print_header(
        f"wake-up: {args.actions} actions committed by another instance ({args.daemon_args})"
    )
    verdicts = Verdicts()
    with workdir("wakeup") as work, postgres_database() as url:
        late = run(work, url, args.actions, daemon_args=args.daemon_args.split())
    measured = (
        f"{len(late)}/{args.actions} done; lateness p50 {percentile(late, 50):.0f} s, "
        f"max {max(late, default=-1)} s"
    )
    print(f"   {measured}")
    verdicts.check(
        f"work another instance committed runs within a heartbeat ({HEARTBEAT_SECONDS} s) + 1 s",
        len(late) == args.actions and max(late) <= HEARTBEAT_SECONDS + 1,
        measured,
    )
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
