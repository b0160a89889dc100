"""The verdict cache of one scheduler process.

Entries are keyed by host name: the name the conductor signs as the
verdict's subject (``sub``), which is the host agent's name and by default
``HostState.host`` of Nova (the nova-compute service host; see the
``host_key`` option). A signed result is verified once, when it arrives;
lookups afterwards are one dict read and a few comparisons, safe to run
per host per request.

Freshness is judged by the **local** monotonic clock at which this process
received the verdict (the old Nova TrustedFilter trusted the attestation
server's clock); the verdict's own ``exp`` still applies, converted to the
local monotonic clock at arrival. Receiving the same token again does not
make it younger, so replaying an old notification cannot extend a verdict.

Order: of two verdicts for one host the one with the greater ``seq`` claim
wins, a number the conductors' shared database allocates when it stores the
verdict. The ``iat`` claim is a conductor's wall clock: a conductor whose
clock runs ahead would otherwise make its older verdict look newer, so
``iat`` is used for expiry and freshness only.

Fails closed: a host without an entry, a verdict that is not "trusted" or
below the requested level, older than ``max_age`` by local receive time,
past its expiry, or every host when no contact with the conductor
succeeded for ``grace`` seconds. A token with a bad signature, an unknown
key id, a malformed payload or an expired result is refused at arrival with
a log line that says why, and nothing is admitted.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable, Mapping

from trusted_pools import exception
from trusted_pools.protocol import keystore
from trusted_pools.protocol import results
from trusted_pools.protocol.verdict import NOT_TRUSTED, Verdict, trusted_level

__all__ = ["Admission", "CachedVerdict", "VerdictCache"]

LOG = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class CachedVerdict:
    """A verified verdict and when (local monotonic seconds) it arrived."""

    verdict: Verdict
    token: str
    jti: str
    #: The verifier's order of this host's verdicts (signed claim ``seq``).
    sequence: int
    received: float
    #: The verdict's ``exp`` (plus leeway) on the local monotonic clock.
    expires: float
    #: ``verdict.trusted_level`` (the one trust rule): the level when the
    #: verdict trusts the host, else -1; precomputed so a lookup is one
    #: comparison.
    trusted_level: int


def _less_trusting(new: Verdict, old: Verdict) -> bool:
    return (trusted_level(new), int(new.level)) < (trusted_level(old),
                                                   int(old.level))


@dataclasses.dataclass(frozen=True)
class Admission:
    """A token that verified: its verdict, and whether it is now the one
    kept for its host (False: the cache already held it or a later one)."""

    verdict: Verdict
    sequence: int
    kept: bool


class VerdictCache:
    """Thread-safe map host -> latest verified verdict.

    ``public_keys`` maps kid to conductor public key (see
    ``keystore.key_set``); it can be replaced with :meth:`set_public_keys`.
    ``wall`` and ``monotonic`` are clocks, injectable for tests.
    """

    def __init__(self, public_keys: Mapping[str, keystore.PublicKey], *,
                 max_age: int = 180, grace: int = 120, leeway: int = 5,
                 wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        for name, value in (("max_age", max_age), ("grace", grace)):
            if type(value) is not int or value <= 0:
                raise exception.InvalidParameterValue(
                    name=name, reason="must be a positive number of seconds")
        if type(leeway) is not int or not 0 <= leeway <= results.MAX_LEEWAY:
            raise exception.InvalidParameterValue(
                name="leeway", reason="must be 0 to %d seconds"
                % results.MAX_LEEWAY)
        self.max_age = max_age
        self.grace = grace
        self.leeway = leeway
        self._wall = wall
        self.monotonic = monotonic
        self._keys: dict[str, keystore.PublicKey] = dict(public_keys)
        self._entries: dict[str, CachedVerdict] = {}
        self._lock = threading.Lock()
        self._last_contact: float | None = None

    # --- keys and contact -----------------------------------------------------

    def set_public_keys(self,
                        public_keys: Mapping[str, keystore.PublicKey]
                        ) -> None:
        self._keys = dict(public_keys)

    def public_keys(self) -> dict[str, keystore.PublicKey]:
        return dict(self._keys)

    @property
    def public_key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def mark_contact(self) -> None:
        """Record a successful exchange with the conductor (now)."""
        self._last_contact = self.monotonic()

    def contact_age(self, now: float | None = None) -> float | None:
        """Seconds since the last contact, or None if there was none."""
        if self._last_contact is None:
            return None
        return (self.monotonic() if now is None else now) - self._last_contact

    def in_contact(self, now: float) -> bool:
        last = self._last_contact
        return last is not None and now - last <= self.grace

    # --- arrival --------------------------------------------------------------

    def admit(self, token: str) -> Verdict:
        """Verify ``token`` and keep its verdict if newer than the cached.

        Raises a ``SignedResultError`` subclass for a token that does not
        verify (nothing is admitted). Returns the verified verdict, even if
        a later entry was kept instead (see :meth:`admit_token` to know).
        """
        return self.admit_token(token).verdict

    def admit_token(self, token: str) -> Admission:
        """As :meth:`admit`, and say whether the verdict was kept."""
        if not isinstance(token, str):
            raise exception.ResultMalformed(reason="signed_result is not a "
                                            "string")
        wall = self._wall()
        received = self.monotonic()
        signed = results.verify_signed_result(token, self._keys, int(wall),
                                              self.leeway)
        verdict = signed.verdict
        entry = CachedVerdict(
            verdict=verdict, token=token, jti=signed.jti,
            sequence=signed.sequence, received=received,
            expires=received + (verdict.expires_at + self.leeway - wall),
            trusted_level=trusted_level(verdict))
        with self._lock:
            current = self._entries.get(verdict.host)
            if self._keep_current(current, entry):
                return Admission(verdict, signed.sequence, kept=False)
            self._entries[verdict.host] = entry
        LOG.debug("Admitted verdict %s (seq %d) for host %s: %s level %d, "
                  "issued at %d, expires at %d", signed.jti, signed.sequence,
                  verdict.host, verdict.status.value, verdict.level,
                  verdict.issued_at, verdict.expires_at)
        return Admission(verdict, signed.sequence, kept=True)

    @staticmethod
    def _keep_current(current: CachedVerdict | None,
                      new: CachedVerdict) -> bool:
        """Whether the cached entry wins over a newly verified one.

        A verdict with a lower sequence never replaces one with a higher
        (a late bulk refresh, a replay, a conductor whose clock runs
        ahead: ``iat`` plays no part). The same token again keeps its first
        receive time. Two tokens with the same sequence cannot come from
        one database; should they meet, the less trusting wins.
        """
        if current is None:
            return False
        if current.jti == new.jti:
            return True
        if new.sequence != current.sequence:
            return new.sequence < current.sequence
        return not _less_trusting(new.verdict, current.verdict)

    def knows_token(self, host: str, token: str) -> bool:
        """Whether ``token`` is exactly the one cached for ``host`` (so a
        bulk refresh can skip verifying it again)."""
        entry = self._entries.get(host)
        return entry is not None and entry.token == token

    def holds_unexpired(self, host: str, token: str) -> bool:
        """Whether ``token`` is the one cached for ``host`` and its
        verdict has not expired (local monotonic clock)."""
        entry = self._entries.get(host)
        return (entry is not None and entry.token == token
                and self.monotonic() < entry.expires)

    def forget(self, host: str) -> None:
        with self._lock:
            self._entries.pop(host, None)

    # --- lookups --------------------------------------------------------------

    def get(self, host: str) -> CachedVerdict | None:
        return self._entries.get(host)

    def __len__(self) -> int:
        return len(self._entries)

    def hosts(self) -> list[str]:
        return list(self._entries)

    def passes(self, host: str, min_level: int, max_age: int,
               now: float) -> bool:
        """The per-host decision: a dict read and comparisons, no I/O.

        The caller checks :meth:`in_contact` once per request.
        """
        entry = self._entries.get(host)
        return (entry is not None and entry.trusted_level >= min_level
                and now - entry.received <= max_age and now < entry.expires)

    def is_trusted(self, host: str, min_level: int, max_age: int | None = None,
                   now: float | None = None) -> bool:
        """Complete check for one host, grace included (for callers other
        than the filter)."""
        now = self.monotonic() if now is None else now
        age = self.max_age if max_age is None else min(max_age, self.max_age)
        return self.in_contact(now) and self.passes(host, min_level, age, now)

    def explain(self, host: str, min_level: int, max_age: int,
                now: float) -> str:
        """Why ``host`` does not pass (for the operator's log)."""
        if not self.in_contact(now):
            age = self.contact_age(now)
            return ("no contact with the conductor %s (grace %d s): every "
                    "host fails closed" % (
                        "yet" if age is None else "for %.0f s" % age,
                        self.grace))
        entry = self._entries.get(host)
        if entry is None:
            return "no verdict received for this host"
        verdict = entry.verdict
        if entry.trusted_level == NOT_TRUSTED:
            reasons = "; ".join(verdict.reasons[:3]) or "no reason given"
            return "verdict is %s (%s)" % (verdict.status.value, reasons)
        if entry.trusted_level < min_level:
            return "level %d is below the required %d" % (
                entry.trusted_level, min_level)
        if now >= entry.expires:
            return "verdict expired at %d (conductor clock)" % (
                verdict.expires_at)
        if now - entry.received > max_age:
            return ("verdict is stale: received %.0f s ago, max_age %d s"
                    % (now - entry.received, max_age))
        return "passes"
