"""The ordering rule that tells a late quote from a replayed one.

A conductor that was paused (or a broker that delivered a message twice)
verifies a genuine quote after a newer one of the same host. Such a quote
is late: no verdict, no change of state, never "replayed". A quote over a
nonce issued after the newer one was accepted must be newer itself: if it
is not, the clock check fails as before. Real quote bytes from the
project's soft TPM, verified by the real verifier.
"""

from __future__ import annotations

import os

import pytest

from tests import soft_tpm
from trusted_pools import exception
from trusted_pools.protocol import freshness
from trusted_pools.protocol.evidence import Evidence
from trusted_pools.verifier import pipeline as verifier
from trusted_pools.tpm import structures
from trusted_pools.tpm.constants import TPM_ALG

HOST = "compute-01"


@pytest.mark.parametrize("issued, accepted, late", [
    (1, 2, True),        # nonce issued before the acceptance: may be late
    (2, 2, False),       # not before
    (3, 2, False),       # issued after: the quote must be newer
    (None, 2, False),    # a nonce this conductor did not number
    (1, None, False),    # a baseline read from the database
    (None, None, False),
])
def test_answered_before_accepted(issued, accepted, late):
    assert freshness.answered_before_accepted(issued, accepted) is late


def test_issue_order_only_goes_up_and_numbers_epochs():
    order = freshness.IssueOrder()
    keeper = freshness.EpochKeeper(order)
    first = keeper.start_epoch(0.0)
    between = order.next()
    second = keeper.start_epoch(0.0)
    assert first.issued < between < second.issued
    nonce, issued = keeper.expected(second.epoch_id, HOST)
    assert nonce == freshness.host_nonce(second.value, HOST)
    assert issued == second.issued


@pytest.fixture(scope="module")
def ak():
    return soft_tpm.SoftAK.ecc()


def _state(ak) -> verifier.HostState:
    return verifier.HostState(host=HOST, host_id=1, group="default",
                              ak=structures.parse_public(ak.public_bytes))


def _evidence(ak, nonce: bytes, clock: int, reset_count: int = 7
              ) -> Evidence:
    pcrs = {TPM_ALG.SHA256: {0: bytes(32)}}
    quote, signature = ak.quote(nonce, pcrs, clock=clock,
                                reset_count=reset_count)
    return Evidence(host=HOST, quote=quote, signature=signature, pcrs=pcrs)


def _verify(state, evidence, nonce, issued, accepted):
    return verifier.verify_and_appraise(state, evidence, nonce, 1000, 180,
                                        issued=issued, accepted=accepted)


def test_a_late_quote_is_dropped_without_verdict_or_state_change(ak):
    state = _state(ak)
    old_nonce, new_nonce = os.urandom(32), os.urandom(32)
    # Nonces issued 1 and 2; the newer quote is verified first (order 3).
    newer = _verify(state, _evidence(ak, new_nonce, 2000), new_nonce, 2, 3)
    assert newer.verdict is not None and not newer.quote_failed
    assert (state.clock.clock, state.accepted_order) == (2000, 3)
    late = _verify(state, _evidence(ak, old_nonce, 1000), old_nonce, 1, 4)
    assert late.verdict is None and not late.quote_failed
    assert isinstance(late.late, exception.QuoteReplayed)
    # Nothing moved: neither the clock baseline nor its order.
    assert (state.clock.clock, state.accepted_order) == (2000, 3)


def test_the_same_quote_again_is_late_never_a_second_verdict(ak):
    """A redelivered push (or a replay of it): no verdict, no freshness."""
    state = _state(ak)
    nonce = os.urandom(32)
    evidence = _evidence(ak, nonce, 5000)
    assert _verify(state, evidence, nonce, 1, 2).verdict is not None
    again = _verify(state, evidence, nonce, 1, 3)
    assert again.verdict is None and again.late is not None
    assert state.accepted_order == 2


def test_an_older_clock_over_a_nonce_issued_after_acceptance_fails(ak):
    """A genuine TPM quotes a later nonce with a later clock: if it does
    not, it is not late but wrong (a cleared or cloned TPM clock)."""
    state = _state(ak)
    first, later = os.urandom(32), os.urandom(32)
    assert _verify(state, _evidence(ak, first, 9000), first, 1, 2).verdict
    outcome = _verify(state, _evidence(ak, later, 8000), later, 3, 4)
    assert outcome.quote_failed and outcome.late is None
    assert outcome.verdict.status.value == "untrusted"
    assert any("QuoteReplayed" in r for r in outcome.verdict.reasons)


def test_a_clock_baseline_from_the_database_is_never_late(ak):
    """After a restart every nonce is newer than the stored baseline."""
    state = _state(ak)
    state.clock = verifier.StoredClock(9000, 7, 3)
    nonce = os.urandom(32)
    outcome = _verify(state, _evidence(ak, nonce, 8000), nonce, 1, 2)
    assert outcome.quote_failed and outcome.verdict is not None


def test_a_late_quote_from_before_a_reboot_is_late_too(ak):
    state = _state(ak)
    before, after = os.urandom(32), os.urandom(32)
    assert _verify(state, _evidence(ak, after, 10, reset_count=8), after,
                   2, 3).verdict is not None
    outcome = _verify(state, _evidence(ak, before, 9000, reset_count=7),
                      before, 1, 4)
    assert outcome.verdict is None and outcome.late is not None
