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
   that scheme and hash (:class:`SignatureSchemeMismatch`); a signature that
   does not verify is :class:`InvalidSignature`, with no detail. Because the
   signature comes first, tampering with any signed byte is reported as
   InvalidSignature, never as the field that was changed;
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

import hmac
from dataclasses import dataclass
from typing import Mapping

from cryptography import exceptions as crypto_exceptions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    encode_dss_signature)

from trusted_pools import exception
from trusted_pools.tpm import constants
from trusted_pools.tpm.constants import TPM_ALG, TPM_ST
from trusted_pools.tpm.structures import (
    ECC_COORDINATE_SIZE, Attest, ClockInfo, ObjectAttributes, PCRSelection,
    Public, QuoteInfo, Signature, parse_attest, parse_signature)

__all__ = ["VerifiedQuote", "verify_quote", "verify_signature",
           "verify_parsed_signature"]

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
# RSASSA-PSS: MGF1 with the message hash, and the salt length recovered
# from the encoding (EMSA-PSS-VERIFY with sLen read from the PS || 0x01
# boundary). This is how a TPM itself verifies PSS (TPM2_VerifySignature
# accepts the salt size the signer chose); TPMs sign with the largest salt
# the key allows or, when FIPS 186-4 bound, the digest size (TPM 2.0 Part 1,
# annex B.7). It is one verification, not a search over paddings.
_PSS: dict[int, padding.PSS] = {
    alg: padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.AUTO)
    for alg, h in _CRYPTO_HASHES.items()}

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


def _alg_name(alg: int) -> str:
    known = constants.HASH_ALGORITHMS.get(alg)
    return known.name if known else "%#06x" % alg


def _check_scheme(key: Public, sig: Signature) -> None:
    """Pin the signature scheme by key type, key scheme and signature."""
    if not key.attributes & ObjectAttributes.SIGN_ENCRYPT:
        raise exception.AKAttributesRejected(attribute="sign",
                                             expected="set")
    if key.type == TPM_ALG.RSA:
        allowed = _RSA_SIGNATURE_SCHEMES
    elif key.type == TPM_ALG.ECC:
        allowed = frozenset({TPM_ALG.ECDSA})
    else:
        raise exception.UnsupportedAlgorithm(
            algorithm="%#06x" % key.type,
            reason="signing keys must be RSA or ECC")
    if sig.sig_alg not in allowed:
        raise exception.SignatureSchemeMismatch(
            scheme="%#06x" % sig.sig_alg,
            reason="not a scheme for a %s key"
            % ("RSA" if key.type == TPM_ALG.RSA else "ECC"))
    if key.scheme != TPM_ALG.NULL and (
            key.scheme != sig.sig_alg or key.scheme_hash != sig.hash_alg):
        raise exception.SignatureSchemeMismatch(
            scheme="%#06x/%s" % (sig.sig_alg, _alg_name(sig.hash_alg)),
            reason="the key only signs with %#06x/%s"
            % (key.scheme, _alg_name(key.scheme_hash or 0)))


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
    hash_obj = _crypto_hash(sig.hash_alg)
    public_key = key.public_key()
    try:
        if sig.sig_alg == TPM_ALG.ECDSA:
            assert isinstance(public_key, ec.EllipticCurvePublicKey)
            assert sig.r is not None and sig.s is not None
            size = ECC_COORDINATE_SIZE[key.curve]  # type: ignore[index]
            if len(sig.r) > size or len(sig.s) > size:
                raise exception.InvalidSignature()
            der = encode_dss_signature(int.from_bytes(sig.r, "big"),
                                       int.from_bytes(sig.s, "big"))
            public_key.verify(der, message, _ECDSA[sig.hash_alg])
        else:
            assert isinstance(public_key, rsa.RSAPublicKey)
            assert sig.sig is not None
            if len(sig.sig) != len(key.unique):
                raise exception.InvalidSignature()
            pad = (_PKCS1V15 if sig.sig_alg == TPM_ALG.RSASSA
                   else _PSS[sig.hash_alg])
            public_key.verify(sig.sig, message, pad, hash_obj)
    except (crypto_exceptions.InvalidSignature, ValueError):
        raise exception.InvalidSignature() from None


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
    return "; ".join("%s:%s" % (_alg_name(alg), sorted(pcrs))
                     for alg, pcrs in banks.items())


def _check_selection(selection: tuple[PCRSelection, ...],
                     pcr_values: Mapping[int, Mapping[int, bytes]]) -> None:
    """PCRs provided must be exactly the signed ones (both directions)."""
    if not selection or not any(sel.pcrs for sel in selection):
        raise exception.PCRSelectionMismatch(
            reason="the quote covers no PCR")
    signed: dict[int, set[int]] = {}
    for sel in selection:
        constants.hash_algorithm(sel.hash_alg)
        signed.setdefault(sel.hash_alg, set()).update(sel.pcrs)
    missing = [(alg, pcr) for alg, pcrs in signed.items() for pcr in pcrs
               if pcr not in pcr_values.get(alg, ())]
    if missing:
        raise exception.PCRSelectionMismatch(
            reason="signed PCR(s) not provided: %s" % _format_pcrs(missing),
            missing=missing)
    extra = [(alg, pcr) for alg, values in pcr_values.items()
             for pcr in values if pcr not in signed.get(alg, ())]
    if extra:
        raise exception.PCRSelectionMismatch(
            reason="PCR(s) provided but not covered by the quote: %s"
            % _format_pcrs(extra), extra=extra)


def _checked_pcr_values(selection: tuple[PCRSelection, ...],
                        pcr_values: Mapping[int, Mapping[int, bytes]],
                        ) -> tuple[dict[int, dict[int, bytes]], bytes]:
    """The signed values, and their concatenation in signed order."""
    _check_selection(selection, pcr_values)
    checked: dict[int, dict[int, bytes]] = {}
    parts = []
    for sel in selection:
        size = constants.hash_algorithm(sel.hash_alg).digest_size
        bank_in = pcr_values[sel.hash_alg]
        bank_out = checked.setdefault(sel.hash_alg, {})
        for pcr in sorted(sel.pcrs):
            value = bank_in[pcr]
            if not isinstance(value, bytes) or len(value) != size:
                raise exception.MalformedEvidence(
                    what="PCR value",
                    reason="%s PCR %d is not a %d-byte digest"
                    % (_alg_name(sel.hash_alg), pcr, size))
            bank_out[pcr] = value
            parts.append(value)
    return checked, b"".join(parts)


def verify_quote(ak: Public, quote: bytes, signature: bytes, nonce: bytes,
                 pcr_values: Mapping[int, Mapping[int, bytes]],
                 ) -> VerifiedQuote:
    """Verify a TPM2_Quote; see the module docstring for the checks.

    ``pcr_values`` maps a TPM_ALG hash id to {PCR index: value}; it must
    hold exactly the PCRs the quote signed.
    """
    if not isinstance(nonce, (bytes, bytearray)):
        raise TypeError("nonce must be bytes, not %s" % type(nonce).__name__)
    attest = parse_attest(quote)
    sig = parse_signature(signature)
    verify_parsed_signature(ak, attest.raw, sig)
    if attest.magic != constants.TPM_GENERATED_VALUE:
        raise exception.QuoteMagicInvalid(magic=attest.magic)
    if attest.type != TPM_ST.ATTEST_QUOTE:
        raise exception.QuoteTypeInvalid(type=attest.type,
                                         expected=TPM_ST.ATTEST_QUOTE)
    if not hmac.compare_digest(attest.extra_data, bytes(nonce)):
        raise exception.NonceMismatch()
    info = attest.attested
    assert isinstance(info, QuoteInfo)
    checked, concatenated = _checked_pcr_values(info.pcr_select, pcr_values)
    digest = constants.hash_algorithm(sig.hash_alg).digest(concatenated)
    if not hmac.compare_digest(digest, info.pcr_digest):
        raise exception.PCRDigestMismatch(
            bank=",".join(dict.fromkeys(
                _alg_name(sel.hash_alg) for sel in info.pcr_select)))
    return VerifiedQuote(attest, attest.clock_info, attest.firmware_version,
                         info.pcr_select, checked)
