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

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any, Iterable, Protocol

from trusted_pools import exception
from trusted_pools.verifier import appraisal as appraisal_mod
from trusted_pools.protocol import freshness
from trusted_pools.protocol.evidence import Evidence, Limits
from trusted_pools.protocol import levels
from trusted_pools.verifier import policy as policy_mod
from trusted_pools.protocol import verdict as verdict_mod
from trusted_pools.protocol.verdict import Verdict
from trusted_pools.tpm import eventlog
from trusted_pools.tpm import ima
from trusted_pools.tpm import quote as quotes
from trusted_pools.tpm import structures

LOG = logging.getLogger(__name__)

IMA_PCR = 10


class PhaseTimer(Protocol):
    """Told how long each phase of a verification took (the conductor's
    metrics): ``quote``, ``event_log`` (only when the log was parsed and
    replayed), ``ima`` (only when new entries were replayed),
    ``appraisal``."""

    def observe(self, phase: str, seconds: float) -> None: ...


class _NoTimer:
    def observe(self, phase: str, seconds: float) -> None:
        pass


_NO_TIMER = _NoTimer()


@dataclass(frozen=True)
class StoredClock:
    """A quote's clock as kept in the database (``safe`` not needed)."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool = True


@dataclass(frozen=True)
class BootRecord:
    """The last verified boot of a host: which log, which PCR values.

    ``appraisal`` remembers the measured-boot findings for this log (see
    :class:`~trusted_pools.verifier.appraisal.MeasuredBootMemo`): a new
    boot is a new record, so it starts empty.
    """

    event_log_digest: str
    pcrs: tuple[tuple[int, int, bytes], ...]  # (bank, pcr, value) checked
    log: eventlog.VerifiedEventLog
    appraisal: appraisal_mod.MeasuredBootMemo = field(
        default_factory=appraisal_mod.MeasuredBootMemo, compare=False,
        repr=False)


@dataclass(frozen=True)
class HostPolicies:
    """The policies of a host group, and the level that makes it trusted.

    The required level is the highest rung the policies cover: a group
    with a runtime (IMA) policy must reach level 4, one with only a
    measured-boot policy level 3 (or 2 if it covers only firmware), one
    without policies level 1 (an enrolled TPM that answers).
    """

    measured_boot: policy_mod.MeasuredBootPolicy | None = None
    runtime: policy_mod.RuntimePolicy | None = None

    @property
    def required_level(self) -> levels.AssuranceLevel:
        if self.runtime is not None:
            return levels.AssuranceLevel.RUNTIME
        boot = self.measured_boot
        if boot is not None and boot.covers(levels.Rung.OS_BOOT):
            return levels.AssuranceLevel.OS_BOOT
        if boot is not None and boot.covers(levels.Rung.PLATFORM_FIRMWARE):
            return levels.AssuranceLevel.PLATFORM_FIRMWARE
        return levels.AssuranceLevel.IDENTITY


def load_host_policies(records: Iterable[Any]) -> HostPolicies:
    """HostPolicies from database records (name, version, kind, body)."""
    found: dict[str, Any] = {}
    for record in records:
        if record.kind in found:
            raise exception.ConfigInvalid(
                reason="two %s policies (%s and %s) are assigned to one "
                       "host group; assign one" % (
                           record.kind, found[record.kind].name,
                           record.name))
        found[record.kind] = policy_mod.load_policy(
            record.kind, record.body, name=record.name,
            version=record.version)
    return HostPolicies(found.get(policy_mod.KIND_MEASURED_BOOT),
                        found.get(policy_mod.KIND_RUNTIME))


@dataclass
class HostState:
    """What a conductor remembers about a host between rounds."""

    host: str
    host_id: int
    group: str
    ak: structures.Public
    clock: Any = None               # ClockInfo of the last accepted quote
    # Its number in the conductor's IssueOrder (None: read from the
    # database, accepted before any nonce this process issued).
    accepted_order: int | None = None
    boot: BootRecord | None = None
    ima_state: ima.ReplayState | None = None
    # Runtime outcome of the IMA entries already replayed: a bad file
    # stays bad until the host reboots.
    ima_prior: levels.Outcome | None = None
    # IMA entries received after the quoted prefix (whole ones, then maybe
    # the start of one not yet read in full), in ima_pending_format:
    # replayed next round.
    ima_pending: bytes = b""
    ima_pending_entries: int = 0
    ima_pending_format: tuple[str, int | None] | None = None
    policy: HostPolicies | None = None
    # The host's enrollment generation this state (AK, clock) belongs to.
    registration: int = 0

    @property
    def ima_replayed(self) -> int:
        return 0 if self.ima_state is None else self.ima_state.entries

    @property
    def ima_expected_start(self) -> int:
        """Entry number the host's next IMA tail must start at."""
        return self.ima_replayed + self.ima_pending_entries

    def request(self) -> dict[str, Any]:
        """What to ask of the host in a direct challenge."""
        return {"ima_start": self.ima_replayed, "event_log": True}

    def forget_boot(self) -> None:
        self.boot = None
        self.forget_ima()

    def forget_ima(self) -> None:
        self.ima_state = None
        self.ima_prior = None
        self.ima_pending = b""
        self.ima_pending_entries = 0
        self.ima_pending_format = None


def needs_full_evidence(state: HostState, evidence: Evidence) -> bool:
    """Whether pushed evidence leaves out what this conductor lacks: the
    event log of the host's current boot, or IMA entries it never got.
    Evidence with neither a log nor a log digest comes from a host that
    has no event log: nothing was left out."""
    if evidence.event_log is None and evidence.event_log_digest is not None \
            and (state.boot is None
                 or evidence.event_log_digest != state.boot.event_log_digest):
        return True
    return evidence.ima is not None and \
        evidence.ima.start != state.ima_expected_start


@dataclass(frozen=True)
class Outcome:
    #: None only when ``late``: nothing to judge.
    verdict: Verdict | None
    reboot: freshness.Reboot | None
    #: The quote itself did not verify (signature, nonce, clock, ...).
    quote_failed: bool = False
    #: The quote verified, but the event log or IMA log sent with it did
    #: not replay to it (data the host wrote, which the quote does not
    #: cover until it replays).
    evidence_failed: bool = False
    #: A genuine quote older than one already accepted, over a nonce
    #: issued before that acceptance: verified late, not replayed.
    late: exception.QuoteReplayed | None = None
    #: The types of the errors that made the evidence fail (the quote's,
    #: or the logs'): what the metrics count, never their text.
    rejected: tuple[type, ...] = ()


def allows_sha1_quotes(state: HostState) -> bool:
    """Whether the host group's measured-boot policy accepts SHA-1 quotes
    (``"allow_sha1_quotes": true``); without such a policy, no."""
    policies = state.policy
    boot = policies.measured_boot if policies is not None else None
    return boot is not None and boot.allow_sha1_quotes


def check_quote(state: HostState, evidence: Evidence,
                expected_nonce: bytes
                ) -> tuple[quotes.VerifiedQuote, freshness.Reboot]:
    """The verified quote and what happened to the TPM since the last one,
    or a typed error if the quote is not genuine and fresh. Changes no
    state."""
    verified = quotes.verify_quote(state.ak, evidence.quote,
                                   evidence.signature, expected_nonce,
                                   evidence.pcrs,
                                   allow_sha1=allows_sha1_quotes(state))
    return verified, freshness.check_clock(state.host, state.clock,
                                           verified.clock_info)


def verify_and_appraise(state: HostState, evidence: Evidence,
                        expected_nonce: bytes, now: int,
                        validity: int, *, issued: int | None = None,
                        accepted: int | None = None,
                        limits: Limits = Limits(),
                        timer: PhaseTimer = _NO_TIMER) -> Outcome:
    """Verify ``evidence`` for ``state.host``; update ``state`` in place
    only with what verified. Any evidence error gives an untrusted verdict
    whose reasons say why.

    ``issued`` is the issue number of ``expected_nonce`` and ``accepted``
    the number this acceptance takes (one :class:`freshness.IssueOrder`;
    the caller serialises verification of a host). A genuine quote that is
    older than the accepted one while its nonce was issued before that
    acceptance is late: the outcome has no verdict and changes nothing.

    ``limits`` caps the event log and the IMA list parsed and replayed
    (the caller's configuration; see :class:`~.evidence.Limits`).
    ``timer`` is told the time of each phase (:class:`PhaseTimer`).
    """
    digest = evidence.digest()
    started = time.perf_counter()
    try:
        if evidence.host != state.host:
            raise exception.MalformedEvidence(
                what="evidence", reason="sent for host %s to the queue of "
                "host %s" % (evidence.host, state.host))
        verified, reboot = check_quote(state, evidence, expected_nonce)
    except exception.QuoteReplayed as error:
        timer.observe("quote", time.perf_counter() - started)
        if freshness.answered_before_accepted(issued, state.accepted_order):
            return Outcome(None, None, late=error)
        return Outcome(failed_verdict(state.host, error, digest, now,
                                      validity), None, quote_failed=True,
                       rejected=(type(error),))
    except exception.EvidenceError as error:
        timer.observe("quote", time.perf_counter() - started)
        return Outcome(failed_verdict(state.host, error, digest, now,
                                      validity), None, quote_failed=True,
                       rejected=(type(error),))
    timer.observe("quote", time.perf_counter() - started)
    state.clock = verified.clock_info
    state.accepted_order = accepted
    if reboot is freshness.Reboot.RESET:
        state.forget_boot()
    policies = state.policy or HostPolicies()
    boot_log, boot_error = _verified_boot(state, evidence, verified, limits,
                                          timer)
    runtime, runtime_error = _verified_runtime(state, evidence, verified,
                                               limits, timer)
    prior = state.ima_prior if runtime is not None and \
        runtime.start.entries > 0 else None
    boot = state.boot
    memo = boot.appraisal if boot is not None and boot_log is not None \
        and boot.log is boot_log else None
    started = time.perf_counter()
    result = appraisal_mod.appraise(
        identity=True, quote=verified, event_log=boot_log,
        ima_log=runtime, measured_boot_policy=policies.measured_boot,
        runtime_policy=policies.runtime, ima_prior=prior,
        event_log_error=boot_error, ima_error=runtime_error,
        boot_memo=memo)
    if runtime is not None:
        state.ima_prior = result.outcomes[levels.Rung.RUNTIME]
    verdict = appraisal_mod.make_verdict(
        state.host, result, digest, now, validity,
        min_level_for_trusted=policies.required_level)
    timer.observe("appraisal", time.perf_counter() - started)
    return Outcome(verdict, reboot,
                   evidence_failed=boot_error is not None
                   or runtime_error is not None,
                   rejected=tuple(type(e) for e in (boot_error, runtime_error)
                                  if e is not None))


def wire_digest(wire: Any) -> str:
    """Digest of a message that did not parse as evidence (for the
    verdict's evidence digest: what exactly was rejected)."""
    try:
        text = json.dumps(wire, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        # Keys JSON cannot sort (int beside str) or a cycle: not from the
        # bus, whose JSON gives string keys, but still no reason to fail.
        text = repr(wire)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


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
                   verified: quotes.VerifiedQuote, limits: Limits,
                   timer: PhaseTimer = _NO_TIMER
                   ) -> tuple[eventlog.VerifiedEventLog | None,
                              exception.TrustedPoolsError | None]:
    if state.boot is not None and _same_boot(state.boot, verified) and (
            evidence.event_log is None
            or evidence.event_log_digest == state.boot.event_log_digest):
        # Same log, same quoted boot PCRs: nothing to replay again (and
        # the appraisal memo of this boot stays valid).
        return state.boot.log, None
    if evidence.event_log is None and evidence.event_log_digest is None:
        # The host sends no event log ([agent] event_log_path empty). Its
        # boot PCRs are still appraised against policy PCR values; event
        # rules are not appraised, so a policy that has them keeps the
        # host below their rung. Withholding a log gains a host nothing.
        state.boot = None
        return None, None
    if evidence.event_log is None:
        return None, exception.EvidenceError(
            reason="the quoted boot PCRs changed but no event log came "
                   "with them")
    started = time.perf_counter()
    try:
        log = eventlog.verify_event_log(
            eventlog.parse_event_log(evidence.event_log,
                                     max_size=limits.max_event_log),
            verified.pcrs)
    except exception.EvidenceError as error:
        state.boot = None
        return None, error
    finally:
        timer.observe("event_log", time.perf_counter() - started)
    state.boot = BootRecord(evidence.event_log_digest or "",
                            _boot_pcrs(log, verified), log)
    return log, None


def _verified_runtime(state: HostState, evidence: Evidence,
                      verified: quotes.VerifiedQuote, limits: Limits,
                      timer: PhaseTimer = _NO_TIMER
                      ) -> tuple[ima.VerifiedIMALog | None,
                                 exception.TrustedPoolsError | None]:
    quoted = {bank: pcrs[IMA_PCR] for bank, pcrs in verified.pcrs.items()
              if IMA_PCR in pcrs}
    if evidence.ima is None or not quoted:
        return None, None
    start = state.ima_state
    if start is not None and set(start.pcrs) != set(quoted):
        state.forget_ima()
        return None, exception.EvidenceError(
            reason="the quoted IMA banks changed; replaying from the first "
                   "entry next round")
    tail = evidence.ima
    fmt = (tail.fmt, tail.template_hash_alg)
    if tail.start == state.ima_expected_start and (
            not state.ima_pending or state.ima_pending_format == fmt):
        data = state.ima_pending + tail.data
    elif tail.start == state.ima_replayed:
        data = tail.data  # a direct challenge resends the pending
    else:
        return None, exception.EvidenceError(
            reason="IMA log sent from entry %d, expected %d"
            % (tail.start, state.ima_expected_start))
    started = time.perf_counter()
    try:
        result = ima.verify_ima_log(data, quoted, start, fmt=tail.fmt,
                                    tail=True,
                                    template_hash_alg=tail.template_hash_alg,
                                    max_size=limits.max_ima)
    except exception.EvidenceError as error:
        # Keep the old state: the next round replays the same entries.
        return None, error
    finally:
        timer.observe("ima", time.perf_counter() - started)
    state.ima_state = replace(result.state, offset=None)
    # The whole entries after the covered ones, as the parser cut them (in
    # an ascii list a name may span lines): counted in entries, never in
    # newlines. A partly read last entry is dropped: the agent counts whole
    # entries too, and sends that one again, complete, next round.
    end = result.end if result.end is not None else len(data)
    state.ima_pending = data[end:len(data) - result.incomplete]
    state.ima_pending_entries = result.uncovered
    state.ima_pending_format = fmt
    return _with_entry_cache(result), None


class _EntryCache:
    """Parsed IMA entries by the exact bytes they were parsed from
    (:attr:`~trusted_pools.tpm.ima.VerifiedIMALog.entry_keys`: an ascii
    entry's text, or a binary entry's bytes tagged with its template-hash
    algorithm).

    Appraisal reads every new entry's path and file digest, and the strict
    parser that builds an entry costs ten times the replay of its line.
    The hosts of one image run the same programs, so the same lines come
    back from host after host (and round after round): a line's entry,
    apart from its number in the log, is a function of the line's bytes
    alone (for ascii the template-hash algorithm follows from the hash's
    length; a binary key names it), so an entry parsed once is reused for
    every identical key. Only entries of a verified (replayed) prefix are
    looked up or stored, and a
    miss parses the whole round the normal way. Bounded: when full it is
    emptied and refills from the next rounds.
    """

    def __init__(self, size: int = 32768) -> None:
        self._size = size
        self._items: dict[bytes, tuple[Any, ...]] = {}

    def entries(self, lines: list[bytes], first: int
                ) -> tuple[ima.IMAEntry, ...] | None:
        items = self._items
        found = [items.get(line) for line in lines]
        if None in found:
            return None
        entry = ima.IMAEntry
        return tuple([entry(first + i, *rest)
                      for i, rest in enumerate(found)])

    def store(self, lines: list[bytes],
              entries: tuple[ima.IMAEntry, ...]) -> None:
        if len(lines) != len(entries):
            return
        if len(self._items) + len(lines) > self._size:
            self._items = {}
        for line, entry in zip(lines, entries):
            self._items[line] = tuple(
                getattr(entry, name) for name in _ENTRY_FIELDS[1:])


_ENTRY_FIELDS = tuple(f.name for f in fields(ima.IMAEntry))
if _ENTRY_FIELDS[0] != "line":  # entries are rebuilt positionally
    raise ImportError("IMAEntry no longer starts with its line number")
_ENTRY_CACHE = _EntryCache()


def _with_entry_cache(result: ima.VerifiedIMALog) -> ima.VerifiedIMALog:
    """``result`` whose entries come from :data:`_ENTRY_CACHE` when every
    covered entry's key is in it (same result otherwise)."""
    lines = list(result.entry_keys or ())
    if not lines:
        return result
    first = result.start.entries + 1

    def materialise() -> tuple[ima.IMAEntry, ...]:
        cached = _ENTRY_CACHE.entries(lines, first)
        if cached is not None:
            return cached
        parsed = result.entries
        _ENTRY_CACHE.store(lines, parsed)
        return parsed

    return ima.VerifiedIMALog(result.state, result.start, result.covered,
                              result.uncovered, result.sha1_padded,
                              materialise, result.entry_keys, fmt=result.fmt,
                              end=result.end, incomplete=result.incomplete)


def capture(ak: structures.Public, evidence: Evidence, nonce: bytes,
            limits: Limits = Limits()) -> dict[str, Any]:
    """Verify fresh, complete evidence and capture policies from it."""
    verified = quotes.verify_quote(ak, evidence.quote, evidence.signature,
                                   nonce, evidence.pcrs)
    captured: dict[str, Any] = {}
    if evidence.event_log is not None:
        log = eventlog.verify_event_log(
            eventlog.parse_event_log(evidence.event_log,
                                     max_size=limits.max_event_log),
            verified.pcrs)
        captured[policy_mod.KIND_MEASURED_BOOT] = \
            appraisal_mod.capture_measured_boot_policy(log, verified.pcrs)
    else:
        # No event log from this host: its boot can still be held to the
        # quoted values of the boot PCRs.
        captured[policy_mod.KIND_MEASURED_BOOT] = \
            appraisal_mod.capture_pcr_values_policy(verified.pcrs)
    quoted = {bank: pcrs[IMA_PCR] for bank, pcrs in verified.pcrs.items()
              if IMA_PCR in pcrs}
    if evidence.ima is not None and evidence.ima.start == 0 and quoted:
        runtime = ima.verify_ima_log(
            evidence.ima.data, quoted, fmt=evidence.ima.fmt, tail=True,
            template_hash_alg=evidence.ima.template_hash_alg,
            max_size=limits.max_ima)
        captured[policy_mod.KIND_RUNTIME] = \
            appraisal_mod.capture_runtime_policy(runtime, verified.pcrs)
    return captured
