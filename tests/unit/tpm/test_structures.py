"""TPM 2.0 structure parsers against real bytes (a GCP TPM, via
go-attestation's test data) and software-built structures."""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests import soft_tpm
from trusted_pools import exception
from trusted_pools.tpm import pcrs, structures
from trusted_pools.tpm.constants import (TPM_ALG, TPM_ECC_CURVE,
                                         TPM_GENERATED_VALUE, TPM_ST)
from trusted_pools.tpm.structures import ObjectAttributes, PCRSelection

DATA = pathlib.Path(__file__).parents[2] / "data"
GCP = json.loads((DATA / "quote/go-attestation/windows_gcp_shielded_vm.json")
                 .read_text())
AK_PUBLIC = base64.b64decode(GCP["AK"]["Public"])
CREATE_ATTESTATION = base64.b64decode(GCP["AK"]["CreateAttestation"])
QUOTE = base64.b64decode(GCP["Quote"]["Quote"])
SIGNATURE = base64.b64decode(GCP["Quote"]["Signature"])


def test_gcp_ak_public():
    ak = structures.parse_public(AK_PUBLIC)
    assert ak.type == TPM_ALG.RSA
    assert ak.name_alg == TPM_ALG.SHA256
    assert ak.attributes == (
        ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
        | ObjectAttributes.SENSITIVE_DATA_ORIGIN
        | ObjectAttributes.USER_WITH_AUTH | ObjectAttributes.NO_DA
        | ObjectAttributes.RESTRICTED | ObjectAttributes.SIGN_ENCRYPT)
    assert ak.symmetric is None
    assert (ak.scheme, ak.scheme_hash) == (TPM_ALG.RSASSA, TPM_ALG.SHA1)
    assert ak.key_bits == 2048 and ak.exponent == 0
    assert len(ak.auth_policy) == 32
    key = ak.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.public_numbers().e == 65537
    assert ak.public_key() is key  # built once
    assert ak.raw == AK_PUBLIC


def test_gcp_ak_name_is_the_name_the_tpm_certified():
    ak = structures.parse_public(AK_PUBLIC)
    creation = structures.parse_attest(CREATE_ATTESTATION)
    assert creation.type == TPM_ST.ATTEST_CREATION
    assert isinstance(creation.attested, structures.CreationInfo)
    assert creation.attested.object_name == ak.name()
    assert ak.name()[:2] == b"\x00\x0b" and len(ak.name()) == 34


def test_load_public_detects_both_forms():
    ak = structures.parse_public(AK_PUBLIC)
    b_form = ak.marshal_b()
    assert b_form[:2] == len(AK_PUBLIC).to_bytes(2, "big")
    assert structures.load_public(b_form) == ak
    assert structures.load_public(AK_PUBLIC) == ak
    assert structures.parse_public_b(b_form) == ak


def test_gcp_quote():
    attest = structures.parse_attest(QUOTE)
    assert attest.magic == TPM_GENERATED_VALUE
    assert attest.type == TPM_ST.ATTEST_QUOTE
    assert attest.extra_data == b""
    assert attest.qualified_signer[:2] == b"\x00\x0b"
    assert attest.clock_info.safe is True
    assert isinstance(attest.attested, structures.QuoteInfo)
    assert attest.attested.pcr_select == (
        PCRSelection(TPM_ALG.SHA1, frozenset(range(24))),)
    assert len(attest.attested.pcr_digest) == 20
    assert attest.raw == QUOTE


def test_gcp_signature():
    sig = structures.parse_signature(SIGNATURE)
    assert (sig.sig_alg, sig.hash_alg) == (TPM_ALG.RSASSA, TPM_ALG.SHA1)
    assert len(sig.sig) == 256 and sig.r is None
    assert sig.raw == SIGNATURE


@pytest.mark.parametrize("parser,data", [
    (structures.parse_public, AK_PUBLIC),
    (structures.parse_attest, QUOTE),
    (structures.parse_attest, CREATE_ATTESTATION),
    (structures.parse_signature, SIGNATURE),
])
def test_every_truncation_is_truncated_evidence(parser, data):
    for cut in range(len(data)):
        with pytest.raises(exception.TruncatedEvidence):
            parser(data[:cut])


@pytest.mark.parametrize("parser,data", [
    (structures.parse_public, AK_PUBLIC),
    (structures.parse_attest, QUOTE),
    (structures.parse_signature, SIGNATURE),
    (structures.parse_public_b, structures.marshal_tpm2b(AK_PUBLIC)),
])
def test_trailing_bytes_are_rejected(parser, data):
    with pytest.raises(exception.MalformedEvidence, match="trailing"):
        parser(data + b"\0")


def test_unknown_signature_scheme():
    with pytest.raises(exception.UnsupportedAlgorithm):
        structures.parse_signature(b"\x00\x05\x00\x0b" + b"\0" * 32)


def test_unknown_attest_type():
    with pytest.raises(exception.MalformedEvidence, match="type"):
        structures.parse_attest(QUOTE[:4] + b"\x80\x99" + QUOTE[6:])


def test_hostile_selection_count():
    bad = structures.marshal_pcr_selection_list([])[:0] + \
        (1000).to_bytes(4, "big")
    with pytest.raises(exception.MalformedEvidence, match="count"):
        structures.parse_pcr_selection_list(bad)


def test_pcr_selection_round_trip():
    sels = (PCRSelection(TPM_ALG.SHA1, frozenset({0, 7, 23})),
            PCRSelection(TPM_ALG.SHA256, frozenset(range(24))),
            PCRSelection(TPM_ALG.SHA384, frozenset()))
    data = structures.marshal_pcr_selection_list(sels)
    assert data[:4] == b"\0\0\0\x03"
    assert data[4:10] == b"\x00\x04\x03\x81\x00\x80"
    assert structures.parse_pcr_selection_list(data) == sels


def test_ecc_public_and_name():
    key = ec.generate_private_key(ec.SECP384R1()).public_key()
    raw = soft_tpm.ecc_public(key, scheme_hash=TPM_ALG.SHA384,
                              name_alg=TPM_ALG.SHA384)
    public = structures.parse_public(raw)
    assert public.curve == TPM_ECC_CURVE.NIST_P384
    assert (public.scheme, public.scheme_hash) == (TPM_ALG.ECDSA,
                                                  TPM_ALG.SHA384)
    assert public.public_key().public_numbers() == key.public_numbers()
    assert public.name() == b"\x00\x0c" + hashlib.sha384(raw).digest()


def test_ecc_point_not_on_curve():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    raw = bytearray(soft_tpm.ecc_public(key))
    raw[-1] ^= 1
    public = structures.parse_public(bytes(raw))
    with pytest.raises(exception.MalformedEvidence, match="curve"):
        public.public_key()


def test_rsa_modulus_size_must_match_key_bits():
    key = rsa.generate_private_key(65537, 2048).public_key()
    raw = bytearray(soft_tpm.rsa_public(key))
    # keyBits field sits just before the exponent and the modulus TPM2B.
    offset = len(raw) - 256 - 2 - 4 - 2
    raw[offset:offset + 2] = (3072).to_bytes(2, "big")
    with pytest.raises(exception.MalformedEvidence, match="modulus"):
        structures.parse_public(bytes(raw)).public_key()


def test_keyedhash_public_parses_but_has_no_public_key():
    raw = (b"\x00\x08\x00\x0b" + (0x00060072).to_bytes(4, "big")
           + b"\x00\x00" + b"\x00\x10" + b"\x00\x20" + b"\x55" * 32)
    public = structures.parse_public(raw)
    assert public.type == TPM_ALG.KEYEDHASH and public.unique == b"\x55" * 32
    with pytest.raises(exception.UnsupportedAlgorithm):
        public.public_key()


# --- PCR files -------------------------------------------------------------

def test_pcr_text_listing():
    listing = (b"  sha1:\n    0 : 0x" + b"00" * 20 + b"\n"
               b"  sha256:\n    0 : 0x" + b"AB" * 32 + b"\n"
               b"    16: 0x" + b"cd" * 32 + b"\n")
    assert pcrs.load_pcr_values(b"pcrs:\n" + listing) == {
        TPM_ALG.SHA1: {0: b"\0" * 20},
        TPM_ALG.SHA256: {0: b"\xab" * 32, 16: b"\xcd" * 32}}


@pytest.mark.parametrize("bad", [
    b"sha256:\n  0: 0x1234\n",          # short digest
    b"  0: 0x" + b"00" * 32 + b"\n",     # value before any bank
    b"sha256:\n  0: zz\n",
    b"sm4:\n",
    b"\xff\xfe",
    b"",
])
def test_pcr_text_listing_rejects(bad):
    with pytest.raises(exception.TrustedPoolsError):
        pcrs.load_pcr_values(bad)


def test_pcr_values_need_and_follow_the_selection():
    sel = [PCRSelection(TPM_ALG.SHA256, frozenset({16, 0})),
           PCRSelection(TPM_ALG.SHA1, frozenset({3}))]
    data = b"\x01" * 32 + b"\x02" * 32 + b"\x03" * 20
    assert pcrs.load_pcr_values(data, sel) == {
        TPM_ALG.SHA256: {0: b"\x01" * 32, 16: b"\x02" * 32},
        TPM_ALG.SHA1: {3: b"\x03" * 20}}
    with pytest.raises(exception.MalformedEvidence):
        pcrs.load_pcr_values(data + b"\0", sel)
    with pytest.raises(exception.TruncatedEvidence):
        pcrs.load_pcr_values(data[:-1], sel)


def _serialized(sel: list[tuple[int, int, bytes]],
                digests: list[bytes]) -> bytes:
    """tpm2-tools 5.4's layout (see trusted_pools.tpm.pcrs)."""
    out = len(sel).to_bytes(4, "little")
    for slot in range(16):
        alg, size, bitmap = sel[slot] if slot < len(sel) else (0, 0, b"")
        out += alg.to_bytes(2, "little") + bytes([size]) + \
            bitmap.ljust(4, b"\0") + b"\0"
    lists = [digests[i:i + 8] for i in range(0, len(digests), 8)]
    out += len(lists).to_bytes(4, "little")
    for chunk in lists:
        out += len(chunk).to_bytes(4, "little")
        for slot in range(8):
            d = chunk[slot] if slot < len(chunk) else b""
            out += len(d).to_bytes(2, "little") + d.ljust(64, b"\0")
    return out


def test_pcr_serialized_file():
    digests = [bytes([i]) * 32 for i in range(10)]
    data = _serialized([(TPM_ALG.SHA256, 3, b"\xff\x03\x00")], digests)
    values = pcrs.load_pcr_values(data)
    assert values == {TPM_ALG.SHA256: {i: bytes([i]) * 32
                                       for i in range(10)}}
    sel = [PCRSelection(TPM_ALG.SHA256, frozenset(range(10)))]
    assert pcrs.load_pcr_values(data, sel) == values
    with pytest.raises(exception.PCRSelectionMismatch):
        pcrs.load_pcr_values(
            data, [PCRSelection(TPM_ALG.SHA256, frozenset(range(11)))])
    short = _serialized([(TPM_ALG.SHA256, 3, b"\xff\x03\x00")], digests[:9])
    with pytest.raises(exception.MalformedEvidence, match="digests"):
        pcrs.load_pcr_values(short)


def test_pcr_text_listing_with_a_selection():
    sel = [PCRSelection(TPM_ALG.SHA256, frozenset({0}))]
    listing = b"sha256:\n  0 : 0x" + b"ab" * 32 + b"\n"
    assert pcrs.load_pcr_values(listing, sel) == {
        TPM_ALG.SHA256: {0: b"\xab" * 32}}
    with pytest.raises(exception.MalformedEvidence):
        pcrs.load_pcr_values(b"\x00" * 31, sel)
