"""The conductor signing key: files, modes, atomic creation, public forms."""

import base64
import hashlib
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from trusted_pools import exception
from trusted_pools.protocol import keystore

# RFC 8037 appendix A.1 (key) and A.3 (its RFC 7638 thumbprint).
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def b64url_decode(text):
    """Independent of the code under test: the standard library's decoder."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def rfc8037_key():
    return ed25519.Ed25519PrivateKey.from_private_bytes(
        b64url_decode(RFC8037_D))


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def write_pem(path, key, mode=0o600, encryption=None):
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption())
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


# --- thumbprints and JWKs ----------------------------------------------------

def test_rfc8037_thumbprint_vector():
    key = rfc8037_key()
    assert keystore.jwk_thumbprint(key) == RFC8037_THUMBPRINT
    assert keystore.jwk_thumbprint(key.public_key()) == RFC8037_THUMBPRINT
    assert keystore.key_id(key) == RFC8037_THUMBPRINT
    assert keystore.public_jwk(key) == {
        "kty": "OKP", "crv": "Ed25519", "x": RFC8037_X,
        "kid": RFC8037_THUMBPRINT, "alg": "EdDSA", "use": "sig"}


def test_ec_thumbprint_uses_required_members_in_order():
    """RFC 7638 3.2: {"crv","kty","x","y"} with fixed-length coordinates."""
    key = ec.derive_private_key(1, ec.SECP256R1())      # the generator G
    numbers = key.public_key().public_numbers()
    x = keystore.b64url_encode(numbers.x.to_bytes(32, "big"))
    y = keystore.b64url_encode(numbers.y.to_bytes(32, "big"))
    assert x == "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY"
    text = '{"crv":"P-256","kty":"EC","x":"%s","y":"%s"}' % (x, y)
    expected = keystore.b64url_encode(hashlib.sha256(text.encode()).digest())
    assert keystore.jwk_thumbprint(key) == expected
    jwk = keystore.public_jwk(key)
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")


def test_ec_coordinates_keep_leading_zeros():
    # Deterministic private values: about 1 in 128 gives a coordinate with
    # a leading zero byte, so this finds one every run (a random search
    # failed now and then).
    for value in range(1, 5000):
        key = ec.derive_private_key(value, ec.SECP256R1())
        numbers = key.public_key().public_numbers()
        if numbers.x < 2 ** 248 or numbers.y < 2 ** 248:
            break
    else:
        pytest.fail("no key with a short coordinate among 5000")
    jwk = keystore.public_jwk(key)
    assert len(b64url_decode(jwk["x"])) == 32
    assert len(b64url_decode(jwk["y"])) == 32
    assert keystore.public_key_from_jwk(jwk).public_numbers() == numbers


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_jwk_and_pem_round_trips(algorithm):
    key = keystore.generate_signing_key(algorithm)
    jwk = keystore.public_jwk(key)
    assert json.loads(json.dumps(jwk)) == jwk
    from_jwk = keystore.public_key_from_jwk(jwk)
    pem = keystore.public_key_pem(key)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    from_pem = keystore.public_key_from_pem(pem)
    for public in (from_jwk, from_pem):
        assert keystore.jwk_thumbprint(public) == jwk["kid"]
    keys = keystore.key_set([key, from_pem])
    assert list(keys) == [jwk["kid"]]
    assert keys[jwk["kid"]] == from_jwk


def _ed_jwk(**changes):
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}
    jwk.update(changes)
    return {k: v for k, v in jwk.items() if v is not None}


@pytest.mark.parametrize("jwk", [
    _ed_jwk(d=RFC8037_D),
    _ed_jwk(kid="not-the-thumbprint"),
    _ed_jwk(alg="ES256"),
    _ed_jwk(x=RFC8037_X + "A"),
    _ed_jwk(x=RFC8037_X[:-2]),
    _ed_jwk(x=None),
    _ed_jwk(x=42),
    _ed_jwk(crv="Ed448"),
    _ed_jwk(kty="RSA"),
    {"kty": "EC", "crv": "P-256", "x": "AQ" + "A" * 41,
     "y": "AQ" + "A" * 41},                      # not on the curve
    {"kty": "EC", "crv": "P-384", "x": RFC8037_X, "y": RFC8037_X},
    [], "jwk", None,
])
def test_public_key_from_jwk_rejects(jwk):
    with pytest.raises(exception.InvalidParameterValue):
        keystore.public_key_from_jwk(jwk)


def test_public_key_from_jwk_accepts_matching_kid_and_alg():
    key = keystore.public_key_from_jwk(
        _ed_jwk(kid=RFC8037_THUMBPRINT, alg="EdDSA", use="sig"))
    assert keystore.jwk_thumbprint(key) == RFC8037_THUMBPRINT


@pytest.mark.parametrize("pem", [
    "", "not a pem", b"\xff", None,
    rsa.generate_private_key(public_exponent=65537, key_size=1024)
    .public_key().public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat
                               .SubjectPublicKeyInfo),
    ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo),
])
def test_public_key_from_pem_rejects(pem):
    with pytest.raises(exception.InvalidParameterValue):
        keystore.public_key_from_pem(pem)


def test_generate_rejects_unknown_algorithm():
    for algorithm in ("RS256", "none", "", None):
        with pytest.raises(exception.InvalidParameterValue):
            keystore.generate_signing_key(algorithm)


# --- files -------------------------------------------------------------------

@pytest.mark.parametrize("algorithm, key_class", [
    ("EdDSA", ed25519.Ed25519PrivateKey),
    ("ES256", ec.EllipticCurvePrivateKey),
])
def test_first_start_creates_key_0600_then_reloads_it(tmp_path, algorithm,
                                                      key_class):
    path = tmp_path / "signing.pem"
    created = keystore.load_or_create_signing_key(path, algorithm)
    assert isinstance(created, key_class)
    assert mode_of(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = keystore.load_or_create_signing_key(path, algorithm)
    assert keystore.jwk_thumbprint(again) == keystore.jwk_thumbprint(created)
    # No temporary file is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing.pem"]


def test_created_key_is_0600_even_with_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        keystore.load_or_create_signing_key(tmp_path / "k.pem")
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "k.pem") == 0o600


def test_existing_key_keeps_its_type(tmp_path):
    path = write_pem(tmp_path / "k.pem", ec.generate_private_key(
        ec.SECP256R1()))
    key = keystore.load_or_create_signing_key(path, "EdDSA")
    assert isinstance(key, ec.EllipticCurvePrivateKey)


def test_losing_the_creation_race_keeps_the_winners_key(tmp_path):
    path = tmp_path / "k.pem"
    winner = keystore.generate_signing_key()
    write_pem(path, winner)
    before = path.read_bytes()
    assert keystore._publish_new_key(str(path),
                                     keystore.generate_signing_key()) is False
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]


def test_race_inside_load_or_create_returns_the_winners_key(tmp_path,
                                                            monkeypatch):
    """Another conductor publishes between our existence check and link."""
    path = tmp_path / "k.pem"
    winner = keystore.generate_signing_key()
    real_publish = keystore._publish_new_key

    def publish_after_winner(target, key):
        write_pem(path, winner)
        return real_publish(target, key)

    monkeypatch.setattr(keystore, "_publish_new_key", publish_after_winner)
    got = keystore.load_or_create_signing_key(path)
    assert keystore.jwk_thumbprint(got) == keystore.jwk_thumbprint(winner)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666])
def test_group_or_world_readable_key_is_refused(tmp_path, mode):
    path = write_pem(tmp_path / "k.pem", keystore.generate_signing_key(),
                     mode=mode)
    with pytest.raises(exception.ConfigInvalid, match="chmod 600"):
        keystore.load_signing_key(path)
    with pytest.raises(exception.ConfigInvalid):
        keystore.load_or_create_signing_key(path)


@pytest.mark.parametrize("content", [
    b"", b"garbage", b"-----BEGIN PRIVATE KEY-----\nAAAA\n"
    b"-----END PRIVATE KEY-----\n", b"\x00" * 100,
])
def test_garbage_key_file_is_refused(tmp_path, content):
    path = tmp_path / "k.pem"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(exception.ConfigInvalid):
        keystore.load_signing_key(path)


@pytest.mark.parametrize("key", [
    rsa.generate_private_key(public_exponent=65537, key_size=1024),
    ec.generate_private_key(ec.SECP384R1()),
])
def test_unsupported_key_type_file_is_refused(tmp_path, key):
    path = write_pem(tmp_path / "k.pem", key)
    with pytest.raises(exception.ConfigInvalid):
        keystore.load_signing_key(path)


def test_encrypted_key_file_is_refused(tmp_path):
    path = write_pem(tmp_path / "k.pem", keystore.generate_signing_key(),
                     encryption=serialization.BestAvailableEncryption(b"pw"))
    with pytest.raises(exception.ConfigInvalid):
        keystore.load_signing_key(path)


def test_oversized_key_file_is_refused(tmp_path):
    path = tmp_path / "k.pem"
    path.write_bytes(b"A" * (keystore.MAX_KEY_FILE_BYTES + 1))
    os.chmod(path, 0o600)
    with pytest.raises(exception.ConfigInvalid, match="larger"):
        keystore.load_signing_key(path)


def test_missing_or_odd_paths_are_config_errors(tmp_path):
    with pytest.raises(exception.ConfigInvalid):
        keystore.load_signing_key(tmp_path / "absent.pem")
    with pytest.raises(exception.ConfigInvalid):
        keystore.load_or_create_signing_key(tmp_path / "no" / "dir" / "k")
    directory = tmp_path / "d"
    directory.mkdir(mode=0o700)
    with pytest.raises(exception.ConfigInvalid):
        keystore.load_signing_key(directory)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(exception.ConfigInvalid, match="regular"):
        keystore.load_signing_key(fifo)
