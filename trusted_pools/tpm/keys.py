"""Rules an attestation key (AK) must meet before its quotes mean anything.

A quote's TPM_GENERATED_VALUE magic only proves "made by the TPM" when the
signing key is *restricted*: the TPM refuses to sign, with a restricted key,
any digest that starts with TPM_GENERATED_VALUE unless it built that
structure itself. An unrestricted key can sign a forged TPMS_ATTEST, so
:func:`check_ak_attributes` must pass before
:func:`trusted_pools.tpm.quote.verify_quote` is given the key.
"""

from __future__ import annotations

from trusted_pools import exception
from trusted_pools.tpm import constants
from trusted_pools.tpm.constants import TPM_ALG, TPM_ECC_CURVE
from trusted_pools.tpm.structures import ObjectAttributes, Public

__all__ = ["check_ak_attributes", "check_ak_scheme", "public_from_key",
           "MIN_RSA_KEY_BITS", "AK_CURVES", "AK_SCHEMES"]

MIN_RSA_KEY_BITS = 2048
AK_CURVES = frozenset({TPM_ECC_CURVE.NIST_P256, TPM_ECC_CURVE.NIST_P384,
                       TPM_ECC_CURVE.NIST_P521})

#: Signing schemes an AK may be created with, by key type.
AK_SCHEMES = {TPM_ALG.RSA: frozenset({TPM_ALG.RSASSA, TPM_ALG.RSAPSS}),
              TPM_ALG.ECC: frozenset({TPM_ALG.ECDSA})}

# (attribute, must be set?) in the order they are checked; names are the
# TPMA_OBJECT field names from the specification, as tpm2-tools prints them.
_AK_ATTRIBUTE_RULES: tuple[tuple[ObjectAttributes, str, bool], ...] = (
    (ObjectAttributes.RESTRICTED, "restricted", True),
    (ObjectAttributes.SIGN_ENCRYPT, "sign", True),
    (ObjectAttributes.DECRYPT, "decrypt", False),
    (ObjectAttributes.FIXED_TPM, "fixedTPM", True),
    (ObjectAttributes.FIXED_PARENT, "fixedParent", True),
    (ObjectAttributes.SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin", True),
)


def check_ak_scheme(public: Public) -> None:
    """Raise AKSchemeRejected unless the AK's signing scheme was fixed at
    creation: RSASSA or RSAPSS for RSA, ECDSA for ECC, with a hash this
    verifier computes.

    A key whose scheme is TPM_ALG_NULL signs with whatever scheme and hash
    the caller of TPM2_Quote names, so whoever runs the host's agent picks
    the hash, SHA-1 included. Whether a SHA-1 scheme is acceptable is the
    quote verifier's decision (``verify_quote(..., allow_sha1=)``), made
    from the host's policy.
    """
    if public.scheme == TPM_ALG.NULL:
        raise exception.AKSchemeRejected(scheme="TPM_ALG_NULL (not fixed)")
    allowed = AK_SCHEMES.get(public.type, frozenset())
    if public.scheme not in allowed:
        raise exception.AKSchemeRejected(
            scheme="%#06x, not one for a%s key" % (
                public.scheme, "n RSA" if public.type == TPM_ALG.RSA
                else "n ECC" if public.type == TPM_ALG.ECC else " "
                + hex(public.type)))
    constants.hash_algorithm(public.scheme_hash or 0)


def check_ak_attributes(public: Public) -> None:
    """Raise unless ``public`` is a TPM-resident restricted signing key.

    restricted, sign, fixedTPM, fixedParent and sensitiveDataOrigin must be
    set and decrypt clear (AKAttributesRejected names the first that is
    not); the key must be RSA of at least 2048 bits or ECC on NIST
    P-256/P-384/P-521, with a name algorithm this verifier computes, and a
    signing scheme fixed at creation (:func:`check_ak_scheme`).
    """
    for flag, name, must_be_set in _AK_ATTRIBUTE_RULES:
        if bool(public.attributes & flag) != must_be_set:
            raise exception.AKAttributesRejected(
                attribute=name, expected="set" if must_be_set else "clear")
    constants.hash_algorithm(public.name_alg)
    if public.type == TPM_ALG.RSA:
        if (public.key_bits or 0) < MIN_RSA_KEY_BITS:
            raise exception.AKAttributesRejected(
                attribute="keyBits",
                expected="at least %d (it is %s)"
                % (MIN_RSA_KEY_BITS, public.key_bits))
    elif public.type == TPM_ALG.ECC:
        if public.curve not in AK_CURVES:
            raise exception.UnsupportedAlgorithm(
                algorithm="ECC curve %#06x" % (public.curve or 0),
                reason="AKs must use NIST P-256, P-384 or P-521")
    else:
        raise exception.UnsupportedAlgorithm(
            algorithm="%#06x" % public.type,
            reason="an AK must be an RSA or ECC key")
    check_ak_scheme(public)
    # Building the key checks the modulus / point (MalformedEvidence).
    public.public_key()


_CURVE_IDS = {"secp256r1": TPM_ECC_CURVE.NIST_P256,
              "secp384r1": TPM_ECC_CURVE.NIST_P384,
              "secp521r1": TPM_ECC_CURVE.NIST_P521}


def public_from_key(key: object) -> Public:
    """A :class:`Public` for a key known only as a plain public key (PEM).

    It carries no TPM attributes but ``sign`` and no scheme, so the
    signature's own scheme is checked against the key type only. A PEM file
    cannot show that the key is restricted and lives in a TPM:
    :func:`check_ak_attributes` always rejects this Public, and a caller
    must say explicitly that it checked the key some other way.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    u16 = lambda v: int(v).to_bytes(2, "big")  # noqa: E731
    head = u16(TPM_ALG.SHA256) + int(ObjectAttributes.SIGN_ENCRYPT).to_bytes(
        4, "big") + u16(0)
    null = u16(TPM_ALG.NULL)
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        modulus = numbers.n.to_bytes((key.key_size + 7) // 8, "big")
        exponent = 0 if numbers.e == 65537 else numbers.e
        body = (u16(TPM_ALG.RSA) + head + null + null + u16(key.key_size)
                + exponent.to_bytes(4, "big") + u16(len(modulus)) + modulus)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVE_IDS.get(key.curve.name)
        if curve is None:
            raise exception.UnsupportedAlgorithm(
                algorithm=key.curve.name, reason="not a NIST P curve")
        size = (key.curve.key_size + 7) // 8
        numbers = key.public_numbers()
        x, y = (v.to_bytes(size, "big") for v in (numbers.x, numbers.y))
        body = (u16(TPM_ALG.ECC) + head + null + null + u16(curve) + null
                + u16(size) + x + u16(size) + y)
    else:
        raise exception.UnsupportedAlgorithm(
            algorithm=type(key).__name__, reason="not an RSA or ECC key")
    from trusted_pools.tpm.structures import parse_public
    return parse_public(body)
