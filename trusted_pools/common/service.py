"""Running a service: periodic jobs in threads, graceful stop on signals.

oslo.service's default backend is eventlet, which is deprecated; these
services use oslo.messaging's threading executor and plain threads, so the
little that is needed of a service runner lives here.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from typing import Callable, Protocol

LOG = logging.getLogger(__name__)


class PeriodicJob:
    """Call ``fn`` every ``spacing`` seconds (plus up to ``jitter``) in a
    thread until stopped. An exception is logged and the job goes on: one
    bad round must not stop attestation."""

    def __init__(self, name: str, fn: Callable[[], object], spacing: float,
                 jitter: float = 0.0, initial_delay: float = 0.0) -> None:
        self.name = name
        self._fn = fn
        self._spacing = spacing
        self._jitter = jitter
        self._initial_delay = initial_delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name,
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        delay = self._initial_delay
        while not self._stop.wait(delay):
            try:
                self._fn()
            except Exception:  # noqa: BLE001 - keep the service alive
                LOG.exception("Periodic job %s failed; retrying in %.1f s",
                              self.name, self._spacing)
            delay = self._spacing + random.uniform(0, self._jitter)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and \
                threading.current_thread() is not self._thread:
            self._thread.join(timeout)


class Service(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def run_until_signalled(service: Service) -> int:
    """Start ``service``; stop it gracefully on SIGTERM or SIGINT."""
    stopping = threading.Event()

    def _handler(signum: int, _frame: object) -> None:
        LOG.info("Signal %s received: stopping", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)
    service.start()
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        service.stop()
    return 0
