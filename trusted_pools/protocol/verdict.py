"""The verdict: what the conductor concluded about one host at one time.

A :class:`Verdict` is immutable and validated on construction, so an
inconsistent one (a "trusted" verdict with a contraindicated claim, an
"unknown" one with a level) cannot exist. :func:`decide` is the one place
where outcomes become a status; :func:`trusted_level` is the one place where
a verdict is read as trust (the trust rule: "trusted" and no contraindicated
claim, at the verdict's level), and every consumer (the scheduler's cache
and filter, the trait keeper, the distrust responder, :func:`is_trusted`)
asks it rather than writing the rule again. It fails closed.

Trust contract: a verdict says nothing by itself about who made it. Verdicts
that cross a process boundary travel signed (``results.sign_verdict``) and
only :func:`trusted_pools.protocol.results.verify_result` turns a token
back into a verdict.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
import types
from typing import Any, Iterable, Mapping

from trusted_pools import exception
from trusted_pools.protocol.levels import (AssuranceLevel, Outcome, Rung,
                                           TrustVector, compute_level,
                                           vector_from_outcomes)

__all__ = [
    "Status", "Verdict", "decide", "make_verdict", "unknown_verdict",
    "is_trusted", "trusted_level", "NOT_TRUSTED", "evidence_digest", "canonical_json",
    "MAX_REASONS", "MAX_REASON_CHARS", "DEFAULT_CLOCK_SKEW",
]

#: A verdict carries at most this many reasons; :func:`make_verdict` folds
#: the rest into one summary line so a flood of IMA failures stays signable.
MAX_REASONS = 64
#: Longest reason kept, in characters; longer ones are cut with a marker.
MAX_REASON_CHARS = 1024
#: Longest host name (a DNS name is at most 253 characters).
MAX_HOST_CHARS = 255
#: Seconds a verdict may be dated in the future before it is refused.
DEFAULT_CLOCK_SKEW = 5
# Any time after 2**63 s is a bug or an attack, not a date.
_MAX_TIME = 2 ** 63 - 1

_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


class Status(str, enum.Enum):
    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"
    #: No fresh evidence (agent unreachable, not yet attested). Never trusted.
    UNKNOWN = "unknown"


def canonical_json(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, UTF-8, no NaN/Infinity.

    Used for the evidence digest and the signed result payload, so that one
    value has exactly one encoding.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def evidence_digest(canonical_evidence: bytes) -> str:
    """SHA-256 (lowercase hex) of the canonical evidence bytes."""
    if not isinstance(canonical_evidence, (bytes, bytearray, memoryview)):
        raise exception.InvalidParameterValue(
            name="canonical_evidence", reason="expected bytes")
    return hashlib.sha256(canonical_evidence).hexdigest()


def _invalid(name: str, reason: str) -> exception.InvalidParameterValue:
    return exception.InvalidParameterValue(name=name, reason=reason)


def _is_utf8_text(value: Any) -> bool:
    """A str that UTF-8 can encode (no lone surrogates), so it can be
    signed and stored."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_time(value: Any, name: str) -> int:
    if type(value) is not int:
        raise _invalid(name, "expected integer epoch seconds, got %s"
                       % type(value).__name__)
    if not 0 <= value <= _MAX_TIME:
        raise _invalid(name, "%d is not a valid epoch time" % value)
    return value


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The conductor's conclusion about one host.

    ``reasons`` name what failed (event, PCR, IMA line); ``policy_versions``
    maps policy name to the version appraised against; ``evidence_digest``
    is the SHA-256 hex of the canonical evidence ("" only for an unknown
    verdict, which has no evidence); times are UTC epoch seconds.
    """

    host: str
    status: Status
    level: AssuranceLevel
    vector: TrustVector
    reasons: tuple[str, ...]
    policy_versions: Mapping[str, int]
    evidence_digest: str
    issued_at: int
    expires_at: int

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if (not _is_utf8_text(self.host) or not self.host
                or len(self.host) > MAX_HOST_CHARS
                or not self.host.isprintable()):
            raise _invalid("host", "must be a non-empty printable string of "
                           "at most %d characters" % MAX_HOST_CHARS)
        try:
            set_(self, "status", Status(self.status))
        except (ValueError, TypeError):
            raise _invalid("status", "%r is not a status" % (self.status,))
        if type(self.level) is bool or not isinstance(self.level, int):
            raise _invalid("level", "expected an AssuranceLevel")
        try:
            set_(self, "level", AssuranceLevel(self.level))
        except ValueError:
            raise _invalid("level", "%r is not a level" % (self.level,))
        if not isinstance(self.vector, TrustVector):
            raise _invalid("vector", "expected a TrustVector")
        set_(self, "reasons", self._checked_reasons(self.reasons))
        set_(self, "policy_versions",
             self._checked_policies(self.policy_versions))
        _check_time(self.issued_at, "issued_at")
        _check_time(self.expires_at, "expires_at")
        if self.expires_at <= self.issued_at:
            raise _invalid("expires_at", "must be after issued_at")
        self._check_digest()
        self._check_status_invariants()

    @staticmethod
    def _checked_reasons(reasons: Any) -> tuple[str, ...]:
        if type(reasons) not in (tuple, list) and (
                isinstance(reasons, (str, bytes))
                or not isinstance(reasons, Iterable)):
            raise _invalid("reasons", "expected a list of strings")
        result = tuple(reasons)
        if len(result) > MAX_REASONS:
            raise _invalid("reasons", "more than %d reasons" % MAX_REASONS)
        for reason in result:
            if not _is_utf8_text(reason) or len(reason) > MAX_REASON_CHARS:
                raise _invalid("reasons", "each reason must be a string of "
                               "at most %d characters" % MAX_REASON_CHARS)
        return result

    @staticmethod
    def _checked_policies(policies: Any) -> Mapping[str, int]:
        if type(policies) is not dict and not isinstance(policies, Mapping):
            raise _invalid("policy_versions", "expected a mapping")
        copy: dict[str, int] = {}
        for name, version in policies.items():
            if not _is_utf8_text(name) or not name:
                raise _invalid("policy_versions",
                               "policy names must be non-empty strings")
            if type(version) is not int or version < 0:
                raise _invalid("policy_versions", "version of %r must be a "
                               "non-negative integer" % name)
            copy[name] = version
        return types.MappingProxyType(copy)

    def _check_digest(self) -> None:
        digest = self.evidence_digest
        if not isinstance(digest, str):
            raise _invalid("evidence_digest", "expected a string")
        if digest == "" and self.status is Status.UNKNOWN:
            return
        if not _HEX_SHA256.fullmatch(digest):
            raise _invalid("evidence_digest",
                           "expected 64 lowercase hex characters")

    def _check_status_invariants(self) -> None:
        if self.status is Status.UNKNOWN and self.level != AssuranceLevel.NONE:
            raise _invalid("level", "an unknown verdict has level 0")
        if self.status is Status.TRUSTED:
            if self.level < AssuranceLevel.IDENTITY:
                raise _invalid("status", "a trusted verdict needs level >= 1")
            bad = self.vector.contraindicated()
            if bad:
                raise _invalid("status", "a trusted verdict cannot carry a "
                               "contraindicated claim (%s)"
                               % ", ".join(c.value for c in bad))

    def __hash__(self) -> int:
        # MappingProxyType is unhashable; hash the mapping's items instead.
        return hash((self.host, self.status, self.level, self.vector,
                     self.reasons, tuple(sorted(self.policy_versions.items())),
                     self.evidence_digest, self.issued_at, self.expires_at))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the database and RPC)."""
        return {
            "host": self.host,
            "status": self.status.value,
            "level": int(self.level),
            "vector": self.vector.to_json(),
            "reasons": list(self.reasons),
            "policy_versions": dict(self.policy_versions),
            "evidence_digest": self.evidence_digest,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Verdict":
        """Inverse of :meth:`to_dict`; strict, raises InvalidParameterValue."""
        if not isinstance(data, dict):
            raise _invalid("verdict", "expected a JSON object")
        expected = {f.name for f in dataclasses.fields(cls)}
        if set(data) != expected:
            raise _invalid("verdict", "fields %s missing, %s unexpected" % (
                sorted(expected - set(data)),
                sorted(str(k) for k in set(data) - expected)))
        status = data["status"]
        if not isinstance(status, str):
            raise _invalid("status", "expected a string")
        reasons = data["reasons"]
        if not isinstance(reasons, list):
            raise _invalid("reasons", "expected a list")
        return cls(host=data["host"], status=status, level=data["level"],
                   vector=TrustVector.from_json(data["vector"]),
                   reasons=tuple(reasons),
                   policy_versions=data["policy_versions"],
                   evidence_digest=data["evidence_digest"],
                   issued_at=data["issued_at"], expires_at=data["expires_at"])


def decide(level: AssuranceLevel, vector: TrustVector,
           required_level: AssuranceLevel) -> Status:
    """Trusted only if ``level >= required_level`` and nothing is
    contraindicated; otherwise untrusted. Never returns UNKNOWN: that is for
    the absence of evidence, see :func:`unknown_verdict`."""
    if type(required_level) is bool or required_level not in (
            1, 2, 3, 4):
        raise _invalid("required_level", "must be 1 to 4 (level 0 means "
                       "unknown or failed)")
    required = AssuranceLevel(required_level)
    if required < AssuranceLevel.IDENTITY:
        raise _invalid("required_level", "must be at least 1 (identity): "
                       "level 0 means unknown or failed")
    if level >= required and not vector.contraindicated():
        return Status.TRUSTED
    return Status.UNTRUSTED


def _bounded_reasons(reasons: Iterable[str]) -> tuple[str, ...]:
    """Cut long reasons and fold the excess into one summary line."""
    marker = "...[cut]"
    cut = []
    for reason in reasons:
        if not isinstance(reason, str):
            raise _invalid("reasons", "each reason must be a string")
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[:MAX_REASON_CHARS - len(marker)] + marker
        cut.append(reason)
    if len(cut) > MAX_REASONS:
        omitted = len(cut) - (MAX_REASONS - 1)
        cut = cut[:MAX_REASONS - 1] + ["%d more reasons omitted" % omitted]
    return tuple(cut)


def make_verdict(*, host: str, outcomes: Mapping[Rung, Outcome],
                 required_level: AssuranceLevel,
                 policy_versions: Mapping[str, int], evidence_digest: str,
                 issued_at: int, validity: int,
                 reasons: Iterable[str] = (),
                 configuration: Outcome = Outcome.NOT_APPRAISED) -> Verdict:
    """Build the verdict for an appraisal whose evidence was received.

    ``validity`` (seconds) is how long the verdict may be relied on; the
    conductor sets it to a little more than the attestation interval.
    """
    if type(validity) is not int or validity <= 0:
        raise _invalid("validity", "must be a positive number of seconds")
    level = compute_level(outcomes)
    vector = vector_from_outcomes(outcomes, configuration)
    _check_time(issued_at, "issued_at")
    return Verdict(host=host, status=decide(level, vector, required_level),
                   level=level, vector=vector,
                   reasons=_bounded_reasons(reasons),
                   policy_versions=policy_versions,
                   evidence_digest=evidence_digest, issued_at=issued_at,
                   expires_at=issued_at + validity)


def unknown_verdict(*, host: str, reason: str, issued_at: int, validity: int,
                    policy_versions: Mapping[str, int] | None = None
                    ) -> Verdict:
    """Verdict for a host without fresh evidence (e.g. agent unreachable)."""
    if type(validity) is not int or validity <= 0:
        raise _invalid("validity", "must be a positive number of seconds")
    _check_time(issued_at, "issued_at")
    return Verdict(host=host, status=Status.UNKNOWN,
                   level=AssuranceLevel.NONE, vector=TrustVector(),
                   reasons=_bounded_reasons([reason]),
                   policy_versions=policy_versions or {},
                   evidence_digest="", issued_at=issued_at,
                   expires_at=issued_at + validity)


#: :func:`trusted_level` of a verdict that trusts its host at no level.
NOT_TRUSTED = -1


def trusted_level(verdict: Verdict) -> int:
    """The trust rule, written once: the level at which ``verdict`` trusts
    its host, or :data:`NOT_TRUSTED` (-1).

    A host is trusted at level ``n`` by this verdict exactly when
    ``trusted_level(verdict) >= n`` (``n`` >= 1); whether the verdict is
    still fresh is the consumer's judgement, on its own clock. Only a
    "trusted" status counts, and never with a contraindicated claim (which
    :class:`Verdict` already refuses to hold; checked again here, so the
    rule does not rest on a constructor elsewhere).
    """
    if verdict.status is not Status.TRUSTED or \
            verdict.vector.contraindicated():
        return NOT_TRUSTED
    return int(verdict.level)


def is_trusted(verdict: Verdict | None, min_level: AssuranceLevel, now: int,
               max_age: int, clock_skew: int = DEFAULT_CLOCK_SKEW) -> bool:
    """Whether a consumer may treat the host as trusted right now.

    Fails closed: False for a missing verdict, an unknown or untrusted one,
    a level below ``min_level``, a contraindicated claim, an expired verdict
    (``now >= expires_at``), one older than ``max_age`` seconds, or one
    issued more than ``clock_skew`` seconds in the future. Bad arguments
    (as opposed to a bad verdict) raise InvalidParameterValue.
    """
    if type(min_level) is bool or not isinstance(min_level, int):
        raise _invalid("min_level", "expected an AssuranceLevel")
    if not AssuranceLevel.IDENTITY <= min_level <= AssuranceLevel.RUNTIME:
        raise _invalid("min_level", "must be between 1 and 4")
    _check_time(now, "now")
    for name, value in (("max_age", max_age), ("clock_skew", clock_skew)):
        if type(value) is not int or value < 0:
            raise _invalid(name, "must be a non-negative number of seconds")
    if not isinstance(verdict, Verdict):
        return False
    if trusted_level(verdict) < min_level:
        return False
    if now >= verdict.expires_at:
        return False
    if verdict.issued_at > now + clock_skew:
        return False
    return now - verdict.issued_at <= max_age
