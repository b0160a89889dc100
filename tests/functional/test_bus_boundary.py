"""The bus carries only what is verified: one compromised compute host,
holding nothing but its agent's RabbitMQ credentials, pulls every lever
it can see, against a real pool (swtpm TPMs, agents each on its own
RabbitMQ user, a conductor, a verdict consumer) on the users and
permissions ``trusted-pools-manage rabbitmq setup`` makes.

Every attempt is refused by the broker (ACCESS_REFUSED / NOT_ALLOWED), by
the dispatcher (a method not exposed), by a signature check, or changes
nothing; the pool's verdicts, policies and enrollments stay as they were.

The test also enumerates every method each RPC server of the pool
dispatches to and compares it with :data:`DECISIONS`: an endpoint method
added without a decision here (who may call it, on which bus) fails it.
"""

from __future__ import annotations

import datetime
import inspect
import json
import logging
import subprocess
import time
import uuid
from typing import Any, Callable

import amqp
import oslo_messaging as messaging
import pytest

from tests.functional.agent.test_request_auth import _spy_on_tpm
from tests.functional.agent.test_request_auth import _wait
from tests.pool_harness import TrustedPool
from tests.rabbitmq import RoleBuses
from trusted_pools.protocol import agent_requests
from trusted_pools.protocol import keystore
from trusted_pools.cmd import rabbitmq as setup
from trusted_pools.common import rpc
from trusted_pools.conductor import rpcapi as conductor_rpcapi
from trusted_pools.nova.scheduler import listener as listener_mod
from trusted_pools.nova.scheduler.cache import VerdictCache

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

CONDUCTOR = "conductor-a"
API = "trusted-pools-api (management bus)"
CONSUMER = "verdict consumers: nova-scheduler, trait keeper (management bus)"
BY_CONDUCTOR = "a conductor, request signed with a key the agent pins " \
               "(agent bus)"

#: (service, topic) -> {method: who may call it}. Every RPC method a
#: service's servers dispatch to must be here, and nothing else.
DECISIONS: dict[tuple[str, str], dict[str, str]] = {
    ("conductor", conductor_rpcapi.EVIDENCE_TOPIC): {
        "submit_evidence": "agents (agent bus); unverified until its "
                           "quote and logs verify",
        "submit_evidence_batch": "agents or a relay of their pushes "
                                 "(agent bus); each item is one push, "
                                 "unverified until it verifies",
    },
    ("conductor", conductor_rpcapi.TOPIC): {
        "enroll_host": API, "reset_enrollment": API, "attest_now": API,
        "capture_policy": API,
        # The key service (issue 13): compute hosts reach it only through
        # trusted-pools-api with a Keystone token; a release is wrapped
        # to the named host's TPM, so even a forged one is useless.
        "certify_binding_key": API, "store_secret": API,
        "release_secret": API + "; answers a blob only the named "
                                "attested host's TPM opens",
        "delete_secret": API,
        # vTPM migration (issue 12): an operator's (or the hypervisor
        # driver's, through the API) orders; compute hosts have no lever
        # on a migration, not even their own.
        "migrate_vtpm": API, "list_vtpm_migrations": API,
        "show_vtpm_migration": API,
        "complete_vtpm_migration": API + "; live only, after the "
                                         "hypervisor's migration",
        "abort_vtpm_migration": API + "; refused after the commit",
        # Deep attestation (issue 11, RPC 3.3): the nonce is kept by the
        # host's owner; the instances' evidence (from a tenant through
        # the API) is verified on the worker pool like any evidence, and
        # only a host quote over the batch's commitment makes a verdict.
        "challenge_instance": API, "deep_attest": API,
        "list_vtpms": API + "; the answer is the host's own report, "
                            "bounded and labelled host-reported",
    },
    ("conductor", conductor_rpcapi.VERDICTS_TOPIC): {
        "verdicts_since": CONSUMER + "; answers signed results only",
    },
    ("agent", "trusted_pools_agent"): {
        "get_identity": BY_CONDUCTOR, "activate_credential": BY_CONDUCTOR,
        "get_evidence": BY_CONDUCTOR, "start_epoch": BY_CONDUCTOR,
        "get_binding_key": BY_CONDUCTOR + "; the answer is checked "
                                          "against the registered AK",
        # vTPM migration steps (1.3): each checked against the agent's own
        # journal; the transport key it returns is checked against its
        # registered AK, the payload it returns only its peer's TPM opens.
        "migration_prepare": BY_CONDUCTOR, "migration_export": BY_CONDUCTOR,
        "migration_import": BY_CONDUCTOR,
        "migration_deliver_key": BY_CONDUCTOR,
        "migration_commit": BY_CONDUCTOR, "migration_finish": BY_CONDUCTOR,
        "migration_abort": BY_CONDUCTOR,
        # 1.5: the destination says whether QEMU's stream brought the
        # state, before the conductor commits a live migration.
        "migration_check_incoming": BY_CONDUCTOR,
        "list_vtpms": BY_CONDUCTOR + "; host-reported, bounded, never "
                                     "evidence (issue 11, agent RPC 1.4)",
    },
    ("consumer", rpc.NOTIFICATION_TOPICS[0]): {
        "info": "conductors (management bus); only the signed result "
                "counts",
    },
}

#: Which bus each topic lives on.
BUS_OF = {
    conductor_rpcapi.EVIDENCE_TOPIC: rpc.AGENT_BUS,
    conductor_rpcapi.TOPIC: rpc.MANAGEMENT_BUS,
    conductor_rpcapi.VERDICTS_TOPIC: rpc.MANAGEMENT_BUS,
    "trusted_pools_agent": rpc.AGENT_BUS,
}

#: Methods a compromised host would like to call on a conductor.
LEVERS = ["create_policy", "assign_policy", "enroll_host",
          "capture_policy", "reset_enrollment", "attest_now",
          "start_epoch", "get_public_keys", "verdicts_since",
          "process_evidence", "mark_missing", "reload_policies",
          "register", "forget_host", "store_secret", "release_secret",
          "delete_secret", "certify_binding_key", "migrate_vtpm",
          "complete_vtpm_migration", "abort_vtpm_migration",
          "list_vtpm_migrations", "show_vtpm_migration"]

_NOTIFICATION_PRIORITIES = ("audit", "debug", "info", "warn", "error",
                            "critical", "sample")


# --- what the pool's servers dispatch to ------------------------------------

def _rpc_methods(server: messaging.MessageHandlingServer) -> set[str]:
    """What the server's own dispatcher would call: public, callable and
    allowed by the access policy it runs with."""
    policy = server.dispatcher.access_policy
    return {name for endpoint in server.dispatcher.endpoints
            for name in dir(endpoint)
            if not name.startswith("_")
            and callable(getattr(endpoint, name, None))
            and policy.is_allowed(endpoint, name)}


def _notification_methods(server: messaging.MessageHandlingServer
                          ) -> set[str]:
    return {p for endpoint in server.dispatcher.endpoints
            for p in _NOTIFICATION_PRIORITIES if hasattr(endpoint, p)}


def _exposed(pool: TrustedPool, listener: listener_mod.TrustListener
             ) -> dict[tuple[str, str], set[str]]:
    exposed: dict[tuple[str, str], set[str]] = {}

    def add(key: tuple[str, str], methods: set[str]) -> None:
        exposed.setdefault(key, set()).update(methods)

    for service in pool.conductors:
        assert service._servers, "the conductor runs no RPC server"
        for server in service._servers:
            topic = server._target.topic
            add(("conductor", topic), _rpc_methods(server))
            assert server.transport is rpc._rpc_transport(BUS_OF[topic]), \
                topic
    for host in pool.hosts:
        server = host.agent._server
        add(("agent", server._target.topic), _rpc_methods(server))
    server = listener._server
    for target in server.targets:
        add(("consumer", target.topic), _notification_methods(server))
    return exposed


# --- the attacker's tools: an AMQP client and its agent's user --------------

class Attacker:
    """Whatever the compromised host can do with its agent's user."""

    def __init__(self, buses: RoleBuses, host: str) -> None:
        self.user = buses.agent_users[host]
        self.password = buses.passwords[self.user]
        self.buses = buses

    def connect(self, vhost: str) -> amqp.Connection:
        connection = amqp.Connection(
            host="127.0.0.1:5672", userid=self.user,
            password=self.password, virtual_host=vhost, connect_timeout=10)
        connection.connect()
        return connection

    def publish(self, exchange: str, routing_key: str, body: bytes,
                vhost: str | None = None) -> None:
        """Publish with a broker confirm: raises the broker's refusal."""
        connection = self.connect(vhost or self.buses.agent_vhost)
        try:
            channel = connection.channel()
            channel.confirm_select()
            channel.basic_publish_confirm(
                amqp.Message(body, content_type="application/json",
                             content_encoding="utf-8"),
                exchange=exchange, routing_key=routing_key)
        finally:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - already closed by a refusal
                pass

    def channel_op(self, action: Callable[[Any], Any]) -> None:
        connection = self.connect(self.buses.agent_vhost)
        try:
            action(connection.channel())
        finally:
            try:
                connection.close()
            except Exception:  # noqa: BLE001
                pass


def oslo_cast(method: str, version: str, **args: Any) -> bytes:
    """A cast as oslo.messaging's rabbit driver puts it on the wire."""
    return json.dumps({
        "oslo.version": "2.0",
        "oslo.message": json.dumps({
            "method": method, "args": args, "version": version,
            "_unique_id": uuid.uuid4().hex})}).encode()


def _refused(action: Callable[[], Any], code: int) -> str:
    with pytest.raises((amqp.exceptions.AMQPError, OSError)) as info:
        action()
    error = info.value
    assert getattr(error, "reply_code", None) == code, repr(error)
    return str(error)


def _queues(vhost: str) -> set[str]:
    done = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost,
                           "name"], capture_output=True, text=True,
                          timeout=60, check=True)
    return {line.strip() for line in done.stdout.splitlines()[1:]
            if line.strip()}


def _not_dispatched(caplog) -> set[str]:
    """Methods the conductor's dispatcher refused as not exposed."""
    return {record.exc_info[1].method for record in caplog.records
            if record.exc_info and isinstance(record.exc_info[1],
                                              messaging.NoSuchMethod)}


# --- the pool ----------------------------------------------------------------

@pytest.fixture
def trusted_pool(tmp_path, role_buses, role_conf, swtpm_pool, swtpm_ca):
    pool = TrustedPool(tmp_path, role_conf, swtpm_pool, swtpm_ca,
                       "sqlite:///%s" % (tmp_path / "tp.sqlite"), interval=2)
    pool.configure()
    try:
        pool.add_hosts(2)
        # Each agent on its own RabbitMQ user: the agent role's rights
        # must be enough for the real agent.
        pool.start_agents(bus_url=lambda h: role_buses.agent_url_of(h.name))
        pool.start_conductor(CONDUCTOR)
        pool.enroll_all()
        api = pool.api()
        captured = api.capture_policy({}, pool.hosts[1].name)
        api.create_policy({}, "golden", "measured_boot",
                          captured["measured_boot"])
        api.assign_policy({}, "default", "golden")
        names = [h.name for h in pool.hosts]
        pool.wait_for(lambda v: all(
            n in v and v[n].policy_versions and v[n].status == "trusted"
            for n in names), timeout=60)
        yield pool
    finally:
        pool.close()


@pytest.fixture
def consumer(trusted_pool, role_buses, role_conf):
    """nova-scheduler's verdict consumer on the consumer user, with the
    conductor key pinned in configuration."""
    url = role_buses.management_url(role_buses.consumer_user)
    notifications = messaging.get_notification_transport(role_conf, url=url)
    calls = messaging.get_rpc_transport(role_conf, url=url)
    cache = VerdictCache(listener_mod.load_public_keys(
        [str(trusted_pool.conductor_keys_path)]), max_age=60, grace=60)
    listener = listener_mod.TrustListener(
        cache, listener_mod.verdicts_client(calls, setup.CONTROL_EXCHANGE,
                                            10),
        notification_transport=notifications,
        exchange=setup.CONTROL_EXCHANGE,
        pool="trusted-pools-test-%s" % uuid.uuid4().hex[:8],
        refresh_interval=60)
    listener.start()
    try:
        yield cache, listener
    finally:
        listener.stop()
        notifications.cleanup()
        calls.cleanup()


def _snapshot(pool: TrustedPool) -> dict[str, Any]:
    db = pool.db
    return {
        "policies": sorted((p.name, p.version, p.kind)
                           for p in db.list_policies()),
        "assigned": sorted((p.name, p.version)
                           for p in db.policies_for_group("default")),
        "hosts": sorted((h.hostname, h.group, h.state)
                        for h in db.list_hosts()),
        "registrations": sorted(
            (h.hostname, db.get_registration(h.id).generation)
            for h in db.list_hosts()),
    }


def test_agent_credentials_pull_no_lever(trusted_pool, consumer,
                                         role_buses, caplog):
    pool = trusted_pool
    cache, listener = consumer
    attacker_host, victim = pool.hosts
    conductor = pool.conductors[0]
    manager = conductor.manager
    evil = Attacker(role_buses, attacker_host.name)

    # --- every method every server dispatches has a decision -----------
    exposed = _exposed(pool, listener)
    assert exposed == {key: set(methods)
                       for key, methods in DECISIONS.items()}, \
        "RPC methods without a decision in DECISIONS (or gone): %r" % {
            key: exposed.get(key, set()) ^ set(DECISIONS.get(key, {}))
            for key in set(exposed) | set(DECISIONS)
            if exposed.get(key, set()) != set(DECISIONS.get(key, {}))}

    # The consumer works on its user: the bulk refresh and pinned key.
    listener.refresh()
    assert cache.is_trusted(victim.name, 1)
    assert cache.is_trusted(attacker_host.name, 1)

    before = _snapshot(pool)
    latest_before = {n: v.id for n, v in pool.latest().items()}
    attack_start = datetime.datetime.now(datetime.timezone.utc)
    tpm_calls = _spy_on_tpm(victim)
    epoch_callers: list[set[str]] = []
    real_start_epoch = manager.start_epoch

    def start_epoch(*args, **kwargs):
        # Who asked: the names of the functions on the calling stack.
        epoch_callers.append({frame.function for frame in inspect.stack()})
        return real_start_epoch(*args, **kwargs)
    manager.start_epoch = start_epoch
    pushed_epochs: list[str] = []
    real_send = victim.agent.manager._send_evidence

    def send(context, to, wire):
        pushed_epochs.append(wire.get("epoch_id"))
        return real_send(context, to, wire)
    victim.agent.manager._send_evidence = send

    # --- 1. the management bus: the agent user has no way in ------------
    # create/assign a policy, enroll, capture, reset, attest now, the
    # verdict reads, the notifications: all live in that vhost.
    reason = _refused(lambda: evil.connect(role_buses.management_vhost), 530)
    assert "access to vhost" in reason
    # ... and none of their queues exists where the agent is.
    agent_side = _queues(role_buses.agent_vhost)
    for topic in (conductor_rpcapi.TOPIC, conductor_rpcapi.VERDICTS_TOPIC,
                  rpc.NOTIFICATION_TOPICS[0]):
        assert not any(q.startswith(topic) for q in agent_side), agent_side

    # --- 2. topic permissions on the agent bus ---------------------------
    refused_keys = [
        "%s.%s" % (conductor_rpcapi.TOPIC, CONDUCTOR),   # management
        conductor_rpcapi.TOPIC,
        "%s.%s" % (conductor_rpcapi.VERDICTS_TOPIC, CONDUCTOR),
        conductor_rpcapi.VERDICTS_TOPIC,
        rpc.NOTIFICATION_TOPICS[0] + ".info",             # forged trust
        "trusted_pools_agent.%s" % victim.name,           # another agent
        "trusted_pools_agent",
    ]
    for key in refused_keys:
        reason = _refused(lambda: evil.publish(
            setup.CONTROL_EXCHANGE, key, oslo_cast("attest_now", "2.0",
                                                   host=victim.name)), 403)
        assert "access to topic '%s'" % key in reason
    # Spoof an epoch to every agent: no write on the fanout exchange.
    reason = _refused(lambda: evil.publish(
        "trusted_pools_agent_fanout", "", oslo_cast(
            "start_epoch", "1.1", conductor=CONDUCTOR, epoch_id="forged",
            epoch_value="AAAA", banks=["sha256"], members=[CONDUCTOR])), 403)
    assert "trusted_pools_agent_fanout" in reason
    # Pose as a conductor to consumers: its verdict queue cannot be made
    # (nor read) on the agent bus either.
    for queue in (conductor_rpcapi.VERDICTS_TOPIC,
                  "%s.%s" % (conductor_rpcapi.EVIDENCE_TOPIC, CONDUCTOR)):
        _refused(lambda: evil.channel_op(lambda ch: ch.basic_consume(
            queue, callback=lambda m: None)), 403)
    _refused(lambda: evil.channel_op(lambda ch: ch.queue_declare(
        conductor_rpcapi.VERDICTS_TOPIC, auto_delete=False)), 403)
    # Bind its own queue to evidence or another agent's key: refused.
    for key in ("%s.%s" % (conductor_rpcapi.EVIDENCE_TOPIC, CONDUCTOR),
                "trusted_pools_agent.%s" % victim.name):
        _refused(lambda: evil.channel_op(lambda ch: ch.queue_bind(
            "trusted_pools_agent.%s" % attacker_host.name,
            setup.CONTROL_EXCHANGE, key)), 403)

    # --- 3. what the agent user can reach, and why it is no lever --------
    # Its own evidence channel, with the real client: garbage in the
    # victim's name earns the victim one direct challenge, no verdict.
    # Its context claims to be a cloud admin: the agent bus carries no
    # request context, the endpoint passes on an empty one, and nothing
    # it claims counts for anything.
    received_contexts: list[Any] = []
    real_submit = manager.submit_evidence

    def submit(context, evidence):
        received_contexts.append(context)
        return real_submit(context, evidence)
    manager.submit_evidence = submit
    admin_claim = {"roles": ["admin", "member", "reader"], "is_admin": True,
                   "is_admin_project": True, "user_id": "admin",
                   "project_id": "admin", "system_scope": "all",
                   "request_id": "req-forged-by-the-agent"}
    evil_bus = messaging.get_rpc_transport(
        pool.conf, url=role_buses.agent_url_of(attacker_host.name))
    try:
        pushes = conductor_rpcapi.EvidenceAPI(transport=evil_bus)
        for _ in range(3):
            pushes.submit_evidence(admin_claim, CONDUCTOR, {
                "version": 2, "host": victim.name, "epoch_id": "x",
                "quote": "%%%"})
        _wait(lambda: manager.failure_challenges.get(victim.name, 0) >= 1,
              15, "the victim's direct challenge")
    finally:
        evil_bus.cleanup()
        manager.submit_evidence = real_submit
    assert received_contexts and all(c == {} for c in received_contexts), \
        received_contexts
    assert "req-forged-by-the-agent" not in caplog.text
    # RabbitMQ's default exchange (it needs it for its replies) puts a
    # message straight into any queue of the agent bus by name. Into the
    # conductor's evidence queue: every lever is a method not exposed.
    evidence_queue = "%s.%s" % (conductor_rpcapi.EVIDENCE_TOPIC, CONDUCTOR)
    with caplog.at_level(logging.ERROR):
        for method in LEVERS:
            evil.publish("", evidence_queue, oslo_cast(
                method, conductor_rpcapi.EVIDENCE_API_VERSION,
                host=victim.name, name="evil", kind="measured_boot",
                body={}, group="default"))
        _wait(lambda: set(LEVERS) <= _not_dispatched(caplog), 15,
              "the conductor to refuse every lever")
    # Into the victim's agent queue: requests signed with its own key.
    own_key = keystore.generate_signing_key()
    forger = agent_requests.RequestSigner(own_key, CONDUCTOR)
    forged_nonce = "AB" * 16
    forged = {
        "get_evidence": dict(nonce=forged_nonce, banks=["sha256"],
                             ima_start=0, event_log=True,
                             conductor=CONDUCTOR),
        "start_epoch": dict(conductor=CONDUCTOR, epoch_id="forged-epoch",
                            epoch_value="AAAA", banks=["sha256"],
                            members=[CONDUCTOR], spread=0.0),
        "get_identity": {},
        "get_binding_key": dict(nonce=forged_nonce),
    }
    for method, args in forged.items():
        host = agent_requests.ALL_HOSTS if method == "start_epoch" \
            else victim.name
        evil.publish("", "trusted_pools_agent.%s" % victim.name, oslo_cast(
            method, "1.1", auth=forger.sign(method, host, args), **args))

    # --- 4. afterwards: nothing moved ------------------------------------
    time.sleep(3 * pool.interval)
    assert _snapshot(pool) == before
    since = pool.db.verdicts_since(attack_start)
    names = {h.id: h.hostname for h in pool.db.list_hosts()}
    statuses = {(names[v.host_id], v.status) for v in since}
    assert statuses == {(attacker_host.name, "trusted"),
                        (victim.name, "trusted")}, statuses
    latest = pool.latest()
    assert all(latest[n].id > latest_before[n] for n in latest_before)
    # One challenge for the victim, however many forged pushes.
    assert manager.failure_challenges.get(victim.name) == 1
    # Epochs are started by the conductor's own cycle, nobody else.
    assert epoch_callers and all("run_cycle" in callers
                                 for callers in epoch_callers)
    assert "forged-epoch" not in pushed_epochs
    assert not any(forged_nonce.lower() in call.lower()
                   for call in tpm_calls)
    assert "identity" not in tpm_calls
    # The consumer still sees the pool as it is; a forged notification
    # (a key nobody pinned) changes nothing there and fetches nothing.
    rogue = keystore.generate_signing_key()
    from trusted_pools.protocol import results, verdict as verdict_mod
    forged_verdict = verdict_mod.unknown_verdict(
        host=victim.name, issued_at=int(time.time()), validity=600,
        reason="forged")
    token = results.ResultSigner(rogue, "conductor-evil").sign(
        forged_verdict, sequence=10 ** 9)
    assert not listener.endpoint.handle({
        "host": victim.name, "status": "untrusted", "level": 0,
        "signed_result": token})
    listener.refresh()
    assert cache.is_trusted(victim.name, 1)
    assert cache.is_trusted(attacker_host.name, 1)
