"""The reads every event and every action makes: a grant by id, an install by its id."""

from db.models import Grant, Install


def grant_by_id(grant_id: int) -> Grant:
    """The grant as stored now; `Grant.DoesNotExist` if there is none."""
    return Grant.get_by_id(grant_id)


def install_or_none(install_id: str) -> Install | None:
    return Install.get_or_none(Install.install_id == install_id)


def install_by_id(install_id: str) -> Install:
    """The install row; `Install.DoesNotExist` if there is none."""
    return Install.get(Install.install_id == install_id)
