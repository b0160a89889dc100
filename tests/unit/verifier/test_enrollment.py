"""Enrollment, verifier side, without a TPM: the EK certificate chain walk,
EK/certificate matching, challenges and the store.

Certificates are made here with ``cryptography`` in the shapes TPM vendors
use (empty subject, critical SAN directory name, TCG EK EKU); the real
swtpm certificates are exercised in tests/functional/test_enrollment.py.
"""

from __future__ import annotations

import datetime
import functools
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import given, settings, strategies as st

import tests

from trusted_pools import exception
from trusted_pools.verifier import enrollment as en
from trusted_pools.tpm import structures

NOW = datetime.datetime(2026, 6, 1, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)
TCG_EK_EKU = ObjectIdentifier("2.23.133.8.1")

_RSA_KEYS: list[rsa.RSAPrivateKey] = []


def rsa_key(index: int) -> rsa.RSAPrivateKey:
    """A small cache: RSA key generation is the slow part of these tests."""
    while len(_RSA_KEYS) <= index:
        _RSA_KEYS.append(rsa.generate_private_key(65537, 2048))
    return _RSA_KEYS[index]


def make_cert(subject: str | None, issuer_name: str, public_key,
              signing_key, *, ca: bool, path_length: int | None = None,
              not_before=NOW - DAY, not_after=NOW + 365 * DAY,
              key_cert_sign: bool = True, extra_critical: bool = False
              ) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name(
                   [x509.NameAttribute(NameOID.COMMON_NAME, subject)]
                   if subject else []))
               .issuer_name(x509.Name(
                   [x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca, path_length),
                              critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False,
            key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=key_cert_sign,
            crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DirectoryName(x509.Name([
                x509.NameAttribute(ObjectIdentifier("2.23.133.2.1"),
                                   "id:00001014")]))]), critical=True)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([TCG_EK_EKU]), critical=False)
    if extra_critical:
        builder = builder.add_extension(x509.UnrecognizedExtension(
            ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
            critical=True)
    return builder.sign(signing_key, hashes.SHA256())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM)
                    for c in certs)


class PKI:
    """root -> intermediate -> EK certificate (RSA EK)."""

    def __init__(self, root_key=None, inter_key=None, ek_key=None, **ek_kw):
        self.root_key = root_key or rsa_key(0)
        self.inter_key = inter_key or rsa_key(1)
        self.ek_key = ek_key or rsa_key(2)
        self.root = make_cert("Test TPM Root", "Test TPM Root",
                              self.root_key.public_key(), self.root_key,
                              ca=True)
        self.inter = make_cert("Test TPM EK CA", "Test TPM Root",
                               self.inter_key.public_key(), self.root_key,
                               ca=True, path_length=0)
        self.ek_cert = make_cert(None, "Test TPM EK CA",
                                 self.ek_key.public_key(), self.inter_key,
                                 ca=False, **ek_kw)
        self.bundle = pem(self.root, self.inter)


@pytest.fixture(scope="module")
def pki() -> PKI:
    return PKI()


def rsa_ek_public(key: rsa.RSAPrivateKey) -> bytes:
    """TPMT_PUBLIC of an RSA-2048 EK (TCG default template L-1 shape)."""
    n = key.public_key().public_numbers().n.to_bytes(256, "big")
    attributes = 0x000300B2  # fixedTPM|fixedParent|sensitiveDataOrigin|
    #                          adminWithPolicy|restricted|decrypt
    policy = bytes.fromhex("837197674484b3f81a90cc8d46a5d724"
                           "fd52d76e06520b64f2a1da1b331469aa")
    return (struct.pack(">HHI", 0x0001, 0x000B, attributes)
            + struct.pack(">H", len(policy)) + policy
            + struct.pack(">HHH", 0x0006, 128, 0x0043)  # AES-128-CFB
            + struct.pack(">HHI", 0x0010, 2048, 0)
            + struct.pack(">H", 256) + n)


def ecc_ak_public(attributes: int = 0x00050472, null_scheme: bool = False
                  ) -> bytes:
    """TPMT_PUBLIC of an ECC P-256 AK; default attributes: fixedTPM|
    fixedParent|sensitiveDataOrigin|userWithAuth|noDA|restricted|sign."""
    point = ec.generate_private_key(ec.SECP256R1()).public_key() \
        .public_numbers()
    return (struct.pack(">HHI", 0x0023, 0x000B, attributes)
            + struct.pack(">H", 0)
            + struct.pack(">H", 0x0010)           # symmetric NULL
            + (struct.pack(">H", 0x0010) if null_scheme   # scheme NULL
               else struct.pack(">HH", 0x0018, 0x000B))  # ECDSA SHA-256
            + struct.pack(">HH", 0x0003, 0x0010)  # P-256, KDF NULL
            + struct.pack(">H", 32) + point.x.to_bytes(32, "big")
            + struct.pack(">H", 32) + point.y.to_bytes(32, "big"))


# --- chain walk --------------------------------------------------------------

def test_good_chain_returns_leaf_to_root(pki):
    chain = en.validate_ek_certificate(der(pki.ek_cert), pki.bundle, now=NOW)
    assert [c.subject for c in chain] == [pki.ek_cert.subject,
                                          pki.inter.subject,
                                          pki.root.subject]


def test_intermediate_alone_is_a_trust_anchor(pki):
    chain = en.validate_ek_certificate(der(pki.ek_cert), pem(pki.inter),
                                       now=NOW)
    assert chain[-1] == pki.inter


def test_unknown_ca_names_the_issuer(pki):
    other = PKI(root_key=rsa_key(3), inter_key=rsa_key(4))
    unrelated_root = make_cert("Other Root", "Other Root",
                               rsa_key(3).public_key(), rsa_key(3), ca=True)
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(other.ek_cert), pem(unrelated_root),
                                   now=NOW, host="h1")
    assert "CN=Test TPM EK CA" in str(info.value)
    assert info.value.kwargs["host"] == "h1"


def test_same_name_different_key_is_rejected(pki):
    """Two CAs may share a name; only a key that verifies counts."""
    impostor = PKI(root_key=rsa_key(3), inter_key=rsa_key(4))
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(impostor.ek_cert), pki.bundle,
                                   now=NOW)
    assert "none of their keys verifies" in str(info.value)
    assert info.value.kwargs["issuer"] == "CN=Test TPM EK CA"


@pytest.mark.parametrize("when", [NOW - 2 * DAY, NOW + 400 * DAY])
def test_outside_validity_is_rejected(pki, when):
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(pki.ek_cert), pki.bundle, now=when)
    assert "valid from" in str(info.value)


def test_issuer_must_be_a_ca(pki):
    not_ca = make_cert("Test TPM EK CA", "Test TPM Root",
                       pki.inter_key.public_key(), pki.root_key, ca=False)
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(pki.ek_cert), pem(pki.root, not_ca),
                                   now=NOW)
    assert "not a CA" in str(info.value)


def test_issuer_must_have_key_cert_sign(pki):
    no_sign = make_cert("Test TPM EK CA", "Test TPM Root",
                        pki.inter_key.public_key(), pki.root_key, ca=True,
                        key_cert_sign=False)
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(pki.ek_cert), pem(pki.root, no_sign),
                                   now=NOW)
    assert "keyUsage" in str(info.value)


def test_path_length_is_enforced(pki):
    # root -> inter (pathLen 0) -> sub CA -> EK: one CA too many below inter.
    sub_key = rsa_key(5)
    sub = make_cert("Sub CA", "Test TPM EK CA", sub_key.public_key(),
                    pki.inter_key, ca=True)
    ek = make_cert(None, "Sub CA", pki.ek_key.public_key(), sub_key,
                   ca=False)
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(ek), pem(pki.root, pki.inter, sub),
                                   now=NOW)
    assert "path length" in str(info.value)


def test_unknown_critical_extension_is_rejected(pki):
    odd = make_cert(None, "Test TPM EK CA", pki.ek_key.public_key(),
                    pki.inter_key, ca=False, extra_critical=True)
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(odd), pki.bundle, now=NOW)
    assert "1.3.6.1.4.1.99999.1" in str(info.value)


def test_ca_certificate_as_ek_is_rejected(pki):
    with pytest.raises(exception.EKCertificateUntrusted):
        en.validate_ek_certificate(der(pki.inter), pki.bundle, now=NOW)


@pytest.mark.parametrize("data", [b"", b"\x30\x03\x02\x01", b"not a cert"])
def test_garbage_certificate_is_malformed_evidence(pki, data):
    with pytest.raises(exception.MalformedEvidence):
        en.validate_ek_certificate(data, pki.bundle, now=NOW)


@pytest.mark.parametrize("bundle", [b"", b"-----BEGIN CERTIFICATE-----\nx"])
def test_bad_bundle_is_config_invalid(pki, bundle):
    with pytest.raises(exception.ConfigInvalid):
        en.validate_ek_certificate(der(pki.ek_cert), bundle, now=NOW)


def test_naive_now_is_refused(pki):
    with pytest.raises(TypeError):
        en.validate_ek_certificate(der(pki.ek_cert), pki.bundle,
                                   now=datetime.datetime(2026, 1, 1))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_escape_typed_errors(data):
    pki = PKI()
    with pytest.raises(exception.TrustedPoolsError):
        en.validate_ek_certificate(data, pki.bundle, now=NOW)


@functools.lru_cache(maxsize=1)
def _fixed_pki() -> "PKI":
    # One PKI for every example: a new one per example changes the
    # certificate's length, which makes the byte position draw flaky.
    return PKI()


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_flipping_a_certificate_byte_never_verifies(data):
    pki = _fixed_pki()
    raw = bytearray(der(pki.ek_cert))
    # Anywhere in the signed part or signature (skip the outer header).
    position = data.draw(st.integers(4, len(raw) - 1))
    raw[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(exception.TrustedPoolsError):
        en.validate_ek_certificate(bytes(raw), pki.bundle, now=NOW)


def test_an_unmodelled_general_name_is_a_typed_refusal():
    # Found by the property test above: this flip turns a name in the
    # subject alternative name into an x400Address, which cryptography
    # refuses with UnsupportedGeneralNameType (not a ValueError).
    pki = _fixed_pki()
    raw = bytearray(der(pki.ek_cert))
    raw[437] ^= 1
    with pytest.raises(exception.TrustedPoolsError):
        en.validate_ek_certificate(bytes(raw), pki.bundle, now=NOW)


# --- EK matches certificate --------------------------------------------------

def test_ek_public_matches_its_certificate(pki):
    ek = structures.parse_public(rsa_ek_public(pki.ek_key))
    en.ek_matches_certificate(ek, pki.ek_cert)


def test_other_ek_public_is_a_mismatch(pki):
    ek = structures.parse_public(rsa_ek_public(rsa_key(3)))
    with pytest.raises(exception.EKMismatch):
        en.ek_matches_certificate(ek, der(pki.ek_cert), host="h2")


# --- challenges --------------------------------------------------------------

def start(pki, store=None, ak=None, **kw):
    return en.start_enrollment(
        "host-a", der(pki.ek_cert), rsa_ek_public(pki.ek_key),
        ak or ecc_ak_public(), ca_bundle=pki.bundle, store=store, now=NOW,
        **kw)


def test_start_makes_a_credential_for_the_ak_name(pki):
    result = start(pki)
    ch = result.challenge
    assert ch.host_id == "host-a" and len(ch.secret) == en.SECRET_SIZE
    assert ch.expires_at == NOW + en.DEFAULT_CHALLENGE_TTL
    assert ch.ak_name == structures.parse_public(ch.ak_public).name()
    # TPM2B_DIGEST(HMAC-SHA256) || encIdentity(TPM2B of the 32-byte secret)
    assert len(result.credential_blob) == 2 + 32 + 2 + 32
    assert len(result.encrypted_secret) == 256  # RSA-2048 OAEP
    assert "secret" not in repr(ch).replace("encrypted_secret", "")


def test_two_challenges_never_share_a_secret(pki):
    assert start(pki).challenge.secret != start(pki).challenge.secret


def test_wrong_ak_attributes_rejected_before_any_challenge(pki):
    store = en.DictEnrollmentStore()
    unrestricted = ecc_ak_public(0x00040472)  # restricted bit cleared
    with pytest.raises(exception.AKAttributesRejected) as info:
        start(pki, store, ak=unrestricted)
    assert info.value.kwargs["attribute"] == "restricted"
    assert store.pending_challenges() == []


def test_ak_without_a_fixed_scheme_rejected_before_any_challenge(pki):
    """A restricted AK created with TPM_ALG_NULL as its scheme lets the
    host's agent pick the quote's hash (SHA-1 too): refused, and the
    reason tells the operator how to create the AK."""
    store = en.DictEnrollmentStore()
    with pytest.raises(exception.AKSchemeRejected) as info:
        start(pki, store, ak=ecc_ak_public(null_scheme=True))
    assert "TPM_ALG_NULL" in info.value.message
    assert "tpm2_createak" in info.value.message
    assert store.pending_challenges() == []


def test_finish_accepts_only_the_secret_before_expiry(pki):
    ch = start(pki).challenge
    reg = en.finish_enrollment(ch, ch.secret, NOW + datetime.timedelta(
        seconds=5))
    assert reg.host_id == "host-a" and reg.ak_name == ch.ak_name
    assert reg.ek_certificate_fingerprint == ch.ek_certificate_fingerprint
    with pytest.raises(exception.CredentialActivationFailed):
        en.finish_enrollment(ch, b"\0" * 32, NOW)
    with pytest.raises(exception.ChallengeExpired):
        en.finish_enrollment(ch, ch.secret, ch.expires_at)


@given(st.binary(max_size=64))
def test_any_other_secret_is_rejected(guess):
    ch = en.Challenge("c", "h", b"s" * 32, "f", b"", b"", b"n", NOW,
                      NOW + DAY)
    if guess == ch.secret:
        return
    with pytest.raises(exception.CredentialActivationFailed):
        en.finish_enrollment(ch, guess, NOW)


def test_store_challenge_is_one_time_and_superseded(pki):
    store = en.DictEnrollmentStore()
    old = start(pki, store).challenge
    new = start(pki, store).challenge
    with pytest.raises(exception.ChallengeNotFound):
        en.complete_enrollment(store, old.challenge_id, old.secret, NOW)
    reg = en.complete_enrollment(store, new.challenge_id, new.secret, NOW)
    assert store.get_registration("host-a") == reg
    with pytest.raises(exception.ChallengeNotFound):
        en.complete_enrollment(store, new.challenge_id, new.secret, NOW)
    assert store.registrations() == [reg]


def test_failed_completion_registers_nothing(pki):
    store = en.DictEnrollmentStore()
    ch = start(pki, store).challenge
    with pytest.raises(exception.CredentialActivationFailed):
        en.complete_enrollment(store, ch.challenge_id, b"x" * 32, NOW)
    assert store.registrations() == [] and store.pending_challenges() == []
    with pytest.raises(exception.HostNotFound):
        store.get_registration("host-a")


def test_second_registration_is_a_conflict(pki):
    store = en.DictEnrollmentStore()
    for _ in range(2):
        ch = start(pki, store).challenge
        if store.registrations():
            with pytest.raises(exception.HostAlreadyEnrolled):
                en.complete_enrollment(store, ch.challenge_id, ch.secret,
                                       NOW)
        else:
            en.complete_enrollment(store, ch.challenge_id, ch.secret, NOW)
    assert len(store.registrations()) == 1
    store.remove_registration("host-a")
    assert store.registrations() == []


def test_purge_expired(pki):
    store = en.DictEnrollmentStore()
    start(pki, store, ttl=datetime.timedelta(seconds=10))
    assert store.purge_expired(NOW + datetime.timedelta(seconds=5)) == 0
    assert store.purge_expired(NOW + datetime.timedelta(seconds=10)) == 1
    assert store.pending_challenges() == []


@pytest.mark.parametrize("kw", [dict(ttl=datetime.timedelta(0)),
                                dict(host="")])
def test_bad_arguments(pki, kw):
    with pytest.raises(exception.InvalidParameterValue):
        en.start_enrollment(
            kw.get("host", "h"), der(pki.ek_cert), rsa_ek_public(pki.ek_key),
            ecc_ak_public(), ca_bundle=pki.bundle, now=NOW,
            ttl=kw.get("ttl", en.DEFAULT_CHALLENGE_TTL))


def test_truncated_ak_public_is_malformed(pki):
    with pytest.raises(exception.MalformedEvidence):
        start(pki, ak=ecc_ak_public()[:-5])


# --- TCG EK profile, vendor chains, one EK per registration ----------------

# tests/data/ek, wherever this file sits under tests/
EK_DATA = __import__("pathlib").Path(tests.__file__).parent / "data" / "ek"
IN_2024 = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def _vendor(name: str) -> bytes:
    return (EK_DATA / name).read_bytes()


@pytest.mark.parametrize("leaf,anchors", [
    ("stm-ecc-ek.der", ["stm-ecc-intermediate-01.pem"]),
    ("stm-ecc-ek.der", ["stm-ecc-intermediate-01.pem",
                        "stm-ecc-root-01.pem"]),
    ("stm-rsa-ek.der", ["stm-rsa-intermediate-05.pem"]),
])
def test_vendor_ek_chains_validate(leaf, anchors):
    bundle = b"".join(_vendor(a) for a in anchors)
    chain = en.validate_ek_certificate(_vendor(leaf), bundle, now=IN_2024)
    assert "STMicroelectronics" in chain[-1].subject.rfc4514_string()
    assert len(en.ek_public_sha256(chain[0])) == 64


def test_vendor_ek_under_the_wrong_anchor_is_refused():
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(
            _vendor("stm-ecc-ek.der"), _vendor("stm-rsa-intermediate-05.pem"),
            now=IN_2024)
    assert "STM TPM ECC Intermediate CA 01" in str(info.value)


def test_expired_vendor_ek_is_refused():
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(
            _vendor("stm-ecc-ek.der"), _vendor("stm-ecc-intermediate-01.pem"),
            now=datetime.datetime(2029, 1, 1, tzinfo=datetime.timezone.utc))
    assert "valid from" in str(info.value)


def _leaf(pki: PKI, *, eku=None, usage: dict | None = None,
          tpm_san: bool = True, signing_key=None, key=None
          ) -> x509.Certificate:
    """A leaf under the test EK CA with chosen purposes (a TLS server
    certificate: eku=[serverAuth], usage={"digital_signature": True})."""
    flags = dict(digital_signature=False, content_commitment=False,
                 key_encipherment=False, data_encipherment=False,
                 key_agreement=False, key_cert_sign=False, crl_sign=False,
                 encipher_only=False, decipher_only=False)
    flags.update(usage or {})
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(
                   NameOID.COMMON_NAME, "compute-1.example.org")]))
               .issuer_name(pki.inter.subject)
               .public_key((key or pki.ek_key).public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
               .add_extension(x509.BasicConstraints(False, None), True)
               .add_extension(x509.KeyUsage(**flags), True))
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), False)
    if tpm_san:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.DirectoryName(x509.Name([
                x509.NameAttribute(ObjectIdentifier("2.23.133.2.1"),
                                   "id:00001014"),
                x509.NameAttribute(ObjectIdentifier("2.23.133.2.2"), "t"),
                x509.NameAttribute(ObjectIdentifier("2.23.133.2.3"),
                                   "id:0001")]))]), False)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("compute-1.example.org")]), False)
    return builder.sign(signing_key or pki.inter_key, hashes.SHA256())


def test_tls_server_leaf_under_a_bundle_ca_is_refused(pki):
    from cryptography.x509.oid import ExtendedKeyUsageOID
    tls = _leaf(pki, eku=[ExtendedKeyUsageOID.SERVER_AUTH],
                usage={"digital_signature": True}, tpm_san=False)
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(tls), pki.bundle, now=NOW)
    assert "not an EK certificate" in str(info.value)
    assert "keyEncipherment" in str(info.value)
    # Even with an encipherment key usage, serverAuth is not the EK purpose.
    tls = _leaf(pki, eku=[ExtendedKeyUsageOID.SERVER_AUTH,
                          ExtendedKeyUsageOID.CLIENT_AUTH],
                usage={"key_encipherment": True, "digital_signature": True})
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(tls), pki.bundle, now=NOW)
    assert "2.23.133.8.1" in str(info.value)
    assert "serverAuth, clientAuth" in str(info.value)


def test_digital_signature_only_leaf_is_refused(pki):
    leaf = _leaf(pki, eku=[TCG_EK_EKU], usage={"digital_signature": True})
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(leaf), pki.bundle, now=NOW)
    assert "neither keyEncipherment nor keyAgreement" in str(info.value)


def test_leaf_without_ek_purpose_needs_an_ek_only_anchor(pki):
    legacy = _leaf(pki, usage={"key_encipherment": True})
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(legacy), pki.bundle, now=NOW)
    assert "ek_only_anchors" in str(info.value)
    root_fp = en._fingerprint(pki.root)
    chain = en.validate_ek_certificate(der(legacy), pki.bundle, now=NOW,
                                       ek_only_anchors=[root_fp.upper()])
    assert chain[-1] == pki.root
    # ... but not without the TPM manufacturer name, even there.
    no_san = _leaf(pki, usage={"key_encipherment": True}, tpm_san=False)
    with pytest.raises(exception.EKCertificateUntrusted) as info:
        en.validate_ek_certificate(der(no_san), pki.bundle, now=NOW,
                                   ek_only_anchors=[root_fp])
    assert "2.23.133.2.1/2/3" in str(info.value)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    octets = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _rebuild(raw: bytes, old_sig: bytes, new_sig: bytes) -> bytes:
    """Outer SEQUENCE { tbs, algorithm, BIT STRING signature }."""
    def skip_header(data: bytes, at: int) -> tuple[int, int]:
        first = data[at + 1]
        if first < 0x80:
            return at + 2, first
        count = first & 0x7F
        return at + 2 + count, int.from_bytes(data[at + 2:at + 2 + count],
                                              "big")
    start, _ = skip_header(raw, 0)
    tbs_body, tbs_len = skip_header(raw, start)
    after_tbs = tbs_body + tbs_len
    alg_body, alg_len = skip_header(raw, after_tbs)
    after_alg = alg_body + alg_len
    prefix = raw[start:after_alg]
    bits = b"\x00" + new_sig
    content = prefix + b"\x03" + _der_length(len(bits)) + bits
    return b"\x30" + _der_length(len(content)) + content


def test_ecdsa_re_encoding_gives_no_second_registration():
    ca_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert("ECDSA TPM CA", "ECDSA TPM CA", ca_key.public_key(),
                     ca_key, ca=True)
    ek_key = rsa_key(2)
    leaf = make_cert(None, "ECDSA TPM CA", ek_key.public_key(), ca_key,
                     ca=False)
    from cryptography.hazmat.primitives.asymmetric.utils import (
        decode_dss_signature, encode_dss_signature)
    order = int("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2"
                "FC632551", 16)
    r, s = decode_dss_signature(leaf.signature)
    twin = _rebuild(der(leaf), leaf.signature,
                    encode_dss_signature(r, order - s))
    assert twin != der(leaf)
    bundle = pem(root)
    first = en.validate_ek_certificate(der(leaf), bundle, now=NOW)[0]
    second = en.validate_ek_certificate(twin, bundle, now=NOW)[0]
    # Both encodings verify; the identity is the key, not the bytes.
    assert en.ek_public_sha256(first) == en.ek_public_sha256(second)
    store = en.DictEnrollmentStore()
    ek_public = rsa_ek_public(ek_key)
    for host, cert in (("host-a", der(leaf)), ("host-b", twin)):
        challenge = en.start_enrollment(
            host, cert, ek_public, ecc_ak_public(), ca_bundle=bundle,
            store=store, now=NOW)
        if host == "host-a":
            en.complete_enrollment(store, challenge.challenge_id,
                                   challenge.challenge.secret, now=NOW)
        else:
            with pytest.raises(exception.EKAlreadyRegistered) as info:
                en.complete_enrollment(store, challenge.challenge_id,
                                       challenge.challenge.secret, now=NOW)
            assert "host-a" in str(info.value)
    assert [r.host_id for r in store.registrations()] == ["host-a"]
