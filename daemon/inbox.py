"""The inbox: every accepted Envoy delivery is on disk, unique on its job id, before we answer.

Deliveries from concurrent webhooks are stored together in group commits (one transaction,
one fsync for all of them). A delivery is stored with its raw body until it is planned
(`daemon.planning`), and with the answer a repeat of it gets: 202 until it is planned, then
whatever planning decided. A repeated job id changes nothing and gets the stored answer.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from daemon.batching import Batcher
from daemon.envoy_request import Answer
from db import Event, database
from db.prepared import NewRows, Prepared, Slot

ACCEPTED = Answer.message(202, "accepted; the job is updated when the change is done")


@dataclass(frozen=True)
class Delivery:
    job_id: str
    event: str
    install_id: str
    entity: str | None
    received_at: int
    raw: str | None  # None: decided at once (`answer` is final), nothing left to plan
    answer: Answer = ACCEPTED


_ANSWER_OF_JOB = Prepared(
    lambda: Event.select(Event.status, Event.answer).where(Event.job_id == Slot("job_id"))
)
_NEW_EVENTS = NewRows(Event)


def _store(deliveries: Sequence[Delivery]) -> list[Answer | None]:
    """Insert the new ones; None for a stored delivery, the earlier answer for a repeat."""
    with database.atomic():
        known: dict[str, Answer] = {}
        for job_id in {d.job_id for d in deliveries}:
            stored = _ANSWER_OF_JOB.first(job_id=job_id)
            if stored is not None:
                known[job_id] = Answer(stored.status, stored.answer)
        rows, results = [], []
        for delivery in deliveries:
            if delivery.job_id in known:
                results.append(known[delivery.job_id])
                continue
            known[delivery.job_id] = delivery.answer  # the same job twice in one batch
            results.append(None)
            rows.append(
                {
                    "job_id": delivery.job_id,
                    "event": delivery.event,
                    "install_id": delivery.install_id,
                    "entity": delivery.entity,
                    "received_at": delivery.received_at,
                    "status": delivery.answer.status,
                    "answer": delivery.answer.body,
                    "body": delivery.raw,
                }
            )
        _NEW_EVENTS.add_many(rows)
    return results


class Inbox:
    """Stores deliveries; one per process, shared by every webhook thread."""

    def __init__(self) -> None:
        self._group = Batcher(_store)

    def store(self, delivery: Delivery) -> Answer | None:
        """Commit the delivery; None if it is new, else the answer its first copy got."""
        return self._group.submit(delivery)
