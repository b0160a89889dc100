"""Levels of assurance and the AR4SI trustworthiness vector."""

import itertools

import pytest
from hypothesis import given, strategies as st

from trusted_pools import exception
from trusted_pools.protocol import levels
from trusted_pools.protocol.levels import (AssuranceLevel, Claim, Outcome,
                                           Rung, Tier, TrustVector)

P = Outcome.PASSED
N = Outcome.NOT_APPRAISED
U = Outcome.UNRECOGNIZED
C = Outcome.CONTRAINDICATED
X = Outcome.CRYPTO_FAILED
M = Outcome.MALFORMED
E = Outcome.VERIFIER_ERROR
W = Outcome.VULNERABLE


def rungs(identity=N, firmware=N, boot=N, runtime=N):
    return {Rung.IDENTITY: identity, Rung.PLATFORM_FIRMWARE: firmware,
            Rung.OS_BOOT: boot, Rung.RUNTIME: runtime}


# --- the ladder --------------------------------------------------------------

@pytest.mark.parametrize("outcomes, expected", [
    (rungs(), AssuranceLevel.NONE),
    (rungs(P), AssuranceLevel.IDENTITY),
    (rungs(P, P), AssuranceLevel.PLATFORM_FIRMWARE),
    (rungs(P, P, P), AssuranceLevel.OS_BOOT),
    (rungs(P, P, P, P), AssuranceLevel.RUNTIME),
    # No skipping: a runtime match over failed firmware is still level 1.
    (rungs(P, C, P, P), AssuranceLevel.IDENTITY),
    (rungs(P, U, P, P), AssuranceLevel.IDENTITY),
    (rungs(P, N, P, P), AssuranceLevel.IDENTITY),
    # Identity failing voids everything above it.
    (rungs(X, P, P, P), AssuranceLevel.NONE),
    (rungs(U, P, P, P), AssuranceLevel.NONE),
    (rungs(P, P, C, P), AssuranceLevel.PLATFORM_FIRMWARE),
    (rungs(P, P, P, U), AssuranceLevel.OS_BOOT),
    (rungs(P, P, P, W), AssuranceLevel.OS_BOOT),
    (rungs(P, P, P, E), AssuranceLevel.OS_BOOT),
    (rungs(P, P, P, M), AssuranceLevel.OS_BOOT),
    # A missing rung counts as not appraised.
    ({Rung.IDENTITY: P, Rung.OS_BOOT: P}, AssuranceLevel.IDENTITY),
    ({}, AssuranceLevel.NONE),
])
def test_compute_level_table(outcomes, expected):
    assert levels.compute_level(outcomes) == expected


def test_level_is_highest_all_passed_prefix_exhaustive():
    """Every combination of outcomes: level = length of the passed prefix."""
    for combo in itertools.product(list(Outcome), repeat=4):
        outcomes = dict(zip(sorted(Rung), combo))
        prefix = 0
        for outcome in combo:
            if outcome is not P:
                break
            prefix += 1
        assert levels.compute_level(outcomes) == prefix, combo


def test_levels_and_rungs_share_numbers():
    assert [int(r) for r in sorted(Rung)] == [1, 2, 3, 4]
    assert [int(a) for a in AssuranceLevel] == [0, 1, 2, 3, 4]
    assert AssuranceLevel.RUNTIME > AssuranceLevel.OS_BOOT


@pytest.mark.parametrize("bad", [
    [P, P], {1: P}, {"identity": P}, {Rung.IDENTITY: "passed"},
    {Rung.IDENTITY: True}, None,
])
def test_compute_level_rejects_misuse(bad):
    with pytest.raises(exception.InvalidParameterValue):
        levels.compute_level(bad)


# --- tiers -------------------------------------------------------------------

@pytest.mark.parametrize("value, tier", [
    (0, Tier.NONE), (1, Tier.NONE), (-1, Tier.NONE),
    (2, Tier.AFFIRMING), (3, Tier.AFFIRMING), (31, Tier.AFFIRMING),
    (-2, Tier.AFFIRMING), (-32, Tier.AFFIRMING),
    (32, Tier.WARNING), (33, Tier.WARNING), (95, Tier.WARNING),
    (-33, Tier.WARNING), (-96, Tier.WARNING),
    (96, Tier.CONTRAINDICATED), (97, Tier.CONTRAINDICATED),
    (99, Tier.CONTRAINDICATED), (127, Tier.CONTRAINDICATED),
    (-97, Tier.CONTRAINDICATED), (-128, Tier.CONTRAINDICATED),
])
def test_tier_boundaries(value, tier):
    assert levels.tier_of(value) is tier


@pytest.mark.parametrize("bad", [128, -129, True, False, 2.0, "2", None])
def test_tier_rejects_non_int8(bad):
    with pytest.raises(exception.InvalidParameterValue):
        levels.tier_of(bad)


@given(st.integers(min_value=-128, max_value=127))
def test_every_int8_has_exactly_one_tier(value):
    assert isinstance(levels.tier_of(value), Tier)


# --- the draft's numbers (facts from draft-ietf-rats-ar4si "Specific Claims") 

@pytest.mark.parametrize("member, value", [
    (levels.InstanceIdentity.TRUSTWORTHY_INSTANCE, 2),
    (levels.InstanceIdentity.UNTRUSTWORTHY_INSTANCE, 96),
    (levels.InstanceIdentity.UNRECOGNIZED_INSTANCE, 97),
    (levels.Configuration.APPROVED_CONFIG, 2),
    (levels.Configuration.NO_CONFIG_VULNS, 3),
    (levels.Configuration.UNSAFE_CONFIG, 32),
    (levels.Configuration.UNAVAILABLE_CONFIG_ELEMS, 36),
    (levels.Configuration.UNSUPPORTABLE_CONFIG, 96),
    (levels.Executables.APPROVED_RUNTIME, 2),
    (levels.Executables.APPROVED_BOOT, 3),
    (levels.Executables.UNSAFE_RUNTIME, 32),
    (levels.Executables.UNRECOGNIZED_RUNTIME, 33),
    (levels.Executables.CONTRAINDICATED_RUNTIME, 96),
    (levels.FileSystem.APPROVED_FILES, 2),
    (levels.FileSystem.UNRECOGNIZED_FILES, 32),
    (levels.FileSystem.CONTRAINDICATED_FILES, 96),
    (levels.Hardware.GENUINE_HARDWARE, 2),
    (levels.Hardware.UNSAFE_HARDWARE, 32),
    (levels.Hardware.CONTRAINDICATED_HARDWARE, 96),
    (levels.Hardware.UNRECOGNIZED_HARDWARE, 97),
    (levels.RuntimeOpaque.ENCRYPTED_MEMORY, 2),
    (levels.RuntimeOpaque.ISOLATED_MEMORY, 32),
    (levels.RuntimeOpaque.VISIBLE_MEMORY, 96),
    (levels.StorageOpaque.HW_KEYS_ENCRYPTED_SECRETS, 2),
    (levels.StorageOpaque.SW_KEYS_ENCRYPTED_SECRETS, 32),
    (levels.StorageOpaque.UNENCRYPTED_SECRETS, 96),
    (levels.SourcedData.TRUSTED_SOURCES, 2),
    (levels.SourcedData.UNTRUSTED_SOURCES, 32),
    (levels.SourcedData.CONTRAINDICATED_SOURCES, 96),
])
def test_claim_values_from_the_draft(member, value):
    assert int(member) == value


@pytest.mark.parametrize("enum_class", [
    levels.InstanceIdentity, levels.Configuration, levels.Executables,
    levels.FileSystem, levels.Hardware, levels.RuntimeOpaque,
    levels.StorageOpaque, levels.SourcedData,
])
def test_every_claim_has_the_shared_values(enum_class):
    assert enum_class.NO_CLAIM == 0
    assert enum_class.UNEXPECTED_EVIDENCE == 1
    assert enum_class.VERIFIER_MALFUNCTION == -1
    assert enum_class.CRYPTO_VALIDATION_FAILED == 99


def test_claim_labels_are_the_drafts_json_labels():
    assert [c.value for c in Claim] == [
        "instance-identity", "configuration", "executables", "file-system",
        "hardware", "runtime-opaque", "storage-opaque", "sourced-data"]


# --- mapping outcomes to the vector ------------------------------------------

@pytest.mark.parametrize("outcomes, config, expected", [
    # Fully good host, configuration appraised too.
    (rungs(P, P, P, P), P,
     dict(instance_identity=2, hardware=2, executables=2, file_system=2,
          configuration=2)),
    # Runtime not appraised: executables approved at boot only (3).
    (rungs(P, P, P, N), N,
     dict(instance_identity=2, hardware=2, executables=3)),
    # Unrecognized runtime file: executables 33, file-system 32.
    (rungs(P, P, P, U), N,
     dict(instance_identity=2, hardware=2, executables=33, file_system=32)),
    # Denied file: contraindicated.
    (rungs(P, P, P, C), N,
     dict(instance_identity=2, hardware=2, executables=96, file_system=96)),
    # Tampered kernel: boot unrecognized -> 33; runtime pass not affirmed.
    (rungs(P, P, U, P), N,
     dict(instance_identity=2, hardware=2, executables=33)),
    # Known-vulnerable kernel: 32.
    (rungs(P, P, W, P), N,
     dict(instance_identity=2, hardware=2, executables=32)),
    # Unknown firmware: hardware 97; nothing above it is affirmed.
    (rungs(P, U, P, P), P,
     dict(instance_identity=2, hardware=97)),
    # Firmware known vulnerable: hardware 32.
    (rungs(P, W, P, P), N, dict(instance_identity=2, hardware=32)),
    (rungs(P, C, N, N), N, dict(instance_identity=2, hardware=96)),
    # Quote signature failed: 99 everywhere it was tried.
    (rungs(X, X, X, X), N,
     dict(instance_identity=99, hardware=99, executables=99,
          file_system=99)),
    # Unknown TPM: instance-identity 97, nothing affirmed.
    (rungs(U, P, P, P), P, dict(instance_identity=97)),
    (rungs(C, N, N, N), N, dict(instance_identity=96)),
    (rungs(M, N, N, N), N, dict(instance_identity=1)),
    (rungs(E, N, N, N), N, dict(instance_identity=-1)),
    (rungs(), N, dict()),
    # Bad configuration is reported even on a good ladder.
    (rungs(P, P, P, P), C,
     dict(instance_identity=2, hardware=2, executables=2, file_system=2,
          configuration=96)),
    (rungs(P, P, P, P), U,
     dict(instance_identity=2, hardware=2, executables=2, file_system=2,
          configuration=32)),
    # Bad news is kept even above a failed rung.
    (rungs(P, U, C, C), N,
     dict(instance_identity=2, hardware=97, executables=96,
          file_system=96)),
])
def test_vector_from_outcomes_table(outcomes, config, expected):
    vector = levels.vector_from_outcomes(outcomes, config)
    assert vector == TrustVector(**expected)


def test_vector_never_affirms_above_the_level_exhaustive():
    """An affirming claim only appears where its rungs are within level."""
    needs = {Claim.HARDWARE: 2, Claim.EXECUTABLES: 3, Claim.FILE_SYSTEM: 4,
             Claim.CONFIGURATION: 2, Claim.INSTANCE_IDENTITY: 1}
    for combo in itertools.product([P, N, U, C, X], repeat=4):
        outcomes = dict(zip(sorted(Rung), combo))
        level = levels.compute_level(outcomes)
        vector = levels.vector_from_outcomes(outcomes, P)
        for claim, need in needs.items():
            if vector.tier(claim) is Tier.AFFIRMING:
                assert level >= need, (combo, claim)
        # A failure the ladder saw is never hidden from the vector.
        if any(o in (C, X) for o in combo):
            assert vector.contraindicated(), combo


def test_tee_only_claims_stay_empty_for_a_tpm():
    vector = levels.vector_from_outcomes(rungs(P, P, P, P), P)
    for claim in (Claim.RUNTIME_OPAQUE, Claim.STORAGE_OPAQUE,
                  Claim.SOURCED_DATA):
        assert vector.get(claim) == 0


# --- the vector's JSON form --------------------------------------------------

def test_vector_json_round_trip_and_form():
    vector = TrustVector(instance_identity=2, hardware=97, executables=33)
    data = vector.to_json()
    assert data == {"instance-identity": 2, "configuration": 0,
                    "executables": 33, "file-system": 0, "hardware": 97,
                    "runtime-opaque": 0, "storage-opaque": 0,
                    "sourced-data": 0}
    assert TrustVector.from_json(data) == vector
    assert vector.contraindicated() == [Claim.HARDWARE]


def test_vector_json_absent_claims_are_zero():
    assert TrustVector.from_json({"hardware": 2}) == TrustVector(hardware=2)
    assert TrustVector.from_json({}) == TrustVector()


@pytest.mark.parametrize("bad", [
    {"hardware": 128}, {"hardware": -129}, {"hardware": True},
    {"hardware": 2.0}, {"hardware": "2"}, {"hardware": None},
    {"firmware": 2}, {"Hardware": 2}, {1: 2}, [], "hardware", None,
])
def test_vector_json_rejects(bad):
    with pytest.raises(exception.InvalidParameterValue):
        TrustVector.from_json(bad)


@given(st.dictionaries(st.sampled_from([c.value for c in Claim]),
                       st.integers(min_value=-128, max_value=127)))
def test_vector_json_round_trip_property(data):
    vector = TrustVector.from_json(data)
    again = TrustVector.from_json(vector.to_json())
    assert again == vector
    for label, value in data.items():
        assert vector.to_json()[label] == value


def test_vector_is_immutable_and_stores_plain_ints():
    vector = TrustVector(executables=levels.Executables.APPROVED_BOOT)
    assert type(vector.executables) is int
    with pytest.raises(AttributeError):
        vector.executables = 2
