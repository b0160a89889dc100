"""Deep attestation and binding-key certification as host operations
(conductor RPC 3.3) on real TPMs, and instance verdicts kept in the
database, tied to their host: the management endpoint answers at once
with a pending operation, the worker verifies, the operation's row holds
the result; an instance verdict stops reading as trusted once its host
is judged otherwise or its enrollment is reset.

Reuses the module world of :mod:`.test_deep_attestation` (two enrolled
swtpm hosts, vTPMs provisioned under their vTPM CAs); the worker pool is
replaced by running the work in line, so the row is final when the
endpoint returns.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests import pool_harness
from tests import swtpm_pool as swtpm_pool_module
from tests.functional.vtpm.test_deep_attestation import (  # noqa: F401
    Guest, _challenge, world)
from trusted_pools import exception
from trusted_pools.agent.attester import Attester
from trusted_pools.api import errors as api_errors
from trusted_pools.api import operations as api_operations
from trusted_pools.conductor.endpoints import ManagementEndpoint
from trusted_pools.protocol import verdict as verdict_mod
from trusted_pools.verifier import deep
from trusted_pools.verifier import instance_standing
from trusted_pools.vtpm import binding

pytestmark = pytest.mark.swtpm


@pytest.fixture
def endpoint(world):
    manager = world["manager"]
    spawn = manager.spawn
    manager.spawn = lambda work: work()
    try:
        yield ManagementEndpoint(manager)
    finally:
        manager.spawn = spawn


def _unwrapped(call):
    """What the RPC caller would get: the typed error an endpoint declares
    (expected_exceptions wraps it for the dispatcher)."""
    import oslo_messaging as messaging
    try:
        return call()
    except messaging.ExpectedException as wrapped:
        raise wrapped.exc_info[1] from None


def _row(manager, answer):
    assert set(answer) == {"host", "operation", "state"}, answer
    assert answer["state"] == "pending"
    return manager.db.get_operation(answer["operation"])


def _judged(manager, instance):
    return instance_standing.judge(manager.db.instance_verdict(instance),
                                   time.time())


def test_deep_attest_is_a_host_operation_and_its_verdict_is_stored(
        world, endpoint):
    manager, guest = world["manager"], world["guests"]["compute-a"]
    nonce = endpoint.challenge_instance({}, "compute-a", guest.instance)
    assert nonce["host"] == "compute-a" and nonce["expires_in"] > 0
    import base64
    evidence = guest.quote(base64.b64decode(nonce["nonce"]))
    row = _row(manager, endpoint.deep_attest({}, "compute-a", [evidence]))
    assert (row.kind, row.state, row.hostname) == (
        "deep_attest", "done", "compute-a")
    (entry,) = row.result["instances"]
    assert entry["verdict"]["status"] == "trusted", entry
    judged = _judged(manager, guest.instance)
    assert (judged.status, judged.stands, judged.host) == (
        "trusted", True, "compute-a")
    assert judged.signed_result == entry["signed_result"]
    assert api_operations.result_or_raise(row) == row.result


def test_deep_attest_checks_the_request_before_queueing(world, endpoint):
    manager = world["manager"]
    before = len(manager.db.list_operations("compute-a", limit=1000))
    for instances in ([], "junk", [{}] * (deep.MAX_BATCH + 1)):
        with pytest.raises(exception.InvalidParameterValue):
            _unwrapped(lambda: endpoint.deep_attest({}, "compute-a",
                                                    instances))
    with pytest.raises(exception.HostNotFound):
        _unwrapped(lambda: endpoint.deep_attest({}, "compute-x", [{}]))
    with pytest.raises(exception.InvalidParameterValue):
        _unwrapped(lambda: endpoint.challenge_instance(
            {}, "compute-a", "not-a-uuid"))
    with pytest.raises(exception.HostNotFound):
        _unwrapped(lambda: endpoint.challenge_instance(
            {}, "compute-x", str(uuid.uuid4())))
    assert len(manager.db.list_operations("compute-a", limit=1000)) == \
        before


def test_refused_batch_is_a_failed_operation_the_api_types(world, endpoint,
                                                           monkeypatch):
    """A host that cannot vouch fails the whole batch: the row names the
    deep-attestation error, and the API shows it as a 409, not a 500."""
    manager, guest = world["manager"], world["guests"]["compute-a"]
    real_clock = manager.clock
    evidence = guest.quote(_challenge(manager, guest))
    monkeypatch.setattr(manager, "clock",
                        lambda: real_clock() + manager.validity + 1)
    row = _row(manager, endpoint.deep_attest({}, "compute-a", [evidence]))
    assert (row.state, row.error_type) == ("failed", "HostVerdictStale")
    error = api_operations.error_of(row)
    assert isinstance(error, deep.HostVerdictStale)
    assert api_errors.status_of(error) == 409


def test_certify_binding_key_is_a_host_operation(world, endpoint):
    manager = world["manager"]
    row = _row(manager, endpoint.certify_binding_key({}, "compute-a"))
    assert (row.kind, row.state) == ("certify", "done"), row
    host = manager.db.get_host_by_name("compute-a")
    assert manager.db.get_binding_key(host.id).name_hex == \
        row.result["name"]


def test_instance_verdict_falls_with_its_host(world, endpoint):
    """compute-b's instance is trusted; the host is then judged unknown
    (its agent went silent): the stored instance verdict no longer reads
    as trusted, and does not come back when the host is trusted again."""
    manager, guest = world["manager"], world["guests"]["compute-b"]
    (entry,) = manager.deep_attest({}, "compute-b", [
        guest.quote(_challenge(manager, guest))])
    assert entry["verdict"]["status"] == "trusted", entry
    assert _judged(manager, guest.instance).stands
    state = manager._state("compute-b")
    manager._record([(state, verdict_mod.unknown_verdict(
        host="compute-b", reason="agent silent",
        issued_at=int(manager.clock()), validity=60))])
    try:
        judged = _judged(manager, guest.instance)
        assert (judged.status, judged.level, judged.stands) == (
            "unknown", 0, False)
        assert judged.signed_result is None
    finally:
        assert manager.attest_now({}, "compute-b")["verdict"]["status"] \
            == "trusted"
    assert not _judged(manager, guest.instance).stands


def test_instance_verdict_falls_with_a_reset_enrollment(world, swtpm_pool):
    """A host of its own (compute-d): after the operator's reset, and
    after the host enrolls again, its instance's verdict made under the
    earlier enrollment reads unknown."""
    manager, agents = world["manager"], world["agents"]
    (tpm,) = swtpm_pool(1)
    log = swtpm_pool_module.BOOTED_HOST_LOGS["ubuntu-2104"]
    swtpm_pool_module.boot_from_event_log(tpm, log)
    agents.attesters["compute-d"] = Attester(
        "compute-d", tpm.device, event_log_path=str(log))
    try:
        manager.enroll_host({}, "compute-d",
                            ek_sha256=pool_harness.ek_sha256(tpm))
        assert manager.attest_now({}, "compute-d")["verdict"][
            "status"] == "trusted"
        vtpm = world["vtpms"]["compute-b"]
        instance = str(uuid.uuid4())
        guest = Guest(vtpm, binding.Provisioner(
            binding.HostCA("compute-d", tpm.device),
            ak_handle=0x81010005).provision(vtpm.tcti, instance), instance)
        from trusted_pools.protocol.evidence import encode_b64
        from trusted_pools.tpm import device as tpm_device
        from tests.functional.vtpm.test_deep_attestation import GUEST_PCRS
        nonce = _challenge(manager, guest)
        with tpm_device.TPMDevice(vtpm.tcti) as dev:
            attest, signature = dev.quote(0x81010005, nonce, GUEST_PCRS)
        (entry,) = manager.deep_attest({}, "compute-d", [dict(
            guest.quote(nonce), vm_quote=encode_b64(attest),
            vm_signature=encode_b64(signature))])
        assert entry["verdict"]["status"] == "trusted", entry
        assert _judged(manager, instance).stands
        manager.reset_enrollment({}, "compute-d")
        judged = _judged(manager, instance)
        assert (judged.status, judged.stands) == ("unknown", False)
        assert any("enrollment" in r for r in judged.reasons)
        manager.enroll_host({}, "compute-d",
                            ek_sha256=pool_harness.ek_sha256(tpm))
        assert manager.attest_now({}, "compute-d")["verdict"][
            "status"] == "trusted"
        assert not _judged(manager, instance).stands
    finally:
        agents.attesters.pop("compute-d").close()


# --- the operator's view of a host's vTPMs ------------------------------------

def test_list_vtpms_reports_the_drivers_vtpms(world, endpoint, make_driver):
    """The swtpm driver on compute-a's TPM runs one vTPM and has another
    stopped; the host operation's result is the agent's report of them,
    labelled host-reported."""
    manager, agents = world["manager"], world["agents"]
    driver = make_driver(world["tpms"]["compute-a"], "report")
    running, stopped = str(uuid.uuid4()), str(uuid.uuid4())
    driver.create(running)
    driver.create(stopped)
    driver.start(running)
    agents.vtpms["compute-a"] = driver
    try:
        row = _row(manager, endpoint.list_vtpms({}, "compute-a"))
    finally:
        agents.vtpms.pop("compute-a")
    assert (row.kind, row.state) == ("list_vtpms", "done"), row
    report = row.result
    assert (report["host"], report["source"], report["driver"]) == (
        "compute-a", "host-reported", "swtpm")
    assert "not evidence" in report["note"]
    assert {(e["instance"], e["status"], e["conflict"])
            for e in report["vtpms"]} == {(running, "running", False),
                                          (stopped, "stopped", False)}
    # Without a driver the host says so.
    row = _row(manager, endpoint.list_vtpms({}, "compute-a"))
    assert (row.result["enabled"], row.result["vtpms"]) == (False, [])


class _ReportingAgents:
    """compute-a's agent, compromised: its list_vtpms answer is the
    attacker's; every other call is the honest agents'."""

    def __init__(self, honest, answer) -> None:
        self._honest = honest
        self.answer = answer

    def __getattr__(self, name):
        return getattr(self._honest, name)

    def list_vtpms(self, context, host):
        return self.answer


def _entry(instance=None, status="running"):
    return {"instance": instance or str(uuid.uuid4()), "status": status,
            "reason": None}


@pytest.mark.parametrize("answer,why", [
    ({"host": "compute-a", "enabled": True, "driver": "swtpm",
      "vtpms": [_entry() for _ in range(4097)]}, "4097 entries"),
    ({"host": "compute-a", "vtpms": [_entry("../../etc")]}, "not a UUID"),
    ({"host": "compute-a", "vtpms": [_entry(status="trusted")]},
     "status"),
    ({"host": "compute-a", "vtpms": [dict(_entry(), reason=["x"])]},
     "reason"),
    ({"host": "compute-a", "vtpms": ["junk"]}, "not an object"),
    ({"host": "compute-a", "vtpms": [_entry(str(uuid.UUID(int=1)))] * 2},
     "listed twice"),
    ({"host": "compute-b", "vtpms": []}, "names host"),
    ({"host": "compute-a", "vtpms": {}}, "not a list"),
    ("x" * 10_000, "not an object"),
])
def test_compromised_agent_report_is_refused_with_the_reason(
        world, endpoint, answer, why):
    manager = world["manager"]
    honest = manager.agents
    manager.agents = _ReportingAgents(honest, answer)
    try:
        row = _row(manager, endpoint.list_vtpms({}, "compute-a"))
    finally:
        manager.agents = honest
    assert (row.state, row.error_type) == ("failed", "HostReportRefused")
    assert why in row.error["message"]
    assert api_errors.status_of(api_operations.error_of(row)) == 409


def test_report_naming_another_hosts_instance_changes_nothing(world,
                                                              endpoint):
    """compute-a reports compute-b's attested instance as its own, with a
    long reason: the claim is shown flagged (and the reason cut), and
    compute-b's instance verdict and both hosts' verdicts stand."""
    manager, guest_b = world["manager"], world["guests"]["compute-b"]
    (entry,) = manager.deep_attest({}, "compute-b", [
        guest_b.quote(_challenge(manager, guest_b))])
    assert entry["verdict"]["status"] == "trusted", entry
    before = {name: manager.db.latest_verdicts([
        manager.db.get_host_by_name(name).id])[0].sequence
        for name in ("compute-a", "compute-b")}
    honest = manager.agents
    manager.agents = _ReportingAgents(honest, {
        "host": "compute-a", "enabled": True, "driver": "swtpm",
        "vtpms": [dict(_entry(guest_b.instance, "failed"),
                       reason="r" * 100_000)]})
    try:
        row = _row(manager, endpoint.list_vtpms({}, "compute-a"))
    finally:
        manager.agents = honest
    (shown,) = row.result["vtpms"]
    assert (shown["instance"], shown["attested_on"], shown["conflict"]) == (
        guest_b.instance, "compute-b", True)
    assert len(shown["reason"]) == 512
    judged = _judged(manager, guest_b.instance)
    assert (judged.host, judged.stands) == ("compute-b", True)
    assert {name: manager.db.latest_verdicts([
        manager.db.get_host_by_name(name).id])[0].sequence
        for name in ("compute-a", "compute-b")} == before
