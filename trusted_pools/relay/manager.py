"""The relay's endpoint and its batches.

Pushes are gathered per conductor, in arrival order, and each batch is
sent with one ``submit_evidence_batch`` cast (evidence API 1.1) when it
holds ``max_batch`` pushes or its first push has waited ``max_delay``
seconds (:meth:`RelayManager.flush_due`, the service's periodic job).

What the relay does not do, on purpose: it does not judge, reorder within
a batch, merge or deduplicate pushes, and it reads nothing of them but the
host name it logs. The conductor applies every rule (ownership, enrolled
names, the per-host queue places, verification) to each push of a batch
as to a direct push. Memory is bounded without dropping honest pushes: a
full batch is sent at once, and a push for a conductor beyond
``max_conductors`` with batches being gathered sends the oldest batch
early. What the relay drops is a push that is not one (not a mapping with
a host name, or no conductor named) and a batch the bus refused.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import oslo_messaging as messaging
from oslo_serialization import jsonutils

from trusted_pools.relay import rpcapi

LOG = logging.getLogger(__name__)

__all__ = ["RelayManager"]

# Longest conductor name accepted (the ring's members are host names).
_MAX_NAME = 255


@dataclass
class _Batch:
    started: float
    pushes: list[dict[str, Any]] = field(default_factory=list)
    #: Bytes of its pushes as the bus encodes them (_wire_size).
    size: int = 0


def _wire_size(evidence: dict[str, Any]) -> int:
    """Bytes of a push in a batch message, as the driver encodes it (JSON
    with non-ASCII escaped: a character may cost six bytes)."""
    return len(jsonutils.dumps(evidence))


class RelayManager:
    """``submit_evidence`` for agents, batched per conductor.

    ``forward(context, conductor, batch)`` sends a batch (the conductor
    evidence API's ``submit_evidence_batch``)."""

    target = messaging.Target(version=rpcapi.RELAY_API_VERSION)

    def __init__(self, forward: Callable[[dict, str, list[dict]], None], *,
                 max_batch: int = 200, max_delay: float = 0.5,
                 max_conductors: int = 64,
                 max_batch_bytes: int = 8 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= max_batch <= 1000:
            raise ValueError("max_batch: 1 to 1000, not %r" % (max_batch,))
        if max_delay <= 0 or max_conductors < 1 or max_batch_bytes < 1:
            raise ValueError("max_delay, max_conductors and max_batch_bytes "
                             "must be positive")
        self._forward = forward
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_conductors = max_conductors
        self.max_batch_bytes = max_batch_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._batches: dict[str, _Batch] = {}
        #: What was relayed and dropped, by kind (logs, tests, bench).
        self.counts: dict[str, int] = {
            "pushes": 0, "batches": 0, "malformed": 0, "send_failed": 0}

    @messaging.expose
    def submit_evidence(self, context: dict, conductor: Any,
                        evidence: Any) -> None:
        # The agent's context is not read nor passed on (the conductor
        # believes nothing of it either).
        if not isinstance(conductor, str) or not 0 < len(conductor) \
                <= _MAX_NAME or not isinstance(evidence, dict) or \
                not isinstance(evidence.get("host"), str):
            self._count("malformed")
            return
        try:
            size = _wire_size(evidence)
        except (TypeError, ValueError):
            self._count("malformed")
            return
        ready: list[tuple[str, list[dict]]] = []
        with self._lock:
            if size >= self.max_batch_bytes:
                # Alone: if the bus refuses it, it takes no other push
                # with it (the batch being gathered keeps its own time).
                ready.append((conductor, [evidence]))
            else:
                self._gather(conductor, evidence, size, ready)
        self._send(ready)

    def _gather(self, conductor: str, evidence: dict[str, Any], size: int,
                ready: list[tuple[str, list[dict]]]) -> None:
        """Add a push to its conductor's batch (under the lock); what must
        be sent now goes to ``ready``."""
        batch = self._batches.get(conductor)
        if batch is not None and batch.size + size > self.max_batch_bytes:
            ready.append((conductor, self._batches.pop(conductor).pushes))
            batch = None
        if batch is None:
            if len(self._batches) >= self.max_conductors:
                oldest = min(self._batches,
                             key=lambda c: self._batches[c].started)
                ready.append((oldest, self._batches.pop(oldest).pushes))
            batch = self._batches[conductor] = _Batch(self._clock())
        batch.pushes.append(evidence)
        batch.size += size
        if len(batch.pushes) >= self.max_batch:
            ready.append((conductor, self._batches.pop(conductor).pushes))

    def flush_due(self) -> int:
        """Send the batches whose first push waited ``max_delay``; returns
        how many were sent."""
        now = self._clock()
        with self._lock:
            due = [c for c, b in self._batches.items()
                   if now - b.started >= self.max_delay]
            ready = [(c, self._batches.pop(c).pushes) for c in due]
        self._send(ready)
        return len(ready)

    def flush_all(self) -> int:
        """Send every batch being gathered (the service's stop)."""
        with self._lock:
            ready = [(c, b.pushes) for c, b in self._batches.items()]
            self._batches = {}
        self._send(ready)
        return len(ready)

    def pending(self) -> int:
        with self._lock:
            return sum(len(b.pushes) for b in self._batches.values())

    def _send(self, ready: list[tuple[str, list[dict]]]) -> None:
        for conductor, pushes in ready:
            try:
                self._forward({}, conductor, pushes)
            except messaging.MessagingException as error:
                # Dropped: the hosts go unknown if it lasts, as when an
                # agent's own push is lost.
                LOG.warning("Relay could not send %d push(es) to conductor "
                            "%s: %s", len(pushes), conductor, error)
                self._count("send_failed", len(pushes))
                continue
            with self._lock:
                self.counts["pushes"] += len(pushes)
                self.counts["batches"] += 1

    def _count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            count = self.counts[kind] = self.counts[kind] + n
        if count & (count - 1) == 0:
            LOG.warning("Relay dropped %d push(es) so far (%s)", count, kind)
