"""Epoch nonces and TPM clock checks."""

from dataclasses import dataclass

import pytest

from trusted_pools import exception
from trusted_pools.protocol import freshness


@dataclass
class Clock:
    clock: int
    reset_count: int = 0
    restart_count: int = 0
    safe: bool = True


def test_nonce_differs_per_host_and_epoch():
    a = freshness.host_nonce(b"e1", "host-a")
    assert a != freshness.host_nonce(b"e1", "host-b")
    assert a != freshness.host_nonce(b"e2", "host-a")
    assert a == freshness.host_nonce(b"e1", "host-a")
    assert len(a) == 32


def test_host_name_cannot_shift_into_epoch():
    assert freshness.host_nonce(b"ab", "c") != \
        freshness.host_nonce(b"a", "bc")


def test_current_and_previous_epoch_accepted_older_stale():
    keeper = freshness.EpochKeeper()
    first = keeper.start_epoch(0.0)
    second = keeper.start_epoch(60.0)
    assert keeper.expected_nonce(first.epoch_id, "h") == \
        freshness.host_nonce(first.value, "h")
    keeper.start_epoch(120.0)
    with pytest.raises(exception.StaleEvidence):
        keeper.expected_nonce(first.epoch_id, "h")
    assert keeper.expected_nonce(second.epoch_id, "h")
    with pytest.raises(exception.StaleEvidence):
        keeper.expected_nonce("never-issued", "h")


def test_epoch_values_are_random():
    keeper = freshness.EpochKeeper()
    values = {keeper.start_epoch(float(i)).value for i in range(50)}
    assert len(values) == 50


@pytest.mark.parametrize("previous,current,expected", [
    (None, Clock(5), freshness.Reboot.NONE),
    (Clock(5), Clock(6), freshness.Reboot.NONE),
    (Clock(5, 1, 0), Clock(1, 2, 0), freshness.Reboot.RESET),
    (Clock(5, 1, 0), Clock(1, 1, 3), freshness.Reboot.RESTART),
])
def test_clock_moves_forward_or_tpm_rebooted(previous, current, expected):
    assert freshness.check_clock("h", previous, current) is expected


@pytest.mark.parametrize("previous,current", [
    (Clock(5), Clock(5)),
    (Clock(5), Clock(4)),
    (Clock(5, 2, 0), Clock(9, 1, 0)),
    (Clock(5, 1, 4), Clock(9, 1, 3)),
])
def test_replayed_quote_is_rejected(previous, current):
    with pytest.raises(exception.QuoteReplayed):
        freshness.check_clock("h", previous, current)
