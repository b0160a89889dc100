"""The digest of a message that did not parse as evidence.

Found by bench/fuzz.py (conductor.management): an answer whose mapping had
an int key beside str keys made ``attest_now`` fail with TypeError while
it wrote the failed verdict, instead of recording "untrusted".
"""

from __future__ import annotations

import pytest

from trusted_pools.verifier import pipeline as verifier


@pytest.mark.parametrize("wire", [
    {1: "a", "b": 2},
    {"ima": {0: None, "start": 1}},
    ["\udcff"],
])
def test_digest_of_any_wire_is_a_sha256(wire):
    digest = verifier.wire_digest(wire)
    assert len(digest) == 64 and int(digest, 16) >= 0


def test_different_wires_have_different_digests():
    assert verifier.wire_digest({1: "a", "b": 2}) != \
        verifier.wire_digest({1: "a", "b": 3})


def test_a_cycle_has_a_digest():
    wire: dict = {}
    wire["self"] = wire
    assert len(verifier.wire_digest(wire)) == 64
