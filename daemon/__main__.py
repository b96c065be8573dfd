"""The composition root: `envoy-proxy <command>`; `serve` wires and runs the daemon.

Order at start: config → logging → the database's instance lock → database (open, checks,
migrate) → key (daemon/startup.py: never a fresh database or a new key over lost ones) →
heartbeat (this instance's claims, the periodic passes' lock, its row in the registry) →
catch up overdue work → scheduler → READY=1 to systemd → serve. Order at stop (SIGTERM/SIGINT):
STOPPING=1 → stop serving (Waitress drains in-flight requests) → stop the scheduler → drain the
runner → stop the heartbeat → close the database → exit 0.
"""

import argparse
import logging
import signal
import sys

import waitress

import db
from daemon import __version__, config, notify, startup
from daemon.access import retention
from daemon.access.outbox import release_claims
from daemon.access.runner import dispatch_due, run_due
from daemon.context import Context
from daemon.envoy import manifest
from daemon.health import Health
from daemon.logs import setup_logging
from daemon.masking import Masker
from daemon.ops import admin, forget, migrate_db
from daemon.ops.instances import Heartbeat
from daemon.secretbox import SecretBoxError
from scheduler import Alarm
from web.app import create_app

log = logging.getLogger("envoy_proxy")


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise config.ConfigError(f"ENVOY_PROXY_LISTEN: expected host:port, got {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _proxy_trust(cfg: config.Config) -> dict:
    """Forwarded headers are believed only from the configured reverse proxy."""
    if not cfg.trusted_proxy:
        return {}
    return {
        "trusted_proxy": cfg.trusted_proxy,
        "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"},
    }


def _raise_system_exit(signum, frame):
    raise SystemExit(0)


def serve(cfg: config.Config) -> int:
    setup_logging(cfg.log_level, cfg.secrets())
    host, port = parse_listen(cfg.listen)
    lock = startup.lock_database(cfg)  # held until the process ends: one daemon per database
    secretbox = startup.open_state(cfg)
    with db.database.connection_context():
        db.refresh_statistics()
        release_claims()  # a fresh SQLite daemon: no claim of a previous one is still alive
    ctx = Context.build(cfg, secretbox)
    mask = Masker(cfg.secrets())
    alarm = Alarm(lambda: dispatch_due(ctx), sweep_seconds=cfg.sweep_seconds, mask=mask)
    # Renews this instance's claims, decides whether it runs the periodic passes and arms the
    # alarm for work other instances commit, from before the catch-up until the runner drained.
    heartbeat = Heartbeat(ctx.runner.claimer, rearm=alarm.rearm)
    ctx.runner.runs_passes = heartbeat.runs_passes
    heartbeat.start()
    ctx.health = Health(cfg.overdue_seconds, mask)
    ctx.health.watch(alarm.state)
    ctx.rearm, ctx.scheduler_next_due = alarm.rearm, lambda: alarm.next_due
    # Retention has an alarm of its own: its passes never hold up due work. Like the other
    # periodic passes, it runs on the one instance holding the passes' lock.
    eraser = Alarm(
        lambda: retention.run_pass(ctx) if heartbeat.runs_passes() else None,
        retention.PASS_SECONDS,
        mask,
    )
    if cfg.retention_days:
        ctx.retention_runs = lambda: eraser.runs
    # Catch up before serving: a daemon that was down when access should have ended ends it now.
    # A catch-up that raises is a failed run (unhealthy): serve anyway, so that webhooks are
    # stored, rather than exit into a restart loop; the alarm's sweep keeps retrying.
    first_due = alarm.run_once(lambda: run_due(ctx))
    server = waitress.create_server(
        create_app(ctx),
        host=host,
        port=port,
        ident="envoy-proxy",
        threads=cfg.threads,
        # Our own check answers JSON first; this is the hard stop for chunked bodies.
        max_request_body_size=cfg.max_body_bytes + 65536,
        clear_untrusted_proxy_headers=True,
        **_proxy_trust(cfg),
    )
    # Waitress ignores SIGTERM unless a handler raises SystemExit; then it drains and returns.
    signal.signal(signal.SIGTERM, _raise_system_exit)
    signal.signal(signal.SIGINT, _raise_system_exit)
    watchdog = None
    try:
        alarm.start(first_due)
        if cfg.retention_days:
            eraser.start(db.now_epoch() + retention.FIRST_PASS_DELAY)
        # Pings only while healthy (daemon.health): the alarm thread lives, its last run did
        # not fail, the database takes writes and no due work is overdue.
        watchdog = notify.start_watchdog(ctx.health.problems)
        log.info("envoy-proxy %s serving on http://%s:%d (db %s)", __version__, host, port, cfg.db)
        caught_up = "; catch-up failed: unhealthy" if alarm.runs.failing else ""
        notify.ready(f"serving on {host}:{port}{caught_up}")
        server.run()
    finally:
        notify.stopping()
        log.info("stopping: closing the listener, the scheduler and the database")
        if watchdog is not None:
            watchdog.stop()
        server.close()
        alarm.shutdown()
        eraser.shutdown()
        ctx.runner.shutdown()
        heartbeat.stop()
        ctx.proxy.close()
        db.close_database()
        lock.release()
    log.info("stopped")
    return 0


def _cmd_serve(args) -> int:
    return serve(config.load(args))


def _run_simulator(argv: list[str]) -> int:
    from sandbox import envoy

    return envoy.main(argv)


def _run_demo(argv: list[str]) -> int:
    from sandbox import demo

    return demo.main(argv)


def _run_proxy_sandbox(argv: list[str]) -> int:
    from sandbox import proxy

    return proxy.main(argv)


# Commands whose own parser reads the rest of the line: (words, help, run).
PASSTHROUGH = (
    (
        ("demo",),
        "the whole product on this machine: sandbox, simulator, daemon, scenario",
        _run_demo,
    ),
    (
        ("simulate",),
        "send a signed test event to a running daemon (Envoy simulator)",
        _run_simulator,
    ),
    (("sandbox", "proxy"), "run the Proxy API sandbox (--listen HOST:PORT)", _run_proxy_sandbox),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="envoy-proxy",
        description="Give Envoy visitors Proxy mobile credentials and take them away on time.",
    )
    parser.add_argument("--version", action="version", version=f"envoy-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_parser = commands.add_parser("serve", help="run the daemon")
    config.add_arguments(serve_parser)
    serve_parser.set_defaults(run=_cmd_serve)
    manifest_parser = commands.add_parser(
        "manifest", help="print what to enter in Envoy's Dev Dashboard (URLs, steps, fields)"
    )
    manifest.add_arguments(manifest_parser)
    manifest_parser.set_defaults(run=manifest.run)
    admin.register(commands)
    forget.register(commands)
    migrate_db.register(commands)
    startup.add_init_command(commands)
    for words, help_text, _ in PASSTHROUGH:
        commands.add_parser(" ".join(words), help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for words, _, run in PASSTHROUGH:
        if tuple(argv[: len(words)]) == words:
            return run(argv[len(words) :])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (config.ConfigError, SecretBoxError) as error:
        print(f"envoy-proxy: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
