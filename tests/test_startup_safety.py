"""Start-up safety, with the real process: one daemon per database, never a silently fresh
database, never a new key beside stored secrets (README, "First start, and refusals")."""

import signal
import subprocess
import sys
import time

import pytest
from cryptography.fernet import Fernet

from daemon.__main__ import main
from tests.fixtures.daemon_process import prepare_install

# The database file, its lock file and its path; PostgreSQL's refusals: tests/test_postgres.py.
pytestmark = pytest.mark.sqlite_only


def _files(tmp_path):
    state = tmp_path / "state"
    return state / "daemon.sqlite3", state / "secret.key"


def _refusal(daemon) -> str:
    """The daemon exits 2 by itself, quickly, and says why."""
    assert daemon.process.wait(timeout=10) == 2, daemon.log()
    return daemon.log()


def _run_once(start_daemon) -> None:
    daemon = start_daemon()
    daemon.wait_healthy()
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=10) == 0


def _init(database) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daemon", "init", "--db", str(database)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_first_start_creates_the_database_key_and_lock_file_privately(start_daemon, tmp_path):
    _run_once(start_daemon)
    database, key = _files(tmp_path)
    for path in (database, key, database.with_name(database.name + ".lock")):
        assert path.stat().st_mode & 0o777 == 0o600, path
    start_daemon().wait_healthy()  # and the next start uses them


def test_a_daemon_that_has_run_refuses_a_truncated_database(start_daemon, tmp_path):
    _run_once(start_daemon)
    database, key = _files(tmp_path)
    database.write_bytes(b"")
    log = _refusal(start_daemon())
    assert f"the database {database} is empty (0 bytes)" in log
    assert str(key) in log and "Restore the database from a backup" in log
    assert database.stat().st_size == 0


def test_a_daemon_that_has_run_refuses_a_missing_database(start_daemon, tmp_path):
    prepare_install(tmp_path / "state")
    database, _ = _files(tmp_path)
    database.unlink()
    log = _refusal(start_daemon())
    assert f"the database {database} does not exist" in log
    assert not database.exists()


def test_a_wrong_database_path_is_refused_and_creates_nothing(start_daemon, tmp_path):
    prepare_install(tmp_path / "state")
    wrong = tmp_path / "typo" / "daemon.sqlite3"
    log = _refusal(start_daemon(ENVOY_PROXY_DB=str(wrong)))
    assert f"the database {wrong} does not exist" in log
    assert not wrong.parent.exists()


def test_a_missing_key_file_beside_stored_secrets_is_refused_never_replaced(start_daemon, tmp_path):
    prepare_install(tmp_path / "state")
    database, key = _files(tmp_path)
    key.unlink()
    before = database.read_bytes()
    log = _refusal(start_daemon())
    assert f"the key file {key} is missing" in log and str(database) in log
    assert not key.exists()
    assert database.read_bytes() == before


def test_a_missing_key_file_is_made_again_while_no_secret_is_stored(start_daemon, tmp_path):
    _run_once(start_daemon)
    _, key = _files(tmp_path)
    key.unlink()
    start_daemon().wait_healthy()
    assert key.stat().st_mode & 0o777 == 0o600


def test_a_replaced_key_file_is_refused(start_daemon, tmp_path):
    prepare_install(tmp_path / "state")
    _, key = _files(tmp_path)
    key.write_bytes(Fernet.generate_key())
    log = _refusal(start_daemon())
    assert f"the key file {key} does not decrypt" in log


def test_a_second_daemon_on_the_same_database_exits_at_once(start_daemon, tmp_path):
    first = start_daemon()
    first.wait_healthy()
    started = time.monotonic()
    log = _refusal(start_daemon())
    assert time.monotonic() - started < 5
    database, _ = _files(tmp_path)
    assert f"another envoy-proxy is already serving the database {database}" in log
    assert first.wait_healthy()["status"] == "ok"
    first.process.kill()  # SIGKILL: no clean-up, the kernel drops the lock
    first.process.wait()
    start_daemon().wait_healthy()


def test_admin_commands_run_beside_the_daemon_without_its_lock(start_daemon, tmp_path, capsys):
    daemon = start_daemon()
    daemon.wait_healthy()
    database, _ = _files(tmp_path)
    assert main(["status", "--db", str(database)]) == 0
    assert "schema" in capsys.readouterr().out
    assert daemon.process.poll() is None


def test_admin_commands_leave_an_empty_database_empty(tmp_path, capsys):
    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")
    assert main(["status", "--db", str(empty)]) == 2
    assert f"no database at {empty}" in capsys.readouterr().err
    assert empty.stat().st_size == 0


def test_init_creates_the_database_for_a_key_handed_in_before_the_first_start(
    start_daemon, tmp_path
):
    database, key = _files(tmp_path)
    key.parent.mkdir()
    key.write_bytes(Fernet.generate_key())  # as systemd's LoadCredential hands it in
    key.chmod(0o400)
    assert "envoy-proxy init" in _refusal(start_daemon())
    created = _init(database)
    assert created.returncode == 0, created.stderr
    assert database.stat().st_mode & 0o777 == 0o600
    start_daemon().wait_healthy()
    again = _init(database)
    assert again.returncode == 2
    assert f"{database} already exists" in again.stderr
