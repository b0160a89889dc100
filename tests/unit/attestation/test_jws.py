"""The minimal strict JWS: RFC vectors, round trips, and every rejection."""

import base64
import hashlib
import hmac
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from hypothesis import given, settings, strategies as st

from trusted_pools import exception
from trusted_pools.attestation import jws

TYP = "test+jwt"
ED_KEY = ed25519.Ed25519PrivateKey.generate()
EC_KEY = ec.generate_private_key(ec.SECP256R1())
KEYS = {"ed": ED_KEY.public_key(), "ec": EC_KEY.public_key()}
PRIVATE = {"ed": ED_KEY, "ec": EC_KEY}


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj):
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def forge(header, payload=b'{"x":1}', key=None, signature=None):
    """A token with an arbitrary header, signed (or not) with ``key``."""
    signing_input = b64json(header) + "." + b64(payload)
    if signature is None:
        signature = jws._sign_raw(key, signing_input.encode())
    return signing_input + "." + b64(signature)


# --- external vectors --------------------------------------------------------

def test_rfc8037_a4_ed25519_vector():
    """RFC 8037 appendix A.1/A.4: Ed25519 is deterministic, so the exact
    signature must come out."""
    d = jws.b64url_decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A", "d")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(d)
    public = key.public_key().public_bytes_raw()
    assert jws.b64url_encode(public) == \
        "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    signing_input = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
    assert signing_input.split(".")[1] == jws.b64url_encode(
        b"Example of Ed25519 signing")
    signature = jws._sign_raw(key, signing_input.encode())
    assert jws.b64url_encode(signature) == (
        "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5Bh"
        "VsPt9g7sVvpAr_MuM0KAg")
    jws._verify_raw(key.public_key(), signature, signing_input.encode())
    with pytest.raises(exception.ResultSignatureInvalid):
        jws._verify_raw(key.public_key(), signature,
                        signing_input.encode() + b"x")


def test_rfc7515_a3_es256_vector():
    """RFC 7515 appendix A.3: an ES256 signature (R||S) from the RFC."""
    x = jws.b64url_decode("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "x")
    y = jws.b64url_decode("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "y")
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(x, "big"), int.from_bytes(y, "big"),
        ec.SECP256R1()).public_key()
    signing_input = (
        "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQ"
        "ogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ").encode()
    signature = jws.b64url_decode(
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQ"
        "xfKTUJqPP3-Kg6NU1Q", "signature")
    assert len(signature) == 64
    jws._verify_raw(public, signature, signing_input)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(exception.ResultSignatureInvalid):
        jws._verify_raw(public, tampered, signing_input)


# --- base64url ---------------------------------------------------------------

@pytest.mark.parametrize("data, text", [
    (b"", ""), (b"f", "Zg"), (b"fo", "Zm8"), (b"foo", "Zm9v"),
    (b"\xfb\xff", "-_8"), (b"\xff\xfe\xfd", "__79"),
])
def test_b64url_known_values(data, text):
    assert jws.b64url_encode(data) == text
    assert jws.b64url_decode(text, "t") == data


@pytest.mark.parametrize("text", [
    "Zg==", "Zg=", "Zm9v=", "+_8", "/_8", "Zm 9v", "Zm9v\n", "Z", "Zm9vY",
    "Zh",   # non-zero trailing bits: would also decode to b"f"
    "Zm9", "Zm-",  # Zm9 -> 'fo' canonical is Zm8
    "Zm9v\x00", "Zм9v",
])
def test_b64url_rejects_non_canonical(text):
    with pytest.raises(exception.ResultMalformed):
        jws.b64url_decode(text, "t")


@given(st.binary(max_size=200))
def test_b64url_round_trip_property(data):
    text = jws.b64url_encode(data)
    assert "=" not in text
    assert jws.b64url_decode(text, "t") == data


# --- round trips -------------------------------------------------------------

@pytest.mark.parametrize("kid, alg", [("ed", "EdDSA"), ("ec", "ES256")])
def test_round_trip(kid, alg):
    payload = b'{"hello":"world"}'
    token = jws.sign_compact(payload, PRIVATE[kid], kid=kid, typ=TYP)
    header = json.loads(jws.b64url_decode(token.split(".")[0], "h"))
    assert header == {"alg": alg, "kid": kid, "typ": TYP}
    verified = jws.verify_compact(token, KEYS, typ=TYP)
    assert verified == jws.VerifiedJWS(alg=alg, kid=kid, typ=TYP,
                                       payload=payload)
    assert len(jws.b64url_decode(token.split(".")[2], "s")) == 64


def test_es256_signature_is_raw_r_s_of_the_der_signature():
    token = jws.sign_compact(b"{}", EC_KEY, kid="ec", typ=TYP)
    head, body, sig = token.split(".")
    raw = jws.b64url_decode(sig, "s")
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    # cryptography verifies the DER form rebuilt from R and S.
    EC_KEY.public_key().verify(asym_utils.encode_dss_signature(r, s),
                               (head + "." + body).encode(),
                               ec.ECDSA(hashes.SHA256()))


def test_es256_small_r_s_are_left_padded():
    """R or S below 2**248 must still be 32 bytes each (exact length)."""
    small = None
    for _ in range(2000):
        raw = jws._sign_raw(EC_KEY, b"pad")
        if raw[0] == 0 or raw[32] == 0:
            small = raw
            break
    assert small is not None, "no signature with a leading zero byte found"
    assert len(small) == 64
    jws._verify_raw(EC_KEY.public_key(), small, b"pad")


# --- rejections --------------------------------------------------------------

GOOD_HEADER = {"alg": "EdDSA", "kid": "ed", "typ": TYP}


@pytest.mark.parametrize("header, error", [
    ({"alg": "none", "kid": "ed", "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "None", "kid": "ed", "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "HS256", "kid": "ed", "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "RS256", "kid": "ed", "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "ES384", "kid": "ed", "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "Ed25519", "kid": "ed", "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "eddsa", "kid": "ed", "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"kid": "ed", "typ": TYP}, exception.ResultMalformed),
    ({"alg": 1, "kid": "ed", "typ": TYP}, exception.ResultMalformed),
    (dict(GOOD_HEADER, crit=["exp"]), exception.ResultMalformed),
    (dict(GOOD_HEADER, crit=[]), exception.ResultMalformed),
    (dict(GOOD_HEADER, jwk={"kty": "OKP"}), exception.ResultMalformed),
    (dict(GOOD_HEADER, jku="https://evil/"), exception.ResultMalformed),
    (dict(GOOD_HEADER, x5u="https://evil/"), exception.ResultMalformed),
    (dict(GOOD_HEADER, x5c=["MII"]), exception.ResultMalformed),
    (dict(GOOD_HEADER, b64=False), exception.ResultMalformed),
    (dict(GOOD_HEADER, zip="DEF"), exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": "ed"}, exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": "ed", "typ": "JWT"}, exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": "ed", "typ": TYP.upper()},
     exception.ResultMalformed),
    ({"alg": "EdDSA", "typ": TYP}, exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": "", "typ": TYP}, exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": 7, "typ": TYP}, exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": "k" * 129, "typ": TYP},
     exception.ResultMalformed),
    ({"alg": "EdDSA", "kid": "other", "typ": TYP},
     exception.ResultKeyUnknown),
    # Algorithm swapping: the key type pins the algorithm.
    ({"alg": "ES256", "kid": "ed", "typ": TYP},
     exception.ResultAlgorithmRejected),
    ({"alg": "EdDSA", "kid": "ec", "typ": TYP},
     exception.ResultAlgorithmRejected),
])
def test_header_rejections(header, error):
    # Signed with the right private key for the kid, so only the header
    # rule can be what fails.
    key = PRIVATE["ec"] if header.get("alg") == "ES256" else PRIVATE["ed"]
    with pytest.raises(error):
        jws.verify_compact(forge(header, key=key), KEYS, typ=TYP)


def test_alg_swap_with_validly_signed_token_for_the_other_key():
    """An ES256 token, correctly signed by the EC key, presented under the
    Ed25519 kid must fail - and the reverse."""
    es = forge({"alg": "ES256", "kid": "ed", "typ": TYP}, key=EC_KEY)
    ed = forge({"alg": "EdDSA", "kid": "ec", "typ": TYP}, key=ED_KEY)
    for token in (es, ed):
        with pytest.raises(exception.ResultAlgorithmRejected):
            jws.verify_compact(token, KEYS, typ=TYP)


def test_hmac_with_public_key_bytes_is_rejected():
    """The classic confusion: HS256 keyed with the verifier's public key."""
    secret = KEYS["ed"].public_bytes_raw()
    signing_input = b64json({"alg": "HS256", "kid": "ed", "typ": TYP}) \
        + "." + b64(b"{}")
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(exception.ResultAlgorithmRejected):
        jws.verify_compact(signing_input + "." + b64(mac), KEYS, typ=TYP)


def test_unsigned_none_token_forms_are_rejected():
    head = b64json({"alg": "none", "kid": "ed", "typ": TYP})
    for token in (head + "." + b64(b"{}") + ".",
                  head + "." + b64(b"{}") + "." + b64(b"\x00" * 64)):
        with pytest.raises((exception.ResultMalformed,
                            exception.ResultAlgorithmRejected)):
            jws.verify_compact(token, KEYS, typ=TYP)


@pytest.mark.parametrize("kid", ["ed", "ec"])
def test_every_single_character_change_is_rejected(kid):
    token = jws.sign_compact(b'{"status":"trusted"}', PRIVATE[kid], kid=kid,
                             typ=TYP)
    for index, char in enumerate(token):
        for replacement in {"A", "B", "_", "."} - {char}:
            tampered = token[:index] + replacement + token[index + 1:]
            with pytest.raises(exception.SignedResultError):
                jws.verify_compact(tampered, KEYS, typ=TYP)


@pytest.mark.parametrize("kid", ["ed", "ec"])
def test_swapped_parts_are_rejected(kid):
    token = jws.sign_compact(b'{"a":1}', PRIVATE[kid], kid=kid, typ=TYP)
    other = jws.sign_compact(b'{"a":2}', PRIVATE[kid], kid=kid, typ=TYP)
    h1, p1, s1 = token.split(".")
    h2, p2, s2 = other.split(".")
    for parts in ((h1, p2, s1), (h1, p1, s2), (h2, p1, s1)):
        if parts in ((h1, p1, s1), (h2, p2, s2)):
            continue
        if (h1 == h2) and parts[1:] in ((p1, s1), (p2, s2)):
            continue        # identical headers: that is the original token
        with pytest.raises(exception.ResultSignatureInvalid):
            jws.verify_compact(".".join(parts), KEYS, typ=TYP)


@pytest.mark.parametrize("kid", ["ed", "ec"])
def test_signature_length_must_be_exact(kid):
    token = jws.sign_compact(b"{}", PRIVATE[kid], kid=kid, typ=TYP)
    head, body, sig = token.split(".")
    raw = jws.b64url_decode(sig, "s")
    for bad in (raw[:-1], raw + b"\x00", b"\x00" + raw, raw[:32],
                b"\x00" * 64):
        with pytest.raises(exception.ResultSignatureInvalid):
            jws.verify_compact(head + "." + body + "." + b64(bad), KEYS,
                               typ=TYP)


def test_der_encoded_es256_signature_is_rejected():
    head = b64json({"alg": "ES256", "kid": "ec", "typ": TYP})
    signing_input = head + "." + b64(b"{}")
    der = EC_KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(exception.ResultSignatureInvalid):
        jws.verify_compact(signing_input + "." + b64(der), KEYS, typ=TYP)


@pytest.mark.parametrize("header_bytes", [
    b'{"alg":"EdDSA","alg":"EdDSA","kid":"ed","typ":"test+jwt"}',
    b'{"alg":"EdDSA","kid":"ed","typ":"test+jwt","typ":"test+jwt"}',
    b'["alg"]', b'"EdDSA"', b"null", b"", b"{", b"\xff\xfe",
    b'{"alg":"EdDSA","kid":"ed","typ":"test+jwt","x":NaN}',
    b'{"alg":"EdDSA","kid":"ed","typ":"test+jwt","x":Infinity}',
    b"[" * 100000 + b"]" * 100000,
])
def test_malformed_header_json(header_bytes):
    signing_input = b64(header_bytes) + "." + b64(b"{}")
    token = signing_input + "." + b64(jws._sign_raw(ED_KEY,
                                                    signing_input.encode()))
    with pytest.raises(exception.ResultMalformed):
        jws.verify_compact(token, KEYS, typ=TYP)


@pytest.mark.parametrize("token", [
    "", ".", "..", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b.",
    "eyJ.eyJ.é", "x" * (jws.MAX_TOKEN_CHARS + 1), None, b"a.b.c", 12,
    ["a", "b", "c"],
])
def test_structurally_malformed_tokens(token):
    with pytest.raises(exception.ResultMalformed):
        jws.verify_compact(token, KEYS, typ=TYP)


def test_padded_token_parts_are_rejected():
    token = jws.sign_compact(b"{}", ED_KEY, kid="ed", typ=TYP)
    head, body, sig = token.split(".")
    padded = head + "=" * (-len(head) % 4 or 4)
    with pytest.raises(exception.ResultMalformed):
        jws.verify_compact(padded + "." + body + "." + sig, KEYS, typ=TYP)


# --- keys --------------------------------------------------------------------

def test_algorithm_for_key():
    assert jws.algorithm_for_key(ED_KEY) == "EdDSA"
    assert jws.algorithm_for_key(ED_KEY.public_key()) == "EdDSA"
    assert jws.algorithm_for_key(EC_KEY) == "ES256"
    assert jws.algorithm_for_key(EC_KEY.public_key()) == "ES256"


@pytest.mark.parametrize("key", [
    ec.generate_private_key(ec.SECP384R1()),
    ec.generate_private_key(ec.SECP256K1()),
    rsa.generate_private_key(public_exponent=65537, key_size=1024),
    b"secret", None,
])
def test_unsupported_keys_are_refused(key):
    with pytest.raises(exception.ResultAlgorithmRejected):
        jws.algorithm_for_key(key)
    with pytest.raises(exception.TrustedPoolsError):
        jws.sign_compact(b"{}", key, kid="k", typ=TYP)


def test_verify_with_an_unsupported_key_in_the_set_fails_closed():
    p384 = ec.generate_private_key(ec.SECP384R1())
    token = forge({"alg": "ES256", "kid": "p384", "typ": TYP}, key=EC_KEY)
    with pytest.raises(exception.ResultAlgorithmRejected):
        jws.verify_compact(token, {"p384": p384.public_key()}, typ=TYP)


@pytest.mark.parametrize("kwargs", [
    dict(payload="text", kid="ed", typ=TYP),
    dict(payload=b"{}", kid="", typ=TYP),
    dict(payload=b"{}", kid="ed", typ=""),
    dict(payload=b"x" * jws.MAX_TOKEN_CHARS, kid="ed", typ=TYP),
])
def test_sign_compact_misuse(kwargs):
    payload = kwargs.pop("payload")
    with pytest.raises(exception.TrustedPoolsError):
        jws.sign_compact(payload, ED_KEY, **kwargs)


# --- arbitrary input ---------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_only_gives_typed_errors(text):
    with pytest.raises(exception.SignedResultError):
        jws.verify_compact(text, KEYS, typ=TYP)


_header_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=10),
    st.sampled_from(["EdDSA", "ES256", "none", "ed", "ec", TYP]),
    st.lists(st.text(max_size=5), max_size=3))


@settings(max_examples=300, deadline=None)
@given(header=st.dictionaries(
    st.sampled_from(["alg", "kid", "typ", "crit", "jwk", "x", "b64"]),
    _header_values, max_size=5),
    payload=st.binary(max_size=64),
    signature=st.binary(max_size=80))
def test_arbitrary_headers_only_give_typed_errors(header, payload,
                                                  signature):
    token = forge(header, payload, signature=signature)
    with pytest.raises(exception.SignedResultError):
        jws.verify_compact(token, KEYS, typ=TYP)


# --- independent implementation (PyJWT), test-only ---------------------------

@pytest.fixture
def jwt():
    """PyJWT, test-only; skips just these tests when it is not installed."""
    return pytest.importorskip("jwt", reason="PyJWT is the independent JWS "
                               "implementation used for the cross-check")


@pytest.mark.parametrize("kid, alg", [("ed", "EdDSA"), ("ec", "ES256")])
def test_pyjwt_verifies_our_tokens(jwt, kid, alg):
    payload = b'{"sub":"compute-1"}'
    token = jws.sign_compact(payload, PRIVATE[kid], kid=kid, typ=TYP)
    decoded = jwt.api_jws.decode_complete(token, key=KEYS[kid],
                                          algorithms=[alg])
    assert decoded["payload"] == payload
    assert decoded["header"] == {"alg": alg, "kid": kid, "typ": TYP}


@pytest.mark.parametrize("kid, alg", [("ed", "EdDSA"), ("ec", "ES256")])
def test_we_verify_pyjwt_tokens(jwt, kid, alg):
    payload = b'{"sub":"compute-1"}'
    token = jwt.api_jws.encode(payload, PRIVATE[kid], algorithm=alg,
                               headers={"kid": kid, "typ": TYP})
    assert jws.verify_compact(token, KEYS, typ=TYP).payload == payload
    # And PyJWT's token for the other algorithm is refused under our kid.
    other = "ec" if kid == "ed" else "ed"
    swapped = jwt.api_jws.encode(payload, PRIVATE[other],
                                 algorithm="ES256" if alg == "EdDSA"
                                 else "EdDSA",
                                 headers={"kid": kid, "typ": TYP})
    with pytest.raises(exception.ResultAlgorithmRejected):
        jws.verify_compact(swapped, KEYS, typ=TYP)
