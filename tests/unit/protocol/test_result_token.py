"""Signed results through PyJWT: the token format and every attack on it.

These were the tests of the hand-written ``attestation/jws.py``; the JWS
layer is now PyJWT, so they attack ``results.verify_signed_result`` as a
consumer (the scheduler's cache, the trait keeper) calls it. Forged tokens
are built here with the standard library and cryptography only, so nothing
of the code under test (nor PyJWT) helps make them. Every forged token
carries a complete, valid claim set and is signed with the right private
key for its ``kid`` unless the test says otherwise: only the rule under test
can be what fails.
"""

import base64
import hashlib
import hmac
import json

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from hypothesis import given, settings, strategies as st

from trusted_pools import exception
from trusted_pools.protocol import keystore
from trusted_pools.protocol import results
from trusted_pools.protocol import verdict as vmod
from trusted_pools.protocol.levels import AssuranceLevel, Outcome, Rung
from trusted_pools.protocol.verdict import canonical_json

TYP = results.RESULT_TYPE
NOW = 1_700_000_010
ISSUER = "conductor-a"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# RFC 8037 A.1 Ed25519 key and RFC 7515 A.3 P-256 key: fixed, so the
# golden tokens below stay valid.
ED_KEY = ed25519.Ed25519PrivateKey.from_private_bytes(
    unb64("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"))
EC_KEY = ec.derive_private_key(int.from_bytes(
    unb64("jpsQnnGQmL-YBIffH1136cLSG9a0wP2Jc8bpEbhC1eg"), "big"),
    ec.SECP256R1())
ED, EC = keystore.key_id(ED_KEY), keystore.key_id(EC_KEY)
KEYS = keystore.key_set([ED_KEY, EC_KEY])
PRIVATE = {ED: ED_KEY, EC: EC_KEY}


def golden_verdict():
    p, u = Outcome.PASSED, Outcome.UNRECOGNIZED
    return vmod.make_verdict(
        host="compute-\u00fc-7",
        outcomes={Rung.IDENTITY: p, Rung.PLATFORM_FIRMWARE: p,
                  Rung.OS_BOOT: p, Rung.RUNTIME: u},
        required_level=AssuranceLevel.OS_BOOT,
        policy_versions={"measured-boot": 4, "ima": 2},
        evidence_digest=vmod.evidence_digest(b"golden"),
        issued_at=1_700_000_000, validity=90,
        reasons=["IMA line 812: /usr/bin/nc \"unknown\" \u2713"])


#: Made by the hand-written jws.py this module replaced (Ed25519 is
#: deterministic, so PyJWT must reproduce it byte for byte).
GOLDEN_EDDSA = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImtQcktfcW14VldhWVZBOXd3QkY2SXVvM3ZWeno3"
    "VHhIQ1R3WEJ5Z3JTNGsiLCJ0eXAiOiJ0cnVzdGVkLXBvb2xzLXJlc3VsdCtqd3QifQ.e"
    "yJldmlkZW5jZV9kaWdlc3QiOiJkZDU2ZGU0MTM3OTUxZDljOTI2ODFiMDM0MTZlYzE1Z"
    "jg4NmI0NDgyYTI3ZTNhNTE3ZDMyZjA4NTI0NGNiZTVkIiwiZXhwIjoxNzAwMDAwMDkwL"
    "CJpYXQiOjE3MDAwMDAwMDAsImlzcyI6ImNvbmR1Y3Rvci1hIiwianRpIjoiZ29sZGVuL"
    "TEiLCJsZXZlbCI6MywicG9saWN5X3ZlcnNpb25zIjp7ImltYSI6MiwibWVhc3VyZWQtY"
    "m9vdCI6NH0sInJlYXNvbnMiOlsiSU1BIGxpbmUgODEyOiAvdXNyL2Jpbi9uYyBcInVua"
    "25vd25cIiDinJMiXSwic2VxIjo3LCJzdGF0dXMiOiJ0cnVzdGVkIiwic3ViIjoiY29tc"
    "HV0ZS3DvC03IiwidmVjdG9yIjp7ImNvbmZpZ3VyYXRpb24iOjAsImV4ZWN1dGFibGVzI"
    "jozMywiZmlsZS1zeXN0ZW0iOjMyLCJoYXJkd2FyZSI6MiwiaW5zdGFuY2UtaWRlbnRpd"
    "HkiOjIsInJ1bnRpbWUtb3BhcXVlIjowLCJzb3VyY2VkLWRhdGEiOjAsInN0b3JhZ2Utb"
    "3BhcXVlIjowfSwidmVyIjoyfQ.3GwMLAfYffIrz_sR0ikMbwcwhzSIAiWEle44jPQHag"
    "t4wNrT7grB0KLjsWlbVVkPfmcyrPfI0OeUuDZWZ9dxBw")
#: Made by jws.py with the RFC 7515 P-256 key (ECDSA is randomized: it must
#: still verify).
GOLDEN_ES256 = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6Im1XYWVIWkZsc3dDdU5WLUlodHNiMDFwUEpSVmZQ"
    "VGZUNlUyZS1Ebk5JSEEiLCJ0eXAiOiJ0cnVzdGVkLXBvb2xzLXJlc3VsdCtqd3QifQ.e"
    "yJldmlkZW5jZV9kaWdlc3QiOiJkZDU2ZGU0MTM3OTUxZDljOTI2ODFiMDM0MTZlYzE1Z"
    "jg4NmI0NDgyYTI3ZTNhNTE3ZDMyZjA4NTI0NGNiZTVkIiwiZXhwIjoxNzAwMDAwMDkwL"
    "CJpYXQiOjE3MDAwMDAwMDAsImlzcyI6ImNvbmR1Y3Rvci1hIiwianRpIjoiZ29sZGVuL"
    "TEiLCJsZXZlbCI6MywicG9saWN5X3ZlcnNpb25zIjp7ImltYSI6MiwibWVhc3VyZWQtY"
    "m9vdCI6NH0sInJlYXNvbnMiOlsiSU1BIGxpbmUgODEyOiAvdXNyL2Jpbi9uYyBcInVua"
    "25vd25cIiDinJMiXSwic2VxIjo3LCJzdGF0dXMiOiJ0cnVzdGVkIiwic3ViIjoiY29tc"
    "HV0ZS3DvC03IiwidmVjdG9yIjp7ImNvbmZpZ3VyYXRpb24iOjAsImV4ZWN1dGFibGVzI"
    "jozMywiZmlsZS1zeXN0ZW0iOjMyLCJoYXJkd2FyZSI6MiwiaW5zdGFuY2UtaWRlbnRpd"
    "HkiOjIsInJ1bnRpbWUtb3BhcXVlIjowLCJzb3VyY2VkLWRhdGEiOjAsInN0b3JhZ2Utb"
    "3BhcXVlIjowfSwidmVyIjoyfQ.DlyVbbFG5YJ1HnrkjAekuNyemKqJNVclhrmYPCIeNT"
    "YQSwyZqV8w9S5vbKxRALbNPEw77Tr4YrPKQmAJPjAgAQ")

CLAIMS = json.loads(unb64(GOLDEN_EDDSA.split(".")[1]))
PAYLOAD = canonical_json(CLAIMS)


def raw_sign(key, data):
    """Independent JWS signature: Ed25519, or ES256 as 64-byte R||S."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    r, s = asym_utils.decode_dss_signature(
        key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def forge(header, payload=PAYLOAD, key=None, signature=None,
          header_bytes=None):
    """A token with any header, signed (or not) with ``key``."""
    if header_bytes is None:
        header_bytes = json.dumps(header, sort_keys=True,
                                  separators=(",", ":")).encode()
    signing_input = b64(header_bytes) + "." + b64(payload)
    if signature is None:
        signature = raw_sign(key, signing_input.encode())
    return signing_input + "." + b64(signature)


def verify(token, keys=KEYS):
    return results.verify_signed_result(token, keys, NOW)


# --- format: unchanged by the move to PyJWT ----------------------------------

def test_pyjwt_signs_the_old_tokens_byte_for_byte():
    token = results.sign_verdict(golden_verdict(), ED_KEY, ISSUER,
                                 sequence=7, jti="golden-1")
    assert token == GOLDEN_EDDSA


@pytest.mark.parametrize("token, alg, kid", [
    (GOLDEN_EDDSA, "EdDSA", ED), (GOLDEN_ES256, "ES256", EC)])
def test_old_tokens_verify(token, alg, kid):
    signed = verify(token)
    assert (signed.alg, signed.kid, signed.sequence) == (alg, kid, 7)
    assert signed.verdict == golden_verdict()
    assert json.loads(unb64(token.split(".")[0])) == {
        "alg": alg, "kid": kid, "typ": TYP}


def test_es256_signature_is_raw_r_s():
    token = results.sign_verdict(golden_verdict(), EC_KEY, ISSUER,
                                 sequence=7)
    head, body, sig = token.split(".")
    raw = unb64(sig)
    assert len(raw) == 64
    EC_KEY.public_key().verify(
        asym_utils.encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                        int.from_bytes(raw[32:], "big")),
        (head + "." + body).encode(), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("kid, alg", [(ED, "EdDSA"), (EC, "ES256")])
def test_a_token_plain_pyjwt_makes_verifies(kid, alg):
    """Interoperability: any JWS library making this header and payload."""
    token = jwt.api_jws.encode(PAYLOAD, PRIVATE[kid], algorithm=alg,
                               headers={"kid": kid, "typ": TYP})
    assert verify(token).verdict == golden_verdict()


# --- the header --------------------------------------------------------------

GOOD = {"alg": "EdDSA", "kid": ED, "typ": TYP}


@pytest.mark.parametrize("header, error", [
    ({"alg": "none", "kid": ED, "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "None", "kid": ED, "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "HS256", "kid": ED, "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "RS256", "kid": ED, "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "PS256", "kid": ED, "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "ES384", "kid": ED, "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "Ed25519", "kid": ED, "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "eddsa", "kid": ED, "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"kid": ED, "typ": TYP}, exception.ResultMalformed),
    ({"alg": 1, "kid": ED, "typ": TYP}, exception.ResultMalformed),
    (dict(GOOD, crit=["exp"]), exception.ResultMalformed),
    (dict(GOOD, crit=[]), exception.ResultMalformed),
    # RFC 7797 unencoded payload: PyJWT implements it, we refuse it.
    (dict(GOOD, b64=False, crit=["b64"]), exception.ResultMalformed),
    (dict(GOOD, b64=False), exception.ResultMalformed),
    # Headers that carry keys or point at them are never honoured.
    (dict(GOOD, jwk={"kty": "OKP"}), exception.ResultMalformed),
    (dict(GOOD, jku="https://evil/"), exception.ResultMalformed),
    (dict(GOOD, x5u="https://evil/"), exception.ResultMalformed),
    (dict(GOOD, x5c=["MII"]), exception.ResultMalformed),
    (dict(GOOD, zip="DEF"), exception.ResultMalformed),
    (dict(GOOD, cty="JWT"), exception.ResultMalformed),
    # typ: a JWT of another kind is not a verdict.
    ({"alg": "EdDSA", "kid": ED}, exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": ED, "typ": "JWT"}, exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": ED, "typ": "tp-agent-request+jwt"},
     exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": ED, "typ": TYP.upper()},
     exception.ResultMalformed),
    # kid
    ({"alg": "EdDSA", "typ": TYP}, exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": "", "typ": TYP}, exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": 7, "typ": TYP}, exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": "k" * 129, "typ": TYP},
     exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": "other", "typ": TYP},
     exception.ResultKeyUnknown),
    # The key type pins the algorithm, whatever the header says.
    ({"alg": "ES256", "kid": ED, "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "EdDSA", "kid": EC, "typ": TYP},
     exception.ResultAlgorithmRejected),
])
def test_header_rejections(header, error):
    key = EC_KEY if header.get("alg") == "ES256" else ED_KEY
    with pytest.raises(error):
        verify(forge(header, key=key))


def test_wrong_kid_signed_by_another_trusted_key_fails():
    """Same algorithm, another trusted key's kid: the signature decides."""
    other = keystore.generate_signing_key("EdDSA")
    keys = keystore.key_set([ED_KEY, other])
    token = forge({"alg": "EdDSA", "kid": keystore.key_id(other),
                   "typ": TYP}, key=ED_KEY)
    with pytest.raises(exception.ResultSignatureInvalid):
        verify(token, keys)


def test_alg_swap_with_a_validly_signed_token_of_the_other_key():
    """An ES256 token correctly signed by the EC key, presented under the
    Ed25519 kid, fails - and the reverse."""
    for token in (forge({"alg": "ES256", "kid": ED, "typ": TYP},
                        key=EC_KEY),
                  forge({"alg": "EdDSA", "kid": EC, "typ": TYP},
                        key=ED_KEY)):
        with pytest.raises(exception.ResultAlgorithmRejected):
            verify(token)


@pytest.mark.parametrize("kid", [ED, EC])
@pytest.mark.parametrize("secret_form", ["raw", "pem", "der"])
def test_hs256_keyed_with_the_public_key_is_rejected(kid, secret_form):
    """The classic confusion: HMAC keyed with the verifier's public key."""
    public = KEYS[kid]
    secret = {
        "raw": lambda: (public.public_bytes_raw() if kid == ED else
                        public.public_bytes(
                            serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)),
        "pem": lambda: keystore.public_key_pem(public).encode(),
        "der": lambda: public.public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo),
    }[secret_form]()
    header = {"alg": "HS256", "kid": kid, "typ": TYP}
    signing_input = forge(header, signature=b"x").rsplit(".", 1)[0]
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(exception.ResultAlgorithmRejected):
        verify(signing_input + "." + b64(mac))


def test_unsigned_none_tokens_are_rejected():
    head = b64(json.dumps({"alg": "none", "kid": ED, "typ": TYP}).encode())
    for token in (head + "." + b64(PAYLOAD) + ".",
                  head + "." + b64(PAYLOAD) + "." + b64(b"\x00" * 64)):
        with pytest.raises((exception.ResultMalformed,
                            exception.ResultAlgorithmRejected)):
            verify(token)


def test_same_header_in_other_bytes_is_rejected():
    """The signature covers the header's bytes, not its meaning."""
    token = results.sign_verdict(golden_verdict(), ED_KEY, ISSUER,
                                 sequence=7)
    _, body, sig = token.split(".")
    head = b64(json.dumps({"typ": TYP, "kid": ED, "alg": "EdDSA"}).encode())
    with pytest.raises(exception.ResultSignatureInvalid):
        verify(head + "." + body + "." + sig)


@pytest.mark.parametrize("header_bytes", [
    # Signed with the right key, still refused: one header, one spelling.
    ('{"alg":"EdDSA","alg":"EdDSA","kid":"%s","typ":"%s"}' % (ED, TYP)),
    ('{"alg":"ES256","alg":"EdDSA","kid":"%s","typ":"%s"}' % (ED, TYP)),
    ('{"alg":"EdDSA","kid":"%s","typ":"%s","typ":"%s"}' % (ED, TYP, TYP)),
    ('{"typ":"%s","kid":"%s","alg":"EdDSA"}' % (TYP, ED)),
    ('{"alg": "EdDSA", "kid": "%s", "typ": "%s"}' % (ED, TYP)),
])
def test_non_canonical_header_signed_by_the_key_is_rejected(header_bytes):
    with pytest.raises(exception.ResultMalformed):
        verify(forge(None, key=ED_KEY, header_bytes=header_bytes.encode()))


@pytest.mark.parametrize("header_bytes", [
    b'["alg"]', b'"EdDSA"', b"null", b"", b"{", b"\xff\xfe",
    ('{"alg":"EdDSA","kid":"%s","typ":"%s","x":NaN}'
     % (ED, TYP)).encode(),
    b"[" * 100000 + b"]" * 100000,
])
def test_malformed_header_json(header_bytes):
    with pytest.raises(exception.ResultMalformed):
        verify(forge(None, key=ED_KEY, header_bytes=header_bytes))


# --- payload and signature ---------------------------------------------------

@pytest.mark.parametrize("kid", [ED, EC])
def test_tampered_payload_is_rejected(kid):
    claims = dict(CLAIMS, status="trusted", reasons=[], level=4,
                  vector=dict(CLAIMS["vector"], executables=2))
    token = forge({"alg": keystore.algorithm_for_key(PRIVATE[kid]),
                   "kid": kid, "typ": TYP}, key=PRIVATE[kid])
    head, _, sig = token.split(".")
    with pytest.raises(exception.ResultSignatureInvalid):
        verify(head + "." + b64(canonical_json(claims)) + "." + sig)


@pytest.mark.parametrize("kid", [ED, EC])
def test_swapped_parts_are_rejected(kid):
    alg = keystore.algorithm_for_key(PRIVATE[kid])
    h1, p1, s1 = forge({"alg": alg, "kid": kid, "typ": TYP},
                       key=PRIVATE[kid]).split(".")
    other = canonical_json(dict(CLAIMS, seq=8))
    h2, p2, s2 = forge({"alg": alg, "kid": kid, "typ": TYP}, payload=other,
                       key=PRIVATE[kid]).split(".")
    assert h1 == h2
    for parts in ((h1, p2, s1), (h1, p1, s2)):
        with pytest.raises(exception.ResultSignatureInvalid):
            verify(".".join(parts))


@pytest.mark.parametrize("kid", [ED, EC])
def test_signature_length_must_be_exact(kid):
    alg = keystore.algorithm_for_key(PRIVATE[kid])
    head, body, sig = forge({"alg": alg, "kid": kid, "typ": TYP},
                            key=PRIVATE[kid]).split(".")
    raw = unb64(sig)
    for bad in (raw[:-1], raw + b"\x00", b"\x00" + raw, raw[:32],
                b"\x00" * 64):
        with pytest.raises(exception.ResultSignatureInvalid):
            verify(head + "." + body + "." + b64(bad))


def test_der_encoded_es256_signature_is_rejected():
    signing_input = forge({"alg": "ES256", "kid": EC, "typ": TYP},
                          signature=b"x").rsplit(".", 1)[0]
    der = EC_KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(exception.ResultSignatureInvalid):
        verify(signing_input + "." + b64(der))


def test_non_canonical_signature_spelling_is_rejected():
    """Stray bits in the last base64url character: same bytes, another
    spelling; a token has one spelling."""
    head, body, sig = GOLDEN_EDDSA.split(".")
    alphabet = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                "0123456789-_")
    last = alphabet.index(sig[-1])
    variant = sig[:-1] + alphabet[last | 1 if not last & 1 else last & ~1]
    assert variant != sig
    with pytest.raises(exception.SignedResultError):
        verify(head + "." + body + "." + variant)


@pytest.mark.parametrize("token", [
    "", ".", "..", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b.",
    "eyJ.eyJ.\u00e9", "x" * (results.MAX_TOKEN_CHARS + 1), None, b"a.b.c",
    12, ["a", "b", "c"], "a=.b.c", "a.b.c=", "a+b.c.d", "a/b.c.d",
    " " + GOLDEN_EDDSA, GOLDEN_EDDSA + "\n",
])
def test_structurally_malformed_tokens(token):
    with pytest.raises(exception.ResultMalformed):
        verify(token)


def test_padded_token_parts_are_rejected():
    head, body, sig = GOLDEN_EDDSA.split(".")
    for token in (head + "=" * (-len(head) % 4 or 4) + "." + body + "." + sig,
                  head + "." + body + "." + sig + "=" * (-len(sig) % 4)):
        with pytest.raises(exception.ResultMalformed):
            verify(token)


# --- keys --------------------------------------------------------------------

def test_algorithm_for_key():
    assert keystore.algorithm_for_key(ED_KEY) == "EdDSA"
    assert keystore.algorithm_for_key(ED_KEY.public_key()) == "EdDSA"
    assert keystore.algorithm_for_key(EC_KEY) == "ES256"
    assert keystore.algorithm_for_key(EC_KEY.public_key()) == "ES256"


@pytest.mark.parametrize("key", [
    ec.generate_private_key(ec.SECP384R1()),
    ec.generate_private_key(ec.SECP256K1()),
    rsa.generate_private_key(public_exponent=65537, key_size=1024),
    b"secret", None,
])
def test_keys_of_another_type_never_sign(key):
    with pytest.raises(exception.ResultAlgorithmRejected):
        keystore.algorithm_for_key(key)
    with pytest.raises(exception.TrustedPoolsError):
        results.sign_verdict(golden_verdict(), key, ISSUER, sequence=7)


@pytest.mark.parametrize("key", [
    ec.generate_private_key(ec.SECP384R1()).public_key(),
    rsa.generate_private_key(public_exponent=65537,
                             key_size=1024).public_key(),
    b"shared-secret", "-----BEGIN PUBLIC KEY-----",
])
def test_a_key_of_another_type_in_the_set_fails_closed(key):
    """A misconfigured key set never lets the header choose: P-384 under
    ES256, an RSA key under RS256, bytes under HS256."""
    keys = {"odd": key}
    for alg, signer in (("ES256", EC_KEY), ("EdDSA", ED_KEY)):
        token = forge({"alg": alg, "kid": "odd", "typ": TYP}, key=signer)
        with pytest.raises(exception.ResultAlgorithmRejected):
            verify(token, keys)


def test_private_key_in_the_set_is_refused():
    token = forge(GOOD, key=ED_KEY)
    with pytest.raises(exception.InvalidParameterValue):
        verify(token, {ED: ED_KEY})


# --- arbitrary input ---------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_only_gives_typed_errors(text):
    with pytest.raises(exception.SignedResultError):
        verify(text)


_header_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=10),
    st.sampled_from(["EdDSA", "ES256", "none", "HS256", ED, EC, TYP]),
    st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=300, deadline=None)
@given(header=st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "crit", "jwk", "x", "b64"]),
    _header_values, max_size=5),
    payload=st.binary(max_size=64),
    signature=st.binary(max_size=80))
def test_arbitrary_headers_only_give_typed_errors(header, payload,
                                                  signature):
    with pytest.raises(exception.SignedResultError):
        verify(forge(header, payload, signature=signature))
