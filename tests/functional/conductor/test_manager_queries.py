"""Conductor endpoints that only read the database (SQLite file)."""

from __future__ import annotations

import datetime

import oslo_messaging as messaging
import pytest

from trusted_pools import exception
from trusted_pools.api import operations
from trusted_pools.protocol import keystore
from trusted_pools.conductor import endpoints
from trusted_pools.conductor.manager import ConductorManager
from trusted_pools.db import api as db_api
from trusted_pools.db import migration


def _manager(tmp_path) -> ConductorManager:
    db = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp_path / "q.sqlite")))
    migration.upgrade(engine=db.get_engine())
    return ConductorManager("conductor-q", db,
                            keystore.generate_signing_key(), None, None, b"")


def _verdict(host_id: int, at: datetime.datetime, token: str
             ) -> db_api.NewVerdict:
    return db_api.NewVerdict(host_id=host_id, status="trusted", level=3,
                             issued_at=at,
                             expires_at=at + datetime.timedelta(minutes=3),
                             signed_result=token)


def test_verdicts_since_gives_each_hosts_newest_only(tmp_path):
    manager = _manager(tmp_path)
    a = manager.db.create_host("host-a")
    b = manager.db.create_host("host-b")
    t0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    step = datetime.timedelta(seconds=60)
    manager.db.add_verdicts([_verdict(a.id, t0, "a1"),
                             _verdict(a.id, t0 + step, "a2"),
                             _verdict(b.id, t0 + step, "b1"),
                             _verdict(a.id, t0 + 2 * step, "a3")])
    rows = manager.verdicts_since({}, (t0 - step).timestamp())
    assert sorted((r["host"], r["signed_result"]) for r in rows) == [
        ("host-a", "a3"), ("host-b", "b1")]
    later = manager.verdicts_since({}, (t0 + step).timestamp())
    assert [(r["host"], r["signed_result"]) for r in later] == [
        ("host-a", "a3")]


def test_public_key_is_published_in_the_database_under_its_thumbprint(
        tmp_path):
    """Where the API's JWKS reads it (keys never travel over the bus)."""
    manager = _manager(tmp_path)
    manager.register()
    (record,) = [c for c in manager.db.list_conductors()
                 if c.hostname == manager.host]
    key = keystore.public_key_from_pem(record.public_key)
    assert keystore.jwk_thumbprint(key) == record.key_id
    assert record.key_id == manager.signer.kid


class _Agents:
    """Stands in for the agents' RPC client: answers a direct challenge
    with whatever the test needs (here: nothing useful)."""

    def __init__(self) -> None:
        self.nonces = []

    def get_evidence(self, context, host, nonce, banks, ima_start,
                     event_log, conductor=None):
        self.nonces.append(nonce)
        return {"version": 1, "host": host}


def test_attest_now_does_not_end_the_running_epoch(tmp_path):
    from trusted_pools.tpm import keys
    from cryptography.hazmat.primitives.asymmetric import ec
    manager = _manager(tmp_path)
    manager.agents = _Agents()
    host = manager.db.create_host("host-a")
    ak = keys.public_from_key(ec.generate_private_key(
        ec.SECP256R1()).public_key())
    manager.db.set_registration(host.id, b"cert", ak.raw, ak.name())
    manager.db.update_host_state(host.id, "enrolled")
    epoch = manager.epochs.start_epoch(0.0)
    for _ in range(3):
        result = manager.attest_now({}, "host-a")
        assert result["verdict"]["status"] == "untrusted"
    # Evidence for the running epoch is still accepted as fresh.
    assert manager.epochs.expected_nonce(epoch.epoch_id, "host-a")
    assert len(set(manager.agents.nonces)) == 3


def test_a_failed_quote_makes_the_registration_be_read_again(tmp_path):
    """A host re-enrolled through another conductor (new AK) must not stay
    untrusted on the conductor that cached its old AK."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from trusted_pools.protocol.evidence import Evidence
    from trusted_pools.tpm import keys
    manager = _manager(tmp_path)
    host = manager.db.create_host("host-a")
    old = keys.public_from_key(ec.generate_private_key(
        ec.SECP256R1()).public_key())
    manager.db.set_registration(host.id, b"cert", old.raw, old.name())
    manager.db.update_host_state(host.id, "enrolled")
    state = manager._state("host-a")
    assert state.ak.raw == old.raw
    new = keys.public_from_key(ec.generate_private_key(
        ec.SECP256R1()).public_key())
    manager.db.set_registration(host.id, b"cert2", new.raw, new.name())
    bogus = Evidence(host="host-a", quote=b"\xff" * 40, signature=b"\x00",
                     pcrs={0x000B: {0: bytes(32)}})
    verdict = manager._verify(state, bogus, bytes(32))
    assert verdict.status.value == "untrusted"
    assert manager._state("host-a").ak.raw == new.raw


def test_verdicts_since_answers_the_latest_stored_not_the_latest_dated(
        tmp_path):
    """A conductor whose clock runs ahead stored a trusted verdict dated
    in the future; a correct-clock conductor stored an untrusted one
    after it. The refresh must answer the untrusted one (greater
    sequence), not the one with the later issued_at."""
    manager = _manager(tmp_path)
    a = manager.db.create_host("host-a")
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    ahead = now + datetime.timedelta(minutes=10)
    manager.db.add_verdicts([_verdict(a.id, ahead, "old-trusted-ahead")])
    manager.db.add_verdicts([db_api.NewVerdict(
        host_id=a.id, status="untrusted", level=0, issued_at=now,
        expires_at=now + datetime.timedelta(minutes=3),
        signed_result="new-untrusted")])
    rows = manager.verdicts_since({}, (now - datetime.timedelta(
        seconds=30)).timestamp())
    assert [(r["host"], r["signed_result"]) for r in rows] == [
        ("host-a", "new-untrusted")]
    stored = manager.db.verdict_history(a.id)
    assert [v.signed_result for v in stored] == ["new-untrusted",
                                                 "old-trusted-ahead"]
    assert stored[0].sequence > stored[1].sequence




@pytest.mark.parametrize("since", [1e12, -1e12, float("nan"), float("inf"),
                                   "yesterday", None, True, [0]])
def test_verdicts_since_refuses_a_bad_time_with_a_typed_error(tmp_path,
                                                              since):
    """Found by bench/fuzz.py (conductor.rpc): a time past year 9999 (or
    not a number) raised ValueError/TypeError out of the RPC endpoint."""
    manager = _manager(tmp_path)
    # The endpoint's expected_exceptions wraps it as the RPC server would.
    with pytest.raises(messaging.ExpectedException) as info:
        endpoints.VerdictsEndpoint(manager).verdicts_since({}, since)
    error = info.value.exc_info[1]
    assert isinstance(error, exception.InvalidParameterValue), error
    assert "since" in str(error)


def _refusal(call):
    with pytest.raises(messaging.ExpectedException) as info:
        call()
    return info.value.exc_info[1]


class _LyingAgent:
    """A compromised host's agent answering get_identity with garbage."""

    def __init__(self, identity) -> None:
        self.identity = identity
        self.activations = 0

    def get_identity(self, context, host):
        return self.identity

    def activate_credential(self, context, host, blob, secret):
        self.activations += 1
        return "AAAA"


@pytest.mark.parametrize("identity", [
    None, [], "x", {}, {"ek_certificate": "AAAA"},
    {"ek_certificate": "AAAA", "ek_public": "AAAA"},
    {"ek_certificate": 7, "ek_public": "AAAA", "ak_public": "AAAA"}])
def test_enroll_host_refuses_a_malformed_identity(tmp_path, identity):
    """Found by bench/fuzz.py (conductor.management): an identity that is
    not a mapping or lacks a field raised KeyError/TypeError."""
    manager = _manager(tmp_path)
    manager.agents = _LyingAgent(identity)
    answer = endpoints.ManagementEndpoint(manager).enroll_host({}, "host-a")
    assert answer["state"] == "pending"
    # The refusal is the operation's recorded error (RPC 3.0: the agent is
    # asked by the worker, not by the RPC thread).
    row = operations.wait(manager.db, answer["operation"], 10)
    assert (row.state, row.error_type) == ("failed", "MalformedEvidence")
    error = operations.error_of(row)
    assert isinstance(error, exception.MalformedEvidence), error
    assert manager.agents.activations == 0
    assert [h.hostname for h in manager.db.list_hosts()] == []


@pytest.mark.parametrize("method", ["attest_now", "capture_policy",
                                    "enroll_host"])
@pytest.mark.parametrize("host", [None, 7, "", ["host-a"]])
def test_management_calls_refuse_a_host_that_is_no_name(tmp_path, method,
                                                         host):
    """Found by bench/fuzz.py: a host that is not a string raised
    AttributeError in the hash ring."""
    manager = _manager(tmp_path)
    manager.agents = _LyingAgent({})
    error = _refusal(lambda: getattr(endpoints.ManagementEndpoint(manager),
                                     method)({}, host))
    assert isinstance(error, exception.InvalidParameterValue), error
    assert "host" in str(error)


def test_binding_key_request_gives_the_agent_no_operator_context(tmp_path):
    """An operator's certify-binding-key goes to the host's agent, which a
    compromised host controls: it gets the request id, never the
    operator's token, user or roles."""
    from trusted_pools.common import context as context_mod
    manager = _manager(tmp_path)
    host = manager.db.create_host("host-a", state="enrolled")
    manager.db.set_registration(host.id, b"\x01" * 32, b"ak", b"name")
    seen = []

    class _Agent:
        def get_binding_key(self, context, host, nonce):
            seen.append(context)
            return {}

    manager.agents = _Agent()
    operator = context_mod.RequestContext(
        request_id="req-op", user_id="admin", project_id="p",
        roles=["admin"], auth_token="operator-token", overwrite=False)
    with pytest.raises(exception.MalformedEvidence):
        manager._certify_binding_key(operator, "host-a")
    assert seen == [{"request_id": "req-op"}]
