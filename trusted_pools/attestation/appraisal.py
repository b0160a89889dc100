"""Appraisal: verified evidence + golden measurements -> outcome per rung.

The conductor verifies first (quote signature and nonce, event log replay,
IMA replay: :mod:`trusted_pools.tpm`) and then calls :func:`appraise` with
what verified. Appraisal compares that evidence with the host's policies
(:mod:`.policy`) and says, for every rung of the level ladder
(:mod:`.levels`), whether it passed and why not, in reasons an operator can
act on: they name the PCR, the event index and type, the logged path and
the digest, or the IMA line and file.

Rules that make it fail closed:

* a rung passes only if at least one check ran for it and every check
  passed; a policy without a rule for a rung leaves that rung
  NOT_APPRAISED (a reason says so). There is deliberately no "rung not
  required" switch: to accept hosts without, say, runtime appraisal, lower
  the level the host group requires (``min_level_for_trusted``); the
  ladder never skips a rung, so nothing above an unappraised rung counts;
* missing evidence for a rung the policy covers is NOT_APPRAISED, never
  PASSED: no quote, no verified event log, a PCR the rule needs that the
  event log verification did not check, a policy bank the evidence lacks;
* event rules read only bound values of verified events (the trust
  contract of :mod:`trusted_pools.tpm.eventlog_decode`): digests of
  images and files, the data of events whose digest is the hash of their
  data. Paths and device paths appear in reasons as "logged" text only.
  Checks that could be dodged by mislabelling an event are written to
  cover every unbound event of the PCR instead (every image in PCR 0/2
  for firmware, in PCR 4 for boot loaders, every file in PCR 9);
* bad news is kept: a contradiction in one rung is reported even when a
  lower rung failed.

:func:`capture_measured_boot_policy` and :func:`capture_runtime_policy` turn
a known-good host's current verified evidence into a policy body for an
operator to review (NFV-SEC 007 7.1.3, golden measurement registration);
they read the evidence with the same code as :func:`appraise`, so the same
evidence passes the captured policy.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from trusted_pools import exception
from trusted_pools.attestation import verdict as verdict_mod
from trusted_pools.attestation.levels import (
    AssuranceLevel,
    Outcome,
    Rung,
    TrustVector,
    compute_level,
    vector_from_outcomes,
)
from trusted_pools.attestation.policy import (
    KIND_MEASURED_BOOT,
    KIND_RUNTIME,
    PCR_RUNGS,
    DigestAllowList,
    MeasuredBootPolicy,
    RuntimePolicy,
    ima_digest_key,
)
from trusted_pools.tpm import constants, efi, eventlog_decode, ima
from trusted_pools.tpm.eventlog import (
    EventType,
    VerifiedEvent,
    VerifiedEventLog,
)
from trusted_pools.tpm.quote import VerifiedQuote

__all__ = [
    "Appraisal", "appraise", "make_verdict", "capture_measured_boot_policy",
    "capture_runtime_policy", "signature_entry_id", "DEFAULT_PIN_PCRS",
    "MAX_REASONS_PER_RUNG", "clear_cache", "MeasuredBootMemo",
]

#: PCRs whose quoted values capture pins by default: firmware code (0),
#: option ROM code (2) and configuration (3), secure boot policy (7). These
#: are the same on every host of one model and firmware version. PCRs 1, 5
#: and 8/9 hold per-host data (boot entries, the disk's GPT, UUIDs in GRUB
#: commands) and PCR 4 changes with every boot loader or kernel update;
#: the event rules cover what matters in them.
DEFAULT_PIN_PCRS = (0, 2, 3, 7)
#: Detailed reasons kept per rung; the rest are counted in one line.
MAX_REASONS_PER_RUNG = 16
# Bank preference when one digest is to be printed or pinned.
_BANK_PREFERENCE = (constants.TPM_ALG.SHA256, constants.TPM_ALG.SHA384,
                    constants.TPM_ALG.SHA512, constants.TPM_ALG.SHA1)
_SEVERITY = (Outcome.CRYPTO_FAILED, Outcome.CONTRAINDICATED,
             Outcome.MALFORMED, Outcome.VERIFIER_ERROR, Outcome.UNRECOGNIZED,
             Outcome.VULNERABLE, Outcome.NOT_APPRAISED, Outcome.PASSED)
# Iterating an Enum class costs more than a tuple; appraise does it often.
_RUNGS = tuple(Rung)
_RUNG_LABEL = {Rung.IDENTITY: "identity",
               Rung.PLATFORM_FIRMWARE: "platform firmware",
               Rung.OS_BOOT: "OS boot", Rung.RUNTIME: "runtime"}
_FIRMWARE_CODE_PCRS = (0, 2)
_BOOT_LOADER_PCR = 4
_BOOT_FILES_PCR = 9
_CMDLINE_PCRS = (8, 12)
_SECURE_BOOT_PCR = 7
_LINUX_INITRD_TAG = 0x8F3B22EC


def _worst(outcomes: Iterable[Outcome]) -> Outcome:
    return min(outcomes, key=_SEVERITY.index, default=Outcome.NOT_APPRAISED)


def _invalid(name: str, reason: str) -> exception.InvalidParameterValue:
    return exception.InvalidParameterValue(name=name, reason=reason)


# --- text for reasons -----------------------------------------------------------

def _clean(text: str, limit: int = 160) -> str:
    """Host-supplied text made safe to show: no control characters."""
    out = "".join(c if c.isprintable() else "\\x%02x" % (ord(c) & 0xff)
                  for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


def _label(policy: MeasuredBootPolicy | RuntimePolicy) -> str:
    return "policy %r v%d" % (policy.name, policy.version)


def _preferred(digests: Mapping[int, bytes],
               among: Iterable[int] | None = None) -> int | None:
    """The bank to show or pin for an event (strongest common one)."""
    wanted = set(among) if among is not None else set(digests)
    for alg in _BANK_PREFERENCE:
        if alg in digests and alg in wanted:
            return int(alg)
    common = sorted(a for a in digests if a in wanted)
    return common[0] if common else None


def _digest_text(event: VerifiedEvent, lists: Iterable[DigestAllowList]
                 ) -> str:
    banks = {alg for allow in lists for alg in allow.digests}
    alg = _preferred(event.digests, banks) or _preferred(event.digests)
    if alg is None:
        return "no digest"
    return "%s digest %s" % (constants.alg_name(alg), event.digests[alg].hex())


def _logged_text(event: VerifiedEvent) -> str | None:
    """What the host logged beside a measurement (not bound)."""
    value = eventlog_decode.decode_event(event).value
    if isinstance(value, efi.ImageLoadEvent):
        return value.device_path or None
    if isinstance(value, eventlog_decode.IPLString):
        return value.text
    if isinstance(value, eventlog_decode.EventTag):
        return value.text
    if isinstance(value, eventlog_decode.FirmwareBlob):
        return "%sbase %#x, %d bytes" % (
            value.description + ", " if value.description else "",
            value.base, value.length)
    if isinstance(value, eventlog_decode.PostCode):
        return value.text or ("base %#x, %d bytes" % (value.base or 0,
                                                     value.length or 0))
    return None


def _event_name(event: VerifiedEvent, kind: str | None = None) -> str:
    """'PCR 9 event 95 (EV_IPL, kernel '/boot/vmlinuz')'."""
    logged = _logged_text(event)
    tail = " ".join(part for part in (
        kind, "'%s'" % _clean(logged) if logged else None) if part)
    detail = event.type_name + (", " + tail if tail else "")
    return "PCR %d event %d (%s)" % (event.pcr, event.index, detail)


def _or_list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else "%s or %s" % (
        ", ".join(names[:-1]), names[-1])


def signature_entry_id(entry: efi.SignatureEntry) -> str:
    """How policies name a secure boot database entry.

    ``x509:<SHA-256 of the DER certificate>`` (the certificate's usual
    fingerprint), else ``<type>:<hex of the entry data>`` (for
    ``sha256`` entries, the image hash itself).
    """
    if entry.type == "x509":
        return "x509:" + hashlib.sha256(entry.data).hexdigest()
    return "%s:%s" % (entry.type, entry.data.hex())


# --- reading verified event logs ------------------------------------------------

def _checked(log: VerifiedEventLog, pcr: int) -> bool:
    return any(pcr in pcrs for pcrs in log.checked_pcrs.values())


def _events_on(log: VerifiedEventLog, pcrs: Iterable[int]
               ) -> tuple[VerifiedEvent, ...]:
    wanted = frozenset(pcrs)
    return tuple(e for e in log.events if e.pcr in wanted)


def _unbound_events(log: VerifiedEventLog, pcrs: Iterable[int]
                    ) -> list[VerifiedEvent]:
    """Events whose digest is NOT the hash of their data: measurements of
    code or files. Their type is not bound either, so rules take all of
    them instead of trusting a type."""
    return [e for e in _events_on(log, pcrs) if not e.data_verified]


class _FactCache:
    """Facts read from event subsets, keyed by everything they depend on.

    Decoding PCR 7 (certificates, a dbx of hundreds of hashes) or GRUB's
    PCR 8 strings costs far more than comparing them, and is the same on
    every boot of one host and on every host of one image, so it is worth
    keeping. The key holds the events' full content (index, PCR, type,
    data, binding, digests): equal keys mean equal facts, nothing aliases.
    """

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._items: collections.OrderedDict[Any, Any] = \
            collections.OrderedDict()
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def get(self, what: str, log: VerifiedEventLog, pcrs: tuple[int, ...],
            compute: Callable[[VerifiedEventLog], Any]) -> Any:
        events = _events_on(log, pcrs)
        # Digests in log order: the same content in another order is only
        # a cache miss, never a wrong hit.
        key = (what, log.quirks_applied, tuple([
            (e.index, e.pcr, e.event_type, e.data, e.data_verified,
             e.synthetic, tuple(e.digests.items())) for e in events]))
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        facts = compute(dataclasses.replace(log, events=events))
        with self._lock:
            self._items[key] = facts
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return facts


_FACTS = _FactCache()


def clear_cache() -> None:
    """Forget cached event facts and IMA line decisions (tests,
    benchmarks, memory pressure). :class:`MeasuredBootMemo` objects belong
    to their callers and are not touched."""
    _FACTS.clear()
    _PASSING_LINES.clear()


def _summary(log: VerifiedEventLog, pcrs: tuple[int, ...]
             ) -> eventlog_decode.BootSummary:
    """summarize() of the events on ``pcrs`` only (its rules are per PCR,
    so a subset gives the same facts for those PCRs). Shared: read only."""
    return _FACTS.get("summary", log, pcrs, eventlog_decode.summarize)


@dataclasses.dataclass(frozen=True)
class _SecureBootFacts:
    secure_boot: bool | None
    #: variable name -> entries (in order) and their ids
    entries: Mapping[str, tuple[tuple[str, efi.SignatureEntry], ...]]
    #: variable name -> first bound PCR 7 event that set it
    events: Mapping[str, VerifiedEvent]
    #: variable name -> the ids of its entries
    ids: Mapping[str, frozenset[str]]


def _read_secure_boot(log: VerifiedEventLog) -> _SecureBootFacts:
    summary = eventlog_decode.summarize(log)
    entries = {name: tuple((signature_entry_id(e), e) for sig_list in lists
                           for e in sig_list.entries)
               for name, lists in summary.secure_boot_databases.items()}
    return _SecureBootFacts(
        summary.secure_boot, entries, _variable_events(log),
        {name: frozenset(i for i, _ in items)
         for name, items in entries.items()})


def _secure_boot_facts(log: VerifiedEventLog) -> _SecureBootFacts:
    return _FACTS.get("secure_boot", log, (_SECURE_BOOT_PCR,),
                      _read_secure_boot)


@dataclasses.dataclass(frozen=True)
class _OSBootFacts:
    #: event index -> 'kernel'/'initrd' for PCR 9 files, as GRUB's commands
    #: and the file names suggest (for reasons and review only)
    kinds: Mapping[int, str]
    #: bound kernel command lines of PCRs 8/12 and their events
    lines: tuple[tuple[VerifiedEvent, str], ...]
    #: PCR 8/12 events whose data is not bound (content unknown)
    unbound: tuple[VerifiedEvent, ...]


def _read_os_boot(log: VerifiedEventLog) -> _OSBootFacts:
    summary = eventlog_decode.summarize(log)
    by_digests: dict[Any, str] = {}
    for kind, files in (("initrd", summary.initrds),
                        ("kernel", summary.kernels)):
        for loaded in files:
            by_digests[tuple(sorted(loaded.digests.items()))] = kind
    kinds = {}
    for event in _events_on(log, (_BOOT_FILES_PCR,)):
        key = tuple(sorted((a, d.hex()) for a, d in event.digests.items()))
        if key in by_digests:
            kinds[event.index] = by_digests[key]
    lines, unbound = _read_command_lines(log)
    return _OSBootFacts(types.MappingProxyType(kinds), tuple(lines),
                        tuple(unbound))


def _os_boot_facts(log: VerifiedEventLog) -> _OSBootFacts:
    return _FACTS.get("os_boot", log, (8, _BOOT_FILES_PCR, 12),
                      _read_os_boot)


def _file_kinds(log: VerifiedEventLog) -> Mapping[int, str]:
    return _os_boot_facts(log).kinds


def _variable_events(log: VerifiedEventLog) -> dict[str, VerifiedEvent]:
    """First bound PCR 7 EV_EFI_VARIABLE_DRIVER_CONFIG event per name."""
    found: dict[str, VerifiedEvent] = {}
    for event in _events_on(log, (_SECURE_BOOT_PCR,)):
        if (event.event_type != EventType.EV_EFI_VARIABLE_DRIVER_CONFIG
                or not event.data_verified):
            continue
        try:
            name = efi.parse_variable_data(event.data).name
        except exception.MalformedEvidence:
            continue
        found.setdefault(name, event)
    return found


def _command_lines(log: VerifiedEventLog
                   ) -> tuple[tuple[tuple[VerifiedEvent, str], ...],
                              tuple[VerifiedEvent, ...]]:
    facts = _os_boot_facts(log)
    return facts.lines, facts.unbound


def _read_command_lines(log: VerifiedEventLog
                        ) -> tuple[list[tuple[VerifiedEvent, str]],
                                   list[VerifiedEvent]]:
    """Bound kernel command lines of PCRs 8/12 (the rule of
    ``eventlog_decode.summarize``), and the events there whose data is not
    bound at all (their content is unknown)."""
    lines, unbound = [], []
    for event in _events_on(log, _CMDLINE_PCRS):
        decoded = eventlog_decode.decode_event(event)
        if decoded.binding is eventlog_decode.Binding.NONE:
            unbound.append(event)
            continue
        value = decoded.value
        if isinstance(value, eventlog_decode.IPLString) and (
                (value.kind == "kernel_cmdline" and event.pcr == 8)
                or value.kind == "cmdline"):
            lines.append((event, value.text))
    return lines, unbound


# --- findings ------------------------------------------------------------------

class _Findings:
    """Outcomes and reasons gathered per rung while checking."""

    def __init__(self) -> None:
        self.outcomes: dict[Rung, list[Outcome]] = {r: [] for r in _RUNGS}
        self.reasons: dict[Rung, list[str]] = {r: [] for r in _RUNGS}
        self.configuration: list[Outcome] = []

    def add(self, rung: Rung, outcome: Outcome, reason: str | None = None
            ) -> Outcome:
        self.outcomes[rung].append(outcome)
        if reason is not None:
            self.reasons[rung].append(reason)
        return outcome

    def outcome(self, rung: Rung) -> Outcome:
        found = self.outcomes[rung]
        return _worst(found) if found else Outcome.NOT_APPRAISED

    def snapshot(self) -> "_Recorded":
        """What was found so far, frozen (to be merged again later)."""
        return _Recorded(
            tuple((rung, tuple(self.outcomes[rung]),
                   tuple(self.reasons[rung])) for rung in _RUNGS
                  if self.outcomes[rung] or self.reasons[rung]),
            tuple(self.configuration))

    def merge(self, recorded: "_Recorded") -> None:
        """Add findings recorded from another :class:`_Findings`, after
        the ones already here (the same order as finding them here)."""
        for rung, outcomes, reasons in recorded.rungs:
            self.outcomes[rung].extend(outcomes)
            self.reasons[rung].extend(reasons)
        self.configuration.extend(recorded.configuration)

    def rung_reasons(self, rung: Rung) -> tuple[str, ...]:
        reasons = self.reasons[rung]
        prefix = "%s: " % _RUNG_LABEL[rung]
        kept = [prefix + r for r in reasons[:MAX_REASONS_PER_RUNG]]
        if len(reasons) > MAX_REASONS_PER_RUNG:
            kept.append(prefix + "%d more findings not listed"
                        % (len(reasons) - MAX_REASONS_PER_RUNG))
        return tuple(kept)


@dataclasses.dataclass(frozen=True)
class _Recorded:
    """Findings frozen by :meth:`_Findings.snapshot`."""

    rungs: tuple[tuple[Rung, tuple[Outcome, ...], tuple[str, ...]], ...]
    configuration: tuple[Outcome, ...]


class _Check:
    """One rule's findings on one rung: passes if it found nothing."""

    def __init__(self, findings: _Findings, rung: Rung) -> None:
        self.findings, self.rung = findings, rung
        self.outcomes: list[Outcome] = []

    def fail(self, outcome: Outcome, reason: str) -> None:
        self.outcomes.append(self.findings.add(self.rung, outcome, reason))

    def done(self) -> Outcome:
        if not self.outcomes:
            self.outcomes.append(self.findings.add(self.rung,
                                                   Outcome.PASSED))
        return _worst(self.outcomes)


def _require_pcrs(check: _Check, log: VerifiedEventLog, pcrs: Iterable[int],
                  rule: str, policy: MeasuredBootPolicy) -> bool:
    missing = [p for p in pcrs if not _checked(log, p)]
    if missing:
        check.fail(Outcome.NOT_APPRAISED, "%s rule %s needs PCR(s) %s "
                   "verified against the event log, which they were not "
                   "(quote them; verified: %s)" % (
                       _label(policy), rule,
                       ", ".join(map(str, missing)),
                       ", ".join(map(str, sorted({
                           p for ps in log.checked_pcrs.values()
                           for p in ps}))) or "none"))
        return False
    return True


# --- measured boot checks ----------------------------------------------------------

def _check_pcr_values(f: _Findings, rung: Rung,
                      quote_pcrs: Mapping[int, Mapping[int, bytes]],
                      log: VerifiedEventLog | None,
                      policy: MeasuredBootPolicy) -> None:
    for alg, pcr, expected in policy.pcrs_of(rung):
        actual = quote_pcrs.get(alg, {}).get(pcr)
        if actual is None:
            f.add(rung, Outcome.NOT_APPRAISED,
                  "PCR %d (%s) is not in the quote; %s expects %s"
                  % (pcr, constants.alg_name(alg), _label(policy), expected.hex()))
        elif not hmac.compare_digest(actual, expected):
            hint = ""
            if log is not None and _checked(log, pcr):
                indices = [str(e.index) for e in _events_on(log, (pcr,))]
                hint = "; the verified event log extends it with event(s) " \
                    "%s" % (", ".join(indices[:12]) + (
                        ", ..." if len(indices) > 12 else "") or "none")
            f.add(rung, Outcome.UNRECOGNIZED,
                  "PCR %d (%s) is %s, %s expects %s%s"
                  % (pcr, constants.alg_name(alg), actual.hex(), _label(policy),
                     expected.hex(), hint))
        else:
            f.add(rung, Outcome.PASSED)


def _check_images(f: _Findings, rung: Rung, log: VerifiedEventLog,
                  pcrs: tuple[int, ...], lists: list[tuple[str,
                                                           DigestAllowList]],
                  policy: MeasuredBootPolicy, kinds: Mapping[int, str],
                  default_kind: str | None = None) -> None:
    """Every unbound event of ``pcrs`` must be in one of ``lists``."""
    names = [name for name, _ in lists]
    rule = "/".join(names)
    check = _Check(f, rung)
    if _require_pcrs(check, log, pcrs, rule, policy):
        allow_lists = [allow for _, allow in lists]
        for event in _unbound_events(log, pcrs):
            results = [allow.allows(event.digests) for allow in allow_lists]
            if True in results:
                continue
            what = _event_name(event, kinds.get(event.index, default_kind))
            if False in results:
                check.fail(Outcome.UNRECOGNIZED, "%s: %s is not allowed by "
                           "%s (not among its %s)" % (
                               what, _digest_text(event, allow_lists),
                               _label(policy), _or_list(names)))
            else:
                check.fail(Outcome.NOT_APPRAISED, "%s: verified in bank(s) "
                           "%s only, %s lists %s digests only" % (
                               what, ", ".join(constants.alg_name(a) for a in sorted(
                                   event.digests)), _label(policy),
                               ", ".join(sorted({b for a in allow_lists
                                                 for b in a.banks()}))))
    check.done()


def _check_crtm(f: _Findings, log: VerifiedEventLog,
                allowed: frozenset[str], policy: MeasuredBootPolicy) -> None:
    check = _Check(f, Rung.PLATFORM_FIRMWARE)
    if _require_pcrs(check, log, (0,), "crtm_versions", policy):
        version = _summary(log, (0,)).crtm_version
        if version is None:
            check.fail(Outcome.UNRECOGNIZED, "PCR 0 holds no bound "
                       "EV_S_CRTM_VERSION event; %s allows S-CRTM versions "
                       "%s" % (_label(policy), ", ".join(
                           repr(v) for v in sorted(allowed))))
        elif version not in allowed:
            event = next((e for e in _events_on(log, (0,))
                          if e.event_type == EventType.EV_S_CRTM_VERSION
                          and e.data_verified), None)
            where = ("PCR 0 event %d (EV_S_CRTM_VERSION)" % event.index
                     if event else "PCR 0")
            check.fail(Outcome.UNRECOGNIZED, "%s: S-CRTM version '%s' is "
                       "not among the crtm_versions of %s" % (
                           where, _clean(version), _label(policy)))
    check.done()


def _check_secure_boot(f: _Findings, log: VerifiedEventLog,
                       policy: MeasuredBootPolicy) -> None:
    rule = policy.platform_firmware.secure_boot
    assert rule is not None
    check = _Check(f, Rung.PLATFORM_FIRMWARE)
    if not _require_pcrs(check, log, (_SECURE_BOOT_PCR,), "secure_boot",
                         policy):
        f.configuration.append(check.done())
        return
    facts = _secure_boot_facts(log)

    def where(name: str) -> str:
        event = facts.events.get(name)
        return ("PCR 7 event %d (EV_EFI_VARIABLE_DRIVER_CONFIG, %s)"
                % (event.index, name) if event else "PCR 7 (%s)" % name)

    if rule.required:
        if facts.secure_boot is None:
            check.fail(Outcome.UNRECOGNIZED, "PCR 7 holds no bound "
                       "SecureBoot variable event; %s requires secure boot "
                       "on" % _label(policy))
        elif not facts.secure_boot:
            check.fail(Outcome.CONTRAINDICATED, "%s: secure boot is off; %s "
                       "requires it on" % (where("SecureBoot"),
                                           _label(policy)))
    for name, allowed in (("PK", rule.pk), ("KEK", rule.kek),
                          ("db", rule.db)):
        if allowed is None:
            continue
        entries = facts.entries.get(name)
        if entries is None:
            check.fail(Outcome.UNRECOGNIZED, "PCR 7 holds no bound %s "
                       "variable event; %s pins its entries" % (
                           name, _label(policy)))
            continue
        if not entries:
            check.fail(Outcome.UNRECOGNIZED, "%s: %s is empty (setup mode); "
                       "%s pins its entries" % (where(name), name,
                                                _label(policy)))
        for entry_id, entry in entries:
            if entry_id not in allowed:
                check.fail(Outcome.UNRECOGNIZED, "%s: entry %s%s is not "
                           "among the %s entries of %s" % (
                               where(name), entry_id[:80],
                               " (%s)" % _clean(entry.subject, 100)
                               if entry.subject else "", name.lower(),
                               _label(policy)))
    if rule.dbx_contains is not None:
        missing = sorted(rule.dbx_contains - facts.ids.get("dbx",
                                                           frozenset()))
        if missing:
            check.fail(Outcome.VULNERABLE, "%s: dbx lacks %d revocation(s) "
                       "%s requires (revoked code could boot), e.g. %s" % (
                           where("dbx"), len(missing), _label(policy),
                           ", ".join(m[:80] for m in missing[:3])))
    f.configuration.append(check.done())


def _check_command_lines(f: _Findings, log: VerifiedEventLog,
                         policy: MeasuredBootPolicy) -> None:
    allowed = policy.os_boot.kernel_command_lines
    assert allowed is not None
    check = _Check(f, Rung.OS_BOOT)
    if _require_pcrs(check, log, _CMDLINE_PCRS, "kernel_command_lines",
                     policy):
        lines, unbound = _command_lines(log)
        for event in unbound:
            check.fail(Outcome.UNRECOGNIZED, "%s: its data is not what was "
                       "measured, so the command line it may carry is "
                       "unknown (%s pins command lines)" % (
                           _event_name(event), _label(policy)))
        for event, text in lines:
            if text not in allowed:
                check.fail(Outcome.UNRECOGNIZED, "%s: kernel command line "
                           "'%s' is not among the kernel_command_lines of %s"
                           % (_event_name(event, "command line"),
                              _clean(text, 600), _label(policy)))
    f.configuration.append(check.done())


def _appraise_measured_boot(f: _Findings,
                            quote_pcrs: Mapping[int, Mapping[int, bytes]],
                            log: VerifiedEventLog | None,
                            log_error: exception.TrustedPoolsError | None,
                            policy: MeasuredBootPolicy) -> None:
    fw, os_ = policy.platform_firmware, policy.os_boot
    for rung in (Rung.PLATFORM_FIRMWARE, Rung.OS_BOOT):
        _check_pcr_values(f, rung, quote_pcrs, log, policy)
    event_rungs = [rung for rung, empty in (
        (Rung.PLATFORM_FIRMWARE, fw.empty), (Rung.OS_BOOT, os_.empty))
        if not empty]
    if log is None:
        for rung in event_rungs:
            if log_error is None:
                f.add(rung, Outcome.NOT_APPRAISED, "no verified event log, "
                      "so the event rules of %s cannot be checked"
                      % _label(policy))
            else:
                f.add(rung, Outcome.NOT_APPRAISED, "the event log did not "
                      "verify, so the event rules of %s cannot be checked"
                      % _label(policy))
        return
    if fw.crtm_versions is not None:
        _check_crtm(f, log, fw.crtm_versions, policy)
    if fw.firmware_digests is not None:
        _check_images(f, Rung.PLATFORM_FIRMWARE, log, _FIRMWARE_CODE_PCRS,
                      [("firmware_digests", fw.firmware_digests)], policy,
                      {})
    if fw.secure_boot is not None:
        _check_secure_boot(f, log, policy)
    if os_.boot_loaders is not None:
        _check_images(f, Rung.OS_BOOT, log, (_BOOT_LOADER_PCR,),
                      [("boot_loaders", os_.boot_loaders)], policy, {})
    if os_.files:
        _check_images(f, Rung.OS_BOOT, log, (_BOOT_FILES_PCR,),
                      list(os_.files), policy, _file_kinds(log), "boot file")
    if os_.kernel_command_lines is not None:
        _check_command_lines(f, log, policy)


# --- runtime (IMA) checks -------------------------------------------------------

def _boot_aggregate_ok(entry: ima.IMAEntry,
                       quote_pcrs: Mapping[int, Mapping[int, bytes]]
                       ) -> bool | None:
    """Whether the boot_aggregate matches the quoted PCRs 0-9 (kernels
    since 5.8), or 0-7 (older kernels, non-SHA-1 banks). None when the
    quote lacks that bank's PCRs 0-9."""
    bank = entry.file_hash_bank
    values = quote_pcrs.get(bank, {}) if bank is not None else {}
    if bank is None or any(p not in values for p in range(10)):
        return None
    if ima.boot_aggregate_matches(entry, quote_pcrs):
        return True
    if bank == constants.TPM_ALG.SHA1 or not entry.file_hash \
            or not any(entry.file_hash):
        return False
    try:
        legacy = ima.compute_boot_aggregate(values, bank,
                                            include_pcr8_9=False)
    except exception.TrustedPoolsError:
        return False
    return hmac.compare_digest(legacy, entry.file_hash)


def _check_boot_aggregate(check: _Check, log: ima.VerifiedIMALog,
                          quote_pcrs: Mapping[int, Mapping[int, bytes]],
                          policy: RuntimePolicy) -> None:
    entry = log.boot_aggregate
    if entry is None:
        if log.covered:
            check.fail(Outcome.UNRECOGNIZED, "IMA line 1 is not a "
                       "boot_aggregate entry; %s requires one"
                       % _label(policy))
        else:
            check.fail(Outcome.NOT_APPRAISED, "the IMA log covered by the "
                       "quote is empty")
        return
    if entry.violation or not entry.file_hash or not any(entry.file_hash):
        check.fail(Outcome.UNRECOGNIZED, "IMA line 1: boot_aggregate is "
                   "zero (IMA started before the TPM was available), so the "
                   "runtime log cannot be tied to this boot")
        return
    matches = _boot_aggregate_ok(entry, quote_pcrs)
    if matches is None:
        check.fail(Outcome.NOT_APPRAISED, "IMA line 1: the quote lacks PCRs "
                   "0-9 of the %s bank, so the boot_aggregate cannot be "
                   "checked" % _clean(entry.file_hash_alg or "?"))
    elif not matches:
        check.fail(Outcome.CONTRAINDICATED, "IMA line 1: boot_aggregate "
                   "%s:%s does not match the quoted PCRs 0-9: the runtime "
                   "log is not from this boot" % (
                       _clean(entry.file_hash_alg or "?"),
                       entry.file_hash.hex()))


def _check_ima_entry(check: _Check, entry: ima.IMAEntry,
                     policy: RuntimePolicy, label: str) -> bool:
    """Check one entry; True when it passed (nothing found)."""
    if entry.is_boot_aggregate:
        return True
    if entry.violation:
        if policy.allow_violations:
            return True
        check.fail(Outcome.UNRECOGNIZED, "IMA line %d: measurement "
                   "violation (logged path '%s'): the file content is"
                   " unknown and %s does not allow violations" % (
                       entry.line, _clean(entry.path or "?"), label))
        return False
    path, digest = entry.path, entry.file_hash
    if path is None or digest is None or entry.file_hash_alg is None:
        check.fail(Outcome.UNRECOGNIZED, "IMA line %d: template %s "
                   "carries no file name and digest to appraise" % (
                       entry.line, _clean(entry.template_name, 40)))
        return False
    if policy.is_excluded(path):
        return True
    allowed = policy.allowed(path)
    key = ima_digest_key(entry.file_hash_alg, digest)
    if allowed is None:
        if policy.allow_unknown:
            return True
        check.fail(Outcome.UNRECOGNIZED, "IMA line %d: %s (%s) is "
                   "not in %s" % (entry.line, _clean(path, 300),
                                  key, label))
        return False
    if key not in allowed:
        check.fail(Outcome.UNRECOGNIZED, "IMA line %d: %s has %s, not a "
                   "digest %s allows for it" % (
                       entry.line, _clean(path, 300), key, label))
        return False
    return True


class _PassingLines:
    """Exact IMA ascii lines a runtime policy object passed.

    Whether an entry passes is a function of the policy and of the entry
    apart from its number (path, file digest and its algorithm, violation,
    template): and the entry is a function of its line's bytes (the
    template-hash algorithm follows from the hash's length). The hosts of
    one image run the same programs, so the same lines come back host
    after host; a line passed once passes again, and only a line not known
    to pass is parsed into an entry and checked. Line 1 is never stored or
    skipped (it may be the boot_aggregate, which the entry check skips by
    its number). Kept per policy *object* (held weakly: a new version is a
    new object with nothing known), bounded per policy (emptied when
    full), and only failures are ever reported, so results are identical
    with or without it.
    """

    def __init__(self, size: int = 65536) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._by_policy: dict[int, tuple[weakref.ref, set[bytes]]] = {}

    def clear(self) -> None:
        with self._lock:
            for _, lines in self._by_policy.values():
                lines.clear()

    def of(self, policy: RuntimePolicy) -> set[bytes]:
        key = id(policy)
        found = self._by_policy.get(key)
        if found is not None and found[0]() is policy:
            lines = found[1]
            if len(lines) >= self._size:
                lines.clear()
            return lines
        with self._lock:
            found = self._by_policy.get(key)
            if found is not None and found[0]() is policy:
                return found[1]
            lines = set()
            self._by_policy[key] = (weakref.ref(policy, self._forget(key)),
                                    lines)
            return lines

    def _forget(self, key: int) -> Callable[[weakref.ref], None]:
        def forget(ref: weakref.ref) -> None:
            with self._lock:
                found = self._by_policy.get(key)
                if found is not None and found[0] is ref:
                    del self._by_policy[key]
        return forget


_PASSING_LINES = _PassingLines()


def _check_ima_entries(check: _Check, log: ima.VerifiedIMALog,
                       policy: RuntimePolicy) -> None:
    label = _label(policy)
    lines = log.entry_keys
    if lines is None or len(lines) != log.covered:
        for entry in log.entries:
            _check_ima_entry(check, entry, policy, label)
        return
    passing = _PASSING_LINES.of(policy)
    first = log.start.entries + 1
    entries: tuple[ima.IMAEntry, ...] | None = None
    for i, line in enumerate(lines):
        number = first + i
        if number > 1 and line in passing:
            continue
        if entries is None:
            entries = log.entries
        entry = entries[i]
        if _check_ima_entry(check, entry, policy, label) and number > 1 \
                and entry.line == number:
            passing.add(line)


def _appraise_runtime(f: _Findings,
                      quote_pcrs: Mapping[int, Mapping[int, bytes]],
                      log: ima.VerifiedIMALog | None,
                      log_error: exception.TrustedPoolsError | None,
                      prior: Outcome | None, policy: RuntimePolicy) -> None:
    rung = Rung.RUNTIME
    if log is None:
        if log_error is None:
            f.add(rung, Outcome.NOT_APPRAISED, "no verified IMA log for %s"
                  % _label(policy))
        return
    check = _Check(f, rung)
    if log.start.entries > 0:
        if prior is None:
            check.fail(Outcome.NOT_APPRAISED, "IMA entries 1-%d were "
                       "appraised in an earlier round whose outcome was not "
                       "given" % log.start.entries)
        elif prior is not Outcome.PASSED:
            check.fail(prior, "IMA entries 1-%d: the earlier appraisal was "
                       "%s" % (log.start.entries, prior.value))
    elif policy.require_boot_aggregate:
        _check_boot_aggregate(check, log, quote_pcrs, policy)
    _check_ima_entries(check, log, policy)
    check.done()


# --- evidence errors ---------------------------------------------------------------

def _error_outcome(error: exception.TrustedPoolsError) -> Outcome:
    if isinstance(error, exception.EventLogUnverifiable):
        return Outcome.NOT_APPRAISED
    if isinstance(error, (exception.MalformedEvidence,
                          exception.IMAEntryInvalid)):
        return Outcome.MALFORMED
    if isinstance(error, exception.EvidenceError):
        return Outcome.CRYPTO_FAILED
    return Outcome.VERIFIER_ERROR


def _error_text(error: exception.TrustedPoolsError) -> str:
    return _clean(str(error), 400)


def _failing_rungs(error: exception.TrustedPoolsError) -> set[Rung]:
    """Rungs whose PCRs a ReplayMismatch names (both boot rungs if none)."""
    pcrs: set[int] = set()
    raw = error.kwargs.get("failures")
    values = raw.values() if isinstance(raw, Mapping) else [
        error.kwargs.get("pcrs")]
    for value in values:
        if isinstance(value, (list, tuple, set, frozenset)):
            pcrs.update(p for p in value if type(p) is int)
    rungs = {PCR_RUNGS[p] for p in pcrs if p in PCR_RUNGS}
    return rungs or {Rung.PLATFORM_FIRMWARE, Rung.OS_BOOT}


def _check_error(value: Any, name: str) -> None:
    if value is not None and not isinstance(value,
                                            exception.TrustedPoolsError):
        raise _invalid(name, "expected a TrustedPoolsError or None")


# --- the appraisal --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Appraisal:
    """What :func:`appraise` concluded; feed it to :func:`make_verdict`.

    ``outcomes`` has every rung; ``configuration`` is the outcome of the
    configuration facet (secure boot, kernel command line) for the AR4SI
    vector; ``reasons`` are the operator-facing lines of every rung, in
    rung order; ``policy_versions`` maps policy name -> version used.
    """

    outcomes: Mapping[Rung, Outcome]
    configuration: Outcome
    level: AssuranceLevel
    vector: TrustVector
    reasons: tuple[str, ...]
    policy_versions: Mapping[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"outcomes": {r.name.lower(): o.value
                             for r, o in sorted(self.outcomes.items())},
                "configuration": self.configuration.value,
                "level": int(self.level), "vector": self.vector.to_json(),
                "reasons": list(self.reasons),
                "policy_versions": dict(self.policy_versions)}


def _identity(f: _Findings, identity: bool | Outcome, quote_present: bool,
              quote_error: exception.TrustedPoolsError | None) -> None:
    rung = Rung.IDENTITY
    if quote_error is not None:
        f.add(rung, _error_outcome(quote_error), "the quote was rejected: %s"
              % _error_text(quote_error))
    elif isinstance(identity, Outcome):
        f.add(rung, identity, None if identity is Outcome.PASSED else
              "enrollment outcome: %s" % identity.value)
    elif identity is not True:
        f.add(rung, Outcome.UNRECOGNIZED, "the TPM is not enrolled: EK "
              "certificate chain or AK binding not established")
    else:
        f.add(rung, Outcome.PASSED)
    if not quote_present and quote_error is None:
        f.add(rung, Outcome.NOT_APPRAISED, "no fresh quote: nothing shows "
              "the enrolled TPM answered")


class MeasuredBootMemo:
    """One host's last measured-boot findings, reused while nothing they
    depend on changed.

    The findings of the firmware and OS boot rungs are a pure function of
    the verified event log, the measured-boot policy and the quoted values
    of the PCRs that policy pins: the event rules read the verified log
    only, the pins the quote only. A conductor replays the event log only
    when the boot changes and keeps that one verified log object while the
    boot lasts; it shares one policy object per host group until another
    version is loaded. So it keeps one memo per verified boot and passes
    it to :func:`appraise`, which reuses the findings only for the very
    same log and policy objects (identity, never equality: the memo holds
    both, so neither is freed and its id reused), the same policy name and
    version, and equal pinned values; anything else is appraised again
    and replaces the memo. A failed or missing event log is never
    memoised. Safe to share between threads: one tuple is read or
    replaced at a time.
    """

    __slots__ = ("_entry",)

    def __init__(self) -> None:
        self._entry: tuple[Any, ...] | None = None

    def clear(self) -> None:
        self._entry = None

    def lookup(self, log: VerifiedEventLog, policy: MeasuredBootPolicy,
               pinned: tuple[bytes | None, ...]) -> _Recorded | None:
        entry = self._entry
        if entry is None:
            return None
        known_log, known_policy, name, version, known_pinned, found = entry
        if (known_log is log and known_policy is policy
                and name == policy.name and version == policy.version
                and known_pinned == pinned):
            return found
        return None

    def store(self, log: VerifiedEventLog, policy: MeasuredBootPolicy,
              pinned: tuple[bytes | None, ...], found: _Recorded) -> None:
        self._entry = (log, policy, policy.name, policy.version, pinned,
                       found)


def appraise(*, identity: bool | Outcome, quote: VerifiedQuote | None,
             event_log: VerifiedEventLog | None = None,
             ima_log: ima.VerifiedIMALog | None = None,
             measured_boot_policy: MeasuredBootPolicy | None = None,
             runtime_policy: RuntimePolicy | None = None,
             ima_prior: Outcome | None = None,
             quote_error: exception.TrustedPoolsError | None = None,
             event_log_error: exception.TrustedPoolsError | None = None,
             ima_error: exception.TrustedPoolsError | None = None,
             boot_memo: MeasuredBootMemo | None = None
             ) -> Appraisal:
    """Appraise one host's verified evidence against its policies.

    ``identity``: True when the EK chain validated and the AK is bound to
    it (enrollment), or an explicit :class:`Outcome`. ``quote``: the
    verified quote of this round, None without fresh evidence. The event
    log and IMA log must have been verified against this quote's PCRs.
    ``ima_prior``: when ``ima_log`` continues an earlier round
    (``ima_log.start.entries > 0``), the runtime outcome of the entries
    before it; the conductor keeps it until the host reboots (a bad file
    stays bad). The ``*_error`` arguments carry why a piece of evidence
    did not verify; they turn into CRYPTO_FAILED / MALFORMED outcomes with
    the error as reason. ``boot_memo``: the caller's
    :class:`MeasuredBootMemo` for this verified boot (the result is the
    same with or without it; with it, an unchanged boot under an
    unchanged policy is not appraised again).
    """
    if quote is not None and not isinstance(quote, VerifiedQuote):
        raise _invalid("quote", "expected a VerifiedQuote or None")
    if event_log is not None and not isinstance(event_log,
                                                VerifiedEventLog):
        raise _invalid("event_log", "expected a VerifiedEventLog or None")
    if ima_log is not None and not isinstance(ima_log, ima.VerifiedIMALog):
        raise _invalid("ima_log", "expected a VerifiedIMALog or None")
    if measured_boot_policy is not None and not isinstance(
            measured_boot_policy, MeasuredBootPolicy):
        raise _invalid("measured_boot_policy", "expected a "
                       "MeasuredBootPolicy (kind %r) or None"
                       % KIND_MEASURED_BOOT)
    if runtime_policy is not None and not isinstance(runtime_policy,
                                                     RuntimePolicy):
        raise _invalid("runtime_policy", "expected a RuntimePolicy (kind %r)"
                       " or None" % KIND_RUNTIME)
    if boot_memo is not None and not isinstance(boot_memo,
                                                MeasuredBootMemo):
        raise _invalid("boot_memo", "expected a MeasuredBootMemo or None")
    if ima_prior is not None and not isinstance(ima_prior, Outcome):
        raise _invalid("ima_prior", "expected an Outcome or None")
    if not isinstance(identity, (bool, Outcome)):
        raise _invalid("identity", "expected a bool or an Outcome")
    for name, value in (("quote_error", quote_error),
                        ("event_log_error", event_log_error),
                        ("ima_error", ima_error)):
        _check_error(value, name)
    for name, evidence, error in (("quote", quote, quote_error),
                                  ("event_log", event_log, event_log_error),
                                  ("ima_log", ima_log, ima_error)):
        if evidence is not None and error is not None:
            raise _invalid(name + "_error", "give either the verified %s or "
                           "the error it raised, not both" % name)

    f = _Findings()
    _identity(f, identity, quote is not None, quote_error)
    if quote is None:
        for rung in (Rung.PLATFORM_FIRMWARE, Rung.OS_BOOT, Rung.RUNTIME):
            f.add(rung, Outcome.NOT_APPRAISED, "no fresh quote")
    else:
        _appraise_with_quote(f, quote.pcrs, event_log, event_log_error,
                             ima_log, ima_error, ima_prior,
                             measured_boot_policy, runtime_policy, boot_memo)
    outcomes = {rung: f.outcome(rung) for rung in _RUNGS}
    configuration = _worst(f.configuration) if f.configuration \
        else Outcome.NOT_APPRAISED
    reasons = tuple(r for rung in _RUNGS for r in f.rung_reasons(rung))
    versions = {p.name: p.version for p in (measured_boot_policy,
                                            runtime_policy) if p is not None}
    return Appraisal(
        outcomes=types.MappingProxyType(outcomes),
        configuration=configuration, level=compute_level(outcomes),
        vector=vector_from_outcomes(outcomes, configuration),
        reasons=reasons, policy_versions=types.MappingProxyType(versions))


def _pinned_values(policy: MeasuredBootPolicy,
                   quote_pcrs: Mapping[int, Mapping[int, bytes]]
                   ) -> tuple[bytes | None, ...]:
    """The quoted values of the PCRs ``policy`` pins, in its order."""
    return tuple(quote_pcrs.get(alg, {}).get(pcr)
                 for alg, bank in policy.pcrs.items() for pcr in bank)


def _boot_findings(quote_pcrs: Mapping[int, Mapping[int, bytes]],
                   log: VerifiedEventLog | None,
                   log_error: exception.TrustedPoolsError | None,
                   policy: MeasuredBootPolicy,
                   memo: MeasuredBootMemo | None) -> _Recorded:
    """What ``policy`` finds on the firmware and OS boot rungs, from
    ``memo`` when it holds the findings for this very log, policy and
    pinned values (only a verified log is memoised)."""
    if log is None or log_error is not None:
        memo = None
    pinned = None
    if memo is not None:
        pinned = _pinned_values(policy, quote_pcrs)
        found = memo.lookup(log, policy, pinned)
        if found is not None:
            return found
    sub = _Findings()
    for rung in (Rung.PLATFORM_FIRMWARE, Rung.OS_BOOT):
        if not policy.covers(rung):
            sub.add(rung, Outcome.NOT_APPRAISED, "%s has no rule for "
                    "this rung (%s)" % (_label(policy), {
                        Rung.PLATFORM_FIRMWARE: "PCRs 0-3, 5-7: "
                        "platform_firmware rules or pcrs",
                        Rung.OS_BOOT: "PCRs 4, 8, 9, 11-14: os_boot rules "
                        "or pcrs"}[rung]))
    _appraise_measured_boot(sub, quote_pcrs, log, log_error, policy)
    recorded = sub.snapshot()
    if memo is not None and log is not None and pinned is not None:
        memo.store(log, policy, pinned, recorded)
    return recorded


def _appraise_with_quote(f: _Findings,
                         quote_pcrs: Mapping[int, Mapping[int, bytes]],
                         event_log: VerifiedEventLog | None,
                         event_log_error: exception.TrustedPoolsError | None,
                         ima_log: ima.VerifiedIMALog | None,
                         ima_error: exception.TrustedPoolsError | None,
                         ima_prior: Outcome | None,
                         boot_policy: MeasuredBootPolicy | None,
                         runtime_policy: RuntimePolicy | None,
                         boot_memo: MeasuredBootMemo | None = None) -> None:
    if event_log_error is not None:
        outcome = _error_outcome(event_log_error)
        rungs = (_failing_rungs(event_log_error)
                 if isinstance(event_log_error, exception.ReplayMismatch)
                 else {Rung.PLATFORM_FIRMWARE, Rung.OS_BOOT})
        for rung in sorted(rungs):
            f.add(rung, outcome, "event log: %s"
                  % _error_text(event_log_error))
    if ima_error is not None:
        f.add(Rung.RUNTIME, _error_outcome(ima_error), "IMA log: %s"
              % _error_text(ima_error))
    if boot_policy is None:
        for rung in (Rung.PLATFORM_FIRMWARE, Rung.OS_BOOT):
            f.add(rung, Outcome.NOT_APPRAISED, "no measured-boot policy is "
                  "assigned to the host")
    else:
        f.merge(_boot_findings(quote_pcrs, event_log, event_log_error,
                               boot_policy, boot_memo))
    if runtime_policy is None:
        f.add(Rung.RUNTIME, Outcome.NOT_APPRAISED, "no runtime (IMA) policy "
              "is assigned to the host")
    else:
        _appraise_runtime(f, quote_pcrs, ima_log, ima_error, ima_prior,
                          runtime_policy)


def make_verdict(host: str, appraisal: Appraisal, evidence_digest: str,
                 now: int, validity_seconds: int, *,
                 min_level_for_trusted: AssuranceLevel = AssuranceLevel.RUNTIME
                 ) -> verdict_mod.Verdict:
    """The verdict for an appraisal (status by :func:`verdict.decide`).

    Trusted only when the level reaches ``min_level_for_trusted`` (by
    default the top of the ladder: lower it per host group on purpose) and
    no claim is contraindicated.
    """
    if not isinstance(appraisal, Appraisal):
        raise _invalid("appraisal", "expected an Appraisal")
    return verdict_mod.make_verdict(
        host=host, outcomes=appraisal.outcomes,
        required_level=min_level_for_trusted,
        policy_versions=appraisal.policy_versions,
        evidence_digest=evidence_digest, issued_at=now,
        validity=validity_seconds, reasons=appraisal.reasons,
        configuration=appraisal.configuration)


# --- capture (golden measurement registration) ---------------------------------------

def _quote_pcrs(value: Any) -> Mapping[int, Mapping[int, bytes]]:
    if isinstance(value, VerifiedQuote):
        return value.pcrs
    if isinstance(value, Mapping):
        return value
    raise _invalid("verified_quote_pcrs", "expected a VerifiedQuote or its "
                   "pcrs mapping (bank -> PCR -> value)")


def _pin(events: Iterable[VerifiedEvent], notes: dict[str, str],
         kinds: Mapping[int, str] | None = None, default_kind: str = ""
         ) -> dict[str, list[str]]:
    """Strongest-bank digest of each event, as a DigestAllowList body."""
    out: dict[str, set[str]] = {}
    for event in events:
        alg = _preferred(event.digests)
        if alg is None:
            continue
        hexdigest = event.digests[alg].hex()
        out.setdefault(constants.alg_name(alg), set()).add(hexdigest)
        logged = _logged_text(event)
        kind = (kinds or {}).get(event.index, default_kind)
        notes.setdefault("%s:%s" % (constants.alg_name(alg), hexdigest), _clean(
            "%s PCR %d event %d %s%s" % (kind, event.pcr, event.index,
                                         event.type_name,
                                         " '%s'" % logged if logged else ""),
            300).strip())
    return {bank: sorted(values) for bank, values in sorted(out.items())}


def _capture_secure_boot(log: VerifiedEventLog, notes: dict[str, str]
                         ) -> dict[str, Any] | None:
    facts = _secure_boot_facts(log)
    if facts.secure_boot is None:
        return None
    rule: dict[str, Any] = {"required": facts.secure_boot}
    for name, key in (("PK", "pk"), ("KEK", "kek"), ("db", "db"),
                      ("dbx", "dbx_contains")):
        entries = facts.entries.get(name, ())
        if entries:
            rule[key] = sorted({entry_id for entry_id, _ in entries})
            for entry_id, entry in entries:
                if entry.subject:
                    notes.setdefault(entry_id, "%s: %s" % (
                        name, _clean(entry.subject, 300)))
    return rule


def capture_measured_boot_policy(verified_log: VerifiedEventLog,
                                 verified_quote_pcrs: Any, *,
                                 description: str | None = None,
                                 pin_pcrs: Iterable[int] = DEFAULT_PIN_PCRS
                                 ) -> dict[str, Any]:
    """A measured-boot policy body from a known-good host's evidence.

    Pins, from verified events only:

    * the quoted values of ``pin_pcrs`` (default :data:`DEFAULT_PIN_PCRS`)
      in the strongest bank quoted;
    * platform_firmware: the S-CRTM version; the digest of every image
      measured into PCRs 0 and 2; secure boot as it is now (required if
      on), every PK/KEK/db entry, and every current dbx entry as the
      revocations that must stay;
    * os_boot: the digest of every image measured into PCR 4 (boot
      loaders; with systemd-boot also the kernel), of every file measured
      into PCR 9 split into kernels/initrds/boot_files by GRUB's commands
      and file names, and the exact kernel command lines (only when PCRs 8
      and 12 verified and all their events are bound).

    Each digest is pinned in the strongest verified bank (SHA-256 first).
    ``annotations`` says what each digest was captured from. A rule whose
    PCRs did not verify is left out, so the result never asks for evidence
    the host does not give; review it, then store it as a new version.
    """
    if not isinstance(verified_log, VerifiedEventLog):
        raise _invalid("verified_log", "expected a VerifiedEventLog")
    quote_pcrs = _quote_pcrs(verified_quote_pcrs)
    notes: dict[str, str] = {}
    body: dict[str, Any] = {"kind": KIND_MEASURED_BOOT}
    bank = _preferred({alg: b"" for alg in quote_pcrs
                       if alg in constants.HASH_ALGORITHMS})
    pins = sorted({int(p) for p in pin_pcrs})
    if bank is not None and pins:
        values = quote_pcrs[bank]
        pinned = {str(p): values[p].hex() for p in pins
                  if p in values and p in PCR_RUNGS}
        if pinned:
            body["pcrs"] = {constants.alg_name(bank): pinned}
    fw: dict[str, Any] = {}
    log = verified_log
    if _checked(log, 0):
        crtm = _summary(log, (0,)).crtm_version
        if crtm is not None:
            fw["crtm_versions"] = [crtm]
    if all(_checked(log, p) for p in _FIRMWARE_CODE_PCRS):
        images = _pin(_unbound_events(log, _FIRMWARE_CODE_PCRS), notes,
                      default_kind="firmware")
        if images:
            fw["firmware_digests"] = images
    if _checked(log, _SECURE_BOOT_PCR):
        rule = _capture_secure_boot(log, notes)
        if rule is not None:
            fw["secure_boot"] = rule
    os_: dict[str, Any] = {}
    if _checked(log, _BOOT_LOADER_PCR):
        loaders = _pin(_unbound_events(log, (_BOOT_LOADER_PCR,)), notes,
                       default_kind="PCR 4 image")
        if loaders:
            os_["boot_loaders"] = loaders
    if _checked(log, _BOOT_FILES_PCR):
        kinds = _file_kinds(log)
        files = _unbound_events(log, (_BOOT_FILES_PCR,))
        for key, kind in (("kernels", "kernel"), ("initrds", "initrd"),
                          ("boot_files", None)):
            chosen = [e for e in files if kinds.get(e.index) == kind]
            pinned_files = _pin(chosen, notes, kinds, "boot file")
            if pinned_files:
                os_[key] = pinned_files
    if "boot_loaders" in os_ and all(_checked(log, p)
                                     for p in _CMDLINE_PCRS):
        lines, unbound = _command_lines(log)
        if not unbound:
            os_["kernel_command_lines"] = sorted({t for _, t in lines})
    if fw:
        body["platform_firmware"] = fw
    if os_:
        body["os_boot"] = os_
    body["description"] = description if description is not None else (
        "Captured from verified evidence; review every digest (see "
        "annotations) before applying. Not pinned: PCRs without verified "
        "events, and rules whose PCRs did not verify.")
    if notes:
        body["annotations"] = dict(sorted(notes.items()))
    # The capture must be a valid policy; fail here, not at apply time.
    MeasuredBootPolicy.from_json(body, name="captured", version=0)
    return body


def capture_runtime_policy(verified_ima: ima.VerifiedIMALog,
                           verified_quote_pcrs: Any = None, *,
                           description: str | None = None
                           ) -> dict[str, Any]:
    """A runtime (IMA) policy body from a known-good host's verified log.

    Pins every measured path with the digest(s) seen (as ``alg:hex``), no
    excludes (add them on review), unknown files not allowed. Violations
    are allowed only if the log has some (the reviewer should decide), and
    the boot_aggregate is required unless it cannot match: zero, or (when
    ``verified_quote_pcrs`` is given) not equal to the quoted PCRs 0-9.
    Needs the log from entry 1 (a full replay), not an increment.
    """
    if not isinstance(verified_ima, ima.VerifiedIMALog):
        raise _invalid("verified_ima", "expected a VerifiedIMALog")
    if verified_ima.start.entries:
        raise _invalid("verified_ima", "capture needs the whole IMA log "
                       "verified from entry 1, not the entries after %d"
                       % verified_ima.start.entries)
    digests: dict[str, set[str]] = {}
    violations, skipped = 0, 0
    for entry in verified_ima.entries:
        if entry.is_boot_aggregate:
            continue
        if entry.violation:
            violations += 1
            continue
        if entry.path is None or entry.file_hash is None \
                or entry.file_hash_alg is None:
            skipped += 1
            continue
        digests.setdefault(entry.path, set()).add(
            ima_digest_key(entry.file_hash_alg, entry.file_hash))
    require_aggregate = True
    aggregate = verified_ima.boot_aggregate
    notes = []
    if aggregate is None or aggregate.violation or not aggregate.file_hash \
            or not any(aggregate.file_hash):
        require_aggregate = False
        notes.append("boot_aggregate not required: the log has no usable "
                     "one")
    elif verified_quote_pcrs is not None and _boot_aggregate_ok(
            aggregate, _quote_pcrs(verified_quote_pcrs)) is not True:
        require_aggregate = False
        notes.append("boot_aggregate not required: it does not match the "
                     "quoted PCRs 0-9")
    if violations:
        notes.append("%d violation(s) in the log: allow_violations is on, "
                     "review it" % violations)
    if skipped:
        notes.append("%d entries without file name and digest cannot be "
                     "pinned and will fail" % skipped)
    body = {
        "kind": KIND_RUNTIME,
        "description": description if description is not None else
        "Captured from a verified IMA log (%d entries); review before "
        "applying.%s" % (verified_ima.state.entries,
                         "".join(" " + n + "." for n in notes)),
        "digests": {path: sorted(values)
                    for path, values in sorted(digests.items())},
        "excludes": [],
        "allow_unknown": False,
        "allow_violations": bool(violations),
        "require_boot_aggregate": require_aggregate,
    }
    RuntimePolicy.from_json(body, name="captured", version=0)
    return body
