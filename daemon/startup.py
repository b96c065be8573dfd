"""Start-up safety: one daemon per database, never a silently fresh database, never a new key.

A daemon that has run before is known by its key file. The first start creates the database
(and migrates it) before the key, so a key file beside a missing or empty database means the
database was lost — a wrong path, a truncated file — not that this is a first start: starting
on a fresh one would forget every pending ending, so the daemon refuses and the admin restores
it. Likewise a database holding encrypted Proxy secrets without its key file is a refusal,
never a new key that could not read them. `envoy-proxy init` creates a database on purpose,
for a key that exists before the first start (systemd's LoadCredential).

These refusals change nothing on disk and exit 2, like a bad setting.

On PostgreSQL (`ENVOY_PROXY_DB=postgresql://…`) the database is the admin's to create: an
empty one (no envoy-proxy tables) is what a first start or `init` fills, and the same
refusals hold for a key file beside an empty database or stored secrets without the key.
There is no lock file: several instances share the database and coordinate in it.
"""

import fcntl
import logging
import os

import peewee

import db
from daemon import config
from daemon.secretbox import SecretBox, SecretBoxError

log = logging.getLogger("envoy_proxy")

MEMORY = ":memory:"


class StartupRefused(config.ConfigError):
    """The files on disk are not what this configuration has used; the message says why."""


class InstanceLock:
    """An exclusive `flock` on `<db>.lock`, held for the life of the serving process.

    The kernel releases it when the process dies, even by SIGKILL, so unlike a pid file it is
    never stale. The file stays behind: removing it would race with a daemon starting. Admin
    commands do not take it (WAL lets them read, and their writes are short transactions).
    """

    def __init__(self, fd: int | None):
        self._fd = fd

    @classmethod
    def acquire(cls, db_path: str, *, make_directory: bool = False) -> "InstanceLock":
        if db_path == MEMORY or db.is_postgres_url(db_path):
            return cls(None)
        path = os.path.realpath(db_path) + ".lock"
        if make_directory:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StartupRefused(f"cannot open the lock file {path}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StartupRefused(
                f"another envoy-proxy is already serving the database {db_path} (it holds "
                f"{path}); two daemons on one database would take each other's work"
            ) from None
        return cls(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the lock
            self._fd = None


def lock_database(cfg: config.Config) -> InstanceLock:
    """Take the database's instance lock before anything else looks at the files.

    The database's directory is created only when this may be a first start (no key file):
    a daemon that has run before and finds no directory leaves nothing behind.
    """
    has_run = os.path.exists(cfg.key_file)
    if has_run and _is_file(cfg.db) and not os.path.isdir(os.path.dirname(os.path.abspath(cfg.db))):
        raise _lost_database(cfg, "does not exist")
    return InstanceLock.acquire(cfg.db, make_directory=not has_run)


def _is_file(location: str) -> bool:
    return location != MEMORY and not db.is_postgres_url(location)


def _blank(location: str) -> bool:
    """A file missing or of 0 bytes: nothing SQLite would find in it. (An empty PostgreSQL
    database is told by its schema version, once connected.)"""
    return _is_file(location) and (not os.path.exists(location) or os.path.getsize(location) == 0)


def _connect(location: str, *, create: bool) -> None:
    """Open the database and make sure it answers: a server that cannot be reached is a
    refusal naming the server (never its password), not a traceback; so is a missing driver."""
    try:
        db.open_database(location, create=create)
        with db.database.connection_context():
            pass
    except (peewee.OperationalError, peewee.ImproperlyConfigured) as error:
        db.close_database()
        raise StartupRefused(
            f"cannot connect to the database {db.describe_location(location)}: {str(error).strip()}"
        ) from None


def _lost_database(cfg: config.Config, what: str) -> StartupRefused:
    where = db.describe_location(cfg.db)
    return StartupRefused(
        f"the database {where} {what}, but the key file {cfg.key_file} shows that a daemon "
        f"has run with this configuration: starting on an empty database would forget every "
        f"pending ending. Restore the database from a backup (or fix ENVOY_PROXY_DB / --db); "
        f"to start afresh on purpose, remove the key file too, or run `envoy-proxy init`"
    )


def open_state(cfg: config.Config) -> SecretBox:
    """Open (or on a first start create) and migrate the database, then load the key.

    Every check runs before anything is written: a refusal leaves the files as they were.
    """
    has_run = os.path.exists(cfg.key_file)
    if _blank(cfg.db) and has_run:
        raise _lost_database(
            cfg, "is empty (0 bytes)" if os.path.exists(cfg.db) else "does not exist"
        )
    _connect(cfg.db, create=_blank(cfg.db))
    try:
        with db.database.connection_context():
            version = db.schema_version()
            first_start = version == 0
            if first_start and has_run and cfg.db != MEMORY:
                raise _lost_database(cfg, "holds no envoy-proxy tables")
            sealed = _a_stored_secret() if version else None
            if sealed is not None and not has_run:
                raise StartupRefused(
                    f"the key file {cfg.key_file} is missing, but the database "
                    f"{db.describe_location(cfg.db)} holds Proxy secrets encrypted with it; a "
                    f"new key could not read them. Restore the key file (from the backup, or "
                    f"the credential systemd hands in)"
                )
            db.migrate()
        box = SecretBox.from_key_file(cfg.key_file, create=sealed is None)
        if first_start:
            log.info(
                "first start: created the database %s and the key file %s",
                db.describe_location(cfg.db),
                cfg.key_file,
            )
        if sealed is not None:
            _check_key(box, cfg, sealed)
        return box
    except BaseException:
        db.close_database()
        raise


def _a_stored_secret() -> str | None:
    row = (
        db.Install.select(db.Install.proxy_secret)
        .where(db.Install.proxy_secret.is_null(False))
        .first()
    )
    return row.proxy_secret if row else None


def _check_key(box: SecretBox, cfg: config.Config, sealed: str) -> None:
    """A key that cannot read the stored secrets would fail every Proxy call: refuse now."""
    try:
        box.decrypt(sealed)
    except SecretBoxError:
        raise StartupRefused(
            f"the key file {cfg.key_file} does not decrypt the Proxy secrets stored in "
            f"{db.describe_location(cfg.db)} (was it replaced?); restore the key file that "
            "belongs to this database"
        ) from None


def open_existing(path: str) -> None:
    """Open a database the daemon has created, for the admin commands: never create one."""
    if _blank(path):
        raise StartupRefused(
            f"no database at {path}: point ENVOY_PROXY_DB or --db at the daemon's database"
            + (" (that file is empty)" if os.path.exists(path) else "")
        )
    _connect(path, create=False)
    with db.database.connection_context():
        version = db.schema_version()
    if version == 0 and path != MEMORY:
        db.close_database()
        raise StartupRefused(
            f"{db.describe_location(path)} holds no envoy-proxy tables: not the daemon's database"
        )


def init(cfg: config.Config) -> None:
    """Create an empty, migrated database on purpose; refuse if one is already there.

    The instance lock keeps a daemon from starting on the file while it is being made. On
    PostgreSQL the admin creates the database; `init` fills an empty one with the tables.
    """
    where = db.describe_location(cfg.db)
    if _is_file(cfg.db) and not _blank(cfg.db):
        raise StartupRefused(f"{cfg.db} already exists: `init` only creates a new database")
    lock = InstanceLock.acquire(cfg.db, make_directory=True)
    try:
        _connect(cfg.db, create=True)
        with db.database.connection_context():
            if db.schema_version() != 0:
                raise StartupRefused(
                    f"{where} already holds envoy-proxy tables: `init` only fills an empty database"
                )
            db.migrate()
        print(f"created the database {where}")
    finally:
        db.close_database()
        lock.release()


def add_init_command(commands) -> None:
    parser = commands.add_parser(
        "init",
        help="create a new, empty database on purpose (serve refuses to once a key file exists)",
    )
    config.add_arguments(parser.add_argument_group("settings (only the database is needed)"))
    parser.set_defaults(run=lambda args: init(config.load(args, require=False)) or 0)
