"""Statements peewee renders once and binds anew store and read exactly what peewee's own
queries would (db/statements.py), on either engine."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import db
from db import Action, AuditEntry, Grant, first, insert, insert_rows

TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)
EPOCH = st.integers(min_value=0, max_value=2**40)

grant_rows = st.fixed_dictionaries(
    {
        "install_id": TEXT,
        "kind": st.sampled_from(["visitor", "employee"]),
        "subject": TEXT,
        "email": st.none() | TEXT,
        "full_name": st.none() | TEXT,
        "group_ids": st.lists(TEXT, max_size=3),
        "starts_at": EPOCH,
        "ends_at": st.none() | EPOCH,
        "created_at": EPOCH,
        "updated_at": EPOCH,
    },
    optional={"on_hold": st.booleans(), "state": st.sampled_from(["pending", "active"])},
)


def _stored(model, key):
    return model.get_by_id(key).__data__


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(row=grant_rows)
def test_a_row_inserted_and_read_here_is_the_row_peewee_stores_and_reads(database, row):
    with db.database.atomic() as transaction:
        ours = insert(Grant, **row)
        theirs = Grant.create(**{**row, "subject": row["subject"] + "-peewee"}).id
        read = first(Grant, id=ours)
        assert read.__data__ == _stored(Grant, ours)
        expected = {**_stored(Grant, theirs), "id": ours, "subject": row["subject"]}
        assert read.__data__ == expected
        assert first(Grant, install_id=row["install_id"], subject=row["subject"]).id == ours
        transaction.rollback()


def test_nothing_found_is_none(database):
    assert first(Grant, id=12345) is None
    assert db.install_or_none("nobody") is None
    with pytest.raises(Grant.DoesNotExist):
        db.grant_by_id(12345)


def test_rows_inserted_together_each_get_their_defaults(database):
    with db.database.atomic():
        grant = insert(Grant, install_id="i", kind="visitor", subject="s", starts_at=1)
        insert_rows(
            Action,
            [
                {
                    "kind": kind,
                    "install_id": "i",
                    "grant": grant,
                    "due_at": at,
                    "next_attempt_at": at,
                }
                for kind, at in (("issue", 1), ("revoke", 2))
            ],
        )
    actions = list(Action.select().order_by(Action.due_at))
    assert [(a.kind, a.grant_id, a.payload, a.done, a.attempts) for a in actions] == [
        ("issue", grant, {}, False, 0),
        ("revoke", grant, {}, False, 0),
    ]
    assert first(Action, grant=grant, kind="revoke", done=False).due_at == 2


def test_rows_that_name_different_fields_are_refused(database):
    with pytest.raises(ValueError, match="same fields"):
        insert_rows(AuditEntry, [{"at": 1, "kind": "k", "actor": "a"}, {"at": 1, "kind": "k"}])


def test_a_shape_whose_parameters_are_not_its_values_is_never_kept(database):
    # `email == None` renders as IS NULL, with no parameter: binding None to it would be wrong.
    with pytest.raises(TypeError, match="not cached"):
        first(Grant, email=None)
