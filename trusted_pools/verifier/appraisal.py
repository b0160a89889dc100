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
* event rules decide on digests, never on what the host wrote beside
  them: an event's type, its data and any label in it are the host's
  claim, and a host can put the measured bytes themselves into the data
  (so that "the data hashes to the digest" proves nothing about what ran).
  So every event extended into a PCR a rule covers is judged by its
  digest: every event of PCRs 0/2 against the firmware digests, of PCR 4
  against the boot loaders, of PCR 9 against the boot files, of PCRs 8/12
  against the hashes of the allowed command lines and boot loader
  commands. The only exemptions are digests recomputed here from fixed,
  known values that are not code (:data:`FIXED_NON_CODE_VALUES`, and the
  policy's own S-CRTM versions). Types, paths and texts appear in
  reasons as "logged" only;
* secure boot (PCR 7) is read from bound content only: every PCR 7 event
  is the separator or a fixed value (by recomputed digest) or a
  UEFI_VARIABLE_DATA its digest is the hash of; which events are the
  configuration and which are authorities follows from that content,
  and an event accounted for by neither, or a variable measured twice,
  fails the secure_boot rule (see :class:`_SecureBootFacts`);
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
import functools
import hashlib
import hmac
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from trusted_pools import exception
from trusted_pools.protocol import verdict as verdict_mod
from trusted_pools.protocol.levels import (AssuranceLevel, Outcome, Rung,
                                           TrustVector, compute_level,
                                           vector_from_outcomes)
from trusted_pools.verifier.policy import (KIND_MEASURED_BOOT, KIND_RUNTIME,
                                           PCR_RUNGS, DigestAllowList,
                                           MeasuredBootPolicy, RuntimePolicy,
                                           ima_digest_key)
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
    "FIXED_NON_CODE_VALUES", "authority_id",
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
#: Values firmware measures that are not code or configuration: the normal
#: EV_SEPARATOR value and the EV_EFI_ACTION strings of the TCG PC Client
#: PFP that mark the boot flow. An event whose digest is the hash of one of
#: them is exempt from the digest allow-lists, whatever its logged type or
#: data (the digest is recomputed from the value, the log is not read).
#: Not here: error separators, "UEFI Debug Mode" (both say something).
FIXED_NON_CODE_VALUES: frozenset[bytes] = frozenset((
    b"\x00\x00\x00\x00",
    b"Calling EFI Application from Boot Option",
    b"Returning from EFI Application from Boot Option",
    b"Exit Boot Services Invocation",
    b"Exit Boot Services Returned with Failure",
    b"Exit Boot Services Returned with Success",
))
# Terminating NULs an S-CRTM version string may carry (UCS-2 units).
_CRTM_MAX_NULS = 4


def _worst(outcomes: Iterable[Outcome]) -> Outcome:
    return min(outcomes, key=_SEVERITY.index, default=Outcome.NOT_APPRAISED)


def _invalid(name: str, reason: str) -> exception.InvalidParameterValue:
    return exception.InvalidParameterValue(name=name, reason=reason)


# --- text for reasons --------------------------------------------------------

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


# --- reading verified event logs ---------------------------------------------

def _checked(log: VerifiedEventLog, pcr: int) -> bool:
    return any(pcr in pcrs for pcrs in log.checked_pcrs.values())


def _events_on(log: VerifiedEventLog, pcrs: Iterable[int]
               ) -> tuple[VerifiedEvent, ...]:
    wanted = frozenset(pcrs)
    return tuple(e for e in log.events if e.pcr in wanted)


@functools.lru_cache(maxsize=256)
def _hashes_of(alg: int, values: frozenset[bytes]) -> frozenset[bytes]:
    """The ``alg`` digests of ``values`` (empty for a bank this verifier
    cannot compute: nothing can match there)."""
    algorithm = constants.HASH_ALGORITHMS.get(alg)
    if algorithm is None:
        return frozenset()
    return frozenset(algorithm.digest(value) for value in values)


@functools.lru_cache(maxsize=64)
def _crtm_preimages(versions: frozenset[str] | None) -> frozenset[bytes]:
    """Every byte string an allowed S-CRTM version is measured as: its
    UCS-2 text with 0 to a few terminating NULs, or (for versions capture
    printed as hex because they are not text, e.g. a GUID) the raw bytes."""
    out: set[bytes] = set()
    for version in versions or ():
        text = version.encode("utf-16-le", errors="surrogatepass")
        out.update(text + b"\x00\x00" * n for n in range(_CRTM_MAX_NULS + 1))
        try:
            out.add(bytes.fromhex(version))
        except ValueError:
            pass
    return frozenset(out)


def _digest_among(event: VerifiedEvent, preimages: frozenset[bytes]) -> bool:
    """Whether, in some verified bank, the event's digest is the hash of
    one of ``preimages`` (recomputed here; the event's data is not read)."""
    return any(digest in _hashes_of(alg, preimages)
               for alg, digest in event.digests.items())


def _judged_events(log: VerifiedEventLog, pcrs: Iterable[int],
                   exempt: frozenset[bytes] = frozenset()
                   ) -> list[VerifiedEvent]:
    """Every event of ``pcrs`` a digest allow-list must judge: all of them,
    whatever their type, data or label, except those whose digest is the
    hash of a fixed, known non-code value (:data:`FIXED_NON_CODE_VALUES`
    and ``exempt``, e.g. the policy's S-CRTM versions)."""
    events = _events_on(log, pcrs)
    if not events:
        return []
    fixed = {alg: _exempt_hashes(alg, exempt)
             for alg in {a for e in events for a in e.digests}}
    return [e for e in events
            if not any(d in fixed[a] for a, d in e.digests.items())]


@functools.lru_cache(maxsize=64)
def _exempt_hashes(alg: int, exempt: frozenset[bytes]) -> frozenset[bytes]:
    return _hashes_of(alg, FIXED_NON_CODE_VALUES) | _hashes_of(alg, exempt)


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


# --- PCR 7: secure boot, read from bound content only ------------------------

#: The secure boot configuration UEFI measures into PCR 7 before the
#: separator (TCG PC Client PFP), by (vendor GUID, name).
_SB_CONFIG_VARIABLES: Mapping[tuple[str, str], str] = types.MappingProxyType({
    (efi.EFI_GLOBAL_VARIABLE, "SecureBoot"): "SecureBoot",
    (efi.EFI_GLOBAL_VARIABLE, "PK"): "PK",
    (efi.EFI_GLOBAL_VARIABLE, "KEK"): "KEK",
    (efi.EFI_IMAGE_SECURITY_DATABASE, "db"): "db",
    (efi.EFI_IMAGE_SECURITY_DATABASE, "dbx"): "dbx",
})
#: Who measures which authority: firmware and shim the db entry that
#: verified an image; shim its built-in certificate ("Shim"), its vendor_db
#: entries and MOK entries (MokListRT), as one EFI_SIGNATURE_DATA or a bare
#: certificate; and two values that are policy, not keys: SbatLevel (the
#: SBAT revocations shim applied) and MokListTrusted.
_SB_AUTHORITY_ENTRIES = frozenset((
    (efi.EFI_IMAGE_SECURITY_DATABASE, "db"),
    (efi.EFI_IMAGE_SECURITY_DATABASE, "vendor_db"),
    (efi.SHIM_LOCK, "vendor_db"),
    (efi.SHIM_LOCK, "Shim"),
    (efi.SHIM_LOCK, "MokListRT"),
    (efi.SHIM_LOCK, "MokList"),
))
_SB_AUTHORITY_VALUES = frozenset((
    (efi.SHIM_LOCK, "SbatLevel"),
    (efi.SHIM_LOCK, "MokListTrusted"),
))
_SEPARATOR_VALUE = frozenset((b"\x00\x00\x00\x00",))
# Longer entry data / values are named by their SHA-256.
_AUTHORITY_HEX_LIMIT = 64


@dataclasses.dataclass(frozen=True)
class _Authority:
    """A bound authority measurement: ``id`` as policies name it."""

    id: str
    name: str
    event: VerifiedEvent
    entry: efi.SignatureEntry | None
    value: bytes


@dataclasses.dataclass(frozen=True)
class _SecureBootFacts:
    """What PCR 7 says, read without trusting any event's type.

    Every PCR 7 event is accounted for by its digest: the separator or
    another fixed non-code value (recomputed), or a UEFI_VARIABLE_DATA the
    digest is the hash of (so GUID, name and value are what the TPM holds).
    Which events are the configuration and which are authorities follows
    from that bound content (and the separator's position, itself fixed by
    the digest order the PCR holds), never from the logged type.
    ``problems`` names every event that could not be accounted for, every
    variable measured twice and every bound value that does not parse:
    any of them fails a secure_boot rule, so a host cannot hide a bad copy
    of a variable behind a good one, or a measurement behind a label.
    """

    secure_boot: bool | None
    #: variable name -> entries (in order) and their ids
    entries: Mapping[str, tuple[tuple[str, efi.SignatureEntry], ...]]
    #: variable name -> the one bound PCR 7 event that measured it
    events: Mapping[str, VerifiedEvent]
    #: variable name -> the ids of its entries
    ids: Mapping[str, frozenset[str]]
    authorities: tuple[_Authority, ...] = ()
    problems: tuple[str, ...] = ()


def _hex_or_hash(kind: str, data: bytes) -> str:
    if len(data) <= _AUTHORITY_HEX_LIMIT:
        return "%s:%s" % (kind, data.hex())
    return "%s-sha256:%s" % (kind, hashlib.sha256(data).hexdigest())


def authority_id(name: str, entry: efi.SignatureEntry | None,
                 value: bytes = b"") -> str:
    """How policies name a PCR 7 authority measurement.

    ``<variable>:x509:<SHA-256 of the DER certificate>`` for a
    certificate, ``<variable>:<type>:<hex>`` for another entry (its data,
    or ``<type>-sha256:<SHA-256 of the data>`` when longer than 64 bytes),
    ``<variable>:value:<hex>`` (or ``value-sha256:``) for a raw value such
    as shim's SbatLevel.
    """
    if entry is None:
        return "%s:%s" % (name, _hex_or_hash("value", value))
    if entry.type == "x509":
        return "%s:x509:%s" % (name, hashlib.sha256(entry.data).hexdigest())
    return "%s:%s" % (name, _hex_or_hash(entry.type, entry.data))


def _hashes_to(event: VerifiedEvent, content: bytes) -> bool:
    """Whether every verified digest of ``event`` is the hash of
    ``content`` (then ``content`` is what the TPM holds)."""
    for alg, digest in event.digests.items():
        algorithm = constants.HASH_ALGORITHMS.get(alg)
        if algorithm is None or not hmac.compare_digest(
                algorithm.digest(content), digest):
            return False
    return bool(event.digests)


def _bound_variable(event: VerifiedEvent) -> efi.UEFIVariableData | None:
    """The UEFI_VARIABLE_DATA the event's digest is the hash of, if any.

    The whole data, or (older shim logged one byte too many after its
    certificate) the data without its last byte: either way only bytes
    the digest covers are read."""
    if event.data_verified:
        content = event.data
    elif len(event.data) > 1 and _hashes_to(event, event.data[:-1]):
        content = event.data[:-1]
    else:
        return None
    try:
        return efi.parse_variable_data(content)
    except exception.MalformedEvidence:
        return None


def _authority_entry(value: bytes) -> efi.SignatureEntry:
    """An authority's value: one EFI_SIGNATURE_DATA, or a bare DER
    certificate (shim's own, and older shim for db/MOK entries)."""
    if len(value) >= 4 and value[:2] == b"\x30\x82" and \
            int.from_bytes(value[2:4], "big") + 4 == len(value):
        return efi.certificate_entry(value)
    return efi.parse_signature_data(value)


def _signature_lists(value: bytes) -> tuple[efi.SignatureList, ...] | None:
    try:
        return efi.parse_signature_lists(value)
    except exception.MalformedEvidence:
        return None


def _read_secure_boot(log: VerifiedEventLog) -> _SecureBootFacts:
    """Account for every PCR 7 event (see :class:`_SecureBootFacts`)."""
    problems: list[str] = []
    events: dict[str, VerifiedEvent] = {}
    lists: dict[str, tuple[efi.SignatureList, ...]] = {}
    authorities: list[_Authority] = []
    secure_boot: bool | None = None
    separator: VerifiedEvent | None = None
    for event in _events_on(log, (_SECURE_BOOT_PCR,)):
        if _digest_among(event, _SEPARATOR_VALUE):
            if separator is not None:
                problems.append("%s: a second PCR 7 separator (the first is "
                                "event %d)" % (_logged_as(event),
                                               separator.index))
            separator = event
            continue
        if _digest_among(event, FIXED_NON_CODE_VALUES):
            continue
        var = _bound_variable(event)
        if var is None:
            problems.append(
                "%s: its digest is neither the hash of its data read as a "
                "UEFI variable nor of a fixed value such as the separator, "
                "so what was measured into PCR 7 is unknown (%s)" % (
                    _logged_as(event), _digest_text(event, ())))
            continue
        key = (var.guid, var.name)
        name = _SB_CONFIG_VARIABLES.get(key)
        parsed = None
        if name is not None and name != "SecureBoot":
            parsed = _signature_lists(var.value)
            if parsed is None and key in _SB_AUTHORITY_ENTRIES:
                # db as one EFI_SIGNATURE_DATA: an authority, not the db.
                name = None
        where = "PCR 7 event %d (variable %s, logged as %s)" % (
            event.index, _clean(var.name, 40), event.type_name)
        if name is not None:
            if separator is not None:
                problems.append("%s: secure boot variable %s measured after "
                                "the PCR 7 separator (event %d)" % (
                                    where, name, separator.index))
            elif name in events:
                problems.append("%s: %s measured a second time (first: event "
                                "%d); which copy the firmware used is unknown"
                                % (where, name, events[name].index))
            elif var.trailing:
                problems.append("%s: %d unexpected bytes after the value of "
                                "%s" % (where, len(var.trailing), name))
            elif name == "SecureBoot":
                if var.value not in (b"", b"\x00", b"\x01"):
                    problems.append("%s: SecureBoot is %s, not 0 or 1"
                                    % (where, var.value[:8].hex()))
                else:
                    events[name] = event
                    secure_boot = var.value == b"\x01"
            elif parsed is None:
                problems.append("%s: the value of %s is not a list of EFI "
                                "signature lists" % (where, name))
            else:
                events[name] = event
                lists[name] = parsed
            continue
        if key in _SB_AUTHORITY_ENTRIES:
            try:
                entry = _authority_entry(var.value)
            except exception.MalformedEvidence as error:
                problems.append("%s: authority %s is not a signature entry "
                                "(%s)" % (where, _clean(var.name, 40), error))
                continue
            authorities.append(_Authority(
                authority_id(var.name, entry), var.name, event, entry,
                var.value))
        elif key in _SB_AUTHORITY_VALUES:
            authorities.append(_Authority(
                authority_id(var.name, None, var.value), var.name, event,
                None, var.value))
        else:
            problems.append("%s: variable %s %s is not a secure boot "
                            "variable or authority PCR 7 should hold" % (
                                where, var.guid, _clean(var.name, 40)))
    entries = {name: tuple((signature_entry_id(e), e) for sig_list in value
                           for e in sig_list.entries)
               for name, value in lists.items()}
    return _SecureBootFacts(
        secure_boot, types.MappingProxyType(entries),
        types.MappingProxyType(events),
        types.MappingProxyType({name: frozenset(i for i, _ in items)
                                for name, items in entries.items()}),
        tuple(authorities), tuple(problems))


def _secure_boot_facts(log: VerifiedEventLog) -> _SecureBootFacts:
    return _FACTS.get("secure_boot", log, (_SECURE_BOOT_PCR,),
                      _read_secure_boot)


@dataclasses.dataclass(frozen=True)
class _OSBootFacts:
    #: event index -> 'kernel'/'initrd' for PCR 9 files, as GRUB's commands
    #: and the file names suggest (for reasons and review only)
    kinds: Mapping[int, str]


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
    return _OSBootFacts(types.MappingProxyType(kinds))


def _os_boot_facts(log: VerifiedEventLog) -> _OSBootFacts:
    # GRUB's PCR 8 commands name the files it loads into PCR 9.
    return _FACTS.get("os_boot", log, (8, _BOOT_FILES_PCR), _read_os_boot)


def _file_kinds(log: VerifiedEventLog) -> Mapping[int, str]:
    return _os_boot_facts(log).kinds


_KERNEL_COMMAND_LINE = "kernel command line"
_BOOT_LOADER_COMMAND = "boot loader command"


def _text_preimages(text: str, kind: str) -> tuple[bytes, ...]:
    """How boot loaders hash a command line or command: GRUB the bare
    UTF-8 text (without its ``grub_cmd: ``/``kernel_cmdline: `` label and
    without the NUL the event data carries), systemd-boot/-stub the UTF-16LE
    text with its terminating NUL (some versions without)."""
    utf8 = text.encode("utf-8", errors="surrogatepass")
    if kind == _BOOT_LOADER_COMMAND:
        return (utf8,)
    utf16 = text.encode("utf-16-le", errors="surrogatepass")
    return (utf8, utf16, utf16 + b"\x00\x00")


_FIXED_VALUE = "fixed non-code value"


# One entry per (bank, policy): sized for a few hundred host groups.
@functools.lru_cache(maxsize=512)
def _command_digests(alg: int, lines: frozenset[str],
                     commands: frozenset[str] | None
                     ) -> Mapping[bytes, tuple[str, str]]:
    """Digest -> (kind, text) of every allowed command line and boot
    loader command in bank ``alg``, and of the fixed non-code values. A
    text allowed as both counts as a command line."""
    out: dict[bytes, tuple[str, str]] = {
        digest: (_FIXED_VALUE, "") for digest in
        _hashes_of(alg, FIXED_NON_CODE_VALUES)}
    algorithm = constants.HASH_ALGORITHMS.get(alg)
    if algorithm is None:
        return types.MappingProxyType(out)
    for kind, texts in ((_BOOT_LOADER_COMMAND, commands or ()),
                        (_KERNEL_COMMAND_LINE, lines)):
        for text in texts:
            for preimage in _text_preimages(text, kind):
                out[algorithm.digest(preimage)] = (kind, text)
    return types.MappingProxyType(out)


def _command_matches(events: Iterable[VerifiedEvent], lines: frozenset[str],
                     commands: frozenset[str] | None
                     ) -> list[tuple[VerifiedEvent, tuple[str, str] | None]]:
    """Each event with the (kind, allowed text) whose hash its digest is,
    else None. Only digests are compared: types, data and labels are not
    read."""
    maps: dict[int, Mapping[bytes, tuple[str, str]]] = {}
    out = []
    for event in events:
        found = None
        for alg, digest in event.digests.items():
            known = maps.get(alg)
            if known is None:
                known = maps[alg] = _command_digests(alg, lines, commands)
            found = known.get(digest)
            if found is not None:
                break
        out.append((event, found))
    return out


def _read_command_lines(log: VerifiedEventLog
                        ) -> tuple[list[str], list[str]] | None:
    """For capture: the texts of the PCR 8/12 events as (kernel command
    lines, boot loader commands), split by the boot loader's labels; None
    when some event's measured content cannot be read back as text (then
    no command line rule can be captured that this log would pass)."""
    lines: list[str] = []
    commands: list[str] = []
    for event in _judged_events(log, _CMDLINE_PCRS):
        decoded = eventlog_decode.decode_event(event)
        value = decoded.value
        if decoded.binding is eventlog_decode.Binding.NONE or \
                not isinstance(value, eventlog_decode.IPLString):
            return None
        if value.kind in ("kernel_cmdline", "cmdline"):
            lines.append(value.text)
        else:
            commands.append(value.text)
    return lines, commands


# --- findings ----------------------------------------------------------------

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


# --- measured boot checks ----------------------------------------------------

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
                  default_kind: str | None = None,
                  exempt: frozenset[bytes] = frozenset()) -> None:
    """Every event of ``pcrs`` must be in one of ``lists``, whatever its
    type or data, unless its digest is that of a fixed non-code value."""
    names = [name for name, _ in lists]
    rule = "/".join(names)
    check = _Check(f, rung)
    if _require_pcrs(check, log, pcrs, rule, policy):
        allow_lists = [allow for _, allow in lists]
        for event in _judged_events(log, pcrs, exempt):
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


def _logged_as(event: VerifiedEvent) -> str:
    """'PCR 8 event 96 (logged as EV_IPL: 'kernel_cmdline: ...')': for
    reasons about events whose type and text decide nothing."""
    logged = _logged_text(event)
    if logged is None:
        # Any type: show the data when it reads as text (an operator should
        # see 'init=/bin/sh' whatever type the host put on it).
        try:
            text = event.data.rstrip(b"\x00").decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        logged = text if text and text.isprintable() else None
    return "PCR %d event %d (logged as %s%s)" % (
        event.pcr, event.index, event.type_name,
        ": '%s'" % _clean(logged, 600) if logged else "")


def _check_crtm(f: _Findings, log: VerifiedEventLog,
                allowed: frozenset[str], policy: MeasuredBootPolicy) -> None:
    """Some PCR 0 event's digest is the hash of an allowed S-CRTM version;
    and an event logged as a version that is not is named (bad news is
    kept, though the type is only the host's word)."""
    check = _Check(f, Rung.PLATFORM_FIRMWARE)
    if _require_pcrs(check, log, (0,), "crtm_versions", policy):
        preimages = _crtm_preimages(allowed)
        events = _events_on(log, (0,))
        found = any(_digest_among(e, preimages) for e in events)
        for event in events:
            if event.event_type != EventType.EV_S_CRTM_VERSION or \
                    _digest_among(event, preimages):
                continue
            version = _bound_crtm_version(event)
            check.fail(Outcome.UNRECOGNIZED, "%s: %s is not among the "
                       "crtm_versions of %s" % (
                           _event_name(event), "S-CRTM version '%s'"
                           % _clean(version) if version is not None else
                           "the measured S-CRTM version (its data is not "
                           "what was measured)", _label(policy)))
        if not found and not check.outcomes:
            check.fail(Outcome.UNRECOGNIZED, "no PCR 0 event is the hash "
                       "of an S-CRTM version %s allows (%s)" % (
                           _label(policy), ", ".join(
                               repr(v) for v in sorted(allowed))))
    check.done()


def _bound_crtm_version(event: VerifiedEvent) -> str | None:
    """The version text a data-bound event carries (for reasons)."""
    if not event.data_verified:
        return None
    value = eventlog_decode.decode_event(event).value
    if isinstance(value, eventlog_decode.CRTMVersion):
        return value.text if value.text is not None else value.raw.hex()
    return None


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
        # The type is shown as logged; the variable is the bound content.
        event = facts.events.get(name)
        return ("PCR 7 event %d (%s, %s)" % (event.index, event.type_name,
                                             name)
                if event else "PCR 7 (%s)" % name)

    for problem in facts.problems:
        check.fail(Outcome.UNRECOGNIZED, "%s; %s cannot judge secure boot "
                   "from a PCR 7 it cannot fully account for" % (
                       problem, _label(policy)))

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
    _check_authorities(check, facts, rule.authorities, policy)
    f.configuration.append(check.done())


def _check_authorities(check: _Check, facts: _SecureBootFacts,
                       allowed: frozenset[str] | None,
                       policy: MeasuredBootPolicy) -> None:
    """Each authority measurement is listed by the policy (when it lists
    them), and a db authority is an entry of the db measured before it:
    firmware only verifies with what db holds."""
    db = facts.entries.get("db")
    db_data = frozenset(e.data for _, e in db) if db is not None else None
    for authority in facts.authorities:
        event, entry = authority.event, authority.entry
        what = "PCR 7 event %d (authority %s, logged as %s)" % (
            event.index, _clean(authority.name, 40), event.type_name)
        subject = (" (%s)" % _clean(entry.subject, 100)
                   if entry is not None and entry.subject else "")
        if allowed is not None and authority.id not in allowed:
            check.fail(Outcome.UNRECOGNIZED, "%s: %s%s is not among the "
                       "authorities of %s" % (what, authority.id[:120],
                                              subject, _label(policy)))
        if authority.name == "db" and entry is not None and (
                db_data is None or entry.data not in db_data):
            check.fail(Outcome.UNRECOGNIZED, "%s: %s%s verified code but is "
                       "not an entry of the measured db" % (
                           what, authority.id[:120], subject))


def _check_command_lines(f: _Findings, log: VerifiedEventLog,
                         policy: MeasuredBootPolicy) -> None:
    """Every PCR 8/12 event's digest is the hash of an allowed kernel
    command line or boot loader command (or of a fixed non-code value),
    whatever its type or label; and one of them is a command line."""
    os_ = policy.os_boot
    lines = os_.kernel_command_lines
    assert lines is not None
    check = _Check(f, Rung.OS_BOOT)
    if _require_pcrs(check, log, _CMDLINE_PCRS, "kernel_command_lines",
                     policy):
        found = False
        for event, match in _command_matches(
                _events_on(log, _CMDLINE_PCRS), lines,
                os_.boot_loader_commands):
            if match is None:
                check.fail(Outcome.UNRECOGNIZED, "%s: %s is not the hash of "
                           "any kernel_command_lines or boot_loader_commands "
                           "entry of %s (type and text are as logged; the "
                           "digest decides)" % (
                               _logged_as(event),
                               _digest_text(event, ()), _label(policy)))
            elif match[0] == _KERNEL_COMMAND_LINE:
                found = True
        if not found and not check.outcomes:
            check.fail(Outcome.UNRECOGNIZED, "no event of PCR 8 or 12 is the "
                       "hash of a kernel command line %s allows%s, so the "
                       "command line the kernel ran with is unknown" % (
                           _label(policy), "" if lines else
                           " (its kernel_command_lines list is empty)"))
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
                      {}, None, _crtm_preimages(fw.crtm_versions))
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


# --- runtime (IMA) checks ----------------------------------------------------

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


# --- evidence errors ---------------------------------------------------------

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


# --- the appraisal -----------------------------------------------------------

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


# --- capture (golden measurement registration) -------------------------------

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
    if facts.secure_boot is None or facts.problems:
        # No rule this log would fail; PCR 7's value is pinned anyway.
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
    rule["authorities"] = sorted({a.id for a in facts.authorities})
    for authority in facts.authorities:
        entry = authority.entry
        if entry is not None:
            note = entry.subject or ""
        else:
            note = authority.value.decode("ascii", "replace")
        notes.setdefault(authority.id, _clean(
            "authority %s (PCR 7 event %d)%s" % (
                authority.name, authority.event.index,
                ": " + note if note else ""), 300))
    return rule


def _capture_command_lines(log: VerifiedEventLog) -> dict[str, list[str]]:
    """kernel_command_lines and boot_loader_commands from PCRs 8/12, only
    if every event there is the hash of a text read back from it and one
    is a kernel command line (else no rule: it could never pass)."""
    texts = _read_command_lines(log)
    if texts is None or not texts[0]:
        return {}
    lines, commands = frozenset(texts[0]), frozenset(texts[1])
    rule: dict[str, list[str]] = {"kernel_command_lines": sorted(lines)}
    if commands:
        rule["boot_loader_commands"] = sorted(commands)
    # The same digest test as appraisal, so the log passes what it gave.
    if any(match is None for _, match in _command_matches(
            _events_on(log, _CMDLINE_PCRS), lines, commands or None)):
        return {}
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
    * platform_firmware: the S-CRTM version; the digest of every event
      of PCRs 0 and 2; secure boot as it is now (required if
      on), every PK/KEK/db entry, and every current dbx entry as the
      revocations that must stay;
    * os_boot: the digest of every event of PCR 4 (boot loaders; with
      systemd-boot also the kernel), of every event of PCR 9 split into
      kernels/initrds/boot_files by GRUB's commands and file names, and
      the exact kernel command lines and boot loader commands of PCRs 8
      and 12 (only when both verified and every event there is the hash
      of its text, one of them a command line).

    As appraisal does, every event of a covered PCR is pinned whatever its
    type or data; only digests of fixed non-code values are left out
    (:data:`FIXED_NON_CODE_VALUES`, and the S-CRTM version pinned in
    crtm_versions).

    Each digest is pinned in the strongest verified bank (SHA-256 first).
    ``annotations`` says what each digest was captured from. A rule whose
    PCRs did not verify is left out, so the result never asks for evidence
    the host does not give; review it, then store it as a new version.
    """
    if not isinstance(verified_log, VerifiedEventLog):
        raise _invalid("verified_log", "expected a VerifiedEventLog")
    notes: dict[str, str] = {}
    body: dict[str, Any] = {"kind": KIND_MEASURED_BOOT}
    pinned = _pinned_pcr_values(_quote_pcrs(verified_quote_pcrs), pin_pcrs)
    if pinned:
        body["pcrs"] = pinned
    fw: dict[str, Any] = {}
    log = verified_log
    crtm_versions = None
    if _checked(log, 0):
        crtm = _summary(log, (0,)).crtm_version
        # Pinned only if appraisal can recompute its digest from the text.
        if crtm is not None and any(
                _digest_among(e, _crtm_preimages(frozenset((crtm,))))
                for e in _events_on(log, (0,))):
            crtm_versions = frozenset((crtm,))
            fw["crtm_versions"] = [crtm]
    if all(_checked(log, p) for p in _FIRMWARE_CODE_PCRS):
        # Every event the firmware_digests rule judges, exactly as
        # appraisal selects them (the captured S-CRTM version exempt).
        images = _pin(_judged_events(log, _FIRMWARE_CODE_PCRS,
                                     _crtm_preimages(crtm_versions)),
                      notes, default_kind="firmware")
        if images:
            fw["firmware_digests"] = images
    if _checked(log, _SECURE_BOOT_PCR):
        rule = _capture_secure_boot(log, notes)
        if rule is not None:
            fw["secure_boot"] = rule
    os_: dict[str, Any] = {}
    if _checked(log, _BOOT_LOADER_PCR):
        loaders = _pin(_judged_events(log, (_BOOT_LOADER_PCR,)), notes,
                       default_kind="PCR 4 image")
        if loaders:
            os_["boot_loaders"] = loaders
    if _checked(log, _BOOT_FILES_PCR):
        kinds = _file_kinds(log)
        files = _judged_events(log, (_BOOT_FILES_PCR,))
        for key, kind in (("kernels", "kernel"), ("initrds", "initrd"),
                          ("boot_files", None)):
            chosen = [e for e in files if kinds.get(e.index) == kind]
            pinned_files = _pin(chosen, notes, kinds, "boot file")
            if pinned_files:
                os_[key] = pinned_files
    if "boot_loaders" in os_ and all(_checked(log, p)
                                     for p in _CMDLINE_PCRS):
        os_.update(_capture_command_lines(log))
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


#: PCRs pinned by value when a host sends no event log: firmware, its
#: configuration, boot loader and secure boot state. Event rules cannot be
#: captured without a log, so the boot loader's PCR 4 is pinned too.
NO_LOG_PIN_PCRS = (0, 2, 3, 4, 7)


def _pinned_pcr_values(quote_pcrs: Mapping[int, Mapping[int, bytes]],
                       pin_pcrs: Iterable[int]
                       ) -> dict[str, dict[str, str]]:
    """The quoted values of ``pin_pcrs`` in the strongest bank quoted."""
    bank = _preferred({alg: b"" for alg in quote_pcrs
                       if alg in constants.HASH_ALGORITHMS})
    pins = sorted({int(p) for p in pin_pcrs})
    if bank is None or not pins:
        return {}
    values = quote_pcrs[bank]
    pinned = {str(p): values[p].hex() for p in pins
              if p in values and p in PCR_RUNGS}
    return {constants.alg_name(bank): pinned} if pinned else {}


def capture_pcr_values_policy(verified_quote_pcrs: Any, *,
                              pin_pcrs: Iterable[int] = NO_LOG_PIN_PCRS
                              ) -> dict[str, Any]:
    """A measured-boot policy of quoted PCR values only, for a known-good
    host that sends no event log. Any change in those PCRs (a firmware or
    boot loader update as much as an attack) fails it; capture again after
    an approved update."""
    pinned = _pinned_pcr_values(_quote_pcrs(verified_quote_pcrs), pin_pcrs)
    if not pinned:
        raise _invalid("verified_quote_pcrs", "the quote holds none of "
                       "PCRs %s in a known bank"
                       % ", ".join(str(p) for p in pin_pcrs))
    body = {"kind": KIND_MEASURED_BOOT, "pcrs": pinned,
            "description": "Captured from a verified quote without an "
                           "event log: PCR values only. Review them, and "
                           "capture again after an approved firmware or "
                           "boot loader update."}
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
