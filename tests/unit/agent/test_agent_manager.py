"""The agent's epoch handling and request checks, without a bus or a TPM
(an in-memory attester stands in; the real one is exercised in
tests/functional)."""

from __future__ import annotations

import base64
import time

import oslo_messaging as messaging
import pytest

from trusted_pools import exception
from trusted_pools.agent.manager import AgentManager
from trusted_pools.protocol import agent_requests
from trusted_pools.protocol import freshness
from trusted_pools.protocol import keystore
from trusted_pools.protocol.evidence import Evidence, IMATail
from trusted_pools.protocol.hash_ring import HashRing

EPOCH = base64.b64encode(b"e" * 32).decode()
CONDUCTOR_KEY = keystore.generate_signing_key()


class FakeAttester:
    def __init__(self, host: str, ima_lines: int = 3) -> None:
        self.host = host
        self.ima_lines = ima_lines
        self.calls: list[dict] = []

    def identity(self):
        self.calls.append({"identity": True})
        raise AssertionError("the TPM was asked for its identity")

    def activate_credential(self, blob, secret):
        self.calls.append({"activate": True})
        return b"secret"

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
                           sent.append((conductor, wire)),
                           agent_requests.RequestVerifier(
                               [CONDUCTOR_KEY], host))
    return manager, attester, sent


def _epoch(manager, conductor, epoch_id, value, banks, members, spread=0.0,
           key=CONDUCTOR_KEY):
    """Call start_epoch as the RPC dispatcher does, with a fanout token
    signed as ``conductor``."""
    args = {"conductor": conductor, "epoch_id": epoch_id,
            "epoch_value": value, "banks": banks, "members": members,
            "spread": spread}
    auth = agent_requests.RequestSigner(key, conductor).sign(
        "start_epoch", agent_requests.ALL_HOSTS, args)
    return manager.start_epoch({}, auth=auth, **args)


def test_answers_only_the_conductor_that_owns_the_host():
    manager, attester, sent = _manager()
    members = ["c-a", "c-b"]
    owner = HashRing(members).owner("compute-1")
    other = ({"c-a", "c-b"} - {owner}).pop()
    _epoch(manager, other, "1-x", EPOCH, ["sha256"], members)
    assert sent == [] and attester.calls == []
    _epoch(manager, owner, "1-x", EPOCH, ["sha256"], members)
    assert [c for c, _ in sent] == [owner]
    assert attester.calls[0]["nonce"] == freshness.host_nonce(b"e" * 32,
                                                              "compute-1")


def test_sends_only_what_the_conductor_has_not_seen():
    manager, attester, sent = _manager()
    _epoch(manager, "c-a", "1-x", EPOCH, ["sha256"], ["c-a"])
    attester.ima_lines = 5
    _epoch(manager, "c-a", "2-x", EPOCH, ["sha256"], ["c-a"])
    first, second = (Evidence.from_wire(w) for _, w in sent)
    assert first.event_log == b"L" and first.ima.start == 0
    assert second.event_log is None, "the log was already sent"
    assert second.ima.start == 3
    # A conductor that never heard from this host gets everything.
    _epoch(manager, "c-b", "3-x", EPOCH, ["sha256"], ["c-b"])
    third = Evidence.from_wire(sent[-1][1])
    assert third.ima.start == 0 and third.event_log == b"L"


def test_spread_delays_the_answer():
    manager, _, sent = _manager()
    _epoch(manager, "c-a", "1-x", EPOCH, ["sha256"], ["c-a"],
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
    _epoch(manager, "c-a", "1-x", EPOCH, ["sha256"], ["c-a"])
    assert sent == []


def _refused(method, *args, **kwargs):
    """The endpoint refused: the RPC dispatcher would send back the
    AgentRequestRefused that expected_exceptions wrapped."""
    with pytest.raises(messaging.ExpectedException) as info:
        method(*args, **kwargs)
    error = info.value.exc_info[1]
    assert isinstance(error, exception.AgentRequestRefused), error
    return error


def _call(manager, method, host="compute-1", key=CONDUCTOR_KEY, **args):
    auth = agent_requests.RequestSigner(key, "c-a").sign(method, host, args)
    return getattr(manager, method)({}, auth=auth, **args)


CALLS = {
    "get_identity": {},
    "activate_credential": {"credential_blob": "AA==",
                            "encrypted_secret": "AA=="},
    "get_evidence": {"nonce": base64.b64encode(b"n" * 32).decode(),
                     "banks": ["sha256"], "ima_start": 0, "event_log": True,
                     "conductor": "c-a"},
    "start_epoch": {"conductor": "c-a", "epoch_id": "1-x",
                    "epoch_value": EPOCH, "banks": ["sha256"],
                    "members": ["c-a"], "spread": 0.0},
    "list_vtpms": {},
}


class FakeVTPMDriver:
    """A vTPM driver that records being asked."""

    name = "fake"

    def __init__(self) -> None:
        self.asked = 0

    def list(self):
        from trusted_pools.vtpm.driver import VTPMInfo, VTPMStatus
        self.asked += 1
        return [VTPMInfo("00000000-0000-4000-8000-000000000001",
                         VTPMStatus.RUNNING),
                VTPMInfo("00000000-0000-4000-8000-000000000002",
                         VTPMStatus.FAILED, reason="swtpm died")]


def test_list_vtpms_answers_from_the_driver_only_when_signed():
    manager, attester, _ = _manager()
    assert _call(manager, "list_vtpms") == {
        "host": "compute-1", "enabled": False, "driver": None, "vtpms": []}
    manager.vtpm = FakeVTPMDriver()
    _refused(manager.list_vtpms, {})
    _refused(manager.list_vtpms, {}, auth=agent_requests.RequestSigner(
        keystore.generate_signing_key(), "c-a").sign(
            "list_vtpms", "compute-1", {}))
    assert manager.vtpm.asked == 0
    assert _call(manager, "list_vtpms") == {
        "host": "compute-1", "enabled": True, "driver": "fake", "vtpms": [
            {"instance": "00000000-0000-4000-8000-000000000001",
             "status": "running", "reason": None},
            {"instance": "00000000-0000-4000-8000-000000000002",
             "status": "failed", "reason": "swtpm died"}]}
    assert attester.calls == []


@pytest.mark.parametrize("method", sorted(CALLS))
def test_unsigned_or_foreign_requests_never_reach_the_tpm(method):
    manager, attester, sent = _manager()
    attacker = keystore.generate_signing_key()
    args = CALLS[method]
    target = (agent_requests.ALL_HOSTS if method == "start_epoch"
              else "compute-1")
    forged = agent_requests.RequestSigner(attacker, "c-a").sign(
        method, target, args)
    for auth in (None, "", forged):
        _refused(getattr(manager, method), {}, auth=auth, **args)
    _refused(getattr(manager, method), {}, **args)       # no auth at all
    assert attester.calls == [] and sent == []


def test_a_signed_call_is_answered():
    manager, attester, _ = _manager()
    assert _call(manager, "activate_credential",
                 **CALLS["activate_credential"]) == base64.b64encode(
                     b"secret").decode()
    wire = _call(manager, "get_evidence", **CALLS["get_evidence"])
    assert wire["host"] == "compute-1" and len(attester.calls) == 2


def test_a_call_signed_for_another_host_is_refused():
    manager, attester, _ = _manager()
    error = _refused(_call, manager, "get_evidence", host="compute-2",
                     **CALLS["get_evidence"])
    assert "compute-2" in str(error)
    assert attester.calls == []


def test_a_replayed_older_epoch_is_ignored():
    manager, attester, sent = _manager()
    signer = agent_requests.RequestSigner(CONDUCTOR_KEY, "c-a")
    tokens = []
    for epoch_id in ("1-x", "2-x"):
        args = dict(CALLS["start_epoch"], epoch_id=epoch_id)
        tokens.append((args, signer.sign("start_epoch",
                                         agent_requests.ALL_HOSTS, args)))
    (old_args, old), (new_args, new) = tokens
    manager.start_epoch({}, auth=new, **new_args)  # the newer one first
    error = _refused(manager.start_epoch, {}, auth=old, **old_args)
    assert "not newer" in str(error)
    assert [w["epoch_id"] for _, w in sent] == ["2-x"]
    assert len(attester.calls) == 1


def test_no_ak_before_enrollment_is_said_once_with_the_fix(caplog):
    # Issue 14, friction 7: the agent of a host not enrolled yet logged a
    # raw TPM_RC_HANDLE at every epoch.
    manager, attester, sent = _manager()
    attester.ak_handle = 0x81008001
    answers = {"fail": True}
    real_evidence = attester.evidence

    def evidence(*args, **kwargs):
        if answers["fail"]:
            raise exception.TPMError(command="ReadPublic", rc=0x18B,
                                     decoded="TPM_RC_HANDLE",
                                     name="TPM_RC_HANDLE", handle=1,
                                     parameter=None, session=None)
        return real_evidence(*args, **kwargs)
    attester.evidence = evidence
    caplog.set_level("DEBUG", logger="trusted_pools.agent.manager")
    for epoch in range(3):
        _epoch(manager, "c-a", "%d-x" % epoch, EPOCH, ["sha256"], ["c-a"])
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    text = warnings[0].getMessage()
    assert "0x81008001" in text and "openstack trusted host enroll " \
        "compute-1" in text
    assert "TPM_RC_HANDLE" not in text and sent == []
    # Enrolled: it answers; a later loss of the AK is said again.
    answers["fail"] = False
    _epoch(manager, "c-a", "3-x", EPOCH, ["sha256"], ["c-a"])
    assert len(sent) == 1
    answers["fail"] = True
    caplog.clear()
    _epoch(manager, "c-a", "4-x", EPOCH, ["sha256"], ["c-a"])
    assert [r.levelname for r in caplog.records].count("WARNING") == 1


def test_other_tpm_failures_are_still_warned_each_epoch(caplog):
    manager, attester, sent = _manager()

    def evidence(*args, **kwargs):
        raise exception.TPMError(command="Quote", rc=0x9A2,
                                 decoded="TPM_RC_BAD_AUTH",
                                 name="TPM_RC_BAD_AUTH", handle=None,
                                 parameter=None, session=1)
    attester.evidence = evidence
    for epoch in range(2):
        _epoch(manager, "c-a", "%d-x" % epoch, EPOCH, ["sha256"], ["c-a"])
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and "Quote" in warnings[0].getMessage()
