"""Which conductor attests which host: a consistent hash ring.

Each live conductor owns ``2**partition_exponent`` / N partitions of the
hash space, placed by hashing ``"<conductor>-<replica>"``; a host belongs to
the conductor whose point follows the host's hash. When a conductor dies
only its hosts move, spread over the survivors; when it comes back they move
home. The ring is rebuilt by the caller on an interval and once more on a
miss (Ironic's habit), from the conductors whose heartbeats are fresh.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Iterable


def _point(key: str) -> int:
    # Not a security boundary: any well-mixed hash spreads hosts evenly.
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


class HashRing:
    """An immutable ring over ``conductors`` (their hostnames)."""

    def __init__(self, conductors: Iterable[str], replicas: int = 128
                 ) -> None:
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.conductors = frozenset(conductors)
        points = sorted((_point("%s-%d" % (c, i)), c)
                        for c in self.conductors for i in range(replicas))
        self._keys = [p for p, _ in points]
        self._owners = [c for _, c in points]

    def __len__(self) -> int:
        return len(self.conductors)

    def owner(self, host: str) -> str:
        """The conductor that attests ``host``; raises if the ring is empty."""
        if not self._keys:
            raise LookupError("no live conductor: start trusted-pools-"
                              "conductor or check its heartbeats")
        index = bisect.bisect(self._keys, _point(host)) % len(self._keys)
        return self._owners[index]

    def hosts_of(self, conductor: str, hosts: Iterable[str]) -> list[str]:
        """The subset of ``hosts`` that ``conductor`` owns."""
        return [h for h in hosts if self.owner(h) == conductor]
