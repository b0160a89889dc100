"""oslo.service's threading backend, chosen before oslo.messaging loads.

Kept apart from :mod:`trusted_pools.common.service` so that a command that
runs no service (``trusted-pools-manage evidence verify``) can choose the
backend without loading it: loading it imports futurist, which imports
eventlet (0.35 s here, and a deprecation warning).
"""

from __future__ import annotations

from oslo_service import backend

from trusted_pools import exception


def select_threading_backend() -> None:
    """Choose oslo.service's threading backend for this process (the
    console scripts call it before importing oslo.messaging)."""
    try:
        backend.init_backend(backend.BackendType.THREADING)
    except backend.exceptions.BackendAlreadySelected as error:
        raise exception.ConfigInvalid(
            reason="oslo.service already runs another backend in this "
                   "process (%s); trusted_pools services need the "
                   "threading backend" % error) from error


def _threading() -> backend.BackendType:
    return backend.BackendType.THREADING


def prefer_threading_backend() -> None:
    """Make threading the backend oslo.service loads on first use, without
    loading it now. A process that already chose a backend (Nova's, a
    test's) keeps it; :func:`select_threading_backend` is the strict form,
    for the moment a service launches."""
    backend.register_backend_default_hook(_threading)
