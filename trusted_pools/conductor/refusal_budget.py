"""How many key-release refusals a conductor writes to the database.

Why a budget: anyone holding the ``service`` role may ask for a release
(``GET /v1/secrets/{id}?host=``), and every compute host's Nova holds that
role. A compromised host can ask again and again, for any secret and in
any name (an unregistered name is refused as ``not_registered`` with the
name it chose), and before this budget each refusal was a new
``key_releases`` row: the table, and every page that lists it, grew as
fast as the host could ask.

What it bounds: a refusal identical to one recorded less than
:data:`REPEAT_WINDOW` seconds ago (same secret, host and reason code) is
not recorded again, and at most :data:`RECORDS_PER_MINUTE` refusals a
minute are recorded by this conductor (a token bucket: a burst of that
many, then one each ``60 / RECORDS_PER_MINUTE`` seconds). The key
service keeps two budgets: one for refusals to names that are no
registered host (the cheapest flood: any name will do), one for the
rest, so such a flood leaves the refusals to real hosts recorded.
Refusals beyond them are still refused, logged, notified and counted in
the metrics; only their row is not written, and a warning a minute says
how many were not.
Releases are never limited: no key leaves without its record.
"""

from __future__ import annotations

import logging
import threading

LOG = logging.getLogger(__name__)

__all__ = ["RECORDS_PER_MINUTE", "REPEAT_WINDOW", "RefusalBudget"]

#: Refusals a conductor records per minute at most (and its burst).
RECORDS_PER_MINUTE = 60
#: Seconds an identical refusal (secret, host, reason) is not recorded again.
REPEAT_WINDOW = 60.0


class RefusalBudget:
    """``admit(key, now)``: True when the refusal ``key`` is to be
    recorded. Thread-safe (releases are answered on the RPC executor's
    threads). Memory is bounded: a key is remembered only when admitted,
    and forgotten after :data:`REPEAT_WINDOW`."""

    def __init__(self, per_minute: int = RECORDS_PER_MINUTE,
                 repeat_window: float = REPEAT_WINDOW) -> None:
        if per_minute < 1 or repeat_window < 0:
            raise ValueError("per_minute >= 1 and repeat_window >= 0")
        self.per_minute = per_minute
        self.repeat_window = repeat_window
        self._tokens = float(per_minute)
        self._filled_at: float | None = None
        #: key -> when it was last recorded.
        self._recent: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        self._suppressed = 0
        self._warned_at: float | None = None

    def admit(self, key: tuple[str, ...], now: float) -> bool:
        with self._lock:
            self._refill(now)
            self._forget(now)
            if key in self._recent or self._tokens < 1:
                self._suppressed += 1
                self._warn(now)
                return False
            self._tokens -= 1
            self._recent[key] = now
            return True

    def _refill(self, now: float) -> None:
        if self._filled_at is not None and now > self._filled_at:
            self._tokens = min(float(self.per_minute), self._tokens + (
                now - self._filled_at) * self.per_minute / 60.0)
        self._filled_at = now if self._filled_at is None \
            else max(now, self._filled_at)

    def _forget(self, now: float) -> None:
        expired = [k for k, at in self._recent.items()
                   if now - at >= self.repeat_window]
        for key in expired:
            del self._recent[key]

    def _warn(self, now: float) -> None:
        if self._warned_at is not None and now - self._warned_at < 60:
            return
        LOG.warning("%d key-release refusal(s) not recorded in the "
                    "database: repeats within %.0f s, or more than %d a "
                    "minute (a host asking again and again?). Each is "
                    "still refused, logged above and counted in the "
                    "metrics.", self._suppressed, self.repeat_window,
                    self.per_minute)
        self._suppressed = 0
        self._warned_at = now
