"""Uninstalling: Envoy's `plugin_uninstalled` (or `envoy-proxy uninstall`) ends every live
access of the install in Proxy, cancels what was never issued, refuses the install's later
events, erases its Proxy secret once the endings are done, and says so in the audit trail."""

import getpass
import time

import time_machine

import db
from daemon.__main__ import main
from daemon.access import audit
from daemon.envoy.manifest import EVENTS
from sandbox import envoy

FLOW = "flow-visitor"


def _status_soon(daemon, email="ada@example.com") -> str:
    """The Proxy person's status a minute from now: past the clock margin of a suspension
    scheduled now, well before the safety net scheduled at the visit's end."""
    with time_machine.travel(time.time() + 60):
        [person] = daemon.persons(email)
    return person["status"]


def _walk_in(daemon, entry_id: str, email: str, full_name: str) -> dict:
    return daemon.entry(entry_id=entry_id, email=email, full_name=full_name, flow_id=FLOW,
                        signed_in_at=time.time())  # fmt: skip


def _visitors(daemon):
    """Ada signed in (access in Proxy now) and Grace invited for tomorrow (not yet issued)."""
    daemon.install()
    answer = daemon.deliver(_walk_in(daemon, "e-1", "ada@example.com", "Ada Lovelace"))
    assert answer.status_code == 200, answer.text
    answer = daemon.send(
        daemon.invite(
            invite_id="i-1",
            email="grace@example.com",
            full_name="Grace Hopper",
            flow_id=FLOW,
            expected_arrival=time.time() + 86400,
        )
    )
    assert answer.status_code == 200, answer.text
    assert _status_soon(daemon) == "active"


def _install(daemon) -> db.Install:
    with db.database.connection_context():
        return db.Install.get_by_id(daemon.install_id)


def _kinds(install_id) -> list[tuple]:
    with db.database.connection_context():
        return [
            (e.kind, e.reason, e.actor)
            for e in db.AuditEntry.select()
            .where(db.AuditEntry.install_id == install_id)
            .order_by(db.AuditEntry.id)
        ]


def _states(daemon) -> dict[str, str]:
    return {g.email: g.state for g in daemon.grants()}


def test_the_manifest_subscribes_the_event():
    assert envoy.UNINSTALL_EVENT in EVENTS


def test_plugin_uninstalled_ends_access_in_proxy_and_erases_the_secret(daemon):
    _visitors(daemon)
    answer = daemon.send(envoy.uninstall_event(install_id=daemon.install_id))
    assert answer.status_code == 200, answer.text
    assert "1 access(es) ending" in answer.json()["message"]
    assert _states(daemon) == {"ada@example.com": "active", "grace@example.com": "cancelled"}
    assert _install(daemon).proxy_secret is not None  # the ending still needs it
    daemon.run_due()
    assert _states(daemon) == {"ada@example.com": "ended", "grace@example.com": "cancelled"}
    assert _status_soon(daemon) == "suspended"
    assert daemon.persons("ada@example.com")[0]["tags"] == []
    install = _install(daemon)
    assert install.proxy_secret is None and install.uninstalled_at is not None
    story = _kinds(daemon.install_id)
    assert (audit.CANCELLED, "uninstall", audit.ENVOY) in story
    assert (audit.END_REQUESTED, "uninstall", audit.ENVOY) in story
    assert (audit.UNINSTALLED, None, audit.ENVOY) in story
    assert (audit.ENDED, "uninstall", audit.DAEMON) in story
    assert story[-1] == (audit.SECRET_ERASED, "uninstall", audit.DAEMON)


def test_an_uninstalled_install_gives_no_more_access(daemon):
    _visitors(daemon)
    assert daemon.send(envoy.uninstall_event(install_id=daemon.install_id)).status_code == 200
    answer = daemon.send(_walk_in(daemon, "e-2", "alan@example.com", "Alan Turing"))
    assert answer.status_code == 412 and "uninstalled" in answer.json()["message"]
    assert "alan@example.com" not in _states(daemon)


def test_the_secret_stays_until_proxy_has_ended_the_access(daemon):
    _visitors(daemon)
    daemon.proxy.add_fault(status=503)
    assert daemon.send(envoy.uninstall_event(install_id=daemon.install_id)).status_code == 200
    daemon.run_due()
    assert _states(daemon)["ada@example.com"] == "active"
    assert _install(daemon).proxy_secret is not None
    daemon.proxy.clear_faults()
    [revoke] = [a for a in daemon.actions() if a.kind == "revoke" and not a.done]
    with time_machine.travel(revoke.next_attempt_at + 1, tick=False):
        daemon.run_due()
    assert _states(daemon)["ada@example.com"] == "ended"
    assert _install(daemon).proxy_secret is None


def test_an_install_with_nothing_live_loses_its_secret_at_once(daemon):
    daemon.install()
    assert daemon.send(envoy.uninstall_event(install_id=daemon.install_id)).status_code == 200
    assert _install(daemon).proxy_secret is None


def test_a_repeated_delivery_changes_nothing_more(daemon):
    _visitors(daemon)
    body = envoy.uninstall_event(install_id=daemon.install_id)
    first = daemon.send(body)
    again = daemon.send(body)
    assert again.status_code == first.status_code and again.json() == first.json()
    assert [k for k, _, _ in _kinds(daemon.install_id)].count(audit.UNINSTALLED) == 1


def test_the_cli_uninstalls_when_envoy_cannot_reach_us(daemon, capsys):
    _visitors(daemon)
    cfg = daemon.ctx.config
    code = main(
        [
            "uninstall",
            "--install",
            daemon.install_id,
            "--db",
            cfg.db,
            "--key-file",
            cfg.key_file,
            "--proxy-api-url",
            cfg.proxy_api_url,
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "every access ended in Proxy" in out
    assert _states(daemon) == {"ada@example.com": "ended", "grace@example.com": "cancelled"}
    assert _status_soon(daemon) == "suspended"
    assert _install(daemon).proxy_secret is None
    user = f"cli:{getpass.getuser()}"
    assert (audit.UNINSTALLED, None, user) in _kinds(daemon.install_id)


def test_the_cli_refuses_an_unknown_install(daemon, capsys):
    code = main(["uninstall", "--install", "nope", "--db", daemon.ctx.config.db])
    assert code == 1 and "no install nope" in capsys.readouterr().err


def test_the_simulator_sends_the_event(daemon, capsys):
    daemon.install()
    code = envoy.main(
        [
            "--daemon",
            daemon.url,
            "--secret",
            "sim-secret",
            "event",
            envoy.UNINSTALL_EVENT,
            "--install-id",
            daemon.install_id,
        ]
    )
    assert code == 0
    assert "uninstalled" in capsys.readouterr().out
    assert _install(daemon).uninstalled_at is not None


def test_an_unknown_install_has_nothing_to_uninstall(daemon):
    answer = daemon.send(envoy.uninstall_event(install_id="never-seen"))
    assert answer.status_code == 200
    assert "nothing was stored" in answer.json()["message"]
    with db.database.connection_context():
        assert db.Install.get_or_none(install_id="never-seen") is None


def test_installing_again_with_a_new_secret_gives_access_again(daemon):
    _visitors(daemon)
    assert daemon.send(envoy.uninstall_event(install_id=daemon.install_id)).status_code == 200
    daemon.run_due()
    path = "/envoy/setup/proxy-access"
    access = {"proxy_app_key": "app-key", "proxy_app_secret": "app-secret", "proxy_org_id": "org-1"}
    body = envoy.route_body(path, payload=access, config={}, install_id=daemon.install_id)
    assert daemon.send(body, path=path).status_code == 200
    assert _install(daemon).uninstalled_at is None
    answer = daemon.deliver(_walk_in(daemon, "e-2", "alan@example.com", "Alan Turing"))
    assert answer.status_code == 200, answer.text
    assert _states(daemon)["alan@example.com"] == "active"
