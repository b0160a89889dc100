"""A small slice of the fuzzing run (bench/fuzz.py) for CI.

Every target of :mod:`bench.fuzz_targets` takes a few hundred generated
inputs (hypothesis, derandomized so CI is repeatable): only typed errors,
no hang, never a verified or trusted result. The full run (100,000 inputs
per target, atheris) is outside CI; see README "Fuzzing". The harness
itself is checked too: an untyped error, a verified result and a hang are
each caught, saved and reproducible.
"""

from __future__ import annotations

import pytest

from bench import fuzz
from bench import fuzz_targets
from bench.fuzz_targets import TARGETS, Target, Violation
from trusted_pools import exception

# Inputs per target; the conductor's path writes to SQLite per input.
SLICE = 200
SMALLER = {"conductor.rpc": 60, "conductor.management": 60,
           "tpm.eventlog": 120}


@pytest.mark.parametrize("name", fuzz_targets.names())
def test_slice_of_every_target(name, tmp_path):
    inputs = SMALLER.get(name, SLICE)
    stats = fuzz.run_hypothesis(name, inputs, seconds=60, per_input=5.0,
                                crash_dir=str(tmp_path), derandomize=True)
    assert not stats.failures, "\n".join(
        "%s\n%s" % (f.path, f.detail) for f in stats.failures)
    assert stats.inputs >= inputs


def test_every_entry_point_family_has_a_target():
    names = fuzz_targets.names()
    for family in ("tpm.public", "tpm.attest", "tpm.signature",
                   "tpm.pcr_selection", "tpm.verify_quote", "tpm.pcr_files",
                   "tpm.eventlog", "tpm.efi", "tpm.ima_ascii",
                   "tpm.ima_binary", "tpm.ima_templates", "keys.loaders",
                   "attestation.evidence_wire", "attestation.policy",
                   "attestation.signed_results",
                   "attestation.agent_requests", "conductor.rpc",
                   "conductor.management",
                   "agent.rpc"):
        assert family in names


# --- the harness can fail ----------------------------------------------------

def _untyped(data: bytes) -> None:
    if data[:1] == b"\x01":
        raise ValueError("an untyped error")
    raise exception.MalformedEvidence(what="x", reason="y")


def _verifies(data: bytes) -> None:
    fuzz_targets._must_fail("a verifier", lambda: "verified")


def _hangs(data: bytes) -> None:
    while True:
        pass


@pytest.mark.parametrize("run, kind", [(_untyped, "exception"),
                                       (_verifies, "violation"),
                                       (_hangs, "hang")])
def test_harness_saves_each_kind_of_failure(run, kind, tmp_path,
                                            monkeypatch, capsys):
    monkeypatch.setitem(TARGETS, "selftest", Target(
        "selftest", run, lambda: [b"\x01"], "self test"))
    inputs = 3 if kind == "hang" else 20   # a hang costs its budget
    stats = fuzz.run_hypothesis("selftest", inputs, seconds=30,
                                per_input=0.2,
                                crash_dir=str(tmp_path), derandomize=True)
    assert [f.kind for f in stats.failures] == [kind]
    saved = stats.failures[0].path
    text = open(saved[:-len(".bin")] + ".txt").read()
    assert fuzz.reproduce_command("selftest", saved) in text
    # The saved input reproduces the failure.
    assert fuzz.main(["--target", "selftest", "--per-input", "0.2",
                      "--reproduce", saved]) == 1
    assert "failed" in capsys.readouterr().out


def test_typed_errors_are_not_failures(tmp_path, monkeypatch):
    monkeypatch.setitem(TARGETS, "selftest", Target(
        "selftest", lambda d: _untyped(b"\x00"), lambda: [], "self test"))
    stats = fuzz.run_hypothesis("selftest", 50, seconds=30, per_input=1.0,
                                crash_dir=str(tmp_path), derandomize=True)
    assert stats.failures == [] and stats.refused == stats.inputs


def test_conductor_target_catches_a_trusted_verdict(monkeypatch):
    """Were a malformed answer ever judged trusted, the conductor target
    would say so (here the verifier is broken on purpose)."""
    from trusted_pools.protocol import verdict as vmod
    from trusted_pools.protocol.levels import AssuranceLevel, Outcome
    from trusted_pools.protocol.levels import Rung
    from trusted_pools.verifier import pipeline as verifier

    def trusting(host, error, digest, now, validity):
        return vmod.make_verdict(
            host=host, outcomes={r: Outcome.PASSED for r in Rung},
            required_level=AssuranceLevel.OS_BOOT, policy_versions={},
            evidence_digest=digest, issued_at=now, validity=validity,
            reasons=[])

    monkeypatch.setattr(verifier, "failed_verdict", trusting)
    with pytest.raises(Violation, match="trusted"):
        # A push that is not even a mapping, then a challenge answered
        # with garbage: the answer goes through failed_verdict.
        for i in range(20):
            TARGETS["conductor.rpc"].run(bytes([3, i]) * 8)
