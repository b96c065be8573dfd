"""Prepared statements (db/prepared.py): rendered once, values bound and converted per run."""

import peewee
import pytest
import time_machine

from db import Action, Event, Grant
from db.prepared import NewRows, Prepared, Slot, SlotList

GRANTS_OF_EMAIL = Prepared(
    lambda: (
        Grant.select()
        .where((Grant.email == Slot("email")) & (Grant.state == "pending"))
        .order_by(Grant.id)
    )
)
ACTIONS_OF_GRANT = Prepared(
    lambda: Action.select(Action.id, Action.payload, Action.done).where(
        Action.grant == Slot("grant")
    )
)
SET_GROUPS = Prepared(
    lambda: Grant.update({Grant.group_ids: Slot("groups", Grant.group_ids)}).where(
        Grant.id == Slot("id")
    )
)


def _grant(**values) -> Grant:
    fields = dict(install_id="i", kind="visitor", subject="entries:1", starts_at=1)
    return Grant.create(**{**fields, **values})


def test_a_select_binds_new_values_on_every_run_and_builds_models_like_peewee(database):
    first = _grant(email="a@example.com", group_ids=["g1"])
    _grant(subject="entries:2", email="b@example.com", state="active")
    _grant(subject="entries:3", email="b@example.com", group_ids=["g2", "g3"])

    for email in ("a@example.com", "b@example.com", "nobody@example.com"):
        expected = list(
            Grant.select()
            .where((Grant.email == email) & (Grant.state == "pending"))
            .order_by(Grant.id)
        )
        found = GRANTS_OF_EMAIL.all(email=email)
        assert [g.__data__ for g in found] == [g.__data__ for g in expected]
    assert GRANTS_OF_EMAIL.first(email="a@example.com").group_ids == first.group_ids == ["g1"]
    assert GRANTS_OF_EMAIL.first(email="nobody@example.com") is None


def test_selected_fields_are_converted_and_instances_start_clean(database):
    grant = _grant()
    Action.create(grant=grant, install_id="i", kind="issue", due_at=1, next_attempt_at=1,
                  payload={"jobs": ["j1"]}, done=True)  # fmt: skip

    [action] = ACTIONS_OF_GRANT.all(grant=grant.id)
    assert action.payload == {"jobs": ["j1"]}
    assert action.done is True
    assert action._dirty == set()


def test_a_slot_in_an_update_converts_its_value_as_its_field_does(database):
    grant = _grant()
    with database.atomic():
        assert SET_GROUPS.run(groups=["g2", "g1"], id=grant.id) == 1
        assert SET_GROUPS.run(groups=[], id=grant.id + 100) == 0
    assert Grant.get_by_id(grant.id).group_ids == ["g2", "g1"]


def test_new_rows_fill_in_the_models_defaults_per_row(database):
    new_grants = NewRows(Grant)
    with time_machine.travel(1_800_000_000, tick=False), database.atomic():
        early = new_grants.add(install_id="i", kind="visitor", subject="s1", starts_at=5)
    with time_machine.travel(1_800_000_100, tick=False), database.atomic():
        late = new_grants.add(install_id="i", kind="visitor", subject="s2", starts_at=5)

    assert Grant.get_by_id(early.id).created_at == 1_800_000_000
    stored = Grant.get_by_id(late.id)
    assert (stored.created_at, stored.state, stored.group_ids) == (1_800_000_100, "pending", [])


def test_new_rows_insert_several_and_keep_the_databases_errors(database):
    new_events = NewRows(Event)
    row = dict(job_id="j1", event="entry_sign_in", install_id="i", status=202, answer={})
    with database.atomic():
        new_events.add_many([row, {**row, "job_id": "j2"}])
    assert sorted(e.job_id for e in Event.select()) == ["j1", "j2"]

    with pytest.raises(peewee.IntegrityError), database.atomic():
        new_events.add_many([{**row, "job_id": "j3"}, row])  # j1 again: unique job id
    assert Event.select().count() == 2  # the whole statement rolled back


def test_a_prepared_insert_refuses_a_constant_that_would_be_frozen(database):
    frozen = Prepared(lambda: Event.insert(job_id=Slot("job_id"), event="x", install_id="i"))
    with pytest.raises(TypeError, match="slot every column"):
        frozen.run(job_id="j1")


def test_a_slot_list_binds_a_list_of_any_length_as_one_statement(database):
    ids = [_grant(subject=f"entries:{n}").id for n in range(5)]
    among = Prepared(
        lambda: Grant.select(Grant.id).where(Grant.id.in_(SlotList("ids"))).order_by(Grant.id)
    )
    assert [g.id for g in among.all(ids=ids[1:4])] == ids[1:4]
    assert [g.id for g in among.all(ids=[ids[0]])] == [ids[0]]
    assert among.all(ids=[]) == []
    assert among.scalar(ids=ids[::-1]) == ids[0]
    assert among.scalar(ids=[]) is None
