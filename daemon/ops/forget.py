"""`envoy-proxy forget --email ADDRESS`: a data-subject request, carried out at once.

Everything kept about the address is erased as retention would, whatever its age, and the
Proxy persons we created for it are removed. Someone with access now or to come (on site, or
invited) is refused unless `--end-access` is given: forgetting a person ends their door
access, and that is the admin's choice to make, not a side effect.
"""

import dataclasses
import logging
import os

import db
from daemon.access import audit, grants, jobs, outbox, retention, watchlist
from daemon.ops.admin import ADMIN_PROXY_BUDGET, EXIT_OK, EXIT_QUEUED, AdminError, _add, _settings
from daemon.proxy.client import ProxyUnavailable
from db import LIVE_STATES, now_epoch

log = logging.getLogger("envoy_proxy.forget")


def record(erased: retention.Erased) -> None:
    """Keep the request in the audit trail, naming no one (the address was just erased from
    the trail too); the log line names no one either."""
    with db.database.atomic():
        audit.record(
            audit.ADMIN,
            reason="forget: a data-subject request erased one person's data",
            details={"rows": dict(erased.rows), "proxy_persons": dict(erased.persons)},
            actor=audit.cli_actor(),
        )
    log.info("forget: a data-subject request erased %s", erased.summary())


def _live(email: str) -> list[db.Grant]:
    return [g for g in retention.grants_of(email) if g.state in LIVE_STATES]


def _context(cfg):
    # Imported here: the other admin commands need neither the HTTP clients nor the key.
    from daemon.context import Context
    from daemon.secretbox import SecretBox

    if not os.path.exists(cfg.key_file):
        raise AdminError(
            f"key file {cfg.key_file} not found: Proxy cannot be called from here, so the "
            "persons we created cannot be removed; nothing was erased"
        )
    ctx = Context.build(cfg, SecretBox.from_key_file(cfg.key_file))
    return dataclasses.replace(ctx, proxy=ctx.proxy.limited(ADMIN_PROXY_BUDGET))


def _end_access(ctx, live: list[db.Grant], now: int) -> None:
    """End each live grant now, and in Proxy at once where it answers."""
    from daemon.access.runner import execute

    for grant in live:
        with db.database.atomic():
            action_id = grants.end_at(grant, now, now)
            jobs.settle(grant.id, now)
        claimed = None if action_id is None else outbox.claim_one(action_id, now)
        if claimed is not None:
            execute(ctx, claimed, now)


def _describe(grant: db.Grant) -> str:
    return f"grant {grant.id} {grant.state} ({grant.install_id}, {grant.subject})"


def _forget(args, cfg) -> int:
    email = args.email.strip()
    if "@" not in email:
        raise AdminError(f"{email!r} is not an email address")
    live = _live(email)
    if live and not args.end_access:
        raise AdminError(
            f"{email} has door access now or to come ({'; '.join(map(_describe, live))}): "
            "nothing was erased. Pass --end-access to end it now and erase, or run forget "
            "again once it has ended"
        )
    ctx = _context(cfg)
    try:
        _end_access(ctx, live, now_epoch())
        if still := _live(email):
            print(
                f"{email}: access ending is recorded but Proxy has not confirmed it "
                f"({'; '.join(map(_describe, still))}); the daemon finishes it. Nothing was "
                "erased: run forget again once it has ended"
            )
            return EXIT_QUEUED
        erased = retention.forget(ctx, email)
    except ProxyUnavailable as error:
        raise AdminError(f"{error}; run forget again") from None
    finally:
        ctx.proxy.close()
    record(erased)
    print(f"forgot {email}: erased {erased.summary()}")
    return _leftovers(email)


def _leftovers(email: str) -> int:
    """Say what was kept on purpose, and whether to run again."""
    listed = watchlist.match(email, None)
    if listed is not None:
        print(
            f"kept: watchlist entry {listed.id} (an admin's list; `envoy-proxy watchlist "
            f"remove --id {listed.id}` removes it)"
        )
    waiting = retention.waiting_deliveries(email)
    if waiting:
        print(
            f"kept: {waiting} delivery(ies) naming {email} still waiting to be planned "
            "(quarantined; they may end access): run forget again once they are planned"
        )
        return EXIT_QUEUED
    return EXIT_OK


def register(commands) -> None:
    """Add `forget` to the top-level `envoy-proxy` subparsers."""
    parser = _add(
        commands,
        "forget",
        "erase everything kept about one email address now (a data-subject request)",
        _forget,
        "Erase every name, email, phone and photo kept about ADDRESS, whatever its age, and "
        "remove from Proxy the persons this daemon created for it (never one that existed "
        "before). Refused while ADDRESS has access now or to come, unless --end-access.",
    )
    parser.add_argument("--email", required=True, metavar="ADDRESS")
    parser.add_argument(
        "--end-access",
        action="store_true",
        help="end the person's live access now (on site, or invited) and then erase",
    )
    _settings(parser)
