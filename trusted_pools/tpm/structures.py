"""TPM 2.0 structures (TPM 2.0 Library Part 2): parse; marshal where needed.

Parsing checks structure only. An :class:`Attest` returned by
:func:`parse_attest` is *unverified*: its magic, type, nonce and PCR digest
mean nothing until :func:`trusted_pools.tpm.quote.verify_quote` has checked
its signature with a key that passed
:func:`trusted_pools.tpm.keys.check_ak_attributes`.

Every parser reads through :class:`~trusted_pools.tpm._reader.Reader`, so
short input is :class:`~trusted_pools.exception.TruncatedEvidence`, and
trailing bytes are :class:`~trusted_pools.exception.MalformedEvidence`:
a structure is exactly the bytes it claims, never a prefix of them. (The
quote and RSA-signature hot paths first try a struct-only fast parse that
never raises; anything it is unsure of goes through the Reader parser, and
a property test checks both give the same result.)

Every parsed object keeps the bytes it was parsed from in ``raw``, because
signatures and Names are computed over those bytes, never over a
re-marshalled copy.
"""

from __future__ import annotations

import enum
import functools
import struct
from dataclasses import dataclass, field
from typing import Iterable, Sequence, TypeVar, Union

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trusted_pools import exception
from trusted_pools.tpm import constants
from trusted_pools.tpm._reader import Reader
from trusted_pools.tpm.constants import TPM_ALG, TPM_ST, TPM_ECC_CURVE

__all__ = [
    "Attest", "CertifyInfo", "ClockInfo", "CreationInfo", "ObjectAttributes",
    "PCRSelection", "Public", "QuoteInfo", "Signature", "SymDef",
    "UnparsedAttested", "load_public", "marshal_pcr_selection_list",
    "marshal_tpm2b", "parse_attest", "parse_pcr_selection_list",
    "parse_public", "parse_public_b", "parse_signature",
]

# TPML_PCR_SELECTION holds at most one entry per implemented hash
# (HASH_COUNT); 16 is far above any real TPM and keeps hostile counts cheap.
MAX_PCR_SELECTIONS = 16
# sizeofSelect: PCR_SELECT_MIN is 3 (24 PCRs); no TPM implements more than
# 64 PCRs.
MAX_SIZE_OF_SELECT = 8

_ECC_CURVES: dict[int, ec.EllipticCurve] = {
    TPM_ECC_CURVE.NIST_P256: ec.SECP256R1(),
    TPM_ECC_CURVE.NIST_P384: ec.SECP384R1(),
    TPM_ECC_CURVE.NIST_P521: ec.SECP521R1(),
}

# Size in bytes of a coordinate / scalar on each supported curve.
ECC_COORDINATE_SIZE: dict[int, int] = {
    TPM_ECC_CURVE.NIST_P256: 32,
    TPM_ECC_CURVE.NIST_P384: 48,
    TPM_ECC_CURVE.NIST_P521: 66,
}

_T = TypeVar("_T")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
# Fixed-size runs read in one go (fewer calls on the quote hot path).
_ATTEST_HEAD = struct.Struct(">IH")                # magic, type
_CLOCK_AND_FIRMWARE = struct.Struct(">QIIBQ")      # TPMS_CLOCK_INFO, fw
_SELECTION_HEAD = struct.Struct(">HB")             # hash, sizeofSelect
_QUOTE_HEAD = struct.Struct(">IHH")                # magic, type, size
_CLOCK_FIRMWARE_COUNT = struct.Struct(">QIIBQI")   # ..., selection count
_RSA_SIGNATURE_HEAD = struct.Struct(">HHH")        # sigAlg, hash, size
# Plain ints for the hot path: reading an enum member is a descriptor call.
_ST_ATTEST_QUOTE = int(TPM_ST.ATTEST_QUOTE)
_ALG_RSASSA, _ALG_RSAPSS = int(TPM_ALG.RSASSA), int(TPM_ALG.RSAPSS)


class ObjectAttributes(enum.IntFlag):
    """TPMA_OBJECT bits (Part 2, 8.3)."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18
    X509_SIGN = 1 << 19


_object_new = object.__new__
_object_setattr = object.__setattr__


def _build(cls: type[_T], *values: object) -> _T:
    """``cls(*values)`` for a frozen dataclass without ``__post_init__``,
    minus the cost of its generated ``__init__`` (one ``object.__setattr__``
    per field; here one for the whole ``__dict__``). Only for
    the quote-verification hot path; the instance is the same as the
    normal constructor makes (equality, hashing and immutability alike).
    """
    obj = _object_new(cls)
    _object_setattr(obj, "__dict__",
                    dict(zip(cls.__dataclass_fields__, values, strict=True)))
    return obj


def marshal_tpm2b(data: bytes) -> bytes:
    """TPM2B form of ``data``: big-endian UINT16 size, then the bytes."""
    if len(data) > 0xFFFF:
        raise exception.InvalidParameterValue(
            name="data", reason="%d bytes do not fit a TPM2B" % len(data))
    return _U16.pack(len(data)) + data


# --- PCR selections ----------------------------------------------------------

@dataclass(frozen=True)
class PCRSelection:
    """One TPMS_PCR_SELECTION: a bank (TPM_ALG hash id) and PCR indices."""

    hash_alg: int
    pcrs: frozenset[int]

    def __post_init__(self) -> None:
        if not isinstance(self.pcrs, frozenset):
            object.__setattr__(self, "pcrs", frozenset(self.pcrs))

    def sorted_pcrs(self) -> list[int]:
        return sorted(self.pcrs)


# The bits set in each possible octet, so a bitmap decodes with one lookup
# per byte instead of eight tests (quote verification is on a hot path).
_OCTET_BITS: tuple[tuple[int, ...], ...] = tuple(
    tuple(bit for bit in range(8) if octet & (1 << bit))
    for octet in range(256))


@functools.lru_cache(maxsize=1024)
def _pcr_selection_from_wire(hash_alg: int, select: bytes) -> PCRSelection:
    """Cached: hosts quote the same few selections over and over, and the
    result is immutable."""
    return PCRSelection(hash_alg, _parse_pcr_select_bitmap(select))


def _parse_pcr_select_bitmap(select: bytes) -> frozenset[int]:
    pcrs: list[int] = []
    for byte_index, octet in enumerate(select):
        if octet:
            base = byte_index * 8
            pcrs.extend(base + bit for bit in _OCTET_BITS[octet])
    return frozenset(pcrs)


def _read_pcr_selection_list(r: Reader) -> tuple[PCRSelection, ...]:
    count = r.u32()
    if count > MAX_PCR_SELECTIONS:
        raise exception.MalformedEvidence(
            what="TPML_PCR_SELECTION",
            reason="count %d over the limit of %d"
            % (count, MAX_PCR_SELECTIONS))
    selections = []
    for _ in range(count):
        hash_alg, size_of_select = _SELECTION_HEAD.unpack(r.bytes(3))
        if size_of_select > MAX_SIZE_OF_SELECT:
            raise exception.MalformedEvidence(
                what="TPMS_PCR_SELECTION",
                reason="sizeofSelect %d over the limit of %d"
                % (size_of_select, MAX_SIZE_OF_SELECT))
        selections.append(
            _pcr_selection_from_wire(hash_alg, r.bytes(size_of_select)))
    return tuple(selections)


def parse_pcr_selection_list(data: bytes) -> tuple[PCRSelection, ...]:
    """Parse a complete TPML_PCR_SELECTION (big-endian TPM wire format)."""
    r = Reader(data, "TPML_PCR_SELECTION")
    selections = _read_pcr_selection_list(r)
    r.expect_end()
    return selections


def marshal_pcr_selection_list(selections: Iterable[PCRSelection]) -> bytes:
    """Marshal a TPML_PCR_SELECTION; sizeofSelect is at least 3 bytes."""
    selections = list(selections)
    out = [_U32.pack(len(selections))]
    for sel in selections:
        if any(not 0 <= p < MAX_SIZE_OF_SELECT * 8 for p in sel.pcrs):
            raise exception.InvalidParameterValue(
                name="pcrs", reason="PCR index out of range")
        size = max(3, (max(sel.pcrs, default=0) // 8) + 1)
        bitmap = bytearray(size)
        for pcr in sel.pcrs:
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        out.append(_U16.pack(sel.hash_alg) + bytes([size]) + bytes(bitmap))
    return b"".join(out)


# --- TPMS_ATTEST -------------------------------------------------------------

@dataclass(frozen=True)
class ClockInfo:
    """TPMS_CLOCK_INFO."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class QuoteInfo:
    """TPMS_QUOTE_INFO: the signed PCR selection and digest."""

    pcr_select: tuple[PCRSelection, ...]
    pcr_digest: bytes


@dataclass(frozen=True)
class CertifyInfo:
    """TPMS_CERTIFY_INFO."""

    name: bytes
    qualified_name: bytes


@dataclass(frozen=True)
class CreationInfo:
    """TPMS_CREATION_INFO."""

    object_name: bytes
    creation_hash: bytes


@dataclass(frozen=True)
class UnparsedAttested:
    """The body of an attestation type this module does not interpret
    (NV, time, audit): kept so the caller can reject it by type."""

    body: bytes


Attested = Union[QuoteInfo, CertifyInfo, CreationInfo, UnparsedAttested]

_KNOWN_ATTEST_TYPES = frozenset(int(t) for t in TPM_ST)


@dataclass(frozen=True)
class Attest:
    """TPMS_ATTEST, unverified (see the module docstring)."""

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    attested: Attested
    raw: bytes = field(repr=False)


def parse_attest(data: bytes) -> Attest:
    """Parse a complete TPMS_ATTEST (what TPM2_Quote/Certify sign).

    The magic is *not* checked here: verification checks it after the
    signature so that the error says what was wrong with signed data.
    """
    if type(data) is bytes:
        fast = _parse_quote_fast(data)
        if fast is not None:
            return fast
    return _parse_attest_checked(data)


def _parse_quote_fast(data: bytes) -> Attest | None:
    """Well-formed quotes without the per-field Reader calls (a hot path).

    Returns None for anything it is not sure of - any other type, any size
    that does not add up, any limit exceeded - and the Reader-based
    :func:`_parse_attest_checked` then parses (and names the error). For
    input it accepts it returns exactly what that parser returns (a property
    test checks this).
    """
    end = len(data)
    if end < 10:
        return None
    magic, st, size = _QUOTE_HEAD.unpack_from(data)
    if st != _ST_ATTEST_QUOTE:
        return None
    offset = 8 + size
    if offset + 2 > end:
        return None
    qualified_signer = data[8:offset]
    size = _U16.unpack_from(data, offset)[0]
    offset += 2
    extra_data = data[offset:offset + size]
    offset += size
    if offset + 29 > end:
        return None
    clock, reset_count, restart_count, safe, firmware_version, count = (
        _CLOCK_FIRMWARE_COUNT.unpack_from(data, offset))
    offset += 29
    if safe > 1 or count > MAX_PCR_SELECTIONS:
        return None
    selections = []
    for _ in range(count):
        if offset + 3 > end:
            return None
        hash_alg, size = _SELECTION_HEAD.unpack_from(data, offset)
        offset += 3
        if size > MAX_SIZE_OF_SELECT or offset + size > end:
            return None
        selections.append(_pcr_selection_from_wire(
            hash_alg, data[offset:offset + size]))
        offset += size
    if offset + 2 > end:
        return None
    size = _U16.unpack_from(data, offset)[0]
    offset += 2
    if offset + size != end:
        return None
    return _build(Attest, magic, st, qualified_signer, extra_data,
                  _build(ClockInfo, clock, reset_count, restart_count,
                         bool(safe)),
                  firmware_version,
                  _build(QuoteInfo, tuple(selections), data[offset:end]),
                  data)


def _parse_attest_checked(data: bytes) -> Attest:
    """The general TPMS_ATTEST parser, every read through Reader."""
    r = Reader(data, "TPMS_ATTEST")
    magic, st = _ATTEST_HEAD.unpack(r.bytes(6))
    if st not in _KNOWN_ATTEST_TYPES:
        raise exception.MalformedEvidence(
            what="TPMS_ATTEST", reason="unknown attestation type %#06x" % st)
    qualified_signer = r.tpm2b()
    extra_data = r.tpm2b()
    clock, reset_count, restart_count, safe, firmware_version = (
        _CLOCK_AND_FIRMWARE.unpack(r.bytes(_CLOCK_AND_FIRMWARE.size)))
    if safe > 1:
        raise exception.MalformedEvidence(
            what="TPMS_CLOCK_INFO", reason="safe is %d, not a TPMI_YES_NO"
            % safe)
    clock_info = ClockInfo(clock, reset_count, restart_count, bool(safe))
    attested: Attested
    if st == TPM_ST.ATTEST_QUOTE:
        attested = QuoteInfo(_read_pcr_selection_list(r), r.tpm2b())
    elif st == TPM_ST.ATTEST_CERTIFY:
        attested = CertifyInfo(r.tpm2b(), r.tpm2b())
    elif st == TPM_ST.ATTEST_CREATION:
        attested = CreationInfo(r.tpm2b(), r.tpm2b())
    else:
        attested = UnparsedAttested(r.bytes(r.remaining))
    r.expect_end()
    return Attest(magic, st, qualified_signer, extra_data, clock_info,
                  firmware_version, attested, bytes(data))


# --- TPMT_SIGNATURE ----------------------------------------------------------

@dataclass(frozen=True)
class Signature:
    """TPMT_SIGNATURE for RSASSA / RSAPSS (``sig``) or ECDSA (``r``, ``s``)."""

    sig_alg: int
    hash_alg: int
    sig: bytes | None = None
    r: bytes | None = None
    s: bytes | None = None
    raw: bytes = field(default=b"", repr=False)


def parse_signature(data: bytes) -> Signature:
    """Parse a complete TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA)."""
    if type(data) is bytes and len(data) >= 6:
        # Fast path for a well-formed RSA signature; anything else goes
        # through the Reader below.
        sig_alg, hash_alg, size = _RSA_SIGNATURE_HEAD.unpack_from(data)
        if (sig_alg == _ALG_RSASSA or sig_alg == _ALG_RSAPSS) and \
                len(data) == 6 + size:
            return _build(Signature, sig_alg, hash_alg, data[6:], None,
                          None, data)
    rd = Reader(data, "TPMT_SIGNATURE")
    sig_alg = rd.u16()
    if sig_alg in (TPM_ALG.RSASSA, TPM_ALG.RSAPSS):
        hash_alg = rd.u16()
        sig = Signature(sig_alg, hash_alg, sig=rd.tpm2b(), raw=bytes(data))
    elif sig_alg == TPM_ALG.ECDSA:
        hash_alg = rd.u16()
        r = rd.tpm2b()
        s = rd.tpm2b()
        sig = Signature(sig_alg, hash_alg, r=r, s=s, raw=bytes(data))
    else:
        raise exception.UnsupportedAlgorithm(
            algorithm="%#06x" % sig_alg,
            reason="signature scheme is not RSASSA, RSAPSS or ECDSA")
    rd.expect_end()
    return sig


# --- TPMT_PUBLIC -------------------------------------------------------------

@dataclass(frozen=True)
class SymDef:
    """TPMT_SYM_DEF_OBJECT (only present when the algorithm is not NULL)."""

    algorithm: int
    key_bits: int
    mode: int


# Schemes whose details are TPMS_SCHEME_HASH (one hash id); ECDAA adds a
# UINT16 count; RSAES has no details.
_HASH_SCHEMES = frozenset({
    TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.OAEP, TPM_ALG.ECDSA,
    TPM_ALG.ECDH, TPM_ALG.ECSCHNORR, TPM_ALG.HMAC, 0x001B,  # SM2
    0x001D,  # ECMQV
})


@dataclass(frozen=True)
class Public:
    """TPMT_PUBLIC. ``raw`` is the TPMT_PUBLIC bytes (no size prefix).

    ``scheme`` is TPM_ALG.NULL when the key leaves the scheme to the
    command; ``scheme_hash`` is then ``None``. RSA keys fill ``key_bits``,
    ``exponent`` and ``unique`` (the modulus); ECC keys fill ``curve``,
    ``kdf``, ``kdf_hash``, ``ecc_x`` and ``ecc_y``; keyed-hash and
    symmetric objects keep their unique digest in ``unique``.
    """

    type: int
    name_alg: int
    attributes: ObjectAttributes
    auth_policy: bytes
    symmetric: SymDef | None
    scheme: int
    scheme_hash: int | None
    raw: bytes = field(repr=False)
    key_bits: int | None = None
    exponent: int | None = None
    unique: bytes = b""
    curve: int | None = None
    kdf: int | None = None
    kdf_hash: int | None = None
    ecc_x: bytes = b""
    ecc_y: bytes = b""

    def name(self) -> bytes:
        """The object's Name: nameAlg (UINT16) || H_nameAlg(TPMT_PUBLIC)."""
        return self._name

    @functools.cached_property
    def _name(self) -> bytes:
        digest = constants.hash_algorithm(self.name_alg).digest(self.raw)
        return _U16.pack(self.name_alg) + digest

    def marshal_b(self) -> bytes:
        """TPM2B_PUBLIC form (what tpm2-tools writes with ``-f tss``)."""
        return marshal_tpm2b(self.raw)

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        """The key as a ``cryptography`` object (built once, then cached)."""
        return self._public_key

    @functools.cached_property
    def _public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        if self.type == TPM_ALG.RSA:
            return self._rsa_public_key()
        if self.type == TPM_ALG.ECC:
            return self._ecc_public_key()
        raise exception.UnsupportedAlgorithm(
            algorithm="%#06x" % self.type,
            reason="only RSA and ECC objects have a public key")

    def _rsa_public_key(self) -> rsa.RSAPublicKey:
        assert self.key_bits is not None and self.exponent is not None
        if (self.key_bits % 8 or len(self.unique) != self.key_bits // 8
                or not self.unique or self.unique[0] == 0):
            raise exception.MalformedEvidence(
                what="TPMT_PUBLIC",
                reason="RSA modulus is %d bytes for keyBits %d"
                % (len(self.unique), self.key_bits))
        exponent = self.exponent or 65537
        if exponent < 3 or exponent % 2 == 0:
            raise exception.MalformedEvidence(
                what="TPMT_PUBLIC", reason="bad RSA exponent %d" % exponent)
        numbers = rsa.RSAPublicNumbers(
            exponent, int.from_bytes(self.unique, "big"))
        try:
            return numbers.public_key()
        except ValueError as exc:
            raise exception.MalformedEvidence(
                what="TPMT_PUBLIC", reason="bad RSA key: %s" % exc) from None

    def _ecc_public_key(self) -> ec.EllipticCurvePublicKey:
        assert self.curve is not None
        curve = _ECC_CURVES.get(self.curve)
        if curve is None:
            raise exception.UnsupportedAlgorithm(
                algorithm="ECC curve %#06x" % self.curve,
                reason="only NIST P-256, P-384 and P-521 are supported")
        size = ECC_COORDINATE_SIZE[self.curve]
        if len(self.ecc_x) > size or len(self.ecc_y) > size:
            raise exception.MalformedEvidence(
                what="TPMT_PUBLIC", reason="ECC point coordinates too long")
        numbers = ec.EllipticCurvePublicNumbers(
            int.from_bytes(self.ecc_x, "big"),
            int.from_bytes(self.ecc_y, "big"), curve)
        try:
            return numbers.public_key()
        except ValueError:
            raise exception.MalformedEvidence(
                what="TPMT_PUBLIC",
                reason="ECC point is not on the curve") from None


def _read_sym_def_object(r: Reader) -> SymDef | None:
    algorithm = r.u16()
    if algorithm == TPM_ALG.NULL:
        return None
    if algorithm == TPM_ALG.XOR:
        # TPMU_SYM_KEY_BITS.xor is a hash id, and XOR has no mode.
        return SymDef(algorithm, r.u16(), TPM_ALG.NULL)
    return SymDef(algorithm, r.u16(), r.u16())


def _read_scheme(r: Reader) -> tuple[int, int | None]:
    """A TPMT_*_SCHEME: the scheme id and its hash (None for NULL/RSAES)."""
    scheme = r.u16()
    if scheme in (TPM_ALG.NULL, TPM_ALG.RSAES):
        return scheme, None
    if scheme in _HASH_SCHEMES:
        return scheme, r.u16()
    if scheme == TPM_ALG.ECDAA:
        hash_alg = r.u16()
        r.u16()  # count
        return scheme, hash_alg
    if scheme == TPM_ALG.XOR:
        hash_alg = r.u16()
        r.u16()  # kdf
        return scheme, hash_alg
    raise exception.UnsupportedAlgorithm(
        algorithm="%#06x" % scheme, reason="unknown key scheme")


def _read_kdf_scheme(r: Reader) -> tuple[int, int | None]:
    """TPMT_KDF_SCHEME: every KDF (MGF1, KDF1/2, SP800-108) has one hash."""
    scheme = r.u16()
    if scheme == TPM_ALG.NULL:
        return scheme, None
    return scheme, r.u16()


def _read_public(r: Reader) -> dict:
    obj_type = r.u16()
    name_alg = r.u16()
    attributes = ObjectAttributes(r.u32())
    auth_policy = r.tpm2b()
    fields: dict = dict(type=obj_type, name_alg=name_alg,
                        attributes=attributes, auth_policy=auth_policy)
    if obj_type == TPM_ALG.RSA:
        fields["symmetric"] = _read_sym_def_object(r)
        fields["scheme"], fields["scheme_hash"] = _read_scheme(r)
        fields["key_bits"] = r.u16()
        fields["exponent"] = r.u32()
        fields["unique"] = r.tpm2b()
    elif obj_type == TPM_ALG.ECC:
        fields["symmetric"] = _read_sym_def_object(r)
        fields["scheme"], fields["scheme_hash"] = _read_scheme(r)
        fields["curve"] = r.u16()
        fields["kdf"], fields["kdf_hash"] = _read_kdf_scheme(r)
        fields["ecc_x"] = r.tpm2b()
        fields["ecc_y"] = r.tpm2b()
    elif obj_type == TPM_ALG.KEYEDHASH:
        fields["symmetric"] = None
        fields["scheme"], fields["scheme_hash"] = _read_scheme(r)
        fields["unique"] = r.tpm2b()
    elif obj_type == TPM_ALG.SYMCIPHER:
        fields["symmetric"] = _read_sym_def_object(r)
        fields["scheme"], fields["scheme_hash"] = TPM_ALG.NULL, None
        fields["unique"] = r.tpm2b()
    else:
        raise exception.UnsupportedAlgorithm(
            algorithm="%#06x" % obj_type,
            reason="object type is not RSA, ECC, keyed hash or symmetric")
    return fields


def parse_public(data: bytes) -> Public:
    """Parse a complete TPMT_PUBLIC (no size prefix)."""
    r = Reader(data, "TPMT_PUBLIC")
    fields = _read_public(r)
    r.expect_end()
    return Public(raw=bytes(data), **fields)


def parse_public_b(data: bytes) -> Public:
    """Parse a complete TPM2B_PUBLIC (UINT16 size, then TPMT_PUBLIC)."""
    r = Reader(data, "TPM2B_PUBLIC")
    inner = r.tpm2b()
    r.expect_end()
    return parse_public(inner)


def load_public(data: bytes) -> Public:
    """Parse a TPM2B_PUBLIC or a bare TPMT_PUBLIC, whichever ``data`` is.

    tpm2-tools 5.4 (``tpm2_createak -u``, ``tpm2_createek -u``,
    ``tpm2_readpublic -o``/``-f tss``) writes TPM2B_PUBLIC; go-attestation
    stores TPMT_PUBLIC. The two cannot be confused: a TPMT_PUBLIC starts with
    its type (0x0001, 0x0008, 0x0023 or 0x0025), and read as a size that
    would make the whole input 3 to 39 bytes, too short for any key.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("data must be bytes, not %s" % type(data).__name__)
    if len(data) >= 2 and _U16.unpack_from(data)[0] == len(data) - 2:
        return parse_public_b(data)
    return parse_public(data)


def selection_pcr_count(selections: Sequence[PCRSelection]) -> int:
    """Number of PCR values a selection list covers."""
    return sum(len(sel.pcrs) for sel in selections)
