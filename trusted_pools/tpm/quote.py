"""Strict verification of TPM2_Quote output and of TPM signatures.

Trust contract
--------------
:func:`verify_quote` returns a :class:`VerifiedQuote` only if all of these
hold, checked in this order (the first failure is the error raised):

1. ``quote`` parses as a TPMS_ATTEST and ``signature`` as a TPMT_SIGNATURE
   (:class:`~trusted_pools.exception.MalformedEvidence` /
   :class:`~trusted_pools.exception.UnsupportedAlgorithm`);
2. the signature verifies over the exact quote bytes with the AK, with the
   scheme pinned by key and signature: an RSA key verifies only RSASSA or
   RSAPSS, an ECC key only ECDSA, and a key that names a scheme accepts only
   that scheme and hash (:class:`SignatureSchemeMismatch`); RSASSA-PSS takes
   only the salt lengths TPM 2.0 Part 1 B.7 lets a TPM use
   (:func:`pss_salt_lengths`); a signature that
   does not verify is :class:`InvalidSignature`, with no detail. Because the
   signature comes first, tampering with any signed byte is reported as
   InvalidSignature, never as the field that was changed;
   Before that, the AK must have a signing scheme fixed at creation
   (:class:`AKSchemeRejected` for TPM_ALG_NULL, unless the caller waives
   it for a bare PEM key with ``allow_unfixed_scheme``); after it, a
   signature with SHA-1 (the same hash made the signed pcrDigest) is
   :class:`QuoteHashRefused` unless ``allow_sha1`` is set;
3. magic is TPM_GENERATED_VALUE (:class:`QuoteMagicInvalid`);
4. type is TPM_ST_ATTEST_QUOTE (:class:`QuoteTypeInvalid`);
5. extraData equals ``nonce``, compared in constant time
   (:class:`NonceMismatch`);
6. the PCRs provided are exactly the PCRs in the *signed* selection: a
   signed PCR not provided, or a provided PCR not signed, is
   :class:`PCRSelectionMismatch` naming them; each value has its bank's
   digest size (:class:`MalformedEvidence`);
7. H_sig(values in signed order: banks as listed, PCRs ascending) equals the
   signed pcrDigest (:class:`PCRDigestMismatch`).

What the caller still owns: the AK must have passed
:func:`trusted_pools.tpm.keys.check_ak_attributes` (and be bound to the
host's EK by credential activation) *before* it is used here. Any signing
key can produce a structure with TPM_GENERATED_VALUE when it is not a
restricted key; only restricted keys make the magic mean "made by the TPM".
"""

from __future__ import annotations

import functools
import hmac
import operator
import struct
from dataclasses import dataclass
from typing import Any, Mapping

from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import (
    encode_dss_signature)

from trusted_pools import exception
from trusted_pools.tpm import constants
from trusted_pools.tpm.constants import TPM_ALG, TPM_ST
from trusted_pools.tpm.structures import (
    ECC_COORDINATE_SIZE, MAX_PCR_SELECTIONS, Attest, ClockInfo,
    ObjectAttributes, PCRSelection, Public, QuoteInfo, Signature, _build,
    _CLOCK_FIRMWARE_COUNT, _QUOTE_HEAD, _U16, parse_attest,
    parse_pcr_selection_list, parse_signature)

__all__ = ["VerifiedQuote", "pss_salt_lengths", "verify_parsed_signature",
           "verify_quote", "verify_quote_reference", "verify_signature"]


# cryptography hash objects are immutable: build them once.
_CRYPTO_HASHES: dict[int, hashes.HashAlgorithm] = {
    TPM_ALG.SHA1: hashes.SHA1(),
    TPM_ALG.SHA256: hashes.SHA256(),
    TPM_ALG.SHA384: hashes.SHA384(),
    TPM_ALG.SHA512: hashes.SHA512(),
}
_ECDSA: dict[int, ec.ECDSA] = {
    alg: ec.ECDSA(h) for alg, h in _CRYPTO_HASHES.items()}
_PKCS1V15 = padding.PKCS1v15()


def pss_salt_lengths(key_bytes: int, digest_size: int) -> tuple[int, ...]:
    """The salt lengths a TPM may use for RSASSA-PSS, most common first.

    TPM 2.0 Part 1, annex B.7: the salt is the largest the key and digest
    allow (emLen - hLen - 2); a TPM bound to FIPS 186-4 uses the largest
    FIPS allows, the digest size (or the maximum, if that is smaller).
    libtpms (swtpm) and current TPMs use the digest size. A signature with
    any other salt length was not made by a TPM and is rejected. Both
    lengths belong to the one pinned scheme and hash: this is the spec's
    rule, not a search over paddings.
    """
    largest = key_bytes - digest_size - 2
    if largest < 0:
        return ()
    fips = min(digest_size, largest)
    return (fips,) if fips == largest else (fips, largest)


@functools.lru_cache(maxsize=64)
def _pss_paddings(hash_alg: int, key_bytes: int) -> tuple[padding.PSS, ...]:
    h = _CRYPTO_HASHES[hash_alg]
    return tuple(padding.PSS(mgf=padding.MGF1(h), salt_length=length)
                 for length in pss_salt_lengths(key_bytes, h.digest_size))


_RSA_SIGNATURE_SCHEMES = frozenset({TPM_ALG.RSASSA, TPM_ALG.RSAPSS})


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote whose signature, nonce and PCR digest all checked out.

    ``pcrs`` holds exactly the signed PCRs (bank -> index -> value) whose
    values hash to the signed digest; nothing else.
    """

    attest: Attest
    clock_info: ClockInfo
    firmware_version: int
    selection: tuple[PCRSelection, ...]
    pcrs: dict[int, dict[int, bytes]]


_ECC_SIGNATURE_SCHEMES = frozenset({TPM_ALG.ECDSA})
# Plain ints for the hot path: reading an enum member is a descriptor call.
_ALG_RSA, _ALG_ECC, _ALG_NULL = int(TPM_ALG.RSA), int(TPM_ALG.ECC), \
    int(TPM_ALG.NULL)
_ALG_ECDSA, _ALG_RSASSA = int(TPM_ALG.ECDSA), int(TPM_ALG.RSASSA)
_ALG_SHA1 = int(TPM_ALG.SHA1)
_ST_ATTEST_QUOTE = int(TPM_ST.ATTEST_QUOTE)
_TPM_GENERATED_VALUE = constants.TPM_GENERATED_VALUE
_SIGN_BIT = int(ObjectAttributes.SIGN_ENCRYPT)


def _check_scheme(key: Public, sig: Signature) -> None:
    """Pin the signature scheme by key type, key scheme and signature."""
    if not int(key.attributes) & _SIGN_BIT:
        raise exception.AKAttributesRejected(attribute="sign",
                                             expected="set")
    if key.type == _ALG_RSA:
        allowed = _RSA_SIGNATURE_SCHEMES
    elif key.type == _ALG_ECC:
        allowed = _ECC_SIGNATURE_SCHEMES
    else:
        raise exception.UnsupportedAlgorithm(
            algorithm="%#06x" % key.type,
            reason="signing keys must be RSA or ECC")
    if sig.sig_alg not in allowed:
        raise exception.SignatureSchemeMismatch(
            scheme="%#06x" % sig.sig_alg,
            reason="not a scheme for a %s key"
            % ("RSA" if key.type == TPM_ALG.RSA else "ECC"))
    if key.scheme != _ALG_NULL and (
            key.scheme != sig.sig_alg or key.scheme_hash != sig.hash_alg):
        raise exception.SignatureSchemeMismatch(
            scheme="%#06x/%s" % (sig.sig_alg, constants.alg_name(sig.hash_alg)),
            reason="the key only signs with %#06x/%s"
            % (key.scheme, constants.alg_name(key.scheme_hash or 0)))


def _crypto_hash(alg: int) -> hashes.HashAlgorithm:
    try:
        return _CRYPTO_HASHES[alg]
    except KeyError:
        raise exception.UnsupportedAlgorithm(
            algorithm="%#06x" % alg,
            reason="signature hash is not SHA-1/256/384/512") from None


def verify_parsed_signature(key: Public, message: bytes,
                            sig: Signature) -> None:
    """Verify an already parsed TPMT_SIGNATURE over ``message`` with ``key``.

    Raises SignatureSchemeMismatch / UnsupportedAlgorithm for a scheme the
    key must not use, and InvalidSignature (no detail) for a signature that
    does not verify.
    """
    _check_scheme(key, sig)
    hash_obj = _CRYPTO_HASHES.get(sig.hash_alg) or _crypto_hash(sig.hash_alg)
    # The key type matches the scheme (checked above), so public_key() is
    # an EllipticCurvePublicKey for ECDSA and an RSAPublicKey otherwise.
    public_key: Any = key.public_key()
    try:
        if sig.sig_alg == _ALG_ECDSA:
            assert sig.r is not None and sig.s is not None
            size = ECC_COORDINATE_SIZE[key.curve]  # type: ignore[index]
            if len(sig.r) > size or len(sig.s) > size:
                raise exception.InvalidSignature()
            der = encode_dss_signature(int.from_bytes(sig.r, "big"),
                                       int.from_bytes(sig.s, "big"))
            public_key.verify(der, message, _ECDSA[sig.hash_alg])
        else:
            assert sig.sig is not None
            if len(sig.sig) != len(key.unique):
                raise exception.InvalidSignature()
            if sig.sig_alg == _ALG_RSASSA:
                public_key.verify(sig.sig, message, _PKCS1V15, hash_obj)
            else:
                _verify_pss(public_key, sig.sig, message, sig.hash_alg)
    except (crypto_exceptions.InvalidSignature, ValueError):
        raise exception.InvalidSignature() from None


def _verify_pss(public_key: Any, signature: bytes, message: bytes,
                hash_alg: int) -> None:
    """RSASSA-PSS with one of the salt lengths a TPM may use."""
    paddings = _pss_paddings(hash_alg, len(signature))
    for pad in paddings[:-1]:
        try:
            public_key.verify(signature, message, pad,
                              _CRYPTO_HASHES[hash_alg])
            return
        except crypto_exceptions.InvalidSignature:
            pass
    if not paddings:
        raise exception.InvalidSignature()
    public_key.verify(signature, message, paddings[-1],
                      _CRYPTO_HASHES[hash_alg])


def verify_signature(key: Public, message: bytes, signature: bytes) -> None:
    """Verify a TPMT_SIGNATURE (bytes) over ``message`` with ``key``.

    For TPM2_Quote, TPM2_Certify and TPM2_CertifyCreation output alike; the
    caller checks what the signed structure says.
    """
    verify_parsed_signature(key, message, parse_signature(signature))


def _format_pcrs(pairs: list[tuple[int, int]]) -> str:
    banks: dict[int, list[int]] = {}
    for alg, pcr in pairs:
        banks.setdefault(alg, []).append(pcr)
    return "; ".join("%s:%s" % (constants.alg_name(alg), sorted(pcrs))
                     for alg, pcrs in banks.items())


def _selection_errors(signed: Mapping[int, frozenset[int] | set[int]],
                      pcr_values: Mapping[int, Mapping[int, bytes]]) -> None:
    """Raise PCRSelectionMismatch naming what is missing or extra."""
    missing = [(alg, pcr) for alg, pcrs in signed.items()
               for pcr in sorted(pcrs) if pcr not in pcr_values.get(alg, ())]
    if missing:
        raise exception.PCRSelectionMismatch(
            reason="signed PCR(s) not provided: %s" % _format_pcrs(missing),
            missing=missing)
    extra = [(alg, pcr) for alg, values in pcr_values.items()
             for pcr in sorted(values) if pcr not in signed.get(alg, ())]
    if extra:
        raise exception.PCRSelectionMismatch(
            reason="PCR(s) provided but not covered by the quote: %s"
            % _format_pcrs(extra), extra=extra)


@dataclass(frozen=True)
class _SelectionPlan:
    """What a signed selection asks for, worked out once per selection."""

    signed: dict[int, frozenset[int]]      # bank -> every signed PCR
    order: tuple[tuple[int, tuple[int, ...], int], ...]  # bank, PCRs, size


@functools.lru_cache(maxsize=256)
def _selection_plan(selection: tuple[PCRSelection, ...]) -> _SelectionPlan:
    """Cached: a host quotes the same selection every time (the parser
    also hands out the same PCRSelection objects for the same bytes)."""
    if not any(sel.pcrs for sel in selection):
        raise exception.PCRSelectionMismatch(
            reason="the quote covers no PCR")
    signed: dict[int, frozenset[int]] = {}
    order = []
    for sel in selection:
        size = constants.hash_algorithm(sel.hash_alg).digest_size
        if not sel.pcrs:
            continue  # a bank listed with no PCR selected adds nothing
        signed[sel.hash_alg] = signed.get(sel.hash_alg, frozenset()) | \
            sel.pcrs
        order.append((sel.hash_alg, tuple(sorted(sel.pcrs)), size))
    return _SelectionPlan(signed, tuple(order))


def _checked_pcr_values(selection: tuple[PCRSelection, ...],
                        pcr_values: Mapping[int, Mapping[int, bytes]],
                        ) -> tuple[dict[int, dict[int, bytes]], bytes]:
    """The signed values, and their concatenation in signed order.

    The PCRs provided must be exactly the signed ones, both ways; each
    value must be one digest of its bank (else values split at other
    boundaries could hash to the same signed concatenation).
    """
    plan = _selection_plan(selection)
    signed = plan.signed
    parts: list[bytes] = []
    try:
        # Every signed PCR is looked up (KeyError if one is missing) and
        # each bank holds as many PCRs as were signed: so no extra ones.
        if len(pcr_values) != len(signed):
            raise KeyError
        for alg, pcrs in signed.items():
            if len(pcr_values[alg]) != len(pcrs):
                raise KeyError
        for alg, indices, size in plan.order:
            values = list(map(pcr_values[alg].__getitem__, indices))
            # One digest per PCR: values split at other boundaries could
            # hash to the same signed concatenation. (join rejects what is
            # not bytes-like; total and shortest length pin every length.)
            try:
                total = len(b"".join(values))
            except TypeError:
                total = -1
            if total != size * len(values) or min(map(len, values)) != size:
                raise exception.MalformedEvidence(
                    what="PCR value",
                    reason="%s PCR(s) %s are not %d-byte digests" % (
                        constants.alg_name(alg),
                        [pcr for pcr, v in zip(indices, values)
                         if not isinstance(v, bytes) or len(v) != size],
                        size))
            parts += values
    except KeyError:
        _selection_errors(signed, pcr_values)
        # Same PCRs, but e.g. an empty extra bank: not the signed set.
        raise exception.PCRSelectionMismatch(
            reason="bank(s) provided but not covered by the quote: %s"
            % ", ".join(constants.alg_name(alg)
                        for alg in sorted(set(pcr_values) - set(signed)))
        ) from None
    # Keys were checked equal to the signed PCRs: copy the banks whole.
    checked = {alg: dict(pcr_values[alg]) for alg in signed}
    return checked, b"".join(parts)


def verify_quote(ak: Public, quote: bytes, signature: bytes, nonce: bytes,
                 pcr_values: Mapping[int, Mapping[int, bytes]], *,
                 allow_sha1: bool = False,
                 allow_unfixed_scheme: bool = False) -> VerifiedQuote:
    """Verify a TPM2_Quote; see the module docstring for the checks.

    ``pcr_values`` maps a TPM_ALG hash id to {PCR index: value}; it must
    hold exactly the PCRs the quote signed. ``allow_sha1`` accepts a quote
    signed with SHA-1 (a host policy's explicit choice);
    ``allow_unfixed_scheme`` accepts an AK without a fixed scheme (only
    for a key given as bare PEM, which carries no scheme at all).

    A quote that passes every check on the fast path
    (:func:`_accept_quote_fast`) is returned from there; anything else -
    every failure, every unusual shape - is decided by
    :func:`verify_quote_reference`, so errors are the reference's own.
    """
    if type(quote) is bytes and type(signature) is bytes and \
            type(nonce) is bytes and ak.scheme != _ALG_NULL:
        try:
            accepted = _accept_quote_fast(ak, quote, signature, nonce,
                                          pcr_values, allow_sha1)
        except Exception:  # noqa: BLE001 - the reference decides, and says
            accepted = None  # what was wrong in its own words
        if accepted is not None:
            return accepted
    return verify_quote_reference(
        ak, quote, signature, nonce, pcr_values, allow_sha1=allow_sha1,
        allow_unfixed_scheme=allow_unfixed_scheme)


def verify_quote_reference(ak: Public, quote: bytes, signature: bytes,
                           nonce: bytes,
                           pcr_values: Mapping[int, Mapping[int, bytes]], *,
                           allow_sha1: bool = False,
                           allow_unfixed_scheme: bool = False
                           ) -> VerifiedQuote:
    """The reference verifier: every check in the documented order through
    the general parsers. :func:`verify_quote` falls back to it for anything
    its fast path does not accept, and property tests compare the two."""
    if not isinstance(nonce, (bytes, bytearray)):
        raise TypeError("nonce must be bytes, not %s" % type(nonce).__name__)
    if not allow_unfixed_scheme and ak.scheme == _ALG_NULL:
        raise exception.AKSchemeRejected(scheme="TPM_ALG_NULL (not fixed)")
    attest = parse_attest(quote)
    sig = parse_signature(signature)
    verify_parsed_signature(ak, attest.raw, sig)
    if sig.hash_alg == _ALG_SHA1 and not allow_sha1:
        raise exception.QuoteHashRefused(
            hash="SHA-1", reason="SHA-1 collisions are practical; set "
            "\"allow_sha1_quotes\": true in the host group's measured-boot "
            "policy to accept them, or better, give the host an AK with a "
            "SHA-256 scheme")
    if attest.magic != _TPM_GENERATED_VALUE:
        raise exception.QuoteMagicInvalid(magic=attest.magic)
    info = attest.attested
    if attest.type != _ST_ATTEST_QUOTE or type(info) is not QuoteInfo:
        raise exception.QuoteTypeInvalid(type=attest.type,
                                         expected=TPM_ST.ATTEST_QUOTE)
    if not hmac.compare_digest(attest.extra_data, bytes(nonce)):
        raise exception.NonceMismatch()
    checked, concatenated = _checked_pcr_values(info.pcr_select, pcr_values)
    # The TPM hashes the PCRs with the signing scheme's hash; the scheme
    # (and so the hash) was pinned by the key above.
    digest = constants.HASH_ALGORITHMS[sig.hash_alg].new(
        concatenated).digest()
    if not hmac.compare_digest(digest, info.pcr_digest):
        raise exception.PCRDigestMismatch(
            bank=",".join(dict.fromkeys(
                constants.alg_name(sel.hash_alg) for sel in info.pcr_select)))
    return _build(VerifiedQuote, attest, attest.clock_info,
                  attest.firmware_version, info.pcr_select, checked)


# --- the fast path -----------------------------------------------------------
#
# Hand-written because the generic path (parse TPMS_ATTEST and TPMT_SIGNATURE
# into objects, pin the scheme, then check) costs as much Python time as the
# RSA verify itself. Here the work that depends only on the AK (scheme
# pinning, the expected signature header, the loaded key) is done once per AK
# object, the signed PCR selection is decoded once per distinct wire form,
# and the quote is read with a few struct reads. The fast path only ever
# *accepts*: on any doubt or failure it returns None and the reference
# decides, so a rejection is always the reference's error. It never accepts
# what the reference rejects (tests/unit/tpm/test_quote_fast.py compares
# the two on real and fuzzed evidence).

class _QuoteLayout:
    """Where the fields sit in a quote of one shape (qualified signer,
    nonce size, selection and digest size fixed): a TPM quoting the same
    selection with same-sized nonces repeats it every time."""

    __slots__ = ("unpack", "size", "head", "qualified_signer",
                 "wire_bytes", "wire")

    def __init__(self, head: bytes, extra_size: int, wire_bytes: bytes,
                 wire: tuple[tuple[PCRSelection, ...], _SelectionPlan],
                 digest_size: int) -> None:
        layout = struct.Struct(">%dsH%dsQIIBQ%dsH%ds" % (
            len(head), extra_size, len(wire_bytes), digest_size))
        self.unpack = layout.unpack
        self.size = layout.size
        self.head = head                    # magic, type, qualifiedSigner
        self.qualified_signer = head[8:]
        self.wire_bytes = wire_bytes        # TPML_PCR_SELECTION
        self.wire = wire


class _AKPlan:
    """What verifying a quote with one AK needs, worked out once; and the
    layout of its last quote (replaced, never trusted: every field is
    still compared)."""

    __slots__ = ("sig_head", "sig_alg", "hash_alg", "size", "verify",
                 "crypto_hash", "pcr_hash", "layout")

    def __init__(self, sig_head: bytes, sig_alg: int, hash_alg: int,
                 size: int, verify: Any, crypto_hash: Any,
                 pcr_hash: Any) -> None:
        self.sig_head = sig_head    # TPMT_SIGNATURE sigAlg || hashAlg
        self.sig_alg = sig_alg
        self.hash_alg = hash_alg
        self.size = size            # RSA modulus or ECC coordinate bytes
        self.verify = verify        # the loaded key's bound verify
        self.crypto_hash = crypto_hash
        self.pcr_hash = pcr_hash    # hashlib constructor, PCR digest
        self.layout: _QuoteLayout | None = None


_NO_PLAN = object()
_SIG_HEAD = struct.Struct(">HH")
_RSA_SIG_HEAD = struct.Struct(">HHH")


def _ak_plan(ak: Public) -> _AKPlan | None:
    """The AK's plan, cached in the (immutable) Public object; None when
    this AK always takes the reference path (no fixed scheme, a key or
    scheme the reference rejects)."""
    plan = ak.__dict__.get("_quote_fast_plan", _NO_PLAN)
    if plan is _NO_PLAN:
        plan = _make_ak_plan(ak)
        # Same technique as functools.cached_property on a frozen class.
        ak.__dict__["_quote_fast_plan"] = plan
    return plan  # type: ignore[return-value]


def _make_ak_plan(ak: Public) -> _AKPlan | None:
    sig_alg, hash_alg = ak.scheme, ak.scheme_hash
    if sig_alg == _ALG_NULL or hash_alg not in _CRYPTO_HASHES or \
            hash_alg not in constants.HASH_ALGORITHMS:
        return None
    try:
        # The same pinning the reference applies to every signature: a
        # signature with exactly the key's scheme and hash passes it.
        _check_scheme(ak, Signature(sig_alg, hash_alg, b"", b"", b""))
        public_key: Any = ak.public_key()
    except exception.TrustedPoolsException:
        return None
    if sig_alg == _ALG_ECDSA:
        size = ECC_COORDINATE_SIZE.get(ak.curve)  # type: ignore[arg-type]
        if size is None:
            return None
    elif sig_alg in _RSA_SIGNATURE_SCHEMES:
        size = len(ak.unique)
    else:
        return None
    return _AKPlan(_SIG_HEAD.pack(sig_alg, hash_alg), sig_alg, hash_alg,
                   size, public_key.verify, _CRYPTO_HASHES[hash_alg],
                   constants.HASH_ALGORITHMS[hash_alg].new)


_Getters = tuple[tuple[int, Any, int, int], ...]


@functools.lru_cache(maxsize=256)
def _wire_selection(raw: bytes) -> tuple[tuple[PCRSelection, ...],
                                         _SelectionPlan, _Getters] | None:
    """A TPML_PCR_SELECTION's wire bytes (count included) decoded and
    planned, with one itemgetter per bank entry that reads its values in
    signed order; None for anything the reference would reject or that
    needs its error message."""
    try:
        selection = parse_pcr_selection_list(raw)
        plan = _selection_plan(selection)
    except exception.TrustedPoolsException:
        return None
    getters = tuple(
        (alg, operator.itemgetter(*indices) if len(indices) > 1 else
         (lambda bank, index=indices[0]: (bank[index],)),
         len(indices), size)
        for alg, indices, size in plan.order)
    return selection, plan, getters


def _parse_quote_layout(data: bytes) -> tuple[Any, ...] | None:
    """A TPMS_ATTEST of type quote read field by field (as
    structures._parse_quote_fast does), with its layout; None for anything
    else."""
    end = len(data)
    if end < 10:
        return None
    magic, st, size = _QUOTE_HEAD.unpack_from(data)
    if magic != _TPM_GENERATED_VALUE or st != _ST_ATTEST_QUOTE:
        return None
    offset = 8 + size
    if offset + 2 > end:
        return None
    head = data[:offset]
    size = _U16.unpack_from(data, offset)[0]
    offset += 2
    extra_data = data[offset:offset + size]
    offset += size
    if offset + 29 > end:
        return None
    clock, reset_count, restart_count, safe, firmware_version, count = (
        _CLOCK_FIRMWARE_COUNT.unpack_from(data, offset))
    if safe > 1 or not 0 < count <= MAX_PCR_SELECTIONS:
        return None
    start = offset + 25       # the selection list, from its count
    offset += 29
    for _ in range(count):
        if offset + 3 > end:
            return None
        offset += 3 + data[offset + 2]
    if offset + 2 > end:
        return None
    wire_bytes = data[start:offset]
    wire = _wire_selection(wire_bytes)
    if wire is None:
        return None
    size = _U16.unpack_from(data, offset)[0]
    if offset + 2 + size != end:
        return None
    layout = _QuoteLayout(head, len(extra_data), wire_bytes, wire, size)
    return (layout, magic, st, head[8:], extra_data, clock, reset_count,
            restart_count, safe, firmware_version, wire,
            data[offset + 2:])


def _accept_quote_fast(ak: Public, data: bytes, signature: bytes,
                       nonce: bytes,
                       pcr_values: Mapping[int, Mapping[int, bytes]],
                       allow_sha1: bool) -> VerifiedQuote | None:
    """The VerifiedQuote the reference would return, or None to let the
    reference decide (see the section comment)."""
    plan = _ak_plan(ak)
    if plan is None or (plan.hash_alg == _ALG_SHA1 and not allow_sha1):
        return None
    # TPMT_SIGNATURE: the header must be the AK's pinned scheme and hash.
    if signature[:4] != plan.sig_head:
        return None
    layout = plan.layout
    if layout is not None and len(data) == layout.size:
        # The shape this AK's last quote had: one struct read.
        (head, extra_size, extra_data, clock, reset_count, restart_count,
         safe, firmware_version, wire_bytes, digest_size, pcr_digest,
         ) = layout.unpack(data)
        if head != layout.head or extra_size != len(extra_data) or \
                wire_bytes != layout.wire_bytes or safe > 1 or \
                digest_size != len(pcr_digest):
            return None
        magic, st, wire = _TPM_GENERATED_VALUE, _ST_ATTEST_QUOTE, \
            layout.wire
        qualified_signer = layout.qualified_signer
    else:
        parsed = _parse_quote_layout(data)
        if parsed is None:
            return None
        (plan.layout, magic, st, qualified_signer, extra_data, clock,
         reset_count, restart_count, safe, firmware_version, wire,
         pcr_digest) = parsed
    # The signature over the exact bytes, with the pinned scheme.
    try:
        if plan.sig_alg == _ALG_ECDSA:
            r_size = _U16.unpack_from(signature, 4)[0]
            r_end = 6 + r_size
            s_size = _U16.unpack_from(signature, r_end)[0]
            if r_size > plan.size or s_size > plan.size or \
                    r_end + 2 + s_size != len(signature):
                return None
            plan.verify(encode_dss_signature(
                int.from_bytes(signature[6:r_end], "big"),
                int.from_bytes(signature[r_end + 2:], "big")),
                data, _ECDSA[plan.hash_alg])
        else:
            if signature[4:6] != _U16.pack(plan.size) or \
                    len(signature) != 6 + plan.size:
                return None
            if plan.sig_alg == _ALG_RSASSA:
                plan.verify(signature[6:], data, _PKCS1V15,
                            plan.crypto_hash)
            else:
                _verify_pss(ak.public_key(), signature[6:], data,
                            plan.hash_alg)
    except crypto_exceptions.InvalidSignature:
        return None
    if not hmac.compare_digest(extra_data, nonce):
        return None
    selection, selection_plan, getters = wire
    signed = selection_plan.signed
    # Exactly the signed PCRs, each one digest of its bank.
    if len(pcr_values) != len(signed):
        return None
    if len(getters) == 1:
        # One bank listed once (the usual quote): its PCR count is the
        # signed count, so no PCR is missing or extra.
        alg, getter, count, size = getters[0]
        bank = pcr_values[alg]
        if len(bank) != count:
            return None
        values = getter(bank)
        concatenated = b"".join(values)
        # Total and shortest length pin every value to one digest.
        if len(concatenated) != size * count or \
                min(map(len, values)) != size:
            return None
    else:
        for alg, pcrs in signed.items():
            if len(pcr_values[alg]) != len(pcrs):
                return None
        concatenated = b""
        for alg, getter, count, size in getters:
            values = getter(pcr_values[alg])
            joined = b"".join(values)
            if len(joined) != size * count or \
                    min(map(len, values)) != size:
                return None
            concatenated += joined
    if not hmac.compare_digest(plan.pcr_hash(concatenated).digest(),
                               pcr_digest):
        return None
    # The result, built as structures._build would (the dataclasses are
    # frozen and have no __post_init__), without a call per object.
    new, setattr_ = object.__new__, object.__setattr__
    clock_info = new(ClockInfo)
    setattr_(clock_info, "__dict__", {
        "clock": clock, "reset_count": reset_count,
        "restart_count": restart_count, "safe": safe == 1})
    info = new(QuoteInfo)
    setattr_(info, "__dict__", {"pcr_select": selection,
                                "pcr_digest": pcr_digest})
    attest = new(Attest)
    setattr_(attest, "__dict__", {
        "magic": magic, "type": st,
        "qualified_signer": qualified_signer,
        "extra_data": extra_data, "clock_info": clock_info,
        "firmware_version": firmware_version, "attested": info,
        "raw": data})
    verified = new(VerifiedQuote)
    setattr_(verified, "__dict__", {
        "attest": attest, "clock_info": clock_info,
        "firmware_version": firmware_version, "selection": selection,
        "pcrs": {alg: dict(pcr_values[alg]) for alg in signed}})
    return verified
