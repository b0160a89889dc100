"""Freshness without a round trip per host: epoch-based nonces.

Following the IETF RATS architecture's epoch-based freshness, a conductor
draws one random epoch value per attestation interval and broadcasts it;
each host quotes over ``SHA-256(label || epoch value || host id)``. The
nonce is unpredictable before the epoch starts and different per host, so a
quote can be neither prepared in advance nor moved to another host. Within
an epoch the TPM clock defends against a replay of the same quote: it must
move forward unless the TPM rebooted, and the reboot counters say so.

A conductor that was slow or paused may verify a genuine quote after a
newer one of the same host (a push queued behind a direct challenge, two
epochs' pushes out of order, a message the broker delivered twice). Such a
quote fails the clock check exactly as a replay does, so the conductor also
keeps an :class:`IssueOrder`: every nonce it issues (epoch or one-off
challenge) and every quote it accepts takes the next number. A quote over
a nonce issued *before* the host's last quote was accepted may be older
than that quote without any foul play: it is late (stale at worst), never
proof of a replay (:func:`answered_before_accepted`). A quote over a nonce
issued *after* that acceptance was made after it, so a genuine TPM's clock
must have moved on: a regression there is a real failure.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import threading
from dataclasses import dataclass
from typing import Protocol

from trusted_pools import exception

_LABEL = b"trusted_pools epoch nonce v1\0"


def host_nonce(epoch_value: bytes, host: str) -> bytes:
    """The nonce ``host`` must quote over in the epoch ``epoch_value``."""
    return hashlib.sha256(_LABEL + epoch_value + b"\0"
                          + host.encode("utf-8")).digest()


class IssueOrder:
    """One conductor's order of issuing nonces and accepting quotes: a
    counter, thread-safe, that only goes up (never a wall clock, which a
    pause or an NTP step can move)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> int:
        with self._lock:
            self._last += 1
            return self._last


def answered_before_accepted(issued: int | None,
                             accepted: int | None) -> bool:
    """The ordering rule: whether a quote over a nonce issued at
    ``issued`` may legitimately be older than the host's quote accepted at
    ``accepted`` (both numbers of one :class:`IssueOrder`).

    True only when the nonce was issued before that acceptance: the quote
    may have been made before the accepted one and verified late. Unknown
    numbers (a baseline read from the database, evidence whose nonce this
    conductor did not issue) give False: the clock check decides alone.
    """
    return issued is not None and accepted is not None and issued < accepted


@dataclass(frozen=True)
class Epoch:
    epoch_id: str
    value: bytes
    started_at: float
    #: This epoch's number in the conductor's :class:`IssueOrder`.
    issued: int | None = None


class EpochKeeper:
    """Current and previous epoch of one conductor.

    Evidence answering the previous epoch is still accepted (it may have
    been in flight when the epoch turned); anything older is stale.
    """

    def __init__(self, order: IssueOrder | None = None) -> None:
        self._lock = threading.Lock()
        self._epochs: list[Epoch] = []
        self._counter = 0
        self._order = order

    def start_epoch(self, now: float) -> Epoch:
        with self._lock:
            self._counter += 1
            epoch = Epoch("%d-%s" % (self._counter, os.urandom(4).hex()),
                          os.urandom(32), now,
                          None if self._order is None
                          else self._order.next())
            self._epochs = ([epoch] + self._epochs)[:2]
            return epoch

    @property
    def current(self) -> Epoch | None:
        with self._lock:
            return self._epochs[0] if self._epochs else None

    def expected_nonce(self, epoch_id: str, host: str) -> bytes:
        """The nonce ``host`` must have used, or :class:`StaleEvidence`."""
        return self.expected(epoch_id, host)[0]

    def expected(self, epoch_id: str, host: str) -> tuple[bytes, int | None]:
        """The nonce ``host`` must have used and the epoch's issue number,
        or :class:`StaleEvidence`."""
        with self._lock:
            for epoch in self._epochs:
                if epoch.epoch_id == epoch_id:
                    return host_nonce(epoch.value, host), epoch.issued
        raise exception.StaleEvidence(
            host=host, epoch=epoch_id,
            reason="only the current and the previous epoch are accepted")


class ClockInfoLike(Protocol):
    clock: int
    reset_count: int
    restart_count: int
    safe: bool


class Reboot(enum.Enum):
    NONE = "none"
    RESTART = "restart"  # TPM2_Startup(CLEAR) after a Shutdown(STATE)...
    RESET = "reset"      # ...or a full reset: PCRs start over


def check_clock(host: str, previous: ClockInfoLike | None,
                current: ClockInfoLike) -> Reboot:
    """Compare a quote's clock with the last accepted one for the host.

    Returns what happened to the TPM since, or raises
    :class:`QuoteReplayed` when the quote cannot be newer than the last.
    """
    if previous is None:
        return Reboot.NONE
    if current.reset_count < previous.reset_count:
        raise exception.QuoteReplayed(host=host,
                                      reason="resetCount went backwards")
    if current.reset_count > previous.reset_count:
        return Reboot.RESET
    if current.restart_count < previous.restart_count:
        raise exception.QuoteReplayed(host=host,
                                      reason="restartCount went backwards")
    if current.restart_count > previous.restart_count:
        return Reboot.RESTART
    if current.clock <= previous.clock:
        raise exception.QuoteReplayed(
            host=host, reason="clock %d is not after %d"
            % (current.clock, previous.clock))
    return Reboot.NONE


def nonce_matches(expected: bytes, received: bytes) -> bool:
    return hmac.compare_digest(expected, received)
