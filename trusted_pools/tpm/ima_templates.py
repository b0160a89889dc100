"""IMA template descriptors: which fields a template has and how each one
looks in the ascii list, in the binary list and in the template hash.

These are the kernel's rules (security/integrity/ima/ima_template*.c,
ima_crypto.c, ima_fs.c), written down once so the parser and the replay
agree:

* A template is a list of fields (``d-ng|n-ng`` ...). A *template data
  field* is stored as raw bytes (``field data``).
* The template hash of every template except the one named exactly ``ima``
  is ``H(for each field: u32le(len(field data)) || field data)``; the binary
  list carries exactly those bytes as the template data.
* The template named ``ima`` (fields ``d|n``) is hashed without length
  prefixes, and its ``n`` field (the name and its NUL) is zero-padded to 256
  bytes (IMA_EVENT_NAME_LEN_MAX + 1) in the hash input. In the binary list
  it has no template data length; ``d`` is written raw and ``n`` as
  ``u32le(strlen(name)) || name`` (no NUL).
* Field data by kind: digests with an algorithm (``d-ng``, ``d-ngv2``,
  ``d-modsig``) are ``"<alg>:" NUL digest`` (``d-ngv2``: ``"ima:sha256:"
  NUL digest``), shown in ascii as ``<alg>:<hex>``; names (``n``, ``n-ng``)
  and ``xattrnames`` are the string with its NUL, shown without it;
  signatures and buffers are raw bytes shown as hex; ids and modes are
  native (little-endian) integers shown in decimal. A field of length 0 is
  shown as nothing (the separating space is still printed).

This module only describes templates; it trusts nothing.
"""

from __future__ import annotations

import binascii
import struct

from trusted_pools import exception

__all__ = [
    "IMA_TEMPLATE",
    "NAME_FIELD_MAX",
    "TEMPLATES",
    "FieldKind",
    "field_from_ascii",
    "field_kinds",
    "split_template_data",
    "unhex",
]

IMA_TEMPLATE = "ima"
# IMA_EVENT_NAME_LEN_MAX + 1: the 'n' field is padded to this in the hash.
NAME_FIELD_MAX = 256

_U32LE = struct.Struct("<I")


class FieldKind:
    """How a field's data is written in the ascii list."""

    HEX = "hex"              # raw bytes as hex (sig, buf, d, ...)
    ALG_DIGEST = "alg"       # "<alg>:" NUL digest, shown "<alg>:<hex>"
    NAME = "name"            # string + NUL; the one field that may hold spaces
    STRING = "string"        # string + NUL, no spaces (xattrnames)
    U32 = "u32"              # little-endian integer shown in decimal
    U16 = "u16"


_FIELD_KINDS: dict[str, str] = {
    "d": FieldKind.HEX,
    "n": FieldKind.NAME,
    "d-ng": FieldKind.ALG_DIGEST,
    "d-ngv2": FieldKind.ALG_DIGEST,
    "d-modsig": FieldKind.ALG_DIGEST,
    "n-ng": FieldKind.NAME,
    "sig": FieldKind.HEX,
    "buf": FieldKind.HEX,
    "modsig": FieldKind.HEX,
    "evmsig": FieldKind.HEX,
    "xattrnames": FieldKind.STRING,
    "xattrlengths": FieldKind.HEX,
    "xattrvalues": FieldKind.HEX,
    "iuid": FieldKind.U32,
    "igid": FieldKind.U32,
    "imode": FieldKind.U16,
}

# The kernel's built-in templates (ima_template.c builtin_templates).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "ima": ("d", "n"),
    "ima-ng": ("d-ng", "n-ng"),
    "ima-ngv2": ("d-ngv2", "n-ng"),
    "ima-sig": ("d-ng", "n-ng", "sig"),
    "ima-sigv2": ("d-ngv2", "n-ng", "sig"),
    "ima-buf": ("d-ng", "n-ng", "buf"),
    "ima-modsig": ("d-ng", "n-ng", "sig", "d-modsig", "modsig"),
    "evm-sig": ("d-ng", "n-ng", "evmsig", "xattrnames", "xattrlengths",
                "xattrvalues", "iuid", "igid", "imode"),
}


def field_kinds(template_name: str) -> tuple[tuple[str, str], ...] | None:
    """(field id, kind) pairs of a template, or None if unknown.

    A custom template (``ima_template_fmt=``) appears in the list under its
    format string, e.g. ``d-ng|n-ng|sig``; it is understood when every
    field id is known.
    """
    ids = TEMPLATES.get(template_name)
    if ids is None:
        ids = tuple(template_name.split("|"))
    try:
        return tuple((fid, _FIELD_KINDS[fid]) for fid in ids)
    except KeyError:
        return None


def _invalid(line: int, reason: str) -> exception.IMAEntryInvalid:
    return exception.IMAEntryInvalid(line=line, reason=reason)


def unhex(text: bytes, line: int, fid: str) -> bytes:
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise _invalid(line, "field %s is not hexadecimal" % fid) from None


def field_from_ascii(fid: str, kind: str, text: bytes, line: int) -> bytes:
    """Rebuild a field's binary data from its ascii form."""
    if kind == FieldKind.HEX:
        return unhex(text, line, fid)
    if kind == FieldKind.ALG_DIGEST:
        if not text:
            return b""
        prefix, sep, hexdigest = text.rpartition(b":")
        if not sep or not prefix:
            raise _invalid(line, "field %s has no '<algorithm>:' prefix"
                           % fid)
        if b"\0" in prefix:
            raise _invalid(line, "field %s holds a NUL byte" % fid)
        return prefix + b":\0" + unhex(hexdigest, line, fid)
    if kind in (FieldKind.NAME, FieldKind.STRING):
        if b"\0" in text:
            raise _invalid(line, "field %s holds a NUL byte" % fid)
        if kind == FieldKind.STRING and not text:
            return b""
        return text + b"\0"
    # Integers: decimal text of a native (little-endian) value.
    size = 4 if kind == FieldKind.U32 else 2
    if not text.isdigit() or len(text) > 10:
        raise _invalid(line, "field %s is not a decimal number" % fid)
    value = int(text)
    if value >= 1 << (8 * size):
        raise _invalid(line, "field %s is out of range" % fid)
    return value.to_bytes(size, "little")


def split_template_data(data: bytes, count: int,
                        line: int) -> tuple[bytes, ...]:
    """Split length-prefixed template data into exactly ``count`` fields."""
    fields = []
    offset = 0
    end = len(data)
    for index in range(count):
        if offset + 4 > end:
            raise _invalid(line, "template data ends inside the length of "
                           "field %d" % (index + 1))
        (size,) = _U32LE.unpack_from(data, offset)
        offset += 4
        if size > end - offset:
            raise _invalid(line, "field %d claims %d bytes, only %d left"
                           % (index + 1, size, end - offset))
        fields.append(data[offset:offset + size])
        offset += size
    if offset != end:
        raise _invalid(line, "%d bytes after the last template field"
                       % (end - offset))
    return tuple(fields)
