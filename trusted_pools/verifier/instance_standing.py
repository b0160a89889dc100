"""Whether a stored instance verdict still stands (issue 11).

An instance's verdict is only as good as its host's: it was made under one
enrollment of the host, on the strength of one host verdict (its
``host_sequence``). Read later, it stands only while the host is still
enrolled under that generation and has had no verdict other than trusted
since, and while it has not expired. Otherwise it reads as the host's
fall says (``untrusted`` or ``unknown``) at level 0, with the reason, and
its signed result is withheld: a token that says "trusted" is not handed
out for an instance whose host no longer is.

Written by hand: a few comparisons over the record
(:class:`trusted_pools.db.api.InstanceStanding`), kept apart from the
database and the API so that both the API and a conductor can judge the
same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from trusted_pools import exception

__all__ = ["Judged", "capturable", "judge"]


@dataclasses.dataclass(frozen=True)
class Judged:
    """The verdict as it reads now. ``stands``: the stored verdict (and
    its ``signed_result``) still holds; ``recorded_status``: what was
    stored."""

    instance: str
    host: str
    status: str
    level: int
    host_level: int
    reasons: tuple[str, ...]
    issued_at: Any
    expires_at: Any
    stands: bool
    recorded_status: str
    signed_result: str | None


def judge(standing: Any, now: float) -> Judged:
    """``standing``: an :class:`~trusted_pools.db.api.InstanceStanding`;
    ``now``: seconds since the epoch."""
    record = standing.verdict
    fallen: list[str] = []
    status = record.status
    if standing.host_state != "enrolled" or \
            standing.enrollment_generation != \
            record.registration_generation:
        status = "unknown"
        fallen.append(
            "host %s is %s under enrollment generation %d, not generation "
            "%d the verdict was made under (its enrollment was reset or "
            "redone)" % (standing.hostname, standing.host_state,
                         standing.enrollment_generation,
                         record.registration_generation))
    if standing.host_fell is not None:
        host_status, sequence = standing.host_fell
        if status != "unknown":
            status = "untrusted" if host_status == "untrusted" \
                else "unknown"
        fallen.append("host %s was judged %s after this verdict (host "
                      "verdict %d)" % (standing.hostname, host_status,
                                       sequence))
    if record.expires_at.timestamp() <= now:
        if status == "trusted":
            status = "unknown"
        fallen.append("the verdict expired at %s"
                      % record.expires_at.isoformat())
    stands = not fallen
    return Judged(
        instance=record.instance, host=standing.hostname, status=status,
        level=record.level if stands else 0, host_level=record.host_level,
        reasons=tuple(str(r) for r in record.reasons) + tuple(fallen),
        issued_at=record.issued_at, expires_at=record.expires_at,
        stands=stands, recorded_status=record.status,
        signed_result=record.signed_result if stands else None)


def capturable(standing: Any, instance: str, now: float) -> Any:
    """``standing`` if its PCR values may become an instance policy: the
    latest verdict still reads as trusted (judged with its host's) and
    recorded the PCR values its quote verified; otherwise
    :class:`~trusted_pools.exception.InstanceNotCapturable` with the
    reason. The values are the verified ones, never the host's word."""
    judged = judge(standing, now)
    if judged.status != "trusted":
        raise exception.InstanceNotCapturable(
            instance=instance, reason="its latest verdict reads %s (%s); "
            "capture from a known-good instance" % (
                judged.status, "; ".join(judged.reasons) or "no reason"))
    if not standing.verdict.pcrs:
        raise exception.InstanceNotCapturable(
            instance=instance, reason="its latest verdict recorded no PCR "
            "values; attest it again")
    return standing
