"""`db.engine.is_unreachable`: which failures are a database outage (503, retry) and which are
faults (500)."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError, OperationalError

from db.engine import is_unreachable


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        raise exc from cause
    except BaseException as caught:
        return caught


def test_driver_outages_are_unreachable() -> None:
    assert is_unreachable(OperationalError("SELECT 1", {}, OSError("refused")))
    shutdown = type("AdminShutdownError", (Exception,), {})
    assert is_unreachable(_raised(shutdown("terminating connection")))


def test_faults_are_not() -> None:
    assert not is_unreachable(ValueError("bad value"))
    assert not is_unreachable(IntegrityError("INSERT", {}, Exception("duplicate key")))
    # A timeout or OSError of the worker's own code is not a database outage.
    assert not is_unreachable(_raised(TimeoutError()))
    assert not is_unreachable(_raised(FileNotFoundError("journal")))
