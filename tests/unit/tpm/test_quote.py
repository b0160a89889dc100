"""verify_quote / verify_signature / check_ak_attributes.

The real GCP attestation must verify, and changing any byte of the quote,
the signature, the nonce or any PCR value must fail with the error for the
first check it breaks. Order of checks (see trusted_pools.tpm.quote):
parse -> signature -> magic -> type -> nonce -> PCR selection -> PCR digest.
Because the signature is checked before any field is trusted, a flipped
byte in the signed quote is InvalidSignature unless it already breaks the
parse.
"""

from __future__ import annotations

import base64
import functools
import json
import pathlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests import soft_tpm
from trusted_pools import exception
from trusted_pools.tpm import keys, quote, structures
from trusted_pools.tpm.constants import TPM_ALG, TPM_ST
from trusted_pools.tpm.structures import ObjectAttributes

# The GCP AK's scheme is fixed to RSASSA-SHA1: its quote needs the waiver.
verify_gcp = functools.partial(quote.verify_quote, allow_sha1=True)

DATA = pathlib.Path(__file__).parents[2] / "data"
GCP = json.loads((DATA / "quote/go-attestation/windows_gcp_shielded_vm.json")
                 .read_text())
AK = structures.load_public(base64.b64decode(GCP["AK"]["Public"]))
QUOTE = base64.b64decode(GCP["Quote"]["Quote"])
SIGNATURE = base64.b64decode(GCP["Quote"]["Signature"])
NONCE = base64.b64decode(GCP["Quote"]["Nonce"])
# go-attestation numbers hashes as Go's crypto.Hash: 3 = SHA-1, 4 = SHA-256.
GO_HASH = {3: TPM_ALG.SHA1, 4: TPM_ALG.SHA256}


def gcp_pcrs() -> dict[int, dict[int, bytes]]:
    values: dict[int, dict[int, bytes]] = {}
    for entry in GCP["Log"]["PCRs"]:
        values.setdefault(GO_HASH[entry["DigestAlg"]], {})[entry["Index"]] = (
            base64.b64decode(entry["Digest"]))
    return values


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1:]


# --- the real GCP attestation ---------------------------------------------

def test_gcp_quote_verifies():
    keys.check_ak_attributes(AK)
    assert NONCE == b""
    values = gcp_pcrs()
    assert set(values) == {TPM_ALG.SHA1} and len(values[TPM_ALG.SHA1]) == 24
    result = verify_gcp(AK, QUOTE, SIGNATURE, NONCE, values)
    assert result.pcrs == values
    assert result.selection == (structures.PCRSelection(
        TPM_ALG.SHA1, frozenset(range(24))),)
    assert result.clock_info == result.attest.clock_info
    assert result.firmware_version == result.attest.firmware_version


def test_gcp_ak_certified_its_own_creation():
    quote.verify_signature(
        AK, base64.b64decode(GCP["AK"]["CreateAttestation"]),
        base64.b64decode(GCP["AK"]["CreateSignature"]))


def _expected_for_quote_flip(mutated: bytes) -> type:
    try:
        structures.parse_attest(mutated)
    except exception.MalformedEvidence:
        return exception.MalformedEvidence
    return exception.InvalidSignature


@pytest.mark.parametrize("offset", range(len(QUOTE)))
def test_gcp_quote_any_flipped_byte_fails(offset):
    mutated = flip(QUOTE, offset)
    expected = _expected_for_quote_flip(mutated)
    with pytest.raises(expected) as err:
        verify_gcp(AK, mutated, SIGNATURE, NONCE, gcp_pcrs())
    if expected is exception.MalformedEvidence:
        assert not isinstance(err.value, exception.InvalidQuote)
    if offset < 4:  # the magic: the signature is checked first
        assert type(err.value) is exception.InvalidSignature


def _expected_for_signature_flip(offset: int) -> type:
    if offset < 2:       # sigAlg: RSASSA (0x0014) becomes an unknown id
        return exception.UnsupportedAlgorithm
    if offset < 4:       # hash: the key pins SHA-1
        return exception.SignatureSchemeMismatch
    if offset < 6:       # TPM2B size of the signature
        return exception.MalformedEvidence
    return exception.InvalidSignature


@pytest.mark.parametrize("offset", range(len(SIGNATURE)))
def test_gcp_signature_any_flipped_byte_fails(offset):
    with pytest.raises(_expected_for_signature_flip(offset)):
        verify_gcp(AK, QUOTE, flip(SIGNATURE, offset), NONCE,
                           gcp_pcrs())


@pytest.mark.parametrize("nonce", [b"\0", b"x" * 32, b"\0" * 20])
def test_gcp_other_nonce_fails(nonce):
    with pytest.raises(exception.NonceMismatch):
        verify_gcp(AK, QUOTE, SIGNATURE, nonce, gcp_pcrs())


@pytest.mark.parametrize("pcr", range(24))
@pytest.mark.parametrize("byte", [0, 19])
def test_gcp_changed_pcr_value_fails(pcr, byte):
    values = gcp_pcrs()
    values[TPM_ALG.SHA1][pcr] = flip(values[TPM_ALG.SHA1][pcr], byte)
    with pytest.raises(exception.PCRDigestMismatch):
        verify_gcp(AK, QUOTE, SIGNATURE, NONCE, values)


def test_gcp_missing_pcr_is_named():
    values = gcp_pcrs()
    del values[TPM_ALG.SHA1][7]
    del values[TPM_ALG.SHA1][23]
    with pytest.raises(exception.PCRSelectionMismatch) as err:
        verify_gcp(AK, QUOTE, SIGNATURE, NONCE, values)
    assert sorted(err.value.kwargs["missing"]) == [(TPM_ALG.SHA1, 7),
                                                   (TPM_ALG.SHA1, 23)]
    assert "sha1:[7, 23]" in str(err.value)


def test_gcp_extra_pcrs_are_rejected():
    values = gcp_pcrs()
    values[TPM_ALG.SHA256] = {0: b"\0" * 32}
    with pytest.raises(exception.PCRSelectionMismatch) as err:
        verify_gcp(AK, QUOTE, SIGNATURE, NONCE, values)
    assert err.value.kwargs["extra"] == [(TPM_ALG.SHA256, 0)]


def test_gcp_wrong_size_pcr_value():
    values = gcp_pcrs()
    values[TPM_ALG.SHA1][3] += b"\0"
    with pytest.raises(exception.MalformedEvidence):
        verify_gcp(AK, QUOTE, SIGNATURE, NONCE, values)


def test_gcp_wrong_key():
    other = soft_tpm.SoftAK.rsa(hash_alg=TPM_ALG.SHA1)
    with pytest.raises(exception.InvalidSignature):
        quote.verify_quote(structures.load_public(other.public_bytes),
                           QUOTE, SIGNATURE, NONCE, gcp_pcrs())


# --- software keys: schemes, banks, structure checks -------------------------

BANKS = (TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384, TPM_ALG.SHA512)


@pytest.fixture(scope="module")
def rsa_ak():
    return soft_tpm.SoftAK.rsa()


@pytest.fixture(scope="module")
def ecc_ak():
    return soft_tpm.SoftAK.ecc()


@pytest.mark.parametrize("make", [
    lambda: soft_tpm.SoftAK.rsa(TPM_ALG.RSASSA, TPM_ALG.SHA256),
    lambda: soft_tpm.SoftAK.rsa(TPM_ALG.RSAPSS, TPM_ALG.SHA256),
    lambda: soft_tpm.SoftAK.rsa(TPM_ALG.RSASSA, TPM_ALG.SHA384, bits=3072),
    lambda: soft_tpm.SoftAK.ecc(ec.SECP256R1, TPM_ALG.SHA256),
    lambda: soft_tpm.SoftAK.ecc(ec.SECP384R1, TPM_ALG.SHA384),
    lambda: soft_tpm.SoftAK.ecc(ec.SECP521R1, TPM_ALG.SHA512),
], ids=["rsassa", "rsapss", "rsa3072", "p256", "p384", "p521"])
def test_software_quotes_verify_all_banks(make):
    ak = make()
    public = structures.load_public(ak.public_bytes)
    keys.check_ak_attributes(public)
    values = soft_tpm.random_pcrs(BANKS, (0, 1, 7, 16, 23))
    attest, sig = ak.quote(b"nonce", values)
    result = quote.verify_quote(public, attest, sig, b"nonce", values)
    assert result.pcrs == values


@pytest.fixture(scope="module")
def pss_ak():
    return soft_tpm.SoftAK.rsa(TPM_ALG.RSAPSS)


def _pss_signature(ak, message: bytes, salt_length: int) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    raw = ak.private_key.sign(message, padding.PSS(
        padding.MGF1(hashes.SHA256()), salt_length), hashes.SHA256())
    return struct.pack(">HH", TPM_ALG.RSAPSS, TPM_ALG.SHA256) + \
        structures.marshal_tpm2b(raw)


def test_pss_salt_lengths_rule():
    # RSA-2048 / SHA-256: digest size (FIPS, libtpms) or the largest.
    assert quote.pss_salt_lengths(256, 32) == (32, 222)
    # RSA-1024 / SHA-512: the largest (62) is below the digest size.
    assert quote.pss_salt_lengths(128, 64) == (62,)


@pytest.mark.parametrize("salt", [32, 222])
def test_rsapss_salt_lengths_tpms_use(pss_ak, salt):
    quote.verify_signature(structures.load_public(pss_ak.public_bytes),
                           b"signed by a TPM",
                           _pss_signature(pss_ak, b"signed by a TPM", salt))


@pytest.mark.parametrize("salt", [0, 20, 31, 33, 100, 221])
def test_rsapss_other_salt_lengths_are_not_from_a_tpm(pss_ak, salt):
    with pytest.raises(exception.InvalidSignature):
        quote.verify_signature(
            structures.load_public(pss_ak.public_bytes), b"m",
            _pss_signature(pss_ak, b"m", salt))


def test_scheme_is_pinned_by_the_key(rsa_ak, ecc_ak):
    public = structures.load_public(rsa_ak.public_bytes)
    values = soft_tpm.random_pcrs()
    attest, _ = rsa_ak.quote(b"n", values)
    for sig_alg, hash_alg in [(TPM_ALG.RSAPSS, TPM_ALG.SHA256),
                              (TPM_ALG.RSASSA, TPM_ALG.SHA1)]:
        sig = rsa_ak.sign(attest, sig_alg, hash_alg)
        with pytest.raises(exception.SignatureSchemeMismatch):
            quote.verify_quote(public, attest, sig, b"n", values)
    # An ECDSA signature never verifies with an RSA key, and the reverse.
    ecc_sig = ecc_ak.sign(attest)
    with pytest.raises(exception.SignatureSchemeMismatch):
        quote.verify_quote(public, attest, ecc_sig, b"n", values)
    with pytest.raises(exception.SignatureSchemeMismatch):
        quote.verify_quote(structures.load_public(ecc_ak.public_bytes),
                           attest, rsa_ak.sign(attest), b"n", values)


def test_key_without_scheme_takes_the_signatures_scheme():
    ak = soft_tpm.SoftAK.rsa(scheme=TPM_ALG.NULL, scheme_hash=None)
    public = structures.load_public(ak.public_bytes)
    assert public.scheme == TPM_ALG.NULL
    for sig_alg in (TPM_ALG.RSASSA, TPM_ALG.RSAPSS):
        quote.verify_signature(public, b"m", ak.sign(b"m", sig_alg))
    # ... but a PKCS#1 v1.5 signature labelled PSS is not retried as v1.5.
    v15 = ak.sign(b"m", TPM_ALG.RSASSA)
    relabelled = struct.pack(">H", TPM_ALG.RSAPSS) + v15[2:]
    with pytest.raises(exception.InvalidSignature):
        quote.verify_signature(public, b"m", relabelled)


def test_bad_magic_after_good_signature(ecc_ak):
    values = soft_tpm.random_pcrs()
    attest, sig = ecc_ak.quote(b"n", values, magic=0xFF544348)
    with pytest.raises(exception.QuoteMagicInvalid) as err:
        quote.verify_quote(structures.load_public(ecc_ak.public_bytes),
                           attest, sig, b"n", values)
    assert err.value.kwargs["magic"] == 0xFF544348


def test_wrong_type_after_good_signature(ecc_ak):
    public = structures.load_public(ecc_ak.public_bytes)
    head = soft_tpm.attest_quote([], b"", b"n", st=TPM_ST.ATTEST_CERTIFY)
    certify = head[:-len(b"\0\0\0\0\0\0")] + \
        structures.marshal_tpm2b(b"a") + structures.marshal_tpm2b(b"b")
    assert isinstance(structures.parse_attest(certify).attested,
                      structures.CertifyInfo)
    with pytest.raises(exception.QuoteTypeInvalid):
        quote.verify_quote(public, certify, ecc_ak.sign(certify), b"n",
                           soft_tpm.random_pcrs())
    quote.verify_signature(public, certify, ecc_ak.sign(certify))


def test_unknown_bank_in_signed_selection(ecc_ak):
    values = {TPM_ALG.SM3_256: {0: b"\0" * 32}}
    selection = [structures.PCRSelection(TPM_ALG.SM3_256, frozenset({0}))]
    attest = soft_tpm.attest_quote(selection, b"\0" * 32, b"n")
    with pytest.raises(exception.UnsupportedAlgorithm):
        quote.verify_quote(structures.load_public(ecc_ak.public_bytes),
                           attest, ecc_ak.sign(attest), b"n", values)


def test_empty_selection_is_rejected(ecc_ak):
    attest = soft_tpm.attest_quote([], soft_tpm.HASHLIB[TPM_ALG.SHA256](
        b"").digest(), b"n")
    with pytest.raises(exception.PCRSelectionMismatch, match="no PCR"):
        quote.verify_quote(structures.load_public(ecc_ak.public_bytes),
                           attest, ecc_ak.sign(attest), b"n", {})


def test_selection_order_is_the_signed_order(ecc_ak):
    """Banks hash in the order the quote lists them, not dict order."""
    public = structures.load_public(ecc_ak.public_bytes)
    values = soft_tpm.random_pcrs((TPM_ALG.SHA384, TPM_ALG.SHA1), (2, 9))
    attest, sig = ecc_ak.quote(b"n", values)
    reordered = {TPM_ALG.SHA1: values[TPM_ALG.SHA1],
                 TPM_ALG.SHA384: values[TPM_ALG.SHA384]}
    assert quote.verify_quote(public, attest, sig, b"n", reordered).pcrs == \
        values


def test_non_signing_key_is_refused(ecc_ak):
    key = ecc_ak.private_key.public_key()
    public = structures.load_public(soft_tpm.ecc_public(
        key, attributes=soft_tpm.EK_ATTRIBUTES))
    with pytest.raises(exception.AKAttributesRejected):
        quote.verify_signature(public, b"m", ecc_ak.sign(b"m"))


def test_ecdsa_oversized_scalar(ecc_ak):
    sig = ecc_ak.sign(b"m")
    parsed = structures.parse_signature(sig)
    big = struct.pack(">HH", TPM_ALG.ECDSA, TPM_ALG.SHA256) + \
        structures.marshal_tpm2b(b"\0" + parsed.r) + \
        structures.marshal_tpm2b(parsed.s)
    with pytest.raises(exception.InvalidSignature):
        quote.verify_signature(structures.load_public(ecc_ak.public_bytes),
                               b"m", big)


# --- AK rules ----------------------------------------------------------------

@pytest.mark.parametrize("flag,name,expected", [
    (ObjectAttributes.RESTRICTED, "restricted", "set"),
    (ObjectAttributes.SIGN_ENCRYPT, "sign", "set"),
    (ObjectAttributes.DECRYPT, "decrypt", "clear"),
    (ObjectAttributes.FIXED_TPM, "fixedTPM", "set"),
    (ObjectAttributes.FIXED_PARENT, "fixedParent", "set"),
    (ObjectAttributes.SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin", "set"),
])
def test_ak_attribute_rules(ecc_ak, flag, name, expected):
    key = ecc_ak.private_key.public_key()
    public = structures.load_public(soft_tpm.ecc_public(
        key, attributes=soft_tpm.AK_ATTRIBUTES ^ flag))
    with pytest.raises(exception.AKAttributesRejected) as err:
        keys.check_ak_attributes(public)
    assert err.value.kwargs == {"attribute": name, "expected": expected}


def test_ak_rsa_1024_is_rejected():
    ak = soft_tpm.SoftAK.rsa(bits=1024)
    with pytest.raises(exception.AKAttributesRejected, match="keyBits"):
        keys.check_ak_attributes(structures.load_public(ak.public_bytes))


def test_ak_unsupported_curve(ecc_ak):
    raw = bytearray(ecc_ak.public_bytes)
    curve_at = raw.index(b"\x00\x03\x00\x10")  # curveID P-256, kdf NULL
    raw[curve_at:curve_at + 2] = b"\x00\x01"   # P-192
    with pytest.raises(exception.UnsupportedAlgorithm):
        keys.check_ak_attributes(structures.load_public(bytes(raw)))


def test_bank_listed_without_pcrs_needs_no_values(ecc_ak):
    """A TPM may list a bank with an empty bitmap; it contributes nothing."""
    values = soft_tpm.random_pcrs((TPM_ALG.SHA256,), (1, 2))
    selection = [structures.PCRSelection(TPM_ALG.SHA384, frozenset()),
                 structures.PCRSelection(TPM_ALG.SHA256, frozenset({1, 2}))]
    digest = soft_tpm.pcr_digest(TPM_ALG.SHA256, selection[1:], values)
    attest = soft_tpm.attest_quote(selection, digest, b"n")
    result = quote.verify_quote(structures.load_public(ecc_ak.public_bytes),
                                attest, ecc_ak.sign(attest), b"n", values)
    assert result.pcrs == values


# --- signing scheme fixed at creation; SHA-1 only when allowed --------------

@pytest.mark.parametrize("make", [
    lambda: soft_tpm.SoftAK.rsa(scheme=TPM_ALG.NULL, scheme_hash=None),
    lambda: soft_tpm.SoftAK.ecc(scheme=TPM_ALG.NULL, scheme_hash=None),
])
def test_ak_without_fixed_scheme_is_rejected(make):
    """With TPM_ALG_NULL the agent names the quote's scheme and hash;
    such an AK fails the AK rules and verify_quote, with a reason."""
    ak = make()
    public = structures.load_public(ak.public_bytes)
    with pytest.raises(exception.AKSchemeRejected, match="TPM_ALG_NULL"):
        keys.check_ak_attributes(public)
    values = soft_tpm.random_pcrs()
    attest, sig = ak.quote(b"n", values)
    with pytest.raises(exception.AKSchemeRejected):
        quote.verify_quote(public, attest, sig, b"n", values)
    # A bare PEM key has no scheme at all: the caller may waive it.
    assert quote.verify_quote(public, attest, sig, b"n", values,
                              allow_unfixed_scheme=True).pcrs == values


def test_ak_scheme_of_the_wrong_family_is_rejected():
    ak = soft_tpm.SoftAK.rsa()
    key = ak.private_key.public_key()
    public = structures.load_public(soft_tpm.rsa_public(
        key, scheme=TPM_ALG.ECDSA, scheme_hash=TPM_ALG.SHA256))
    with pytest.raises(exception.AKSchemeRejected, match="RSA"):
        keys.check_ak_attributes(public)


@pytest.mark.parametrize("make", [
    lambda: soft_tpm.SoftAK.rsa(hash_alg=TPM_ALG.SHA1),
    lambda: soft_tpm.SoftAK.rsa(sig_alg=TPM_ALG.RSAPSS,
                                hash_alg=TPM_ALG.SHA1),
    lambda: soft_tpm.SoftAK.ecc(hash_alg=TPM_ALG.SHA1),
])
def test_sha1_quote_refused_unless_allowed(make):
    ak = make()
    public = structures.load_public(ak.public_bytes)
    keys.check_ak_attributes(public)     # a fixed SHA-1 scheme is a scheme
    values = soft_tpm.random_pcrs((TPM_ALG.SHA256,))
    attest, sig = ak.quote(b"n", values)
    with pytest.raises(exception.QuoteHashRefused,
                       match="allow_sha1_quotes"):
        quote.verify_quote(public, attest, sig, b"n", values)
    assert quote.verify_quote(public, attest, sig, b"n", values,
                              allow_sha1=True).pcrs == values
