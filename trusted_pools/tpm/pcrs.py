"""Read the PCR value files that tpm2-tools writes.

Three forms (checked with tpm2-tools 5.4):

* ``serialized`` - what ``tpm2_quote -o`` writes by default and
  ``tpm2_pcrread -o F -F serialized`` writes: tpm2-tools dumps its C
  structures in host (little-endian on x86) byte order: a TPML_PCR_SELECTION
  (UINT32 count, then always 16 TPMS_PCR_SELECTION of 8 bytes: UINT16 hash,
  UINT8 sizeofSelect, pcrSelect[4], one padding byte), a UINT32 number of
  TPML_DIGEST that follow, and each TPML_DIGEST (UINT32 count, then always 8
  TPM2B_DIGEST of UINT16 size + 64-byte buffer). The digests fill the
  selection in order: banks as listed, PCRs ascending.
* ``values`` - what ``tpm2_pcrread -o`` writes by default and ``-F values``:
  the digests concatenated in selection order, nothing else; reading it
  needs the selection.
* text - what ``tpm2_pcrread`` / ``tpm2_quote`` print::

      pcrs:
        sha256:
          0 : 0x3D45...
          16: 0x9EF8...

The values returned are *unverified*: they only count once
:func:`trusted_pools.tpm.quote.verify_quote` matched them to a signed digest.
"""

from __future__ import annotations

import re
from typing import Sequence

from trusted_pools import exception
from trusted_pools.tpm import constants
from trusted_pools.tpm._reader import Reader
from trusted_pools.tpm.structures import PCRSelection

__all__ = ["load_pcr_values", "parse_serialized", "parse_values",
           "parse_text", "MAX_PCR_FILE_SIZE"]

MAX_PCR_FILE_SIZE = 1 << 20

_SELECTION_SLOTS = 16          # TPML_PCR_SELECTION.pcrSelections[16]
_SELECTION_SLOT_SIZE = 8       # 2 + 1 + 4 + 1 padding
_SELECTION_LIST_SIZE = 4 + _SELECTION_SLOTS * _SELECTION_SLOT_SIZE  # 132
_DIGEST_SLOTS = 8              # TPML_DIGEST.digests[8]
_DIGEST_SLOT_SIZE = 2 + 64     # TPM2B_DIGEST: size + sizeof(TPMU_HA)
_DIGEST_LIST_SIZE = 4 + _DIGEST_SLOTS * _DIGEST_SLOT_SIZE  # 532

PCRValues = dict[int, dict[int, bytes]]

_BANK_LINE = re.compile(r"^([A-Za-z0-9_-]+)\s*:\s*$")
_VALUE_LINE = re.compile(r"^(\d{1,2})\s*:\s*(?:0x)?([0-9A-Fa-f]+)\s*$")


def _digest_size(hash_alg: int) -> int:
    return constants.hash_algorithm(hash_alg).digest_size


def _assign(selection: Sequence[PCRSelection],
            digests: Sequence[bytes], what: str) -> PCRValues:
    """Give digests to the selected PCRs in selection order."""
    slots = [(sel.hash_alg, pcr) for sel in selection
             for pcr in sorted(sel.pcrs)]
    if len(slots) != len(digests):
        raise exception.MalformedEvidence(
            what=what, reason="%d digests for %d selected PCRs"
            % (len(digests), len(slots)))
    values: PCRValues = {}
    for (alg, pcr), digest in zip(slots, digests):
        if len(digest) != _digest_size(alg):
            raise exception.MalformedEvidence(
                what=what, reason="PCR %d digest is %d bytes, not a %s digest"
                % (pcr, len(digest), constants.hash_algorithm(alg).name))
        bank = values.setdefault(alg, {})
        if pcr in bank:
            raise exception.MalformedEvidence(
                what=what, reason="PCR %d selected twice" % pcr)
        bank[pcr] = digest
    return values


def _looks_serialized(data: bytes) -> bool:
    if len(data) < _SELECTION_LIST_SIZE + 4:
        return False
    count = int.from_bytes(data[0:4], "little")
    lists = int.from_bytes(
        data[_SELECTION_LIST_SIZE:_SELECTION_LIST_SIZE + 4], "little")
    return (1 <= count <= _SELECTION_SLOTS and 1 <= lists <= 64
            and len(data) == _SELECTION_LIST_SIZE + 4
            + lists * _DIGEST_LIST_SIZE)


def parse_serialized(data: bytes) -> tuple[tuple[PCRSelection, ...],
                                           PCRValues]:
    """Parse tpm2-tools' serialized PCR file: (selection, values)."""
    what = "tpm2-tools PCR file"
    r = Reader(data, what)
    count = r.u32le()
    if not 1 <= count <= _SELECTION_SLOTS:
        raise exception.MalformedEvidence(
            what=what, reason="selection count %d" % count)
    selection = []
    for slot in range(_SELECTION_SLOTS):
        hash_alg = r.u16le()
        size_of_select = r.u8()
        bitmap = r.bytes(4)
        r.u8()  # padding
        if slot >= count:
            continue
        if size_of_select > 4:
            raise exception.MalformedEvidence(
                what=what, reason="sizeofSelect %d" % size_of_select)
        pcrs = frozenset(i * 8 + bit
                         for i, octet in enumerate(bitmap[:size_of_select])
                         for bit in range(8) if octet & (1 << bit))
        selection.append(PCRSelection(hash_alg, pcrs))
    lists = r.u32le()
    digests = []
    for _ in range(lists):
        used = r.u32le()
        if used > _DIGEST_SLOTS:
            raise exception.MalformedEvidence(
                what=what, reason="TPML_DIGEST count %d" % used)
        for slot in range(_DIGEST_SLOTS):
            size = r.u16le()
            buffer = r.bytes(64)
            if slot < used:
                if size > 64:
                    raise exception.MalformedEvidence(
                        what=what, reason="digest size %d" % size)
                digests.append(buffer[:size])
    r.expect_end()
    return tuple(selection), _assign(selection, digests, what)


def parse_values(data: bytes, selection: Sequence[PCRSelection]) -> PCRValues:
    """Split concatenated digests (``-F values``) over ``selection``."""
    what = "PCR values file"
    r = Reader(data, what)
    digests = [r.bytes(_digest_size(sel.hash_alg))
               for sel in selection for _ in sel.pcrs]
    r.expect_end()
    return _assign(selection, digests, what)


def parse_text(data: bytes) -> PCRValues:
    """Parse the YAML-like listing tpm2_pcrread / tpm2_quote print."""
    what = "PCR listing"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise exception.MalformedEvidence(
            what=what, reason="not ASCII text") from None
    values: PCRValues = {}
    bank: dict[int, bytes] | None = None
    size = 0
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line in ("pcrs:", "selected-pcrs:"):
            continue
        match = _VALUE_LINE.match(line)
        if match and bank is not None:
            pcr, hex_digest = int(match.group(1)), match.group(2)
            if len(hex_digest) != 2 * size:
                raise exception.MalformedEvidence(
                    what=what, reason="line %d: digest of wrong size"
                    % number)
            if pcr in bank:
                raise exception.MalformedEvidence(
                    what=what, reason="line %d: PCR %d repeated"
                    % (number, pcr))
            bank[pcr] = bytes.fromhex(hex_digest)
            continue
        match = _BANK_LINE.match(line)
        if match:
            algorithm = constants.hash_by_name(match.group(1))
            if algorithm.alg in values:
                raise exception.MalformedEvidence(
                    what=what, reason="line %d: bank repeated" % number)
            bank = values[algorithm.alg] = {}
            size = algorithm.digest_size
            continue
        raise exception.MalformedEvidence(
            what=what, reason="line %d is not 'bank:' or 'index: 0x...'"
            % number)
    if not any(values.values()):
        raise exception.MalformedEvidence(what=what, reason="no PCR values")
    return values


def _same_selection(a: Sequence[PCRSelection],
                    b: Sequence[PCRSelection]) -> bool:
    return [(s.hash_alg, s.pcrs) for s in a] == [
        (s.hash_alg, s.pcrs) for s in b]


def load_pcr_values(data: bytes,
                    selection: Sequence[PCRSelection] | None = None,
                    ) -> PCRValues:
    """Read PCR values in any of the three forms (see the module docstring).

    ``selection`` is needed for the ``values`` form (chosen when the size
    matches it exactly); with the serialized form it must equal the
    selection in the file; a text listing is read as it is (verify_quote
    then checks its PCRs against the signed selection both ways).
    """
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("data must be bytes, not %s" % type(data).__name__)
    data = bytes(data)
    if len(data) > MAX_PCR_FILE_SIZE:
        raise exception.EvidenceTooLarge(
            what="PCR file", size=len(data), limit=MAX_PCR_FILE_SIZE)
    if _looks_serialized(data):
        file_selection, values = parse_serialized(data)
        if selection is not None and not _same_selection(
                file_selection, selection):
            raise exception.PCRSelectionMismatch(
                reason="the PCR file holds a different selection")
        return values
    if selection is not None and len(data) == sum(
            _digest_size(sel.hash_alg) * len(sel.pcrs) for sel in selection):
        return parse_values(data, selection)
    if selection is None or _looks_like_text(data):
        return parse_text(data)
    return parse_values(data, selection)  # names what does not fit


def _looks_like_text(data: bytes) -> bool:
    return b":" in data and all(32 <= c < 127 or c in b"\t\r\n"
                                for c in data[:256])
