"""Host operations as the API shows them, and waiting for one.

Enroll, attest and capture run on the owning conductor's worker pool
(conductor RPC 3.0); the conductor records each as a row of
``host_operations`` (pending, then done with a result or failed with a
typed error). From microversion 1.1 the API answers ``202 Accepted`` with
the operation and its ``Location``; at 1.0 it waits for the row to end
(:func:`wait`, up to ``[trusted_pools_api] rpc_timeout``) and answers as
before.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from trusted_pools import exception
from trusted_pools.db import api as db_api

__all__ = ["error_of", "result_or_raise", "wait", "path"]


def path(operation: db_api.HostOperation) -> str:
    """Where the operation is polled (relative to the API's root)."""
    return "/v1/hosts/%s/operations/%s" % (operation.hostname,
                                           operation.id)


def error_of(operation: db_api.HostOperation
             ) -> exception.TrustedPoolsError | None:
    """The typed error a failed operation recorded (the class the
    conductor raised, with its message and keyword arguments)."""
    if operation.state != "failed":
        return None
    recorded = operation.error if isinstance(operation.error, dict) else {}
    cls = getattr(exception, operation.error_type or "", None)
    if not (isinstance(cls, type) and
            issubclass(cls, exception.TrustedPoolsError)):
        cls = exception.TrustedPoolsError
    kwargs = recorded.get("kwargs")
    if not isinstance(kwargs, dict):
        kwargs = {}
    message = recorded.get("message")
    try:
        return cls(message if isinstance(message, str) else None, **kwargs)
    except TypeError:
        return exception.TrustedPoolsError(
            message if isinstance(message, str) else None)


def result_or_raise(operation: db_api.HostOperation) -> Any:
    """A done operation's result; a failed one's error is raised."""
    error = error_of(operation)
    if error is not None:
        raise error
    if operation.state != "done":
        raise exception.TemporaryFailure(
            reason="operation %s on host %s is still pending; poll %s"
            % (operation.id, operation.hostname, path(operation)))
    return operation.result


def wait(db: db_api.Connection, operation_id: str, timeout: float,
         interval: float = 0.1,
         clock: Callable[[], float] = time.monotonic
         ) -> db_api.HostOperation:
    """Poll the operation's row until it ends or ``timeout`` seconds
    pass; returns the last row read (pending if it did not end)."""
    deadline = clock() + timeout
    delay = min(interval, 0.05)
    while True:
        operation = db.get_operation(operation_id)
        if operation.state != "pending" or clock() >= deadline:
            return operation
        time.sleep(min(delay, max(0.0, deadline - clock())))
        delay = min(delay * 2, interval * 5)
