"""Levels of assurance and the AR4SI trustworthiness vector.

Two views of one appraisal, both computed here from the per-rung outcomes
the conductor produces:

* :class:`AssuranceLevel` - a single number for the scheduler, the ladder of
  ETSI GR NFV-SEC 007 clause 5 ("levels of assurance"). A host sits on the
  highest rung such that it *and every rung below it* passed: rungs are never
  skipped, because each rung's evidence is only meaningful if the rungs below
  it hold (a kernel digest means nothing if the firmware that measured it is
  unknown). See ``doc/source/levels-of-assurance.md``.
* :class:`TrustVector` - the Trustworthiness Vector of the IETF RATS
  "Attestation Results for Secure Interactions" draft (draft-ietf-rats-ar4si,
  section "Trustworthiness Claims"): eight claims, each a signed 8-bit value
  whose range gives its tier (none, affirming, warning, contraindicated).

Nothing in this module looks at evidence: it only maps outcomes that the
verification code has already decided. It imports the standard library only.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Mapping

from trusted_pools import exception

__all__ = [
    "AssuranceLevel", "Rung", "Outcome", "Tier", "Claim",
    "InstanceIdentity", "Configuration", "Executables", "FileSystem",
    "Hardware", "RuntimeOpaque", "StorageOpaque", "SourcedData",
    "TrustVector", "compute_level", "vector_from_outcomes", "tier_of",
]


# --- The ladder --------------------------------------------------------------

class AssuranceLevel(enum.IntEnum):
    """Level of assurance of a host (ETSI GR NFV-SEC 007 clause 5).

    Each level includes every level below it.
    """

    #: Unknown (no fresh evidence) or failed at the identity rung.
    NONE = 0
    #: The TPM is genuine: EK certificate chain validated to a trusted
    #: manufacturer CA and the AK proven to live in the same TPM as the EK
    #: (credential activation), so quotes come from this host's TPM.
    IDENTITY = 1
    #: Platform firmware matches policy: PCRs 0-7 (CRTM/BIOS, firmware
    #: configuration, option ROMs, boot manager code and data, secure boot
    #: policy) replay from the event log and match the golden values.
    PLATFORM_FIRMWARE = 2
    #: OS / hypervisor boot matches policy: boot loader, kernel, initrd and
    #: kernel command line, as recorded in PCR 4/8/9 (per the event log).
    OS_BOOT = 3
    #: Runtime matches policy: the IMA log replays to PCR 10 and every
    #: measured file is allowed by the runtime policy.
    RUNTIME = 4


class Rung(enum.IntEnum):
    """One appraisal step of the ladder; reaching rung N gives level N."""

    IDENTITY = 1
    PLATFORM_FIRMWARE = 2
    OS_BOOT = 3
    RUNTIME = 4


class Outcome(enum.Enum):
    """What the appraisal of one rung (or facet) concluded.

    Only :attr:`PASSED` lets a rung count. Everything else, including "not
    appraised", stops the ladder: absence of evidence is not evidence.
    """

    #: Evidence verified and matched the policy.
    PASSED = "passed"
    #: Nothing was appraised (no evidence, no policy, or not applicable).
    NOT_APPRAISED = "not-appraised"
    #: Evidence verified, but a measurement is not known to the policy
    #: (e.g. a kernel digest that no policy entry lists).
    UNRECOGNIZED = "unrecognized"
    #: Evidence verified, a measurement is recognized but the policy marks it
    #: as having known vulnerabilities (allowed with a warning).
    VULNERABLE = "vulnerable"
    #: Evidence verified and contradicts the policy (a denied digest, a
    #: revoked EK, secure boot off where the policy requires it on).
    CONTRAINDICATED = "contraindicated"
    #: A signature, certificate chain, quote or log replay failed to verify.
    CRYPTO_FAILED = "crypto-failed"
    #: Evidence did not parse or was of an unexpected kind.
    MALFORMED = "malformed"
    #: The verifier itself failed while appraising (a bug, a database away).
    VERIFIER_ERROR = "verifier-error"


def _coerce_outcome(value: Any, name: str) -> Outcome:
    if isinstance(value, Outcome):
        return value
    raise exception.InvalidParameterValue(
        name=name, reason="expected an Outcome, got %r" % (value,))


def compute_level(outcomes: Mapping[Rung, Outcome]) -> AssuranceLevel:
    """Return the highest rung such that it and every lower rung passed.

    A rung missing from ``outcomes`` counts as not appraised. A pass above a
    failed rung does not count: a runtime match on a host whose firmware
    failed is level 1 (identity), never 4.
    """
    if not isinstance(outcomes, Mapping):
        raise exception.InvalidParameterValue(
            name="outcomes", reason="expected a mapping of Rung to Outcome")
    for key in outcomes:
        if not isinstance(key, Rung):
            raise exception.InvalidParameterValue(
                name="outcomes", reason="key %r is not a Rung" % (key,))
    level = AssuranceLevel.NONE
    for rung in sorted(Rung):
        outcome = _coerce_outcome(outcomes.get(rung, Outcome.NOT_APPRAISED),
                                  "outcomes[%s]" % rung.name)
        if outcome is not Outcome.PASSED:
            break
        level = AssuranceLevel(int(rung))
    return level


# --- AR4SI trustworthiness claims --------------------------------------------
#
# Values from draft-ietf-rats-ar4si, "Specific Claims". Every claim shares the
# none-tier values 0 (no assertion), 1 (unknown elements in the evidence),
# -1 (verifier malfunction) and 99 (cryptographic validation failed).

class Tier(enum.Enum):
    """Trustworthiness tier of a claim value (draft "Enumeration Encoding")."""

    NONE = "none"
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"


def tier_of(value: int) -> Tier:
    """Tier of a claim value, standard (positive) or private (negative).

    none: -1..1; affirming: 2..31 and -32..-2; warning: 32..95 and -96..-33;
    contraindicated: 96..127 and -128..-97.
    """
    _check_claim_value(value, "value")
    if -1 <= value <= 1:
        return Tier.NONE
    if 2 <= value <= 31 or -32 <= value <= -2:
        return Tier.AFFIRMING
    if 32 <= value <= 95 or -96 <= value <= -33:
        return Tier.WARNING
    return Tier.CONTRAINDICATED


class InstanceIdentity(enum.IntEnum):
    NO_CLAIM = 0
    UNEXPECTED_EVIDENCE = 1
    VERIFIER_MALFUNCTION = -1
    TRUSTWORTHY_INSTANCE = 2
    UNTRUSTWORTHY_INSTANCE = 96
    UNRECOGNIZED_INSTANCE = 97
    CRYPTO_VALIDATION_FAILED = 99


class Configuration(enum.IntEnum):
    NO_CLAIM = 0
    UNEXPECTED_EVIDENCE = 1
    VERIFIER_MALFUNCTION = -1
    APPROVED_CONFIG = 2
    NO_CONFIG_VULNS = 3
    UNSAFE_CONFIG = 32
    UNAVAILABLE_CONFIG_ELEMS = 36
    UNSUPPORTABLE_CONFIG = 96
    CRYPTO_VALIDATION_FAILED = 99


class Executables(enum.IntEnum):
    NO_CLAIM = 0
    UNEXPECTED_EVIDENCE = 1
    VERIFIER_MALFUNCTION = -1
    APPROVED_RUNTIME = 2        # approved during and after boot
    APPROVED_BOOT = 3           # approved during boot (runtime not appraised)
    UNSAFE_RUNTIME = 32         # recognized, known vulnerabilities
    UNRECOGNIZED_RUNTIME = 33   # something loaded is not recognized
    CONTRAINDICATED_RUNTIME = 96
    CRYPTO_VALIDATION_FAILED = 99


class FileSystem(enum.IntEnum):
    NO_CLAIM = 0
    UNEXPECTED_EVIDENCE = 1
    VERIFIER_MALFUNCTION = -1
    APPROVED_FILES = 2
    UNRECOGNIZED_FILES = 32
    CONTRAINDICATED_FILES = 96
    CRYPTO_VALIDATION_FAILED = 99


class Hardware(enum.IntEnum):
    NO_CLAIM = 0
    UNEXPECTED_EVIDENCE = 1
    VERIFIER_MALFUNCTION = -1
    GENUINE_HARDWARE = 2
    UNSAFE_HARDWARE = 32
    CONTRAINDICATED_HARDWARE = 96
    UNRECOGNIZED_HARDWARE = 97
    CRYPTO_VALIDATION_FAILED = 99


class RuntimeOpaque(enum.IntEnum):
    NO_CLAIM = 0
    UNEXPECTED_EVIDENCE = 1
    VERIFIER_MALFUNCTION = -1
    ENCRYPTED_MEMORY = 2
    ISOLATED_MEMORY = 32
    VISIBLE_MEMORY = 96
    CRYPTO_VALIDATION_FAILED = 99


class StorageOpaque(enum.IntEnum):
    NO_CLAIM = 0
    UNEXPECTED_EVIDENCE = 1
    VERIFIER_MALFUNCTION = -1
    HW_KEYS_ENCRYPTED_SECRETS = 2
    SW_KEYS_ENCRYPTED_SECRETS = 32
    UNENCRYPTED_SECRETS = 96
    CRYPTO_VALIDATION_FAILED = 99


class SourcedData(enum.IntEnum):
    NO_CLAIM = 0
    UNEXPECTED_EVIDENCE = 1
    VERIFIER_MALFUNCTION = -1
    TRUSTED_SOURCES = 2
    UNTRUSTED_SOURCES = 32
    CONTRAINDICATED_SOURCES = 96
    CRYPTO_VALIDATION_FAILED = 99


class Claim(enum.Enum):
    """The eight AR4SI claims; the value is the JSON label of the draft."""

    INSTANCE_IDENTITY = "instance-identity"
    CONFIGURATION = "configuration"
    EXECUTABLES = "executables"
    FILE_SYSTEM = "file-system"
    HARDWARE = "hardware"
    RUNTIME_OPAQUE = "runtime-opaque"
    STORAGE_OPAQUE = "storage-opaque"
    SOURCED_DATA = "sourced-data"


# Dataclass field of TrustVector for each claim. Plain strings as keys: these
# lookups run on every verified token, and enum hashing is slow.
_FIELD = {claim: claim.value.replace("-", "_") for claim in Claim}
_FIELD_BY_LABEL = {claim.value: _FIELD[claim] for claim in Claim}
_LABELS_FIELDS = tuple((claim.value, _FIELD[claim]) for claim in Claim)


def _check_claim_value(value: Any, name: str) -> int:
    """Return ``value`` as a plain int in -128..127, or raise."""
    if type(value) is not int:
        # bool is an int in Python; a JSON true must not become claim 1.
        if not isinstance(value, enum.IntEnum):
            raise exception.InvalidParameterValue(
                name=name, reason="claim value must be an integer, got %s"
                % type(value).__name__)
        value = int(value)
    if not -128 <= value <= 127:
        raise exception.InvalidParameterValue(
            name=name, reason="claim value %d is outside -128..127" % value)
    return value


def _is_contraindicated(value: int) -> bool:
    return value >= 96 or value <= -97


@dataclasses.dataclass(frozen=True)
class TrustVector:
    """An AR4SI Trustworthiness Vector: one int8 value per claim.

    0 means "no claim"; the draft asks relying parties to treat 0 and an
    absent claim alike, so the JSON form always carries all eight claims and
    parsing fills absent ones with 0.
    """

    instance_identity: int = 0
    configuration: int = 0
    executables: int = 0
    file_system: int = 0
    hardware: int = 0
    runtime_opaque: int = 0
    storage_opaque: int = 0
    sourced_data: int = 0

    def __post_init__(self) -> None:
        for label, field in _LABELS_FIELDS:
            # Store plain ints so equality and JSON never depend on enums.
            object.__setattr__(self, field, _check_claim_value(
                getattr(self, field), label))

    def get(self, claim: Claim) -> int:
        return getattr(self, _FIELD[claim])

    def tier(self, claim: Claim) -> Tier:
        return tier_of(self.get(claim))

    def tiers(self) -> dict[Claim, Tier]:
        return {claim: self.tier(claim) for claim in Claim}

    def contraindicated(self) -> list[Claim]:
        """Claims in the contraindicated tier (any makes a host untrusted)."""
        return [claim for claim in Claim
                if _is_contraindicated(getattr(self, _FIELD[claim]))]

    def to_json(self) -> dict[str, int]:
        """JSON form of the draft's data model: label -> int."""
        return {label: getattr(self, field)
                for label, field in _LABELS_FIELDS}

    @classmethod
    def from_json(cls, data: Any) -> "TrustVector":
        """Parse the JSON form strictly: unknown labels are rejected."""
        if not isinstance(data, dict):
            raise exception.InvalidParameterValue(
                name="vector", reason="expected a JSON object")
        values: dict[str, Any] = {}
        for label, value in data.items():
            field = _FIELD_BY_LABEL.get(label) if isinstance(
                label, str) else None
            if field is None:
                raise exception.InvalidParameterValue(
                    name="vector", reason="unknown claim %r" % (label,))
            values[field] = value
        # The constructor checks every value.
        return cls(**values)


# --- Mapping outcomes to the vector ------------------------------------------

# Values shared by every claim for the failure outcomes that are not about
# what was measured but about the evidence or the verifier.
_COMMON = {
    Outcome.NOT_APPRAISED: 0,
    Outcome.MALFORMED: 1,
    Outcome.VERIFIER_ERROR: -1,
    Outcome.CRYPTO_FAILED: 99,
}

_IDENTITY_MAP = {
    Outcome.PASSED: InstanceIdentity.TRUSTWORTHY_INSTANCE,
    Outcome.UNRECOGNIZED: InstanceIdentity.UNRECOGNIZED_INSTANCE,
    # A recognized TPM whose key is known bad has no warning tier here.
    Outcome.VULNERABLE: InstanceIdentity.UNTRUSTWORTHY_INSTANCE,
    Outcome.CONTRAINDICATED: InstanceIdentity.UNTRUSTWORTHY_INSTANCE,
}

_HARDWARE_MAP = {
    Outcome.PASSED: Hardware.GENUINE_HARDWARE,
    Outcome.UNRECOGNIZED: Hardware.UNRECOGNIZED_HARDWARE,
    Outcome.VULNERABLE: Hardware.UNSAFE_HARDWARE,
    Outcome.CONTRAINDICATED: Hardware.CONTRAINDICATED_HARDWARE,
}

_CONFIGURATION_MAP = {
    Outcome.PASSED: Configuration.APPROVED_CONFIG,
    Outcome.UNRECOGNIZED: Configuration.UNSAFE_CONFIG,
    Outcome.VULNERABLE: Configuration.UNSAFE_CONFIG,
    Outcome.CONTRAINDICATED: Configuration.UNSUPPORTABLE_CONFIG,
}

_FILE_SYSTEM_MAP = {
    Outcome.PASSED: FileSystem.APPROVED_FILES,
    Outcome.UNRECOGNIZED: FileSystem.UNRECOGNIZED_FILES,
    # file-system has no "known vulnerable" value; the best fit is warning.
    Outcome.VULNERABLE: FileSystem.UNRECOGNIZED_FILES,
    Outcome.CONTRAINDICATED: FileSystem.CONTRAINDICATED_FILES,
}

# Precedence of outcomes when two rungs feed one claim: the draft's
# assignment rule (contraindicated before warning before affirming), with the
# evidence failures first since they void everything else.
_SEVERITY = [
    Outcome.CRYPTO_FAILED, Outcome.CONTRAINDICATED, Outcome.MALFORMED,
    Outcome.VERIFIER_ERROR, Outcome.UNRECOGNIZED, Outcome.VULNERABLE,
    Outcome.NOT_APPRAISED, Outcome.PASSED,
]


def _claim_value(outcome: Outcome, table: Mapping[Outcome, int]) -> int:
    if outcome in _COMMON:
        return _COMMON[outcome]
    return int(table[outcome])


def _executables_value(boot: Outcome, runtime: Outcome) -> int:
    """executables covers what was loaded during boot and after it."""
    if boot is Outcome.PASSED and runtime is Outcome.PASSED:
        return Executables.APPROVED_RUNTIME
    if boot is Outcome.PASSED and runtime is Outcome.NOT_APPRAISED:
        return Executables.APPROVED_BOOT
    worst = min((boot, runtime), key=_SEVERITY.index)
    if worst is Outcome.PASSED or worst is Outcome.NOT_APPRAISED:
        # Runtime passed but boot was not appraised: nothing to affirm.
        return Executables.NO_CLAIM
    return _claim_value(worst, {
        Outcome.UNRECOGNIZED: Executables.UNRECOGNIZED_RUNTIME,
        Outcome.VULNERABLE: Executables.UNSAFE_RUNTIME,
        Outcome.CONTRAINDICATED: Executables.CONTRAINDICATED_RUNTIME,
    })


def vector_from_outcomes(
        outcomes: Mapping[Rung, Outcome],
        configuration: Outcome = Outcome.NOT_APPRAISED) -> TrustVector:
    """Map per-rung outcomes (and the optional configuration facet) to AR4SI.

    instance-identity <- identity rung; hardware <- platform firmware rung
    (PCR 0-7); executables <- OS boot and runtime rungs together; file-system
    <- runtime rung (IMA measures the files the policy covers);
    configuration <- the ``configuration`` outcome (secure boot state,
    kernel command line settings). runtime-opaque, storage-opaque and
    sourced-data stay 0: a TPM alone cannot support them.

    Affirming values are only given when every lower rung passed too: an
    "approved kernel" measured by unverified firmware affirms nothing, so it
    becomes 0 (no claim). Warnings and contraindications are always kept -
    bad news never needs a foundation.
    """
    level = compute_level(outcomes)

    def outcome_of(rung: Rung) -> Outcome:
        return _coerce_outcome(outcomes.get(rung, Outcome.NOT_APPRAISED),
                               "outcomes[%s]" % rung.name)

    def grounded(value: int, needs: int) -> int:
        """Drop an affirming value whose lower rungs did not all pass."""
        if tier_of(value) is Tier.AFFIRMING and level < needs:
            return 0
        return value

    identity = outcome_of(Rung.IDENTITY)
    firmware = outcome_of(Rung.PLATFORM_FIRMWARE)
    boot = outcome_of(Rung.OS_BOOT)
    runtime = outcome_of(Rung.RUNTIME)
    configuration = _coerce_outcome(configuration, "configuration")

    executables = _executables_value(boot, runtime)
    return TrustVector(
        instance_identity=_claim_value(identity, _IDENTITY_MAP),
        hardware=grounded(_claim_value(firmware, _HARDWARE_MAP),
                          AssuranceLevel.PLATFORM_FIRMWARE),
        executables=grounded(executables, AssuranceLevel.OS_BOOT),
        file_system=grounded(_claim_value(runtime, _FILE_SYSTEM_MAP),
                             AssuranceLevel.RUNTIME),
        # Configuration is read from firmware-measured data (PCR 1/7) and
        # the boot chain, so it needs the platform firmware rung.
        configuration=grounded(
            _claim_value(configuration, _CONFIGURATION_MAP),
            AssuranceLevel.PLATFORM_FIRMWARE),
    )
