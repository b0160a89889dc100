"""Linux IMA runtime measurement lists: parse, replay, verify.

Formats (security/integrity/ima/ima_fs.c):

* ascii (``ascii_runtime_measurements``): one entry per line,
  ``PCR template-hash template-name field field ...``; every field is
  preceded by one space and a field of length 0 prints as nothing. The
  template data that the template hash covers is not in the line: it is
  rebuilt from the text fields by the rules in
  :mod:`trusted_pools.tpm.ima_templates`.
* binary (``binary_runtime_measurements``): per entry u32le PCR, the
  template hash (SHA-1, 20 bytes, in the legacy lists), u32le name length,
  template name, u32le template data length and the template data (the
  ``ima`` template has no template data length; see ima_templates).

Newer kernels also publish per-bank lists (``*_runtime_measurements_sha256``)
whose template hash is that bank's; the ascii parser infers the algorithm
from the hash length (``template_hash_alg=`` overrides; 32 bytes are taken as
SHA-256 unless told SM3-256).

Replay rules (ima_queue.c, ima_crypto.c), kernels since 5.1: the PCR of each
bank is extended with the hash of the template data computed with *that
bank's* algorithm. A *violation* entry (the file was opened for write while
being measured, ...) has an all-zero template hash in the list and extends
``0xFF`` times the bank's digest size instead. Kernels before 5.1 extended
every bank with the SHA-1 template hash zero-padded to the bank's size (and
0xFF*20 zero-padded for violations); that rule is only used by
:func:`verify_ima_log` when ``allow_sha1_padded=True`` and after the normal
rule failed, because it binds the entries through SHA-1 only.

Trust contract ("parsing is not trusting")
-------------------------------------------

:func:`parse_ima_log` checks structure only; its :class:`IMAEntry` objects
are claims. :func:`verify_ima_log` returns entries only when their replay
equals the quoted PCR value (from a quote whose signature was checked):

* covered: for each verified bank, the template data of every entry, hence
  its file digest, file-hash algorithm name, path, signature and buffer,
  and the entry's PCR index (through the PCR it replays into);
* NOT covered: the template *name* (not hashed: two templates with the same
  fields hash alike), and everything about a violation entry except that a
  violation happened there (:attr:`IMAEntry.violation`): its data is not
  hashed into the PCR. Policies must treat violations as unknown content.
* the recorded template hash in the list is checked against the template
  data (so a tampered line is named by its number) but adds no trust.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trusted_pools import exception
from trusted_pools.tpm import constants
from trusted_pools.tpm import ima_templates as templates
from trusted_pools.tpm._reader import Reader

__all__ = [
    "DEFAULT_MAX_LOG_SIZE",
    "IMA_PCR",
    "IMAEntry",
    "ReplayState",
    "VerifiedIMALog",
    "boot_aggregate_matches",
    "compute_boot_aggregate",
    "count_entries",
    "parse_ima_log",
    "replay_ima",
    "verify_ima_log",
    "walk_binary_entries",
]

IMA_PCR = 10
# A host with a very busy policy can have a few hundred thousand entries
# (about 150 bytes each in ascii); 64 MiB leaves room for that.
DEFAULT_MAX_LOG_SIZE = 64 * 1024 * 1024
_MAX_PCR = 23
_BOOT_AGGREGATE = "boot_aggregate"
_LOG = "IMA log"

_U32LE = struct.Struct("<I")
# u32le encodings of name-field lengths up to PATH_MAX + 1, so the hot loop
# indexes a list instead of calling struct.pack per entry.
_NAME_LENGTHS = tuple(_U32LE.pack(n) for n in range(4098))
_U16BE = struct.Struct(">H")
_SM3 = 0x0012  # TPM_ALG_SM3_256
_IMA_TEMPLATE_BYTES = templates.IMA_TEMPLATE.encode()
# PATH_MAX plus the rest of a line: no longer text can be one entry.
_MAX_ASCII_ENTRY = 4096 + 1024
# No kernel template carries more than a signature, a buffer (keys,
# kexec command lines, ...) and a few names; 16 MiB bounds a lying length.
_MAX_TEMPLATE_DATA = 16 * 1024 * 1024


# --- hash algorithms ---------------------------------------------------------

def _sm3(data: bytes = b"") -> Any:
    return hashlib.new("sm3", data)


def _bank_table() -> dict[int, tuple[str, int, Callable[..., Any]]]:
    table = {alg: (a.name, a.digest_size, a.new)
             for alg, a in constants.HASH_ALGORITHMS.items()}
    if "sm3" in hashlib.algorithms_available:
        table[_SM3] = ("sm3_256", 32, _sm3)
    return table


_BANKS = _bank_table()
_TEMPLATE_HASH_BY_SIZE = {20: int(constants.TPM_ALG.SHA1),
                          32: int(constants.TPM_ALG.SHA256),
                          48: int(constants.TPM_ALG.SHA384),
                          64: int(constants.TPM_ALG.SHA512)}
# File-hash algorithm names the kernel prints (hash_algo_name) -> bank.
_FILE_HASH_BANKS = {"sha1": int(constants.TPM_ALG.SHA1),
                    "sha256": int(constants.TPM_ALG.SHA256),
                    "sha384": int(constants.TPM_ALG.SHA384),
                    "sha512": int(constants.TPM_ALG.SHA512),
                    "sm3": _SM3, "sm3-256": _SM3, "sm3_256": _SM3}


def _bank(alg: int) -> tuple[str, int, Callable[..., Any]]:
    try:
        return _BANKS[alg]
    except (KeyError, TypeError):
        raise exception.UnsupportedAlgorithm(
            algorithm="%r" % (alg,),
            reason="not a PCR bank the IMA replay can compute") from None


def _bank_name(alg: int) -> str:
    return _BANKS[alg][0] if alg in _BANKS else "%#06x" % alg


# --- types -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IMAEntry:
    """One measurement list entry, as the host claims it (unverified).

    ``line`` is the 1-based number of the entry in the whole log (the ascii
    line number; the entry's position in a binary list).
    ``template_data`` is exactly the bytes the template hash covers.
    ``fields`` holds each template field's data, or None for a template
    this module does not know (it still replays). ``path`` is the ``n``/
    ``n-ng`` name decoded as UTF-8 with surrogate escapes (names are bytes).
    """

    line: int
    pcr: int
    template_hash: bytes
    template_hash_alg: int
    template_name: str
    template_data: bytes
    fields: tuple[bytes, ...] | None
    file_hash_alg: str | None
    file_hash: bytes | None
    path: str | None
    sig: bytes | None
    buf: bytes | None
    violation: bool

    @property
    def is_boot_aggregate(self) -> bool:
        return self.line == 1 and self.path == _BOOT_AGGREGATE

    @property
    def file_hash_bank(self) -> int | None:
        """The TPM algorithm of ``file_hash_alg``, if it is one."""
        if self.file_hash_alg is None:
            return None
        return _FILE_HASH_BANKS.get(self.file_hash_alg)


@dataclass(frozen=True)
class ReplayState:
    """PCR values after replaying the first ``entries`` entries of a log.

    ``pcrs`` maps bank (TPM_ALG) -> PCR 10; ``other_pcrs`` maps (bank, PCR)
    for entries a custom policy measured elsewhere. ``offset`` and ``fmt``
    remember where in the log those entries end, so that the next
    verification of the whole log can skip them without reading them.
    """

    entries: int
    pcrs: Mapping[int, bytes]
    other_pcrs: Mapping[tuple[int, int], bytes] = field(default_factory=dict)
    offset: int | None = None
    fmt: str | None = None

    def __post_init__(self) -> None:
        if (not isinstance(self.entries, int) or isinstance(self.entries, bool)
                or self.entries < 0):
            raise exception.InvalidParameterValue(
                name="entries", reason="must be an integer >= 0")
        pcrs = {int(b): bytes(v) for b, v in self.pcrs.items()}
        other = {(int(b), int(p)): bytes(v)
                 for (b, p), v in self.other_pcrs.items()}
        for (bank, pcr), value in [((b, IMA_PCR), v) for b, v in pcrs.items()
                                   ] + list(other.items()):
            _, size, _ = _bank(bank)
            if len(value) != size or not 0 <= pcr <= _MAX_PCR:
                raise exception.InvalidParameterValue(
                    name="pcrs", reason="PCR %d of bank %s must be %d bytes"
                    % (pcr, _bank_name(bank), size))
        if self.fmt not in (None, "ascii", "binary"):
            raise exception.InvalidParameterValue(
                name="fmt", reason="must be 'ascii' or 'binary'")
        object.__setattr__(self, "pcrs", pcrs)
        object.__setattr__(self, "other_pcrs", other)

    @classmethod
    def initial(cls, banks: Iterable[int]) -> "ReplayState":
        """The state before the first entry: every PCR 10 all zeros."""
        return cls(0, {b: bytes(_bank(b)[1]) for b in banks}, offset=0)

    def value(self, bank: int, pcr: int = IMA_PCR) -> bytes:
        """The value of ``pcr`` in ``bank`` (zeros if never extended)."""
        if pcr == IMA_PCR and bank in self.pcrs:
            return self.pcrs[bank]
        return self.other_pcrs.get((bank, pcr), bytes(_bank(bank)[1]))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, to keep between attestation rounds."""
        return {"entries": self.entries, "offset": self.offset,
                "fmt": self.fmt,
                "pcrs": {str(b): v.hex() for b, v in self.pcrs.items()},
                "other_pcrs": ["%d:%d:%s" % (b, p, v.hex())
                               for (b, p), v in self.other_pcrs.items()]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ReplayState":
        try:
            other = {}
            for item in data.get("other_pcrs", ()):
                b, p, v = item.split(":")
                other[(int(b), int(p))] = bytes.fromhex(v)
            return cls(int(data["entries"]),
                       {int(b): bytes.fromhex(v)
                        for b, v in data["pcrs"].items()},
                       other, data.get("offset"), data.get("fmt"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise exception.InvalidParameterValue(
                name="state", reason="not a saved ReplayState (%s)"
                % type(exc).__name__) from None


class VerifiedIMALog:
    """The part of an IMA log that replays to the quoted PCR values.

    ``entries`` are the newly covered entries (numbers ``start.entries + 1``
    to ``state.entries``), built on first access. ``covered`` counts them;
    ``uncovered`` counts entries the log held beyond the quoted prefix
    (appended after the quote; verified next time). ``sha1_padded`` says the
    pre-5.1 kernel rule was needed.

    ``entry_keys`` holds, per covered entry, the exact bytes it was parsed
    from: its ascii text (lines joined by "\\n" where a name holds a
    newline), or for a binary list a NUL, the template-hash algorithm
    (u16 big-endian) and the entry's bytes. ``entries[i]`` is, apart from
    its number, a function of ``entry_keys[i]`` alone, and keys of the two
    formats never collide (no ascii entry starts with NUL). It lets a
    caller recognise an entry it has judged before without building it;
    the bytes count only as the entry they parse to (the template name in
    them is not covered, as above).

    ``fmt`` is the list's format; ``end`` the offset in the given data just
    after the last covered entry, so that ``data[end:]`` is what is left
    for the next round: ``uncovered`` whole entries, then ``incomplete``
    bytes of an entry not yet fully read (binary lists only).
    """

    __slots__ = ("state", "start", "covered", "uncovered", "sha1_padded",
                 "entry_keys", "fmt", "end", "incomplete", "_materialise",
                 "_entries")

    def __init__(self, state: ReplayState, start: ReplayState, covered: int,
                 uncovered: int, sha1_padded: bool,
                 materialise: Callable[[], tuple[IMAEntry, ...]],
                 entry_keys: tuple[bytes, ...] | None = None, *,
                 fmt: str | None = None, end: int | None = None,
                 incomplete: int = 0) -> None:
        if entry_keys is not None and len(entry_keys) != covered:
            raise exception.InvalidParameterValue(
                name="entry_keys", reason="must hold one key per covered "
                "entry")
        self.state = state
        self.start = start
        self.covered = covered
        self.uncovered = uncovered
        self.sha1_padded = sha1_padded
        self.entry_keys = entry_keys
        self.fmt = fmt
        self.end = end
        self.incomplete = incomplete
        self._materialise = materialise
        self._entries: tuple[IMAEntry, ...] | None = None

    @property
    def ascii_lines(self) -> tuple[bytes, ...] | None:
        """The covered entries' ascii text (ascii lists only, else None)."""
        return self.entry_keys if self.fmt == "ascii" else None

    @property
    def entries(self) -> tuple[IMAEntry, ...]:
        if self._entries is None:
            self._entries = self._materialise()
        return self._entries

    @property
    def boot_aggregate(self) -> IMAEntry | None:
        """The verified boot_aggregate entry, if this result covers entry 1.

        Compare it with :func:`compute_boot_aggregate` over the quoted
        PCRs 0-9 (see :func:`boot_aggregate_matches`).
        """
        if self.start.entries == 0 and self.covered:
            first = self.entries[0]
            if first.is_boot_aggregate:
                return first
        return None

    def __repr__(self) -> str:
        return ("VerifiedIMALog(entries %d..%d, uncovered=%d, "
                "sha1_padded=%s)" % (self.start.entries + 1,
                                     self.state.entries, self.uncovered,
                                     self.sha1_padded))


# --- parsing: shared ---------------------------------------------------------

def _invalid(line: int, reason: str) -> exception.IMAEntryInvalid:
    return exception.IMAEntryInvalid(line=line, reason=reason)


def _hash_input(template_name: str, fields: Sequence[bytes],
                line: int) -> bytes:
    """The bytes the template hash covers (the kernel's exact rule)."""
    if template_name == templates.IMA_TEMPLATE:
        digest, name = fields
        if len(name) > templates.NAME_FIELD_MAX:
            raise _invalid(line, "name longer than 255 bytes in the 'ima' "
                           "template")
        return digest + name.ljust(templates.NAME_FIELD_MAX, b"\0")
    pack = _U32LE.pack
    return b"".join(pack(len(f)) + f for f in fields)


def _alg_digest(data: bytes, line: int) -> tuple[str, bytes]:
    prefix, sep, digest = data.partition(b":\0")
    if not sep or not prefix:
        raise _invalid(line, "file digest field has no '<algorithm>:' "
                       "prefix")
    try:
        name = prefix.rsplit(b":", 1)[-1].decode("ascii")
    except UnicodeDecodeError:
        raise _invalid(line, "file digest algorithm is not ascii") from None
    return name, digest


def _name(data: bytes, line: int) -> str:
    if not data.endswith(b"\0") or b"\0" in data[:-1]:
        raise _invalid(line, "name field is not one NUL-terminated string")
    return data[:-1].decode("utf-8", "surrogateescape")


def _make_entry(line: int, pcr: int, template_hash: bytes, th_alg: int,
                template_name: str, template_data: bytes,
                kinds: tuple[tuple[str, str], ...] | None,
                fields: tuple[bytes, ...] | None) -> IMAEntry:
    """Build an entry, reading the well-known fields out of ``fields``."""
    file_hash_alg = file_hash = path = sig = buf = None
    if kinds is not None and fields is not None:
        for (fid, _), data in zip(kinds, fields):
            if fid in ("d-ng", "d-ngv2") and file_hash is None:
                file_hash_alg, file_hash = _alg_digest(data, line)
            elif fid == "d" and file_hash is None:
                file_hash_alg = {20: "sha1", 16: "md5"}.get(len(data))
                file_hash = data
            elif fid in ("n", "n-ng") and path is None:
                path = _name(data, line)
            elif fid == "sig":
                sig = data
            elif fid == "buf":
                buf = data
    violation = not any(template_hash)
    if violation and file_hash and any(file_hash):
        # The kernel records a violation with a zeroed file digest; the PCR
        # does not cover it, so anything else is a forgery we can spot.
        raise _invalid(line, "violation entry (zero template hash) with a "
                       "non-zero file digest")
    return IMAEntry(line, pcr, template_hash, th_alg, template_name,
                    template_data, fields, file_hash_alg, file_hash, path,
                    sig, buf, violation)


# --- parsing: ascii ----------------------------------------------------------

def _template_hash_alg(hex_length: int, given: int | None, line: int) -> int:
    if given is not None:
        _bank(given)
        return given
    alg = _TEMPLATE_HASH_BY_SIZE.get(hex_length // 2)
    if alg is None or hex_length % 2:
        raise _invalid(line, "a template hash of %d hex digits is no known "
                       "algorithm's" % hex_length)
    return alg


def _split_fields(rest: bytes, kinds: tuple[tuple[str, str], ...],
                  line: int) -> list[bytes]:
    """Cut the field text: only the name field may contain spaces."""
    count = len(kinds)
    name_at = next((i for i, (_, k) in enumerate(kinds)
                    if k == templates.FieldKind.NAME), None)
    if name_at is None:
        parts = rest.split(b" ")
        if len(parts) != count:
            raise _invalid(line, "expected %d template fields, found %d"
                           % (count, len(parts)))
        return parts
    left = rest.split(b" ", name_at)
    if len(left) != name_at + 1:
        raise _invalid(line, "expected %d template fields" % count)
    after = count - name_at - 1
    right = left.pop().rsplit(b" ", after) if after else [left.pop()]
    # Tools that strip trailing spaces drop empty trailing fields
    # (an ima-sig line without a signature); the template hash decides.
    right.extend([b""] * (after + 1 - len(right)))
    return left + right


def _parse_ascii_line(line: bytes, number: int,
                      th_alg: int | None) -> IMAEntry:
    """Parse one ascii line strictly (the reference for the fast path)."""
    if not line:
        raise _invalid(number, "empty line")
    parts = line.split(b" ", 3)
    if len(parts) != 4:
        raise _invalid(number, "expected 'PCR template-hash template-name "
                       "fields'")
    pcr_text, hash_text, name_text, rest = parts
    if not pcr_text.isdigit() or len(pcr_text) > 2 or int(pcr_text) > _MAX_PCR:
        raise _invalid(number, "PCR index is not a number from 0 to 23")
    alg = _template_hash_alg(len(hash_text), th_alg, number)
    template_hash = templates.unhex(hash_text, number, "template-hash")
    if len(template_hash) != _bank(alg)[1]:
        raise _invalid(number, "template hash is %d bytes, expected %d (%s)"
                       % (len(template_hash), _bank(alg)[1], _bank_name(alg)))
    try:
        template_name = name_text.decode("ascii")
    except UnicodeDecodeError:
        raise _invalid(number, "template name is not ascii") from None
    kinds = templates.field_kinds(template_name)
    if kinds is None:
        raise _invalid(number, "template %r is unknown, so its data cannot "
                       "be rebuilt from the ascii list; use the binary list"
                       % template_name[:40])
    texts = _split_fields(rest, kinds, number)
    fields = tuple(templates.field_from_ascii(fid, kind, text, number)
                   for (fid, kind), text in zip(kinds, texts))
    data = _hash_input(template_name, fields, number)
    return _make_entry(number, int(pcr_text), template_hash, alg,
                       template_name, data, kinds, fields)


def _ascii_lines(data: bytes, limit: int | None = None) -> list[bytes]:
    if b"\0" in data:
        # No kernel-written ascii list holds a NUL; find the line for the
        # error message.
        number = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise _invalid(number, "NUL byte in the ascii list")
    lines = data.split(b"\n", limit) if limit is not None else \
        data.split(b"\n")
    if limit is not None and len(lines) > limit:
        del lines[limit:]
    elif lines and not lines[-1]:
        lines.pop()
    return lines


def _first_hash_length(lines: list[bytes]) -> int:
    try:
        return len(lines[0].split(b" ", 2)[1])
    except IndexError:
        return 40


# --- parsing: binary ---------------------------------------------------------

def _parse_binary_entry(r: Reader, number: int, th_size: int,
                        th_alg: int) -> IMAEntry:
    pcr = r.u32le()
    if pcr > _MAX_PCR:
        raise _invalid(number, "PCR index %d is over 23" % pcr)
    template_hash = r.bytes(th_size)
    name_length = r.u32le()
    if not 0 < name_length <= 255:
        raise _invalid(number, "template name length %d is not 1-255"
                       % name_length)
    try:
        template_name = r.bytes(name_length).decode("ascii")
    except UnicodeDecodeError:
        raise _invalid(number, "template name is not ascii") from None
    if template_name == templates.IMA_TEMPLATE:
        # No template data length; 'd' raw (SHA-1); 'n' without its NUL.
        digest = r.bytes(20)
        length = r.u32le()
        if length > 255:
            raise _invalid(number, "name longer than 255 bytes in the 'ima' "
                           "template")
        fields: tuple[bytes, ...] | None = (digest, r.bytes(length) + b"\0")
        kinds = templates.field_kinds(template_name)
        data = _hash_input(template_name, fields, number)
    else:
        data = r.bytes(r.u32le())
        kinds = templates.field_kinds(template_name)
        fields = None if kinds is None else templates.split_template_data(
            data, len(kinds), number)
    return _make_entry(number, pcr, template_hash, th_alg, template_name,
                       data, kinds, fields)


def _parse_binary(data: bytes, first: int, th_alg: int | None,
                  limit: int | None) -> tuple[list[IMAEntry], list[int]]:
    """Entries and the offset just after each one."""
    alg = int(constants.TPM_ALG.SHA1) if th_alg is None else th_alg
    th_size = _bank(alg)[1]
    r = Reader(data, "binary IMA log")
    entries: list[IMAEntry] = []
    ends: list[int] = []
    while not r.at_end() and (limit is None or len(entries) < limit):
        number = first + len(entries)
        try:
            entries.append(_parse_binary_entry(r, number, th_size, alg))
        except exception.TruncatedEvidence as exc:
            raise exception.TruncatedEvidence(
                **dict(exc.kwargs, what="binary IMA log entry %d" % number),
                line=number) from None
        ends.append(r.offset)
    return entries, ends


# --- parsing: public ---------------------------------------------------------

def _as_bytes(data: bytes | str, max_size: int) -> bytes:
    if isinstance(data, str):
        try:
            data = data.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise exception.MalformedEvidence(
                what=_LOG, reason="text that cannot be encoded") from None
    elif isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    elif not isinstance(data, bytes):
        raise TypeError("data must be bytes or str, not %s"
                        % type(data).__name__)
    if len(data) > max_size:
        raise exception.EvidenceTooLarge(what=_LOG, size=len(data),
                                         limit=max_size)
    return data


def _detect(data: bytes, fmt: str) -> str:
    if fmt in ("ascii", "binary"):
        return fmt
    if fmt != "auto":
        raise exception.InvalidParameterValue(
            name="fmt", reason="must be 'auto', 'ascii' or 'binary'")
    # An ascii list starts with the decimal PCR index; a binary one with
    # its little-endian u32, whose first byte is below 24.
    return "ascii" if data[:1].isdigit() else "binary"


def parse_ima_log(data: bytes | str, *, fmt: str = "auto",
                  start_line: int = 1, max_entries: int | None = None,
                  template_hash_alg: int | None = None,
                  max_size: int = DEFAULT_MAX_LOG_SIZE) -> list[IMAEntry]:
    """Parse a measurement list; structure only, nothing is trusted.

    ``start_line`` numbers the first entry of ``data`` (pass
    ``state.entries + 1`` for a tail). ``max_entries`` stops early.
    """
    data = _as_bytes(data, max_size)
    if max_entries is not None and max_entries < 0:
        raise exception.InvalidParameterValue(name="max_entries",
                                              reason="must be >= 0")
    if max_entries == 0:
        return []
    if _detect(data, fmt) == "binary":
        return _parse_binary(data, start_line, template_hash_alg,
                             max_entries)[0]
    lines = _ascii_lines(data, max_entries)
    th_alg = template_hash_alg
    if th_alg is None and lines:
        th_alg = _template_hash_alg(_first_hash_length(lines), None,
                                    start_line)
    return [_parse_ascii_line(line, start_line + i, th_alg)
            for i, line in enumerate(lines)]


# --- replay ------------------------------------------------------------------

def _violation_digest(bank: int, sha1_padded: bool) -> bytes:
    size = _bank(bank)[1]
    if sha1_padded:
        return b"\xff" * 20 + bytes(size - 20)
    return b"\xff" * size


def replay_ima(entries: Iterable[IMAEntry], banks: Iterable[int],
               start: ReplayState | None = None, *,
               sha1_padded: bool = False) -> ReplayState:
    """Replay parsed entries into the given banks (no checking).

    Entries numbered up to ``start.entries`` are skipped, so both the whole
    log and only its tail may be given; the rest must follow on without a
    gap. ``sha1_padded`` applies the pre-5.1 kernel rule.
    """
    banks = list(dict.fromkeys(int(b) for b in banks))
    hashers = {b: _bank(b) for b in banks}
    start = start or ReplayState.initial(banks)
    values = {(b, IMA_PCR): start.value(b) for b in banks}
    values.update({k: v for k, v in start.other_pcrs.items()
                   if k[0] in hashers})
    count = start.entries
    sha1 = hashlib.sha1
    for entry in entries:
        if entry.line <= start.entries:
            continue
        if entry.line != count + 1:
            raise exception.MalformedEvidence(
                what=_LOG, reason="entry %d follows entry %d"
                % (entry.line, count))
        count += 1
        for bank, (_, size, new) in hashers.items():
            if entry.violation:
                th = _violation_digest(bank, sha1_padded)
            elif sha1_padded:
                th = sha1(entry.template_data).digest() + bytes(size - 20)
            else:
                th = new(entry.template_data).digest()
            key = (bank, entry.pcr)
            old = values.get(key, bytes(size))
            values[key] = new(old + th).digest()
    return ReplayState(
        count, {b: v for (b, p), v in values.items() if p == IMA_PCR},
        {k: v for k, v in values.items() if k[1] != IMA_PCR})


# --- verification: a batch of new entries ------------------------------------

class _Batch:
    """New entries reduced to what replay needs.

    ``datas[i]`` is entry i's template data; ``recorded[i]`` its recorded
    template hash (0xFF.. for violations, to line up with the replay);
    ``pcrs`` maps index -> PCR for entries not on PCR 10.
    """

    __slots__ = ("datas", "recorded", "violations", "pcrs", "th_alg",
                 "first", "entry_at", "end_offset", "complete", "keys")

    def __init__(self, first: int, th_alg: int) -> None:
        self.first = first
        self.th_alg = th_alg
        self.datas: list[bytes] = []
        self.recorded: list[bytes] = []
        self.violations: list[int] = []
        self.pcrs: dict[int, int] = {}
        # entry_at(i) -> IMAEntry (strict parse), end_offset(k) -> offset
        # (relative to the batch data) just after the k-th entry.
        self.entry_at: Callable[[int], IMAEntry] = None  # type: ignore
        self.end_offset: Callable[[int], int] = None  # type: ignore
        # Where the bytes after the last whole entry start; keys(k) -> the
        # exact bytes of the first k entries (see VerifiedIMALog.entry_keys).
        self.complete = 0
        self.keys: Callable[[int], tuple[bytes, ...]] = None  # type: ignore

    def add(self, entry: IMAEntry) -> None:
        index = len(self.datas)
        if entry.template_hash_alg != self.th_alg:
            raise _invalid(entry.line, "template hash algorithm differs from "
                           "the rest of the list")
        self.datas.append(entry.template_data)
        if entry.violation:
            self.violations.append(index)
            self.recorded.append(b"\xff" * len(entry.template_hash))
        else:
            self.recorded.append(entry.template_hash)
        if entry.pcr != IMA_PCR:
            self.pcrs[index] = entry.pcr


def _dng_prefix(alg: bytes, sep: bytes, hex_length: int) -> bytes:
    """u32le length + "alg:\\0" for an ima-ng d-ng field of this shape."""
    if not sep or not alg or hex_length % 2:
        raise ValueError("not a d-ng field the fast path takes")
    return _U32LE.pack(len(alg) + 2 + hex_length // 2) + alg + b":\0"


def _ascii_batch(lines: list[bytes], first: int,
                 th_alg: int | None) -> _Batch:
    """Rebuild template data for every line.

    The loop is the hot path of verification: lines of the default
    ``ima-ng`` template on PCR 10 are handled inline; anything else, or
    anything odd, goes through :func:`_parse_ascii_line`, which is the
    strict reference and raises the precise error.
    """
    if th_alg is None:
        th_alg = _template_hash_alg(_first_hash_length(lines) if lines
                                    else 40, None, first)
    th_size = _bank(th_alg)[1]
    batch = _Batch(first, th_alg)
    datas, recorded, violations = batch.datas, batch.recorded, \
        batch.violations
    zero, ff = bytes(th_size), b"\xff" * th_size
    prefixes: dict[tuple[bytes, int], bytes] = {}
    unhex = binascii.unhexlify
    name_lengths = _NAME_LENGTHS
    for line in lines:
        try:
            p = line.split(b" ", 4)
            if p[2] == b"ima-ng" and p[0] == b"10":
                alg, sep, hexdigest = p[3].partition(b":")
                key = (alg, len(hexdigest))
                prefix = prefixes.get(key)
                if prefix is None:
                    prefix = prefixes[key] = _dng_prefix(alg, sep, key[1])
                name = p[4]
                rec = unhex(p[1])
                data = b"".join((prefix, unhex(hexdigest),
                                 name_lengths[len(name) + 1], name, b"\0"))
                if len(rec) != th_size:
                    raise ValueError("recorded hash size")
                if rec == zero:
                    if any(data[len(prefix):-len(name) - 5]):
                        raise ValueError("violation with a file digest")
                    violations.append(len(datas))
                    rec = ff
                datas.append(data)
                recorded.append(rec)
                continue
        except (ValueError, IndexError):
            pass
        batch.add(_parse_ascii_line(line, first + len(datas), th_alg))
    batch.entry_at = lambda i: _parse_ascii_line(lines[i], first + i, th_alg)
    batch.end_offset = lambda k: sum(map(len, lines[:k])) + k
    batch.complete = batch.end_offset(len(lines))
    batch.keys = lambda k: tuple(lines[:k])
    return batch


def _rejoin_ascii_lines(lines: list[bytes], first: int,
                        th_alg: int | None,
                        error: exception.IMAEntryInvalid,
                        found: list[bytes] | None = None) -> list[bytes]:
    """Lines regrouped into entries, for a list in which a file name holds
    a newline (the kernel prints names raw, so such an entry spans lines).

    An entry ends at the first line whose text, joined to the lines before
    it, rebuilds template data that hashes to the recorded template hash;
    the name is in that hash, so the cut is the kernel's (and the replay
    into the quoted PCRs checks it again). A violation entry's name is in
    no hash: where it spans lines, nothing can tell where it ends, and the
    list is refused with the advice to use the binary list. ``found``, if
    given, receives the entries regrouped before the one refused.
    """
    if th_alg is None:
        th_alg = _template_hash_alg(_first_hash_length(lines) if lines
                                    else 40, None, first)
    new = _bank(th_alg)[2]
    merged: list[bytes] = [] if found is None else found
    i = 0
    while i < len(lines):
        number = first + len(merged)
        text, j = lines[i], i
        while True:
            try:
                entry = _parse_ascii_line(text, number, th_alg)
                if entry.violation or \
                        new(entry.template_data).digest() == \
                        entry.template_hash:
                    break
            except exception.IMAEntryInvalid:
                pass
            if j + 1 >= len(lines) or len(text) > _MAX_ASCII_ENTRY:
                if number == error.kwargs.get("line"):
                    reason = error.kwargs.get("reason", "")
                else:
                    reason = "the text does not rebuild the recorded entry"
                raise _invalid(number, "%s (a file name holding a newline "
                               "spans lines in the ascii list, and no "
                               "following line completes it; verify the "
                               "binary list, binary_runtime_measurements)"
                               % reason)
            j += 1
            text = text + b"\n" + lines[j]
        merged.append(text)
        i = j + 1
    return merged


def _ascii_entries(body: bytes, first: int, th_alg: int | None,
                   check: bool, cache: dict[tuple[int, bool], list[bytes]]
                   ) -> _Batch:
    """The batch of an ascii list, its recorded hashes checked (``check``).

    The fast path cuts at every newline; only when that fails are the
    lines regrouped (:func:`_rejoin_ascii_lines`), so names holding a
    newline cost nothing to lists without them.
    """
    lines = _ascii_lines(body)
    try:
        batch = _ascii_batch(lines, first, th_alg)
        if check and batch.datas:
            _check_recorded(batch, cache)
        return batch
    except exception.IMAEntryInvalid as error:
        merged = _rejoin_ascii_lines(lines, first, th_alg, error)
    cache.clear()
    batch = _ascii_batch(merged, first, th_alg)
    if check and batch.datas:
        _check_recorded(batch, cache)
    return batch


def count_entries(data: bytes, fmt: str, *, offset: int = 0,
                  count: int | None = None, first: int = 1,
                  template_hash_alg: int | None = None) -> tuple[int, int]:
    """Up to ``count`` whole entries of a list from ``offset``: (entries,
    offset just after the last). A partly written last entry is not
    counted. Binary lists are walked by their length fields; ascii lists
    are cut where :func:`verify_ima_log` cuts them (a name may hold a
    newline), which costs a parse of the lines.
    """
    if fmt == "binary":
        return walk_binary_entries(data, offset, count, first=first,
                                   template_hash_alg=template_hash_alg)
    if fmt != "ascii":
        raise exception.InvalidParameterValue(
            name="fmt", reason="must be 'ascii' or 'binary'")
    end = data.rfind(b"\n", offset) + 1
    if end <= offset:
        return 0, offset
    lines = _ascii_lines(data[offset:end])
    try:
        batch = _ascii_batch(lines, first, template_hash_alg)
        _check_recorded(batch, {})
        entries = lines
    except exception.IMAEntryInvalid as error:
        # Count the entries before the one that cannot be cut; the
        # verifier gets the rest and says why it refuses it.
        entries = []
        try:
            _rejoin_ascii_lines(lines, first, template_hash_alg, error,
                                entries)
        except exception.IMAEntryInvalid:
            pass
    k = len(entries) if count is None else min(count, len(entries))
    return k, offset + sum(map(len, entries[:k])) + k


def _binary_entry_end(data: bytes, pos: int, th_size: int,
                      number: int) -> int | None:
    """Offset just after the binary entry at ``pos``, from its length
    fields alone, or None when the data ends inside it (the rest has not
    been read yet). Lengths no kernel writes are errors, so a bad length
    cannot hide the entries after it."""
    size = len(data)
    at = pos + 4 + th_size
    if at + 4 > size:
        return None
    (name_length,) = _U32LE.unpack_from(data, at)
    if not 0 < name_length <= 255:
        raise _invalid(number, "template name length %d is not 1-255"
                       % name_length)
    at += 4 + name_length
    if at > size:
        return None
    if data[at - name_length:at] == _IMA_TEMPLATE_BYTES:
        at += 20  # the 'ima' template: raw SHA-1, then u32 + name
        if at + 4 > size:
            return None
        (length,) = _U32LE.unpack_from(data, at)
        if length > 255:
            raise _invalid(number, "name longer than 255 bytes in the 'ima' "
                           "template")
    else:
        if at + 4 > size:
            return None
        (length,) = _U32LE.unpack_from(data, at)
        if length > _MAX_TEMPLATE_DATA:
            raise _invalid(number, "template data length %d is over %d "
                           "bytes" % (length, _MAX_TEMPLATE_DATA))
    at += 4 + length
    return at if at <= size else None


def walk_binary_entries(data: bytes, offset: int = 0,
                        count: int | None = None, *, first: int = 1,
                        template_hash_alg: int | None = None
                        ) -> tuple[int, int]:
    """Walk up to ``count`` whole binary entries from ``offset`` by their
    length fields only: (entries walked, offset just after the last).

    A partly written last entry is not counted. ``first`` numbers the
    entry at ``offset`` for errors. Used to find entry N of a list without
    parsing what comes before it.
    """
    alg = int(constants.TPM_ALG.SHA1) if template_hash_alg is None \
        else template_hash_alg
    th_size = _bank(alg)[1]
    walked = 0
    while count is None or walked < count:
        end = _binary_entry_end(data, offset, th_size, first + walked)
        if end is None:
            break
        offset, walked = end, walked + 1
    return walked, offset


def _ima_ng_data_ok(tdata: bytes, violation: bool) -> bool:
    """Whether ima-ng template data is exactly a d-ng and an n-ng field
    that the strict parser would accept (else it takes the strict path)."""
    size = len(tdata)
    if size < 8:
        return False
    (l1,) = _U32LE.unpack_from(tdata, 0)
    if 8 + l1 > size:
        return False
    (l2,) = _U32LE.unpack_from(tdata, 4 + l1)
    if 8 + l1 + l2 != size or l2 == 0 or tdata[-1] != 0 \
            or tdata.find(b"\0", 8 + l1, size - 1) >= 0:
        return False
    sep = tdata.find(b":\0", 4, 4 + l1)
    if sep <= 4 or not tdata[4:sep].isascii():
        return False
    return not violation or not any(tdata[sep + 2:4 + l1])


def _finish_binary_batch(batch: _Batch, data: bytes, bounds: list[int],
                         pos: int, first: int, th_size: int,
                         alg: int) -> _Batch:
    """Give a parsed binary batch what replay asks of it later: entry
    ``i`` parsed on demand (for reasons and appraisal), where entry ``i``
    ends, how far the list was complete, and each entry's IMA-state key
    (its bytes behind the bank). ``bounds`` holds the start offset, then
    each entry's end."""
    batch.entry_at = lambda i: _parse_binary_entry(
        Reader(data[bounds[i]:bounds[i + 1]], "binary IMA log"), first + i,
        th_size, alg)
    batch.end_offset = bounds.__getitem__
    batch.complete = pos
    key_prefix = b"\0" + _U16BE.pack(alg)
    batch.keys = lambda k: tuple(key_prefix + data[bounds[i]:bounds[i + 1]]
                                 for i in range(k))
    return batch

def _binary_batch(data: bytes, first: int, th_alg: int | None) -> _Batch:
    """Template data of every whole entry; see :func:`_ascii_batch`.

    Entries of the default ``ima-ng`` template on PCR 10 whose data the
    strict parser would accept are taken inline, with no call per entry
    (the conductor replays ~100 new entries per host per round; the per
    entry calls were most of the cost beyond the hashing); anything else -
    another template or PCR, a length no kernel writes, a partly written
    entry - goes through :func:`_binary_entry_end` and
    :func:`_parse_binary_entry`, which name the error. Same result as
    :func:`_binary_batch_reference` (a property test checks it). Bytes
    after the last whole entry are left out: ``batch.complete`` is where
    they start.
    """
    alg = int(constants.TPM_ALG.SHA1) if th_alg is None else th_alg
    th_size = _bank(alg)[1]
    batch = _Batch(first, alg)
    datas, recorded, violations = batch.datas, batch.recorded, \
        batch.violations
    zero, ff = bytes(th_size), b"\xff" * th_size
    bounds: list[int] = [0]
    unpack = _U32LE.unpack_from
    find = data.find
    size = len(data)
    # pcr (u32) | template hash | name length (u32) 'ima-ng' | data length
    # (u32) | data: d-ng length (u32) 'alg:\0' digest | n-ng length (u32)
    # name '\0'.
    name_head_at = 4 + th_size
    data_at = name_head_at + 14
    ng_head = b"\x06\0\0\0ima-ng"
    pcr10 = _U32LE.pack(IMA_PCR)
    pos = 0
    while True:
        start = pos + data_at
        if start <= size and data[pos:pos + 4] == pcr10 and \
                data[pos + name_head_at:start - 4] == ng_head:
            (length,) = unpack(data, start - 4)
            end = start + length
            if 8 <= length <= _MAX_TEMPLATE_DATA and end <= size:
                (l1,) = unpack(data, start)
                mid = start + 4 + l1          # the n-ng length field
                if mid + 4 <= end and unpack(data, mid)[0] + mid + 4 == end \
                        and end > mid + 4 and data[end - 1] == 0 \
                        and find(b"\0", mid + 4, end - 1) < 0:
                    sep = find(b":\0", start + 4, mid)
                    if sep > start + 4 and data[start + 4:sep].isascii():
                        rec = data[pos + 4:pos + 4 + th_size]
                        if rec != zero:
                            datas.append(data[start:end])
                            recorded.append(rec)
                            bounds.append(end)
                            pos = end
                            continue
                        if not any(data[sep + 2:mid]):
                            violations.append(len(datas))
                            datas.append(data[start:end])
                            recorded.append(ff)
                            bounds.append(end)
                            pos = end
                            continue
        end = _binary_entry_end(data, pos, th_size, first + len(datas))
        if end is None:
            break
        batch.add(_parse_binary_entry(
            Reader(data[pos:end], "binary IMA log"), first + len(datas),
            th_size, alg))
        bounds.append(end)
        pos = end
    return _finish_binary_batch(batch, data, bounds, pos, first, th_size,
                                alg)


def _binary_batch_reference(data: bytes, first: int, th_alg: int | None
                            ) -> _Batch:
    """The previous :func:`_binary_batch` (one call per entry to find its
    end and to check its data), kept as the reference the property tests
    compare the inlined loop with. Template data of every whole entry.

    Entries of the default ``ima-ng`` template on PCR 10 are taken inline;
    anything else goes through :func:`_parse_binary_entry`. Bytes after the
    last whole entry (a partly read one) are left out: ``batch.complete``
    is where they start.
    """
    alg = int(constants.TPM_ALG.SHA1) if th_alg is None else th_alg
    th_size = _bank(alg)[1]
    batch = _Batch(first, alg)
    datas, recorded, violations = batch.datas, batch.recorded, \
        batch.violations
    zero, ff = bytes(th_size), b"\xff" * th_size
    bounds: list[int] = [0]
    unpack = _U32LE.unpack_from
    entry_end = _binary_entry_end
    pos = 0
    name_at = 4 + th_size + 4
    while True:
        number = first + len(datas)
        end = entry_end(data, pos, th_size, number)
        if end is None:
            break
        if (unpack(data, pos)[0] == IMA_PCR
                and data[pos + name_at - 4:pos + name_at + 6]
                == b"\x06\0\0\0ima-ng"):
            rec = data[pos + 4:pos + 4 + th_size]
            tdata = data[pos + name_at + 10:end]
            violation = rec == zero
            if _ima_ng_data_ok(tdata, violation):
                if violation:
                    violations.append(len(datas))
                    rec = ff
                datas.append(tdata)
                recorded.append(rec)
                bounds.append(end)
                pos = end
                continue
        batch.add(_parse_binary_entry(
            Reader(data[pos:end], "binary IMA log"), number, th_size, alg))
        bounds.append(end)
        pos = end
    return _finish_binary_batch(batch, data, bounds, pos, first, th_size,
                                alg)


# --- verification: replay of a batch -----------------------------------------

def _template_hashes(batch: _Batch, bank: int, sha1_padded: bool,
                     cache: dict[tuple[int, bool], list[bytes]]
                     ) -> list[bytes]:
    """Per-entry digests to extend into ``bank`` (violations patched)."""
    key = (bank, sha1_padded)
    if key in cache:
        return cache[key]
    _, size, new = _bank(bank)
    if sha1_padded:
        pad = bytes(size - 20)
        ths = [h + pad for h in _template_hashes(
            batch, int(constants.TPM_ALG.SHA1), False, cache)]
    else:
        ths = [new(d).digest() for d in batch.datas]
    violation = _violation_digest(bank, sha1_padded)
    for i in batch.violations:
        ths[i] = violation
    cache[key] = ths
    return ths


def _check_recorded(batch: _Batch,
                    cache: dict[tuple[int, bool], list[bytes]]) -> None:
    """Every recorded template hash must match its template data."""
    ths = _template_hashes(batch, batch.th_alg, False, cache)
    if ths == batch.recorded:
        return
    for i, (computed, recorded) in enumerate(zip(ths, batch.recorded)):
        if computed != recorded:
            batch.entry_at(i)  # a structural problem is the better reason
            raise _invalid(batch.first + i, "the recorded template hash "
                           "does not match the template data (%s): the "
                           "line was altered" % _bank_name(batch.th_alg))


def _chain(new: Callable[..., Any], value: bytes,
           ths: list[bytes]) -> list[bytes]:
    """PCR values after each extend (entry i -> values[i])."""
    return [value := new(value + th).digest() for th in ths]


def _positions(values: list[bytes], start: bytes, quoted: bytes) -> set[int]:
    """Numbers of entries k such that the PCR after k entries is quoted."""
    found = {0} if start == quoted else set()
    i = -1
    while True:
        try:
            i = values.index(quoted, i + 1)
        except ValueError:
            return found
        found.add(i + 1)


def _replay_pcr10(batch: _Batch, quoted: Mapping[tuple[int, int], bytes],
                  start: ReplayState, sha1_padded: bool,
                  cache: dict[tuple[int, bool], list[bytes]]
                  ) -> tuple[int | None, dict[tuple[int, int], bytes],
                             list[int]]:
    """Fast path, every entry on PCR 10: (prefix length, values, failed)."""
    chains = {}
    common: set[int] | None = None
    failed = []
    for bank, pcr in quoted:
        _, _, new = _bank(bank)
        begin = start.value(bank)
        values = _chain(new, begin, _template_hashes(batch, bank,
                                                     sha1_padded, cache))
        chains[bank] = (begin, values)
        found = _positions(values, begin, quoted[(bank, pcr)])
        if not found:
            failed.append(bank)
        common = found if common is None else common & found
    if not common:
        return None, {}, failed or [b for b, _ in quoted]
    k = max(common)
    return k, {(b, IMA_PCR): (v[k - 1] if k else begin)
               for b, (begin, v) in chains.items()}, []


def _replay_any_pcr(batch: _Batch, quoted: Mapping[tuple[int, int], bytes],
                    start: ReplayState, sha1_padded: bool,
                    cache: dict[tuple[int, bool], list[bytes]]
                    ) -> tuple[int | None, dict[tuple[int, int], bytes],
                               list[int]]:
    """General path for logs that also measure into other PCRs."""
    banks = sorted({b for b, _ in quoted})
    for i, pcr in batch.pcrs.items():
        if not all((b, pcr) in quoted for b in banks):
            raise _invalid(batch.first + i, "measured into PCR %d, which the "
                           "quote does not cover" % pcr)
    ths = {b: _template_hashes(batch, b, sha1_padded, cache) for b in banks}
    news = {b: _bank(b)[2] for b in banks}
    values = {k: start.value(*k) for k in quoted}
    matching = sum(values[k] == q for k, q in quoted.items())
    best = 0 if matching == len(quoted) else None
    best_values = dict(values) if best == 0 else {}
    for i in range(len(batch.datas)):
        pcr = batch.pcrs.get(i, IMA_PCR)
        for b in banks:
            key = (b, pcr)
            old = values[key]
            new_value = values[key] = news[b](old + ths[b][i]).digest()
            matching += (new_value == quoted[key]) - (old == quoted[key])
        if matching == len(quoted):
            best, best_values = i + 1, dict(values)
    if best is None:
        failed = [b for (b, p), q in quoted.items() if values[(b, p)] != q]
        return None, {}, failed or banks
    return best, best_values, []


# --- verification: public ----------------------------------------------------

def _normalise_quoted(quoted: Mapping[Any, bytes]
                      ) -> dict[tuple[int, int], bytes]:
    if not quoted:
        raise exception.InvalidParameterValue(
            name="quoted", reason="no quoted PCR 10 value given")
    out = {}
    for key, value in quoted.items():
        bank, pcr = key if isinstance(key, tuple) else (key, IMA_PCR)
        _, size, _ = _bank(bank)
        if not isinstance(value, (bytes, bytearray)) or len(value) != size:
            raise exception.InvalidParameterValue(
                name="quoted", reason="PCR %d of bank %s must be %d bytes"
                % (pcr, _bank_name(bank), size))
        out[(int(bank), int(pcr))] = bytes(value)
    if not any(p == IMA_PCR for _, p in out):
        raise exception.InvalidParameterValue(
            name="quoted", reason="no quoted PCR 10 value given")
    return out


def _skip_entries(data: bytes, fmt: str, start: ReplayState,
                  template_hash_alg: int | None) -> int:
    """Offset in a whole log where the entries after ``start`` begin."""
    n = start.entries
    if n == 0:
        return 0
    if (start.offset is not None and start.fmt == fmt
            and start.offset <= len(data)
            and (fmt == "binary" or data[start.offset - 1:start.offset]
                 == b"\n")):
        return start.offset
    if fmt == "binary":
        entries, ends = _parse_binary(data, 1, template_hash_alg, n)
        offset = ends[-1] if ends else 0
        count = len(entries)
    else:
        offset, count = 0, 0
        find = data.find
        while count < n:
            newline = find(b"\n", offset)
            if newline < 0:
                break
            offset, count = newline + 1, count + 1
    if count < n:
        raise exception.MalformedEvidence(
            what=_LOG, reason="it holds %d entries, fewer than the %d already "
            "verified: the host rebooted or the log was replaced" % (count, n))
    return offset


def verify_ima_log(data: bytes | str, quoted: Mapping[Any, bytes],
                   start: ReplayState | None = None, *, fmt: str = "auto",
                   tail: bool = False, template_hash_alg: int | None = None,
                   allow_sha1_padded: bool = False,
                   check_template_hashes: bool = True,
                   max_size: int = DEFAULT_MAX_LOG_SIZE) -> VerifiedIMALog:
    """Replay the entries after ``start`` and match the quoted PCR 10.

    ``quoted`` maps bank -> quoted PCR 10 (or (bank, PCR) -> value when a
    policy measures into other PCRs), taken from a verified quote. ``data``
    is the whole log, or with ``tail=True`` only the entries after
    ``start.entries``. The quote may have been taken while entries were
    being appended: the longest prefix of the new entries whose replay
    equals the quoted values in every bank is accepted and reported
    (``covered``/``uncovered``); the entries after it are left for the next
    round.

    Raises :class:`IMAEntryInvalid` (with the line) for a malformed entry
    or a recorded template hash that does not match its data, and
    :class:`ReplayMismatch` when no prefix replays to the quoted values.
    """
    quoted_pcrs = _normalise_quoted(quoted)
    data = _as_bytes(data, max_size)
    banks = sorted({b for b, _ in quoted_pcrs})
    if start is None:
        start = ReplayState.initial(banks)
    missing = [b for b in banks if b not in start.pcrs]
    if missing:
        raise exception.InvalidParameterValue(
            name="start", reason="it holds no PCR 10 for bank(s) %s; start "
            "again from the beginning of the log"
            % ", ".join(_bank_name(b) for b in missing))
    fmt = _detect(data, fmt) if data else (start.fmt or "ascii")
    base = 0 if tail else _skip_entries(data, fmt, start, template_hash_alg)
    body = data[base:] if base else data
    first = start.entries + 1
    cache: dict[tuple[int, bool], list[bytes]] = {}
    if fmt == "binary":
        batch = _binary_batch(body, first, template_hash_alg)
        if check_template_hashes and batch.datas:
            _check_recorded(batch, cache)
    else:
        batch = _ascii_entries(body, first, template_hash_alg,
                               check_template_hashes, cache)
    replay = _replay_any_pcr if batch.pcrs or any(
        p != IMA_PCR for _, p in quoted_pcrs) else _replay_pcr10
    sha1_padded = False
    k, values, failed = replay(batch, quoted_pcrs, start, False, cache)
    if k is None and allow_sha1_padded:
        k, values, _ = replay(batch, quoted_pcrs, start, True, cache)
        sha1_padded = k is not None
    if k is None:
        raise exception.ReplayMismatch(
            log=_LOG, bank=", ".join(_bank_name(b) for b in failed),
            pcrs=sorted({p for _, p in quoted_pcrs}))
    if tail:
        offset = (None if start.offset is None
                  else start.offset + batch.end_offset(k))
    else:
        offset = base + batch.end_offset(k)
    state = ReplayState(
        start.entries + k,
        {b: v for (b, p), v in values.items() if p == IMA_PCR},
        {key: v for key, v in values.items() if key[1] != IMA_PCR},
        offset, fmt)
    return VerifiedIMALog(
        state, start, k, len(batch.datas) - k, sha1_padded,
        lambda: tuple(batch.entry_at(i) for i in range(k)),
        batch.keys(k), fmt=fmt, end=batch.end_offset(k),
        incomplete=len(body) - batch.complete)


# --- boot_aggregate ----------------------------------------------------------

def compute_boot_aggregate(pcr_values: Mapping[int, bytes], bank: int, *,
                           include_pcr8_9: bool | None = None) -> bytes:
    """The boot_aggregate the kernel computes from one bank's PCRs.

    ima_calc_boot_aggregate: the bank's hash over the concatenated values
    of PCRs 0-7, and (kernels since 5.8, non-SHA-1 banks only) 8-9. The
    kernel picks the bank of its IMA hash algorithm, else SHA-256, else
    SHA-1; the boot_aggregate entry's algorithm name says which.
    """
    _, size, new = _bank(bank)
    if include_pcr8_9 is None:
        include_pcr8_9 = bank != constants.TPM_ALG.SHA1
    h = new()
    for index in range(10 if include_pcr8_9 else 8):
        value = pcr_values.get(index)
        if value is None or len(value) != size:
            raise exception.InvalidParameterValue(
                name="pcr_values", reason="PCR %d of bank %s is missing or "
                "not %d bytes" % (index, _bank_name(bank), size))
        h.update(value)
    return h.digest()


def boot_aggregate_matches(
        entry: IMAEntry,
        pcr_values_by_bank: Mapping[int, Mapping[int, bytes]]) -> bool:
    """Whether a (verified) boot_aggregate entry matches quoted PCRs 0-9.

    An all-zero boot_aggregate (no TPM when IMA started) never matches.
    """
    if not entry.is_boot_aggregate or not entry.file_hash:
        return False
    bank = entry.file_hash_bank
    if bank is None or bank not in _BANKS or bank not in pcr_values_by_bank:
        return False
    if not any(entry.file_hash):
        return False
    expected = compute_boot_aggregate(pcr_values_by_bank[bank], bank)
    return hmac.compare_digest(expected, entry.file_hash)
