"""The agent's epoch handling, without a bus or a TPM (an in-memory
attester stands in; the real one is exercised in tests/functional)."""

from __future__ import annotations

import base64
import time

from trusted_pools import exception
from trusted_pools.agent.manager import AgentManager
from trusted_pools.attestation import freshness
from trusted_pools.attestation.evidence import Evidence, IMATail
from trusted_pools.conductor.hash_ring import HashRing

EPOCH = base64.b64encode(b"e" * 32).decode()


class FakeAttester:
    def __init__(self, host: str, ima_lines: int = 3) -> None:
        self.host = host
        self.ima_lines = ima_lines
        self.calls: list[dict] = []

    def evidence(self, nonce, banks, *, epoch_id=None, ima_start=0,
                 event_log=True, known_event_log_digest=None):
        self.calls.append({"nonce": nonce, "ima_start": ima_start,
                           "known": known_event_log_digest})
        data = b"".join(b"10 x ima-ng y /f%d\n" % i
                        for i in range(ima_start, self.ima_lines))
        return Evidence(host=self.host, quote=b"q", signature=b"s",
                        pcrs={0x000B: {0: bytes(32)}}, epoch_id=epoch_id,
                        event_log=None if known_event_log_digest else b"L",
                        event_log_digest="ab" * 32,
                        ima=IMATail(ima_start, data))


def _manager(host="compute-1"):
    sent = []
    attester = FakeAttester(host)
    manager = AgentManager(attester, lambda ctx, conductor, wire:
                           sent.append((conductor, wire)))
    return manager, attester, sent


def test_answers_only_the_conductor_that_owns_the_host():
    manager, attester, sent = _manager()
    members = ["c-a", "c-b"]
    owner = HashRing(members).owner("compute-1")
    other = ({"c-a", "c-b"} - {owner}).pop()
    manager.start_epoch({}, other, "1-x", EPOCH, ["sha256"], members)
    assert sent == [] and attester.calls == []
    manager.start_epoch({}, owner, "1-x", EPOCH, ["sha256"], members)
    assert [c for c, _ in sent] == [owner]
    assert attester.calls[0]["nonce"] == freshness.host_nonce(b"e" * 32,
                                                              "compute-1")


def test_sends_only_what_the_conductor_has_not_seen():
    manager, attester, sent = _manager()
    manager.start_epoch({}, "c-a", "1-x", EPOCH, ["sha256"], ["c-a"])
    attester.ima_lines = 5
    manager.start_epoch({}, "c-a", "2-x", EPOCH, ["sha256"], ["c-a"])
    first, second = (Evidence.from_wire(w) for _, w in sent)
    assert first.event_log == b"L" and first.ima.start == 0
    assert second.event_log is None, "the log was already sent"
    assert second.ima.start == 3
    # A conductor that never heard from this host gets everything.
    manager.start_epoch({}, "c-b", "3-x", EPOCH, ["sha256"], ["c-b"])
    third = Evidence.from_wire(sent[-1][1])
    assert third.ima.start == 0 and third.event_log == b"L"


def test_spread_delays_the_answer():
    manager, _, sent = _manager()
    manager.start_epoch({}, "c-a", "1-x", EPOCH, ["sha256"], ["c-a"],
                        spread=0.2)
    deadline = time.monotonic() + 5
    while not sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(sent) == 1


def test_a_tpm_failure_sends_nothing():
    manager, attester, sent = _manager()

    def broken(*args, **kwargs):
        raise exception.TPMUnreachable(tcti="swtpm:port=1", reason="down")
    attester.evidence = broken
    manager.start_epoch({}, "c-a", "1-x", EPOCH, ["sha256"], ["c-a"])
    assert sent == []
