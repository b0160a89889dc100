"""Signed attestation results: round trips, tampering, and fail-closed
verification."""

import base64
import json

import jwt
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from trusted_pools import exception
from trusted_pools.protocol import keystore
from trusted_pools.protocol import results
from trusted_pools.protocol import verdict as vmod
from trusted_pools.protocol.levels import AssuranceLevel, Outcome, Rung
from trusted_pools.protocol.verdict import Status, canonical_json

P, N, U, C = (Outcome.PASSED, Outcome.NOT_APPRAISED, Outcome.UNRECOGNIZED,
              Outcome.CONTRAINDICATED)
NOW = 1_700_000_000
ISSUER = "conductor-a"
DIGEST = vmod.evidence_digest(b'{"quote":"..."}')

ED = keystore.generate_signing_key("EdDSA")
EC = keystore.generate_signing_key("ES256")
ROGUE = keystore.generate_signing_key("EdDSA")
KID = {"ed": keystore.key_id(ED), "ec": keystore.key_id(EC)}
KEYS = keystore.key_set([ED, EC])
PRIVATE = {"ed": ED, "ec": EC}


SEQ = 41


def sign_verdict(v, key, issuer, **kw):
    """results.sign_verdict with a sequence, as the database allocates."""
    kw.setdefault("sequence", SEQ)
    return results.sign_verdict(v, key, issuer, **kw)


def rungs(identity=N, firmware=N, boot=N, runtime=N):
    return {Rung.IDENTITY: identity, Rung.PLATFORM_FIRMWARE: firmware,
            Rung.OS_BOOT: boot, Rung.RUNTIME: runtime}


def verdict(outcomes=None, **kw):
    args = dict(host="compute-7", outcomes=outcomes or rungs(P, P, P, P),
                required_level=AssuranceLevel.OS_BOOT,
                policy_versions={"measured-boot": 4, "ima": 2},
                evidence_digest=DIGEST, issued_at=NOW, validity=90,
                reasons=[])
    args.update(kw)
    return vmod.make_verdict(**args)


VERDICTS = {
    "trusted": verdict(),
    "tampered-kernel": verdict(rungs(P, P, U, N), reasons=[
        "PCR 4 event 14 EV_EFI_BOOT_SERVICES_APPLICATION: kernel digest "
        "sha256:ab12... not in policy measured-boot v4"]),
    "denied-file": verdict(rungs(P, P, P, C), reasons=[
        "IMA line 812: /usr/bin/nc denied"]),
    "unknown": vmod.unknown_verdict(host="compute-9", reason="agent "
                                    "unreachable", issued_at=NOW,
                                    validity=60),
    "unicode": verdict(host="hôte-ü", reasons=["raison: ✓ \"quoted\""]),
}


def b64decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def payload_of(token):
    return json.loads(b64decode(token.split(".")[1]))


def resign(claims, key=ED, kid=None, typ=results.RESULT_TYPE, raw=None):
    """Sign arbitrary claims with a trusted key: only claim checks remain.

    Signed with plain PyJWT (the algorithm of the key's type), so nothing
    of the code under test helps make the token."""
    data = raw if raw is not None else canonical_json(claims)
    alg = "EdDSA" if key in (ED, ROGUE) else "ES256"
    return jwt.PyJWS().encode(data, key, algorithm=alg, headers={
        "kid": kid or keystore.key_id(key), "typ": typ})


def good_claims(**changes):
    claims = payload_of(sign_verdict(VERDICTS["trusted"], ED,
                                             ISSUER, jti="j-1"))
    claims.update(changes)
    return claims


# --- round trips -------------------------------------------------------------

@pytest.mark.parametrize("kid", ["ed", "ec"])
@pytest.mark.parametrize("name", sorted(VERDICTS))
def test_round_trip(kid, name):
    original = VERDICTS[name]
    token = sign_verdict(original, PRIVATE[kid], ISSUER)
    assert results.verify_result(token, KEYS, NOW + 1) == original
    signed = results.verify_signed_result(token, KEYS, NOW + 1,
                                          issuer=ISSUER)
    assert signed.verdict == original
    assert signed.issuer == ISSUER
    assert signed.kid == KID[kid]
    assert signed.alg == {"ed": "EdDSA", "ec": "ES256"}[kid]
    assert signed.sequence == SEQ


def test_payload_is_canonical_json_with_the_documented_claims():
    token = sign_verdict(VERDICTS["tampered-kernel"], ED, ISSUER,
                                 jti="abc")
    raw = b64decode(token.split(".")[1])
    claims = json.loads(raw)
    assert raw == canonical_json(claims)
    assert claims == {
        "ver": 2, "iss": ISSUER, "sub": "compute-7", "seq": SEQ, "iat": NOW,
        "exp": NOW + 90, "jti": "abc", "status": "untrusted", "level": 2,
        "vector": {"instance-identity": 2, "configuration": 0,
                   "executables": 33, "file-system": 0, "hardware": 2,
                   "runtime-opaque": 0, "storage-opaque": 0,
                   "sourced-data": 0},
        "policy_versions": {"ima": 2, "measured-boot": 4},
        "evidence_digest": DIGEST,
        "reasons": list(VERDICTS["tampered-kernel"].reasons),
    }
    header = json.loads(b64decode(token.split(".")[0]))
    assert header == {"alg": "EdDSA", "kid": KID["ed"],
                      "typ": "trusted-pools-result+jwt"}


def test_jti_is_unique_per_token():
    signer = results.ResultSigner(EC, ISSUER)
    jtis = {payload_of(signer.sign(VERDICTS["trusted"], sequence=1))["jti"]
            for _ in range(20)}
    assert len(jtis) == 20
    assert signer.kid == KID["ec"] and signer.alg == "ES256"


# --- tampering ---------------------------------------------------------------

@pytest.mark.parametrize("kid", ["ed", "ec"])
def test_every_single_character_change_is_rejected(kid):
    token = sign_verdict(VERDICTS["denied-file"], PRIVATE[kid],
                                 ISSUER)
    for index, char in enumerate(token):
        replacement = "B" if char != "B" else "C"
        tampered = token[:index] + replacement + token[index + 1:]
        with pytest.raises(exception.SignedResultError):
            results.verify_result(tampered, KEYS, NOW)


@pytest.mark.parametrize("change", [
    dict(status="trusted"), dict(level=4), dict(sub="compute-8"),
    dict(exp=NOW + 10 ** 6), dict(reasons=[]),
    dict(vector={"executables": 2}), dict(policy_versions={"ima": 3}),
    dict(evidence_digest="0" * 64), dict(iss="conductor-b"),
])
def test_edited_payload_without_resigning_is_rejected(change):
    token = sign_verdict(VERDICTS["denied-file"], ED, ISSUER)
    head, _, sig = token.split(".")
    claims = payload_of(token)
    claims.update(change)
    forged = head + "." + b64encode(canonical_json(claims)) + "." \
        + sig
    with pytest.raises(exception.ResultSignatureInvalid):
        results.verify_result(forged, KEYS, NOW)


@pytest.mark.parametrize("header", [
    {"alg": "EdDSA", "kid": "ec-kid", "typ": results.RESULT_TYPE},
    {"alg": "EdDSA", "kid": None, "typ": results.RESULT_TYPE, "cty": "x"},
    {"alg": "EdDSA", "kid": None, "typ": "JWT"},
    {"alg": "none", "kid": None, "typ": results.RESULT_TYPE},
    {"alg": "ES256", "kid": None, "typ": results.RESULT_TYPE},
])
def test_edited_header_is_rejected(header):
    token = sign_verdict(VERDICTS["denied-file"], ED, ISSUER)
    _, body, sig = token.split(".")
    header = dict(header)
    if header["kid"] is None:
        header["kid"] = KID["ed"]
    elif header["kid"] == "ec-kid":
        header["kid"] = KID["ec"]
    head = b64encode(canonical_json(header))
    with pytest.raises(exception.SignedResultError):
        results.verify_result(head + "." + body + "." + sig, KEYS, NOW)


def test_same_header_in_other_bytes_is_rejected():
    """The signature covers the header's bytes, not its meaning."""
    token = sign_verdict(VERDICTS["denied-file"], ED, ISSUER)
    _, body, sig = token.split(".")
    header = {"typ": results.RESULT_TYPE, "kid": KID["ed"], "alg": "EdDSA"}
    head = b64encode(json.dumps(header).encode())
    with pytest.raises(exception.ResultSignatureInvalid):
        results.verify_result(head + "." + body + "." + sig, KEYS, NOW)


def test_rogue_key_is_rejected_under_its_own_or_a_trusted_kid():
    claims = good_claims(status="trusted")
    with pytest.raises(exception.ResultKeyUnknown):
        results.verify_result(resign(claims, key=ROGUE), KEYS, NOW)
    with pytest.raises(exception.ResultSignatureInvalid):
        results.verify_result(resign(claims, key=ROGUE, kid=KID["ed"]),
                              KEYS, NOW)


def test_algorithm_swap_between_key_types_fails():
    """An ES256 token verified with an Ed25519 key fails, and vice versa."""
    es_under_ed = resign(good_claims(), key=EC, kid=KID["ed"])
    ed_under_ec = resign(good_claims(), key=ED, kid=KID["ec"])
    for token in (es_under_ed, ed_under_ec):
        with pytest.raises(exception.ResultAlgorithmRejected):
            results.verify_result(token, KEYS, NOW)


def test_only_the_given_keys_count():
    token = sign_verdict(VERDICTS["trusted"], EC, ISSUER)
    with pytest.raises(exception.ResultKeyUnknown):
        results.verify_result(token, keystore.key_set([ED]), NOW)
    with pytest.raises(exception.ResultKeyUnknown):
        results.verify_result(token, {}, NOW)


# --- time --------------------------------------------------------------------

@pytest.mark.parametrize("now, leeway, error", [
    (NOW, 0, None),
    (NOW + 89, 0, None),
    (NOW + 90, 0, exception.ResultExpired),
    (NOW + 94, 5, None),
    (NOW + 95, 5, exception.ResultExpired),
    (NOW + 10 ** 6, 300, exception.ResultExpired),
    (NOW - 1, 0, exception.ResultNotYetValid),
    (NOW - 5, 5, None),
    (NOW - 6, 5, exception.ResultNotYetValid),
    (0, 5, exception.ResultNotYetValid),
])
def test_validity_window(now, leeway, error):
    token = sign_verdict(VERDICTS["trusted"], ED, ISSUER)
    if error is None:
        assert results.verify_result(token, KEYS, now, leeway) \
            == VERDICTS["trusted"]
    else:
        with pytest.raises(error):
            results.verify_result(token, KEYS, now, leeway)


@pytest.mark.parametrize("now, leeway", [
    (-1, 5), (1.5, 5), (None, 5), (True, 5), (NOW, -1), (NOW, 301),
    (NOW, 2.0), (NOW, None),
])
def test_bad_arguments_are_refused(now, leeway):
    token = sign_verdict(VERDICTS["trusted"], ED, ISSUER)
    with pytest.raises(exception.InvalidParameterValue):
        results.verify_result(token, KEYS, now, leeway)


def test_issuer_pinning():
    token = sign_verdict(VERDICTS["trusted"], ED, ISSUER)
    assert results.verify_result(token, KEYS, NOW, issuer=ISSUER)
    with pytest.raises(exception.SignedResultError, match="expected"):
        results.verify_result(token, KEYS, NOW, issuer="conductor-b")


# --- claims ------------------------------------------------------------------

CLAIM_NAMES = sorted(good_claims())


@pytest.mark.parametrize("name", CLAIM_NAMES)
def test_each_missing_claim_is_rejected(name):
    claims = good_claims()
    del claims[name]
    with pytest.raises(exception.ResultMalformed):
        results.verify_result(resign(claims), KEYS, NOW)


@pytest.mark.parametrize("changes", [
    dict(extra=1), dict(aud="nova"), dict(nbf=NOW),
    dict(ver=1), dict(ver=3), dict(ver="2"), dict(ver=True),
    dict(seq=0), dict(seq=-1), dict(seq=2 ** 63), dict(seq="5"),
    dict(seq=5.0), dict(seq=True), dict(seq=None),
    dict(iss=""), dict(iss=1), dict(iss="i" * 256),
    dict(jti=""), dict(jti=None), dict(jti="j" * 129),
    dict(sub=""), dict(sub=7), dict(sub=["compute-7"]),
    dict(iat="1700000000"), dict(iat=float(NOW)), dict(iat=True),
    dict(exp=NOW), dict(exp=NOW - 1), dict(exp=None),
    dict(exp=2 ** 63), dict(iat=-10, exp=NOW + 5),
    dict(status="TRUSTED"), dict(status="ok"), dict(status=1),
    dict(level=5), dict(level=-1), dict(level="4"), dict(level=4.0),
    dict(level=True),
    dict(vector=[]), dict(vector={"executables": 200}),
    dict(vector={"executables": True}), dict(vector={"bogus": 2}),
    dict(policy_versions=[]), dict(policy_versions={"ima": -1}),
    dict(policy_versions={"ima": "2"}),
    dict(evidence_digest=""), dict(evidence_digest="AB" * 32),
    dict(evidence_digest=None),
    dict(reasons="reason"), dict(reasons=[1]), dict(reasons=None),
    dict(reasons=["x"] * 65),
    # Claims that would make an impossible verdict.
    dict(vector={"file-system": 96}),           # trusted + contraindicated
    dict(level=0),                              # trusted at level 0
    dict(status="unknown"),                     # unknown with a level
])
def test_bad_claims_are_rejected(changes):
    with pytest.raises(exception.ResultMalformed):
        results.verify_result(resign(good_claims(**changes)), KEYS, NOW)


def test_version_1_token_without_sequence_is_refused_with_a_reason():
    """A token from a conductor older than the sequence has only its
    signer's clock to be ordered by: refused, and the log says why."""
    claims = good_claims(ver=1)
    del claims["seq"]
    with pytest.raises(exception.ResultMalformed, match="no verdict "
                       "sequence"):
        results.verify_result(resign(claims), KEYS, NOW)


@pytest.mark.parametrize("raw", [
    # Same claims, not canonical: spaces, unsorted keys, escaped unicode.
    lambda c: json.dumps(c, sort_keys=True).encode(),
    lambda c: json.dumps(dict(reversed(list(c.items()))),
                         separators=(",", ":")).encode(),
    lambda c: canonical_json(c) + b" ",
    lambda c: b" " + canonical_json(c),
    # Duplicate member: the last "status" would win in a lax parser.
    lambda c: canonical_json(c)[:-1] + b',"status":"trusted"}',
    lambda c: b"[]", lambda c: b"null", lambda c: b"\xff",
    lambda c: canonical_json(c).replace(b'"level":4', b'"level":4.0'),
    lambda c: canonical_json(c).replace(b'"level":4', b'"level":4e0'),
    lambda c: canonical_json(c).replace(b'"level":4', b'"level":NaN'),
])
def test_non_canonical_or_odd_payload_is_rejected(raw):
    with pytest.raises(exception.ResultMalformed):
        results.verify_result(resign(None, raw=raw(good_claims())), KEYS,
                              NOW)


def test_wrong_typ_is_rejected():
    with pytest.raises(exception.ResultMalformed):
        results.verify_result(resign(good_claims(), typ="JWT"), KEYS, NOW)


@pytest.mark.parametrize("call", [
    lambda: sign_verdict({"host": "x"}, ED, ISSUER),
    lambda: sign_verdict(VERDICTS["trusted"], ED, ""),
    lambda: sign_verdict(VERDICTS["trusted"], ED, ISSUER, jti=""),
    lambda: sign_verdict(VERDICTS["trusted"], ED.public_key(),
                                 ISSUER),
    lambda: sign_verdict(VERDICTS["trusted"], b"key", ISSUER),
    lambda: sign_verdict(VERDICTS["trusted"], ED, "\ud800"),
    lambda: sign_verdict(VERDICTS["trusted"], ED, "a\nb"),
    lambda: sign_verdict(VERDICTS["trusted"], ED, ISSUER,
                                 jti="é"),
    lambda: sign_verdict(VERDICTS["trusted"], ED, ISSUER, sequence=0),
    lambda: sign_verdict(VERDICTS["trusted"], ED, ISSUER, sequence=True),
    lambda: sign_verdict(VERDICTS["trusted"], ED, ISSUER, sequence=2 ** 63),
    lambda: results.ResultSigner(ED, ISSUER).sign(VERDICTS["trusted"],
                                                  sequence="1"),
])
def test_signing_misuse_is_refused(call):
    with pytest.raises(exception.InvalidParameterValue):
        call()


@settings(max_examples=150, deadline=None)
@given(host=st.text(min_size=1, max_size=40),
       reasons=st.lists(st.text(max_size=80), max_size=5),
       policies=st.dictionaries(st.text(min_size=1, max_size=10),
                                st.integers(min_value=0,
                                            max_value=2 ** 40), max_size=3),
       kid=st.sampled_from(["ed", "ec"]))
def test_round_trip_property(host, reasons, policies, kid):
    """Any verdict that can be built round-trips exactly; anything else is
    refused with a typed error before signing."""
    try:
        original = verdict(rungs(P, P, P, U), host=host, reasons=reasons,
                           policy_versions=policies)
    except exception.InvalidParameterValue:
        return
    token = sign_verdict(original, PRIVATE[kid], ISSUER)
    assert results.verify_result(token, KEYS, NOW) == original


# --- arbitrary input: typed errors only, never a verdict ---------------------

@settings(max_examples=400, deadline=None)
@given(st.text(max_size=600))
def test_arbitrary_strings_never_give_a_verdict(text):
    with pytest.raises(exception.SignedResultError):
        results.verify_result(text, KEYS, NOW)


def _token_like():
    part = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstu"
                   "vwxyz0123456789-_=+/.", max_size=120)
    return st.builds(lambda a, b, c: a + "." + b + "." + c, part, part, part)


@settings(max_examples=300, deadline=None)
@given(_token_like())
def test_token_shaped_strings_never_give_a_verdict(text):
    with pytest.raises(exception.SignedResultError):
        results.verify_result(text, KEYS, NOW)


_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2 ** 70,
                                          max_value=2 ** 70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
_json = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(CLAIM_NAMES + ["extra"]), _json,
                       max_size=6), st.booleans())
def test_validly_signed_arbitrary_claims_are_typed(overrides, drop_one):
    """Even correctly signed, odd claims only yield a consistent verdict or a
    typed error."""
    claims = good_claims()
    claims.update(overrides)
    if drop_one and overrides:
        claims.pop(sorted(overrides)[0], None)
    try:
        token = resign(claims)
    except ValueError:
        return      # not encodable as canonical JSON; nothing to sign
    try:
        got = results.verify_result(token, KEYS, NOW)
    except exception.SignedResultError:
        return
    # Accepted: it must be exactly what the claims say, and consistent.
    assert got.host == claims["sub"]
    assert got.status.value == claims["status"]
    assert int(got.level) == claims["level"]
    if got.status is Status.TRUSTED:
        assert not got.vector.contraindicated()


# --- plain PyJWT reads our results -------------------------------------------

@pytest.mark.parametrize("kid, alg", [("ed", "EdDSA"), ("ec", "ES256")])
def test_pyjwt_reads_our_results(kid, alg):
    token = sign_verdict(VERDICTS["tampered-kernel"], PRIVATE[kid],
                                 ISSUER, jti="x")
    claims = jwt.decode(token, key=PRIVATE[kid].public_key(),
                        algorithms=[alg], options={"verify_exp": False,
                                                   "verify_iat": False})
    assert claims == payload_of(token)
    assert claims["status"] == "untrusted" and claims["level"] == 2
