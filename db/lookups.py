"""The reads every event and every action makes: a grant by id, an install by its id."""

from db.models import Grant, Install
from db.statements import first


def grant_by_id(grant_id: int) -> Grant:
    """The grant as stored now; `Grant.DoesNotExist` if there is none."""
    grant = first(Grant, id=grant_id)
    if grant is None:
        raise Grant.DoesNotExist(f"no grant {grant_id}")
    return grant


def install_or_none(install_id: str) -> Install | None:
    return first(Install, install_id=install_id)


def install_by_id(install_id: str) -> Install:
    """The install row; `Install.DoesNotExist` if there is none."""
    install = install_or_none(install_id)
    if install is None:
        raise Install.DoesNotExist(f"no install {install_id}")
    return install
