"""Turn one host's evidence into a verdict: the conductor's hot path.

Order of work, cheapest first and each step only on verified input:
the evidence message is parsed strictly; the quote is verified with the
registered AK against the expected (epoch) nonce; the TPM clock must move
forward; the event log is replayed only when the quoted boot PCRs differ
from the last verified boot of this host (they do not change between
reboots, so a steady host costs one signature check here); the IMA log is
replayed from where the last round stopped. Appraisal against the policies
then gives the rungs, the level and the reasons.

Nothing here touches the bus or the database: the manager feeds host state
in and takes verdicts and new state out, so this module is tested and
benchmarked on its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from trusted_pools import exception
from trusted_pools.attestation import appraisal as appraisal_mod
from trusted_pools.attestation import freshness
from trusted_pools.attestation.evidence import Evidence
from trusted_pools.attestation import levels
from trusted_pools.attestation import verdict as verdict_mod
from trusted_pools.attestation.verdict import Verdict
from trusted_pools.tpm import eventlog
from trusted_pools.tpm import ima
from trusted_pools.tpm import quote as quotes
from trusted_pools.tpm import structures

LOG = logging.getLogger(__name__)

IMA_PCR = 10


@dataclass(frozen=True)
class StoredClock:
    """A quote's clock as kept in the database (``safe`` not needed)."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool = True


@dataclass(frozen=True)
class BootRecord:
    """The last verified boot of a host: which log, which PCR values."""

    event_log_digest: str
    pcrs: tuple[tuple[int, int, bytes], ...]  # (bank, pcr, value) checked
    log: eventlog.VerifiedEventLog


@dataclass
class HostState:
    """What a conductor remembers about a host between rounds."""

    host: str
    host_id: int
    group: str
    ak: structures.Public
    clock: Any = None               # ClockInfo of the last accepted quote
    boot: BootRecord | None = None
    ima_state: ima.ReplayState | None = None
    want_event_log: bool = True
    policy: "appraisal_mod.HostPolicies | None" = None
    extra: dict[str, Any] = field(default_factory=dict)

    def request(self) -> dict[str, Any]:
        """What to ask of the host in the next epoch."""
        return {"ima_start": 0 if self.ima_state is None
                else self.ima_state.entries,
                "event_log": self.want_event_log}


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reboot: freshness.Reboot | None


def verify_and_appraise(state: HostState, evidence: Evidence,
                        expected_nonce: bytes, now: int,
                        validity: int) -> Outcome:
    """Verify ``evidence`` for ``state.host``; update ``state`` in place
    only with what verified. Any evidence error gives an untrusted verdict
    whose reasons say why."""
    digest = evidence.digest()
    try:
        if evidence.host != state.host:
            raise exception.MalformedEvidence(
                what="evidence", reason="sent for host %s to the queue of "
                "host %s" % (evidence.host, state.host))
        verified = quotes.verify_quote(state.ak, evidence.quote,
                                       evidence.signature, expected_nonce,
                                       evidence.pcrs)
        reboot = freshness.check_clock(state.host, state.clock,
                                       verified.clock_info)
    except exception.EvidenceError as error:
        return Outcome(failed_verdict(state.host, error, digest, now,
                                      validity), None)
    state.clock = verified.clock_info
    if reboot is freshness.Reboot.RESET:
        state.boot = None
        state.ima_state = None
    reasons: list[str] = []
    boot_log = _verified_boot(state, evidence, verified, reasons)
    runtime = _verified_runtime(state, evidence, verified, reasons)
    result = appraisal_mod.appraise(
        identity_ok=True, verified_quote=verified,
        verified_event_log=boot_log, verified_ima=runtime,
        policies=state.policy, extra_reasons=reasons)
    return Outcome(appraisal_mod.make_verdict(
        state.host, result, digest, now, validity), reboot)


def failed_verdict(host: str, error: exception.EvidenceError, digest: str,
                   now: int, validity: int) -> Verdict:
    """Untrusted, level 0: the evidence itself did not verify."""
    outcome = (levels.Outcome.MALFORMED
               if isinstance(error, exception.MalformedEvidence)
               else levels.Outcome.CRYPTO_FAILED)
    return verdict_mod.make_verdict(
        host=host, outcomes={levels.Rung.IDENTITY: outcome},
        required_level=levels.AssuranceLevel.IDENTITY, policy_versions={},
        evidence_digest=digest, issued_at=now, validity=validity,
        reasons=["%s: %s" % (type(error).__name__, error.message)])


def _boot_pcrs(log: eventlog.VerifiedEventLog,
               verified: quotes.VerifiedQuote
               ) -> tuple[tuple[int, int, bytes], ...]:
    return tuple((bank, pcr, verified.pcrs[bank][pcr])
                 for bank, pcrs in sorted(log.checked_pcrs.items())
                 for pcr in sorted(pcrs))


def _same_boot(record: BootRecord, verified: quotes.VerifiedQuote) -> bool:
    return all(verified.pcrs.get(bank, {}).get(pcr) == value
               for bank, pcr, value in record.pcrs)


def _verified_boot(state: HostState, evidence: Evidence,
                   verified: quotes.VerifiedQuote, reasons: list[str]
                   ) -> eventlog.VerifiedEventLog | None:
    if evidence.event_log is None:
        if state.boot is not None and _same_boot(state.boot, verified):
            return state.boot.log
        state.want_event_log = True
        reasons.append("no event log for the quoted boot PCRs yet; "
                       "requested from the host")
        return None
    try:
        log = eventlog.verify_event_log(
            eventlog.parse_event_log(evidence.event_log), verified.pcrs)
    except exception.EvidenceError as error:
        state.boot = None
        reasons.append("event log: %s" % error.message)
        return None
    state.boot = BootRecord(evidence.event_log_digest or "",
                            _boot_pcrs(log, verified), log)
    state.want_event_log = False
    return log


def _verified_runtime(state: HostState, evidence: Evidence,
                      verified: quotes.VerifiedQuote, reasons: list[str]
                      ) -> ima.VerifiedIMALog | None:
    quoted = {bank: pcrs[IMA_PCR] for bank, pcrs in verified.pcrs.items()
              if IMA_PCR in pcrs}
    if evidence.ima is None or not quoted:
        return None
    start = state.ima_state
    expected_start = 0 if start is None else start.entries
    if evidence.ima.start != expected_start:
        reasons.append("IMA log sent from entry %d, expected %d; asked "
                       "again" % (evidence.ima.start, expected_start))
        return None
    if start is not None and set(start.pcrs) != set(quoted):
        start = None
        reasons.append("IMA banks changed; replaying from the start")
        state.ima_state = None
        return None
    try:
        result = ima.verify_ima_log(evidence.ima.data, quoted, start,
                                    fmt="ascii", tail=True)
    except exception.EvidenceError as error:
        # Keep the old state: the next round replays the same entries.
        reasons.append("IMA log: %s" % error.message)
        return None
    state.ima_state = replace(result.state, offset=None)
    return result
