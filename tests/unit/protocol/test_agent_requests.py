"""Signed conductor -> agent requests: every forgery, mismatch and replay a
host on the bus could try is refused with AgentRequestRefused."""

from __future__ import annotations

import json

import jwt
import pytest

from trusted_pools import exception
from trusted_pools.protocol import agent_requests as ar
from trusted_pools.protocol import keystore

HOST = "compute-1"
NOW = 1_700_000_000.0
EPOCH_ARGS = {"conductor": "c-a", "epoch_id": "1-ab", "epoch_value": "ZQ==",
              "banks": ["sha256"], "members": ["c-a"], "spread": 0.0}
EVIDENCE_ARGS = {"nonce": "bm9uY2U=", "banks": ["sha256"], "ima_start": 0,
                 "event_log": True, "conductor": "c-a"}


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key():
    return keystore.generate_signing_key()


@pytest.fixture
def clock():
    return Clock()


def _signer(key, clock, issuer="c-a", lifetime=60):
    return ar.RequestSigner(key, issuer, lifetime=lifetime, clock=clock)


def _verifier(key, clock, host=HOST):
    return ar.RequestVerifier([keystore.public_key_of(key)], host, leeway=5,
                              clock=clock)


def _refused(verifier, method, args, token, reason):
    with pytest.raises(exception.AgentRequestRefused) as info:
        verifier.verify(method, args, token)
    assert reason in str(info.value), str(info.value)
    assert info.value.kwargs["method"] == method


def test_a_genuine_request_verifies(key, clock):
    token = _signer(key, clock).sign("get_evidence", HOST, EVIDENCE_ARGS)
    request = _verifier(key, clock).verify("get_evidence",
                                           dict(EVIDENCE_ARGS), token)
    assert (request.method, request.host, request.issuer) == (
        "get_evidence", HOST, "c-a")
    assert request.kid == keystore.key_id(key)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["typ"] == ar.TOKEN_TYPE


def test_es256_conductor_keys_work_too(clock):
    key = keystore.generate_signing_key("ES256")
    token = _signer(key, clock).sign("get_identity", HOST, {})
    assert _verifier(key, clock).verify("get_identity", {}, token)


def test_no_token_or_garbage_is_refused(key, clock):
    verifier = _verifier(key, clock)
    _refused(verifier, "get_identity", {}, None, "no conductor signature")
    _refused(verifier, "get_identity", {}, "", "no conductor signature")
    _refused(verifier, "get_identity", {}, {"a": 1}, "no conductor")
    _refused(verifier, "get_identity", {}, "a.b.c", "malformed")
    _refused(verifier, "get_identity", {}, "x" * 5000, "too long")


def test_wrong_key_is_refused(key, clock):
    attacker = keystore.generate_signing_key()
    token = _signer(attacker, clock).sign("get_identity", HOST, {})
    _refused(_verifier(key, clock), "get_identity", {}, token,
             "does not pin")


def test_pinned_kid_with_another_keys_signature_is_refused(key, clock):
    attacker = keystore.generate_signing_key()
    claims = jwt.decode(_signer(attacker, clock).sign("get_identity", HOST,
                                                      {}),
                        options={"verify_signature": False})
    token = jwt.encode(claims, attacker, algorithm="EdDSA", headers={
        "kid": keystore.key_id(key), "typ": ar.TOKEN_TYPE})
    _refused(_verifier(key, clock), "get_identity", {}, token,
             "signature does not verify")


def test_unsigned_alg_none_is_refused(key, clock):
    claims = jwt.decode(_signer(key, clock).sign("get_identity", HOST, {}),
                        options={"verify_signature": False})
    token = jwt.encode(claims, None, algorithm="none", headers={
        "kid": keystore.key_id(key), "typ": ar.TOKEN_TYPE})
    _refused(_verifier(key, clock), "get_identity", {}, token,
             "invalid request token")


def test_another_token_of_the_same_key_does_not_pass_as_a_request(
        key, clock):
    # Same key, same claims, but typed as something else (a signed result
    # is "typ": "JWT" from this key): not a request.
    claims = jwt.decode(_signer(key, clock).sign("get_identity", HOST, {}),
                        options={"verify_signature": False})
    token = jwt.encode(claims, key, algorithm="EdDSA",
                       headers={"kid": keystore.key_id(key)})
    _refused(_verifier(key, clock), "get_identity", {}, token,
             "not an agent request")


def test_other_host_is_refused(key, clock):
    token = _signer(key, clock).sign("get_identity", "compute-2", {})
    _refused(_verifier(key, clock), "get_identity", {}, token,
             "issued for host 'compute-2'")


def test_other_method_is_refused(key, clock):
    token = _signer(key, clock).sign("get_identity", HOST, {})
    _refused(_verifier(key, clock), "activate_credential",
             {"credential_blob": "", "encrypted_secret": ""}, token,
             "issued for 'get_identity'")


@pytest.mark.parametrize("change", [
    {"nonce": "YXR0YWNrZXI="}, {"conductor": "c-evil"}, {"ima_start": 1},
    {"event_log": False}, {"extra": 1}])
def test_changed_args_are_refused(key, clock, change):
    token = _signer(key, clock).sign("get_evidence", HOST, EVIDENCE_ARGS)
    _refused(_verifier(key, clock), "get_evidence",
             dict(EVIDENCE_ARGS, **change), token, "arguments differ")


def test_dropped_arg_is_refused(key, clock):
    token = _signer(key, clock).sign("get_evidence", HOST, EVIDENCE_ARGS)
    args = dict(EVIDENCE_ARGS)
    del args["conductor"]
    _refused(_verifier(key, clock), "get_evidence", args, token,
             "arguments differ")


def test_expired_is_refused(key, clock):
    token = _signer(key, clock, lifetime=60).sign("get_identity", HOST, {})
    verifier = _verifier(key, clock)
    clock.now = NOW + 60 + 5 + 1          # past exp + leeway
    _refused(verifier, "get_identity", {}, token, "expired")


def test_within_the_leeway_is_accepted(key, clock):
    token = _signer(key, clock, lifetime=60).sign("get_identity", HOST, {})
    clock.now = NOW + 63
    assert _verifier(key, clock).verify("get_identity", {}, token)


def test_issued_in_the_future_is_refused(key, clock):
    token = _signer(key, Clock(NOW + 120)).sign("get_identity", HOST, {})
    _refused(_verifier(key, clock), "get_identity", {}, token, "future")


def test_a_lifetime_over_the_maximum_is_refused(key, clock):
    claims = jwt.decode(_signer(key, clock).sign("get_identity", HOST, {}),
                        options={"verify_signature": False})
    claims["exp"] = claims["iat"] + ar.MAX_LIFETIME + 1
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={
        "kid": keystore.key_id(key), "typ": ar.TOKEN_TYPE})
    _refused(_verifier(key, clock), "get_identity", {}, token,
             "lives longer")


def test_a_used_token_is_refused(key, clock):
    token = _signer(key, clock).sign("get_evidence", HOST, EVIDENCE_ARGS)
    verifier = _verifier(key, clock)
    verifier.verify("get_evidence", dict(EVIDENCE_ARGS), token)
    _refused(verifier, "get_evidence", dict(EVIDENCE_ARGS), token,
             "already used")


def test_star_outside_start_epoch_is_refused(key, clock):
    with pytest.raises(exception.InvalidParameterValue):
        _signer(key, clock).sign("get_identity", ar.ALL_HOSTS, {})
    # A conductor key holder's token made by hand is refused just the same.
    claims = jwt.decode(_signer(key, clock).sign("get_identity", HOST, {}),
                        options={"verify_signature": False})
    claims["host"] = ar.ALL_HOSTS
    for method, args in (("get_identity", {}),
                         ("get_evidence", EVIDENCE_ARGS)):
        claims.update(method=method, args=ar.args_digest(args))
        token = jwt.encode(claims, key, algorithm="EdDSA", headers={
            "kid": keystore.key_id(key), "typ": ar.TOKEN_TYPE})
        _refused(_verifier(key, clock), method, dict(args), token,
                 "only valid for start_epoch")


def test_epoch_to_every_host_is_accepted(key, clock):
    token = _signer(key, clock).sign("start_epoch", ar.ALL_HOSTS,
                                     EPOCH_ARGS)
    for host in ("compute-1", "compute-2"):
        assert _verifier(key, clock, host).verify(
            "start_epoch", dict(EPOCH_ARGS), token).host == ar.ALL_HOSTS


def test_replayed_epoch_is_refused(key, clock):
    signer, verifier = _signer(key, clock), _verifier(key, clock)
    first = signer.sign("start_epoch", ar.ALL_HOSTS, EPOCH_ARGS)
    second_args = dict(EPOCH_ARGS, epoch_id="2-cd")
    second = signer.sign("start_epoch", ar.ALL_HOSTS, second_args)
    verifier.verify("start_epoch", dict(second_args), second)
    # The older genuine fanout, never seen by this agent, is still refused.
    _refused(verifier, "start_epoch", dict(EPOCH_ARGS), first, "not newer")
    # And the newest one cannot be played twice.
    _refused(verifier, "start_epoch", dict(second_args), second,
             "already used")


def test_epochs_signed_within_one_second_are_ordered(key, clock):
    signer, verifier = _signer(key, clock), _verifier(key, clock)
    for n in range(3):
        args = dict(EPOCH_ARGS, epoch_id="%d-x" % n)
        verifier.verify("start_epoch", args,
                        signer.sign("start_epoch", ar.ALL_HOSTS, args))


def test_conductors_sharing_a_key_keep_their_own_epoch_order(key, clock):
    verifier = _verifier(key, clock)
    late = _signer(key, Clock(NOW - 2), issuer="c-b")
    _signer_a = _signer(key, clock)
    verifier.verify("start_epoch", dict(EPOCH_ARGS), _signer_a.sign(
        "start_epoch", ar.ALL_HOSTS, EPOCH_ARGS))
    b_args = dict(EPOCH_ARGS, conductor="c-b")
    assert verifier.verify("start_epoch", b_args, late.sign(
        "start_epoch", ar.ALL_HOSTS, b_args))


def test_epoch_in_another_conductors_name_is_refused(key, clock):
    args = dict(EPOCH_ARGS, conductor="c-b")
    token = _signer(key, clock, issuer="c-a").sign("start_epoch",
                                                   ar.ALL_HOSTS, args)
    _refused(_verifier(key, clock), "start_epoch", args, token,
             "in the name of 'c-b'")


def test_no_pinned_key_is_a_config_error():
    with pytest.raises(exception.ConfigInvalid):
        ar.RequestVerifier([], HOST)


# --- Pinned keys files -------------------------------------------------------

def test_pem_bundle_and_jwks_are_read(tmp_path):
    keys = [keystore.generate_signing_key(), keystore.generate_signing_key(
        "ES256")]
    pem = tmp_path / "keys.pem"
    pem.write_text("# conductors\n" + "\n".join(
        keystore.public_key_pem(k) for k in keys))
    jwks = tmp_path / "keys.json"
    jwks.write_text(json.dumps({"keys": [keystore.public_jwk(k)
                                         for k in keys]}))
    expected = {keystore.key_id(k) for k in keys}
    assert set(ar.load_pinned_keys(pem)) == expected
    assert set(ar.load_pinned_keys(jwks)) == expected


@pytest.mark.parametrize("content,reason", [
    ("", "holds no conductor public key"),
    ("not a key\n", "holds no conductor public key"),
    ("{}", "without a \"keys\" list"),
    ("{", "not valid JSON"),
])
def test_bad_keys_files_fail_closed(tmp_path, content, reason):
    path = tmp_path / "keys"
    path.write_text(content)
    with pytest.raises(exception.ConfigInvalid) as info:
        ar.load_pinned_keys(path)
    assert reason in str(info.value)


def test_a_private_key_in_the_pins_is_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    key = keystore.generate_signing_key()
    path = tmp_path / "keys.pem"
    path.write_bytes(keystore.public_key_pem(key).encode() + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(exception.ConfigInvalid, match="private key"):
        ar.load_pinned_keys(path)


def test_a_missing_keys_file_fails_closed(tmp_path):
    with pytest.raises(exception.ConfigInvalid, match="cannot be read"):
        ar.load_pinned_keys(tmp_path / "absent.pem")
    with pytest.raises(exception.ConfigInvalid, match="not set"):
        ar.load_pinned_keys("")
