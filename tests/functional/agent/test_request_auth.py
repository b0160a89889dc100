"""A compromised compute host holds bus credentials but no conductor key:
it calls a clean host's agent and announces epochs over the real RabbitMQ,
against real agents on swtpm TPMs and a real conductor. Every request is
refused or ignored, no evidence leaves in answer, and the pool's verdicts
stay trusted."""

from __future__ import annotations

import base64
import datetime
import os
import threading
import time

import jwt
import oslo_messaging as messaging
import pytest

from tests.pool_harness import TrustedPool
from trusted_pools import exception
from trusted_pools.agent import rpcapi as agent_rpcapi
from trusted_pools.protocol import agent_requests
from trusted_pools.protocol import keystore
from trusted_pools.common import rpc

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq]

CONDUCTOR = "conductor-a"


class Eavesdropper:
    """The compromised host's own agent queue: it receives every epoch
    fanout, token included, as any agent does. It keeps the genuine ones
    (the conductor's public key is no secret), not its own spoofs."""

    target = messaging.Target(version=agent_rpcapi.RPC_API_VERSION)

    def __init__(self, conductor_key) -> None:
        self.public_key = keystore.public_key_of(conductor_key)
        self.epochs: list[dict] = []
        self.lock = threading.Lock()

    def _genuine(self, kwargs: dict) -> bool:
        args = {k: v for k, v in kwargs.items() if k != "auth"}
        try:
            claims = jwt.decode(kwargs.get("auth"), self.public_key,
                                algorithms=["EdDSA"])
        except jwt.PyJWTError:
            return False
        return claims["args"] == agent_requests.args_digest(args)

    @messaging.expose
    def start_epoch(self, context: dict, **kwargs) -> None:
        if self._genuine(kwargs):
            with self.lock:
                self.epochs.append(kwargs)


def _spy_on_agents(pool: TrustedPool) -> dict[str, list[str]]:
    """host -> epoch ids of the evidence its agent pushed."""
    pushed: dict[str, list[str]] = {h.name: [] for h in pool.hosts}
    for host in pool.hosts:
        manager = host.agent.manager
        real = manager._send_evidence

        def send(context, conductor, wire, _real=real, _name=host.name):
            pushed[_name].append(wire.get("epoch_id"))
            return _real(context, conductor, wire)
        manager._send_evidence = send
    return pushed


def _spy_on_tpm(host) -> list[str]:
    """What the victim's attester was asked for, with the nonces."""
    calls: list[str] = []
    attester = host.agent.attester
    for name in ("identity", "activate_credential", "evidence"):
        real = getattr(attester, name)

        def wrapper(*args, _real=real, _name=name, **kwargs):
            calls.append(_name if _name != "evidence"
                         else "evidence:%s" % args[0].hex())
            return _real(*args, **kwargs)
        setattr(attester, name, wrapper)
    return calls


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.1)


def _refused(call, *args, **kwargs) -> exception.AgentRequestRefused:
    with pytest.raises(exception.AgentRequestRefused) as info:
        call(*args, **kwargs)
    return info.value


def test_bus_access_alone_gets_nothing_from_an_agent(
        tmp_path, rabbit_conf, swtpm_pool, swtpm_ca):
    pool = TrustedPool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                       "sqlite:///%s" % (tmp_path / "tp.sqlite"), interval=2)
    pool.configure()
    eavesdrop = Eavesdropper(keystore.load_signing_key(
        rabbit_conf.conductor.signing_key_path))
    evil_server = rpc.get_server(
        messaging.Target(topic=agent_rpcapi.TOPIC, server="evil-host"),
        [eavesdrop])
    try:
        hosts = pool.add_hosts(2)
        victim = hosts[0]
        pool.start_agents()
        evil_server.start()
        conductor = pool.start_conductor(CONDUCTOR)
        # Enrollment and the cycle run on signed requests.
        pool.enroll_all()
        api = pool.api()
        captured = api.capture_policy({}, victim.name)
        api.create_policy({}, "golden", "measured_boot",
                          captured["measured_boot"])
        api.assign_policy({}, "default", "golden")
        names = [h.name for h in hosts]
        pool.wait_for(lambda v: all(
            n in v and v[n].policy_versions and v[n].status == "trusted"
            for n in names), timeout=60)
        pushed = _spy_on_agents(pool)
        tpm_calls = _spy_on_tpm(victim)
        _wait(lambda: len(eavesdrop.epochs) >= 1, 10, "a genuine epoch")
        old_epoch = dict(eavesdrop.epochs[-1])
        attack_start = datetime.datetime.fromtimestamp(
            time.time(), datetime.timezone.utc)

        # --- direct calls to the clean host's agent ------------------------
        attacker = rpc.get_client(messaging.Target(
            topic=agent_rpcapi.TOPIC, version="1.0"), timeout=10)
        to_victim = attacker.prepare(server=victim.name,
                                     version=agent_rpcapi.RPC_API_VERSION)
        own_key = keystore.generate_signing_key()
        own_signer = agent_requests.RequestSigner(own_key, CONDUCTOR)
        relay = {"credential_blob": base64.b64encode(os.urandom(68)).decode(),
                 "encrypted_secret": base64.b64encode(
                     os.urandom(256)).decode()}
        attacker_nonce = os.urandom(32)
        challenge = {"nonce": base64.b64encode(attacker_nonce).decode(),
                     "banks": ["sha256"], "ima_start": 0, "event_log": True,
                     "conductor": None}
        for method, args in (("get_identity", {}),
                             ("activate_credential", relay),
                             ("get_evidence", challenge)):
            reasons = [
                str(_refused(to_victim.call, {}, method, **args)),
                str(_refused(to_victim.call, {}, method, auth=own_signer.sign(
                    method, victim.name, args), **args)),
                # A genuine token, lifted from the epoch fanout.
                str(_refused(to_victim.call, {}, method,
                             auth=old_epoch["auth"], **args)),
            ]
            assert "no conductor signature" in reasons[0]
            assert "does not pin" in reasons[1]
            assert "issued for 'start_epoch'" in reasons[2]
        # The 1.0 API (no auth at all) is no way around it.
        _refused(attacker.prepare(server=victim.name).call, {},
                 "get_identity")

        # --- epochs announced to every agent -------------------------------
        spoofed = {"conductor": CONDUCTOR, "epoch_id": "666-evil",
                   "epoch_value": base64.b64encode(os.urandom(32)).decode(),
                   "banks": ["sha256"], "members": [CONDUCTOR],
                   "spread": 0.0}
        fanout = attacker.prepare(fanout=True,
                                  version=agent_rpcapi.RPC_API_VERSION)
        fanout.cast({}, "start_epoch", **spoofed)
        fanout.cast({}, "start_epoch", auth=own_signer.sign(
            "start_epoch", agent_requests.ALL_HOSTS, spoofed), **spoofed)
        # A genuine epoch's token on the attacker's epoch value.
        fanout.cast({}, "start_epoch", **dict(
            old_epoch, epoch_value=spoofed["epoch_value"]))
        # Replays of genuine fanouts, once the agents have answered newer
        # ones: the older one and the newest one, word for word.
        answered = lambda epoch_id: all(  # noqa: E731
            epoch_id in ids for ids in pushed.values())
        _wait(lambda: eavesdrop.epochs[-1]["epoch_id"]
              != old_epoch["epoch_id"], 10, "a newer epoch")
        newest = dict(eavesdrop.epochs[-1])
        _wait(lambda: answered(newest["epoch_id"]), 10,
              "the agents' answers to the newest epoch")
        counts = {n: list(ids) for n, ids in pushed.items()}
        fanout.cast({}, "start_epoch", **old_epoch)
        fanout.cast({}, "start_epoch", **newest)
        # Long enough for any agent to have answered (spread <= 1 s).
        time.sleep(3)

        for name, ids in pushed.items():
            assert "666-evil" not in ids, name
            for epoch in (old_epoch, newest):
                assert ids.count(epoch["epoch_id"]) == counts[name].count(
                    epoch["epoch_id"]) <= 1, (name, epoch["epoch_id"], ids)
        # The victim's TPM was never asked for anything but epoch quotes.
        assert "identity" not in tpm_calls
        assert "activate_credential" not in tpm_calls
        assert "evidence:%s" % attacker_nonce.hex() not in tpm_calls
        # The cycle went on, and nothing became untrusted.
        assert any(len(ids) > len(counts[n]) for n, ids in pushed.items()) \
            or conductor.manager.epochs.current.epoch_id != newest["epoch_id"]
        since = pool.db.verdicts_since(attack_start)
        assert since, "no verdict during the attack: the cycle stopped"
        assert all(v.status == "trusted" for v in since), [
            (v.status, v.reasons) for v in since if v.status != "trusted"]
        latest = pool.latest()
        assert all(latest[n].status == "trusted" for n in names)
    finally:
        evil_server.stop()
        evil_server.wait()
        pool.close()
