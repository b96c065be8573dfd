"""The watchlist: people the identity-verification hook sends to manual review, and why.

An entry names a person by email or by full name. Both are stored normalised so that a
lookup is one indexed equality: emails lower-cased, names as a `name_key` (case-folded,
Unicode-normalised, whitespace collapsed), with the name kept as given for people to read.
"""

import unicodedata

from daemon.access import audit
from db import WatchlistEntry, database, now_epoch


class WatchlistError(ValueError):
    """An entry cannot be added or found; the message says why."""


def normalise_email(email: str | None) -> str | None:
    """`  Ada@Example.COM ` → `ada@example.com`; None when there is no address."""
    if email is None:
        return None
    email = email.strip().lower()
    return email or None


def name_key(full_name: str | None) -> str | None:
    """`  ADA   lovelace ` → `ada lovelace`; None when there is no name.

    NFKC first, so that a name typed with a composed accent matches one with a combining
    accent; casefold rather than lower, so that `Straße` matches `STRASSE`.
    """
    if full_name is None:
        return None
    key = " ".join(unicodedata.normalize("NFKC", full_name).casefold().split())
    return key or None


def add(
    *, email: str | None = None, full_name: str | None = None, reason: str, now: int | None = None
) -> tuple[WatchlistEntry, bool]:
    """Add a person by email or by name; returns (entry, created).

    Adding someone who is already listed the same way returns the existing entry unchanged.
    """
    address, key = normalise_email(email), name_key(full_name)
    if (address is None) == (key is None):
        raise WatchlistError("give either an email address or a full name")
    if address is not None and ("@" not in address or any(c.isspace() for c in address)):
        raise WatchlistError(f"not an email address: {email!r}")
    reason = (reason or "").strip()
    if not reason:
        raise WatchlistError("give a reason (the reviewer reads it)")
    with database.atomic():
        existing = _find(address, key)
        if existing is not None:
            return existing, False
        entry = WatchlistEntry.create(
            email=address,
            name_key=key,
            display_name=full_name.strip() if key else None,
            reason=reason,
            created_at=now if now is not None else now_epoch(),
        )
        audit.watchlist_changed("added", entry)
    return entry, True


def _find(address: str | None, key: str | None) -> WatchlistEntry | None:
    if address is not None:
        condition = WatchlistEntry.email == address
    else:
        condition = WatchlistEntry.name_key == key
    return WatchlistEntry.select().where(condition).order_by(WatchlistEntry.id).first()


def remove(
    *, entry_id: int | None = None, email: str | None = None, full_name: str | None = None
) -> int:
    """Remove entries by id, email or name; returns how many were removed."""
    given = [value is not None for value in (entry_id, email, full_name)]
    if sum(given) != 1:
        raise WatchlistError("give exactly one of an id, an email address or a full name")
    if entry_id is not None:
        condition = WatchlistEntry.id == entry_id
    elif email is not None:
        condition = WatchlistEntry.email == normalise_email(email)
    else:
        condition = WatchlistEntry.name_key == name_key(full_name)
    with database.atomic():
        for entry in WatchlistEntry.select().where(condition):
            audit.watchlist_changed("removed", entry)
        return WatchlistEntry.delete().where(condition).execute()


def entries(limit: int | None = None) -> list[WatchlistEntry]:
    """The entries, oldest first."""
    query = WatchlistEntry.select().order_by(WatchlistEntry.id)
    if limit is not None:
        query = query.limit(limit)
    return list(query)


def count() -> int:
    return WatchlistEntry.select().count()


def match(email: str | None, full_name: str | None) -> WatchlistEntry | None:
    """The entry that lists this person, by email first, then by name; None if unlisted."""
    address, key = normalise_email(email), name_key(full_name)
    if address is not None:
        entry = _find(address, None)
        if entry is not None:
            return entry
    if key is not None:
        return _find(None, key)
    return None
