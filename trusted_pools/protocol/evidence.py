"""The evidence a host agent sends to a conductor, and its wire form.

On the bus evidence is a JSON-able dict of base64 and hex strings. The
conductor parses it with :func:`Evidence.from_wire`, which accepts nothing
but the documented shape and sizes: whatever an agent sends, a malformed
message becomes :class:`MalformedEvidence` (or :class:`EvidenceTooLarge`)
and so a failed verdict, never a crash.

Wire versions: 2 (sent since the binary IMA list) says the format of its
IMA tail (``ima.format``: ``binary`` or ``ascii``; ``ima.template_hash_alg``
names the template-hash algorithm of a per-bank binary list, SHA-1 when
absent). Version 1 messages (older agents) are still accepted: their IMA
tail is ascii, and they may not carry the new keys. An older conductor
refuses a version 2 message with "unsupported version 2", so conductors are
upgraded before agents.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from trusted_pools import exception
from trusted_pools.tpm import constants, eventlog, ima

WIRE_VERSION = 2
# Versions from_wire accepts: 1 is the ascii-only IMA tail of older agents.
ACCEPTED_WIRE_VERSIONS = (1, 2)
IMA_FORMATS = ("binary", "ascii")
_IMA_KEYS = frozenset(("start", "data", "format", "template_hash_alg"))
_MAX_QUOTE = 4096
_MAX_SIGNATURE = 1024
# Other binary fields on the bus: nonces, keys, certificates, credentials.
_MAX_FIELD = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """Size limits in bytes: applied to the wire before anything is
    decoded, and again by the verifier to what it parses and replays (an
    IMA list it keeps pending across rounds included). The defaults are the
    evidence library's and the ``[attestation] max_event_log_bytes`` /
    ``max_ima_log_bytes`` options' defaults; the conductor builds its
    limits from those options (this module reads no configuration)."""

    max_event_log: int = eventlog.DEFAULT_MAX_SIZE
    max_ima: int = ima.DEFAULT_MAX_LOG_SIZE

    def __post_init__(self) -> None:
        for name in ("max_event_log", "max_ima"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise exception.InvalidParameterValue(
                    name=name, reason="must be a positive number of bytes")


@dataclass(frozen=True)
class IMATail:
    """IMA entries after the first ``start`` ones, in ``fmt``: ``binary``
    (binary_runtime_measurements: length-prefixed, a name may hold any
    byte) or ``ascii`` (one entry per line). ``template_hash_alg`` is the
    TPM algorithm of a binary list's template hashes (None: SHA-1, the
    kernel's legacy list). ``count`` is how many whole entries ``data``
    holds, as the agent counted them; it is not sent, and the verifier
    counts for itself."""

    start: int
    data: bytes
    fmt: str = "ascii"
    template_hash_alg: int | None = None
    count: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.fmt not in IMA_FORMATS:
            raise ValueError("fmt must be one of %s" % (IMA_FORMATS,))


@dataclass(frozen=True)
class Evidence:
    host: str
    quote: bytes
    signature: bytes
    pcrs: dict[int, dict[int, bytes]]
    epoch_id: str | None = None
    event_log: bytes | None = None
    event_log_digest: str | None = None
    ima: IMATail | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "version": WIRE_VERSION,
            "host": self.host,
            "epoch_id": self.epoch_id,
            "quote": encode_b64(self.quote),
            "signature": encode_b64(self.signature),
            "pcrs": {constants.hash_algorithm(alg).name:
                     {str(i): v.hex() for i, v in sorted(bank.items())}
                     for alg, bank in self.pcrs.items()},
            "event_log": (None if self.event_log is None
                          else encode_b64(self.event_log)),
            "event_log_digest": self.event_log_digest,
            "ima": (None if self.ima is None else self.ima_to_wire()),
        }

    def ima_to_wire(self) -> dict[str, Any]:
        assert self.ima is not None
        wire: dict[str, Any] = {"start": self.ima.start,
                                "data": encode_b64(self.ima.data),
                                "format": self.ima.fmt}
        if self.ima.template_hash_alg is not None:
            wire["template_hash_alg"] = constants.hash_algorithm(
                self.ima.template_hash_alg).name
        return wire

    @classmethod
    def from_wire(cls, wire: Any, limits: Limits = Limits()) -> "Evidence":
        """Strictly parse an agent's message; typed errors only."""
        if not isinstance(wire, Mapping):
            raise _malformed("not a mapping")
        version = wire.get("version")
        if isinstance(version, bool) or version not in ACCEPTED_WIRE_VERSIONS:
            raise _malformed("unsupported version %r" % (version,))
        host = _text(wire, "host", 255)
        event_log = _optional_b64(wire, "event_log", limits.max_event_log)
        digest = wire.get("event_log_digest")
        if digest is not None and not _is_hex(digest, 64):
            raise _malformed("event_log_digest must be 64 hex characters")
        if event_log is not None:
            digest = hashlib.sha256(event_log).hexdigest()
        return cls(
            host=host,
            epoch_id=(None if wire.get("epoch_id") is None
                      else _text(wire, "epoch_id", 128)),
            quote=_required_b64(wire, "quote", _MAX_QUOTE),
            signature=_required_b64(wire, "signature", _MAX_SIGNATURE),
            pcrs=_pcrs(wire.get("pcrs")),
            event_log=event_log,
            event_log_digest=digest,
            ima=_ima(wire.get("ima"), limits.max_ima, version))

    def digest(self) -> str:
        """SHA-256 over the evidence's signed and replayed parts."""
        h = hashlib.sha256()
        ima_format = b"" if self.ima is None or self.ima.fmt == "ascii" \
            else ("%s:%s" % (self.ima.fmt, self.ima.template_hash_alg)
                  ).encode()
        for part in (self.quote, self.signature,
                     (self.event_log_digest or "").encode(),
                     b"" if self.ima is None else self.ima.data,
                     ima_format):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
        return h.hexdigest()


def _malformed(reason: str) -> exception.MalformedEvidence:
    return exception.MalformedEvidence(what="evidence message", reason=reason)


def encode_b64(data: bytes) -> str:
    """Bytes as the base64 text every message on the bus carries."""
    return base64.b64encode(data).decode("ascii")


def _is_hex(value: Any, length: int | None = None) -> bool:
    if not isinstance(value, str) or (length and len(value) != length):
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _text(wire: Mapping, key: str, limit: int) -> str:
    value = wire.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise _malformed("%s must be a non-empty string of at most %d "
                         "characters" % (key, limit))
    return value


def decode_b64(value: Any, key: str, limit: int = _MAX_FIELD) -> bytes:
    """Base64 text from the bus as bytes; typed errors only, and nothing
    over ``limit`` bytes is decoded."""
    if not isinstance(value, str):
        raise _malformed("%s must be a base64 string" % key)
    if len(value) > (limit + 2) // 3 * 4:
        raise exception.EvidenceTooLarge(what=key, size=len(value) * 3 // 4,
                                         limit=limit)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed("%s is not valid base64" % key) from None


def _required_b64(wire: Mapping, key: str, limit: int) -> bytes:
    data = decode_b64(wire.get(key), key, limit)
    if not data:
        raise _malformed("%s is empty" % key)
    return data


def _optional_b64(wire: Mapping, key: str, limit: int) -> bytes | None:
    value = wire.get(key)
    return None if value is None else decode_b64(value, key, limit)


def _pcrs(value: Any) -> dict[int, dict[int, bytes]]:
    if not isinstance(value, Mapping) or not value:
        raise _malformed("pcrs must map bank names to PCR values")
    pcrs: dict[int, dict[int, bytes]] = {}
    for name, bank in value.items():
        try:
            alg = constants.hash_by_name(str(name))
        except exception.UnsupportedAlgorithm:
            raise _malformed("unknown PCR bank %r" % (name,)) from None
        if not isinstance(bank, Mapping) or len(bank) > 24:
            raise _malformed("bank %s must map up to 24 PCRs" % alg.name)
        values: dict[int, bytes] = {}
        pcrs[alg.alg] = values
        hex_length = alg.digest_size * 2
        # Once per PCR of every host: the canonical index by lookup, each
        # value decoded once (the same checks as _is_hex, same errors).
        for index, digest in bank.items():
            pcr = _PCR_INDEX.get(index) if type(index) is str else None
            if pcr is None:
                if not (isinstance(index, str) and index.isdigit()
                        and int(index) < 24):
                    raise _malformed("PCR index %r out of range" % (index,))
                pcr = int(index)
            try:
                if not isinstance(digest, str) or len(digest) != hex_length:
                    raise ValueError
                values[pcr] = bytes.fromhex(digest)
            except ValueError:
                raise _malformed("PCR %s of bank %s is not a %d-byte hex "
                                 "digest" % (index, alg.name,
                                             alg.digest_size)) from None
    return pcrs


_PCR_INDEX = {str(i): i for i in range(24)}


def _ima(value: Any, limit: int, version: int) -> IMATail | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _malformed("ima must be a mapping")
    unknown = sorted(str(k) for k in value if k not in _IMA_KEYS)
    if unknown:
        raise _malformed("ima has unknown keys %s" % ", ".join(unknown))
    start = value.get("start")
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise _malformed("ima.start must be an integer >= 0")
    if version < 2:
        # Older agents read the ascii list and say nothing of formats.
        if "format" in value or "template_hash_alg" in value:
            raise _malformed("ima.format needs wire version 2")
        fmt = "ascii"
    else:
        fmt = value.get("format")
        if fmt not in IMA_FORMATS:
            raise _malformed("ima.format must be one of %s"
                             % ", ".join(IMA_FORMATS))
    th_alg = None
    name = value.get("template_hash_alg")
    if name is not None:
        if fmt != "binary" or not isinstance(name, str):
            raise _malformed("ima.template_hash_alg is a hash name, for a "
                             "binary list only")
        try:
            th_alg = int(constants.hash_by_name(name).alg)
        except exception.UnsupportedAlgorithm:
            raise _malformed("ima.template_hash_alg %r is no known hash"
                             % name[:40]) from None
    return IMATail(start, decode_b64(value.get("data"), "ima.data", limit),
                   fmt, th_alg)
