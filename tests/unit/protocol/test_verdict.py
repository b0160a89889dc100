"""Verdicts: invariants, the trusted decision and the fail-closed consumer."""

import dataclasses
import hashlib

import pytest
from hypothesis import given, strategies as st

from trusted_pools import exception
from trusted_pools.protocol import verdict as vmod
from trusted_pools.protocol.levels import (AssuranceLevel, Outcome, Rung,
                                           TrustVector)
from trusted_pools.protocol.verdict import Status, Verdict

P = Outcome.PASSED
N = Outcome.NOT_APPRAISED
U = Outcome.UNRECOGNIZED
C = Outcome.CONTRAINDICATED
NOW = 1_700_000_000
DIGEST = hashlib.sha256(b"evidence").hexdigest()
L = AssuranceLevel


def rungs(identity=N, firmware=N, boot=N, runtime=N):
    return {Rung.IDENTITY: identity, Rung.PLATFORM_FIRMWARE: firmware,
            Rung.OS_BOOT: boot, Rung.RUNTIME: runtime}


def make(outcomes, required=L.OS_BOOT, **kw):
    args = dict(host="compute-1", outcomes=outcomes, required_level=required,
                policy_versions={"measured-boot": 3, "ima": 7},
                evidence_digest=DIGEST, issued_at=NOW, validity=90,
                reasons=["PCR 4: event 12 (EV_EFI_BOOT_SERVICES_APPLICATION)"
                         " digest not in policy"])
    args.update(kw)
    return vmod.make_verdict(**args)


def base(**kw):
    fields = dict(host="compute-1", status=Status.TRUSTED, level=L.RUNTIME,
                  vector=TrustVector(instance_identity=2, hardware=2,
                                     executables=2),
                  reasons=(), policy_versions={"mb": 1},
                  evidence_digest=DIGEST, issued_at=NOW, expires_at=NOW + 60)
    fields.update(kw)
    return Verdict(**fields)


# --- deciding the status -----------------------------------------------------

@pytest.mark.parametrize("outcomes, config, required, status, level", [
    (rungs(P, P, P, P), N, L.RUNTIME, Status.TRUSTED, L.RUNTIME),
    (rungs(P, P, P, P), N, L.IDENTITY, Status.TRUSTED, L.RUNTIME),
    (rungs(P, P, P, N), N, L.OS_BOOT, Status.TRUSTED, L.OS_BOOT),
    (rungs(P, P, P, N), N, L.RUNTIME, Status.UNTRUSTED, L.OS_BOOT),
    # Tampered kernel: level 2, below an OS_BOOT requirement.
    (rungs(P, P, U, N), N, L.OS_BOOT, Status.UNTRUSTED, L.PLATFORM_FIRMWARE),
    # Level reached, but something contraindicated: never trusted.
    (rungs(P, P, P, C), N, L.OS_BOOT, Status.UNTRUSTED, L.OS_BOOT),
    (rungs(P, P, P, P), C, L.IDENTITY, Status.UNTRUSTED, L.RUNTIME),
    # A warning alone does not block when the level is reached.
    (rungs(P, P, P, U), N, L.OS_BOOT, Status.TRUSTED, L.OS_BOOT),
    (rungs(), N, L.IDENTITY, Status.UNTRUSTED, L.NONE),
    (rungs(U, P, P, P), N, L.IDENTITY, Status.UNTRUSTED, L.NONE),
])
def test_make_verdict_status_table(outcomes, config, required, status,
                                   level):
    verdict = make(outcomes, required=required, configuration=config)
    assert verdict.status is status
    assert verdict.level == level
    assert verdict.expires_at == NOW + 90


def test_decide_requires_a_real_level():
    for bad in (L.NONE, 7, True, "3", None):
        with pytest.raises(exception.InvalidParameterValue):
            vmod.decide(L.RUNTIME, TrustVector(), bad)


def test_unknown_verdict_is_never_trusted():
    unknown = vmod.unknown_verdict(host="compute-2", reason="agent "
                                   "unreachable for 180 s", issued_at=NOW,
                                   validity=60)
    assert unknown.status is Status.UNKNOWN
    assert unknown.level == L.NONE
    assert unknown.evidence_digest == ""
    for min_level in (L.IDENTITY, L.RUNTIME):
        assert not vmod.is_trusted(unknown, min_level, NOW, 3600)


# --- invariants of the dataclass ---------------------------------------------

@pytest.mark.parametrize("changes", [
    dict(host=""), dict(host=None), dict(host="h" * 256),
    dict(host="compute-1\nFORGED LOG LINE"), dict(host="\ud800"),
    dict(reasons=["lone surrogate \udc00"]),
    dict(policy_versions={"\ud800": 1}),
    dict(status="maybe"), dict(status=None), dict(status=["trusted"]),
    dict(level=5), dict(level=-1), dict(level=True), dict(level="4"),
    dict(vector={"hardware": 2}),
    dict(reasons="one string"), dict(reasons=[1]),
    dict(reasons=["x"] * (vmod.MAX_REASONS + 1)),
    dict(reasons=["x" * (vmod.MAX_REASON_CHARS + 1)]),
    dict(policy_versions={"mb": -1}), dict(policy_versions={"mb": "1"}),
    dict(policy_versions={"": 1}), dict(policy_versions={"mb": True}),
    dict(policy_versions=[("mb", 1)]),
    dict(evidence_digest=""), dict(evidence_digest=DIGEST.upper()),
    dict(evidence_digest=DIGEST[:-1]), dict(evidence_digest=b"00" * 32),
    dict(issued_at=NOW + 60), dict(expires_at=NOW), dict(issued_at=-1),
    dict(issued_at=float(NOW)), dict(expires_at=2 ** 63),
    # Trusted with a contraindicated claim, or below level 1.
    dict(vector=TrustVector(instance_identity=2, file_system=96)),
    dict(level=L.NONE),
    # Unknown with a level.
    dict(status=Status.UNKNOWN, level=L.IDENTITY),
])
def test_verdict_rejects_inconsistent_fields(changes):
    with pytest.raises(exception.InvalidParameterValue):
        base(**changes)


def test_verdict_is_frozen_and_its_policies_too():
    verdict = base()
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.status = Status.UNTRUSTED
    with pytest.raises(TypeError):
        verdict.policy_versions["mb"] = 2
    assert isinstance(verdict.reasons, tuple)
    assert hash(verdict) == hash(base())


def test_verdict_accepts_status_strings_and_level_ints():
    verdict = base(status="untrusted", level=2)
    assert verdict.status is Status.UNTRUSTED
    assert verdict.level is L.PLATFORM_FIRMWARE


def test_verdict_dict_round_trip():
    verdict = make(rungs(P, P, U, N))
    data = verdict.to_dict()
    assert data["status"] == "untrusted" and data["level"] == 2
    assert data["vector"]["executables"] == 33
    assert Verdict.from_dict(data) == verdict


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("host"),
    lambda d: d.update(extra=1),
    lambda d: d.update(status=1),
    lambda d: d.update(reasons="x"),
    lambda d: d.update(vector={"bogus": 1}),
])
def test_verdict_from_dict_rejects(mutate):
    data = make(rungs(P, P, P, P)).to_dict()
    mutate(data)
    with pytest.raises(exception.InvalidParameterValue):
        Verdict.from_dict(data)


def test_make_verdict_bounds_reasons():
    many = ["IMA line %d: /usr/bin/x%d not in policy" % (i, i)
            for i in range(500)]
    verdict = make(rungs(P, P, P, U), reasons=many + ["y" * 5000])
    assert len(verdict.reasons) == vmod.MAX_REASONS
    assert verdict.reasons[0] == many[0]
    assert verdict.reasons[-1] == "%d more reasons omitted" % (
        501 - vmod.MAX_REASONS + 1)
    long_one = make(rungs(P), reasons=["z" * 5000]).reasons[0]
    assert len(long_one) == vmod.MAX_REASON_CHARS
    assert long_one.endswith("[cut]")


@pytest.mark.parametrize("validity", [0, -5, 1.5, None])
def test_make_verdict_rejects_bad_validity(validity):
    with pytest.raises(exception.InvalidParameterValue):
        make(rungs(P), validity=validity)


# --- evidence digest and canonical JSON --------------------------------------

def test_evidence_digest_is_sha256_hex():
    assert vmod.evidence_digest(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    with pytest.raises(exception.InvalidParameterValue):
        vmod.evidence_digest("abc")


def test_canonical_json_is_sorted_compact_utf8():
    assert vmod.canonical_json({"b": [1, {"d": 1, "c": "é"}], "a": None}) \
        == '{"a":null,"b":[1,{"c":"é","d":1}]}'.encode("utf-8")
    with pytest.raises(ValueError):
        vmod.canonical_json({"x": float("nan")})


# --- is_trusted: the consumer's fail-closed check ----------------------------

GOOD = dict(min_level=L.OS_BOOT, now=NOW + 10, max_age=120)


@pytest.mark.parametrize("verdict_changes, call_changes, expected", [
    ({}, {}, True),
    ({}, dict(min_level=L.RUNTIME), True),
    (dict(level=L.OS_BOOT), dict(min_level=L.RUNTIME), False),
    (dict(status=Status.UNTRUSTED), {}, False),
    # Expired: now at or after expires_at.
    ({}, dict(now=NOW + 60), False),
    ({}, dict(now=NOW + 59), True),
    # Too old for the consumer even if not expired.
    ({}, dict(max_age=5), False),
    ({}, dict(max_age=10), True),
    # Future-dated beyond the skew, and within it.
    ({}, dict(now=NOW - 6), False),
    ({}, dict(now=NOW - 5), True),
    ({}, dict(now=NOW - 1, max_age=0), True),
])
def test_is_trusted_table(verdict_changes, call_changes, expected):
    call = dict(GOOD)
    call.update(call_changes)
    assert vmod.is_trusted(base(**verdict_changes), **call) is expected


@pytest.mark.parametrize("not_a_verdict", [None, {}, "trusted", True])
def test_is_trusted_without_verdict_is_false(not_a_verdict):
    assert vmod.is_trusted(not_a_verdict, **GOOD) is False


@pytest.mark.parametrize("call_changes", [
    dict(min_level=L.NONE), dict(min_level=5), dict(min_level=True),
    dict(min_level="3"), dict(now=-1), dict(now=1.5), dict(max_age=-1),
    dict(clock_skew=-1), dict(max_age=None),
])
def test_is_trusted_rejects_bad_arguments(call_changes):
    call = dict(GOOD)
    call.update(call_changes)
    with pytest.raises(exception.InvalidParameterValue):
        vmod.is_trusted(base(), **call)


@given(now=st.integers(min_value=0, max_value=2 ** 40),
       max_age=st.integers(min_value=0, max_value=10 ** 6),
       issued=st.integers(min_value=0, max_value=2 ** 40),
       life=st.integers(min_value=1, max_value=10 ** 6),
       status=st.sampled_from(list(Status)))
def test_is_trusted_property(now, max_age, issued, life, status):
    level = L.NONE if status is Status.UNKNOWN else L.RUNTIME
    verdict = base(status=status, level=level, issued_at=issued,
                   expires_at=issued + life,
                   evidence_digest="" if status is Status.UNKNOWN
                   else DIGEST)
    result = vmod.is_trusted(verdict, L.IDENTITY, now, max_age)
    if result:
        assert status is Status.TRUSTED
        assert now < issued + life
        assert issued <= now + vmod.DEFAULT_CLOCK_SKEW
        assert now - issued <= max_age
    elif status is Status.TRUSTED:
        assert (now >= issued + life or issued > now + 5
                or now - issued > max_age)
