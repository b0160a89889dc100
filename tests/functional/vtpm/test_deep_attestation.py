"""Deep attestation on real TPMs: swtpm hosts enrolled by a real
conductor manager (SQLite), swtpm vTPMs provisioned by the binding's
provisioner (AK in the vTPM, certificate signed by the host TPM's vTPM
CA), guest quotes made with TPMDevice as a guest makes them with
tpm2_quote, host quotes made by the agent's Attester.

The agents' RPC client is replaced by an in-process stand-in that calls a
real :class:`~trusted_pools.agent.attester.Attester` (the bus path of
``get_evidence`` is covered by the agent tests); a compromised host is a
stand-in that lies the way its agent could.
"""

from __future__ import annotations

import base64
import os
import uuid

import pytest

from tests import pool_harness
from tests.local_agents import LocalAgents
from tests import swtpm_pool as swtpm_pool_module
from trusted_pools import exception
from trusted_pools.agent.attester import Attester
from trusted_pools.verifier import deep
from trusted_pools.protocol import keystore, vtpm_binding
from trusted_pools.protocol.evidence import Evidence, encode_b64
from trusted_pools.conductor.manager import ConductorManager
from trusted_pools.db import api as db_api
from trusted_pools.db import migration
from trusted_pools.tpm import device as tpm_device
from trusted_pools.tpm.constants import TPM_ALG
from trusted_pools.vtpm import binding

pytestmark = pytest.mark.swtpm

SHA256 = TPM_ALG.SHA256
GUEST_PCRS = {SHA256: list(range(8))}


class Guest:
    """A VM's vTPM (a swtpm) and what its guest does with it."""

    def __init__(self, tpm, metadata: dict, instance: str,
                 ak_handle: int = binding.VTPM_AK_HANDLE) -> None:
        self.tpm = tpm
        self.metadata = metadata
        self.instance = instance
        self.ak_handle = ak_handle

    def quote(self, nonce: bytes) -> dict:
        """tpm2_quote -c 0x81008001 -q NONCE -l sha256:0,...,7"""
        with tpm_device.TPMDevice(self.tpm.tcti) as dev:
            attest, signature = dev.quote(self.ak_handle, nonce,
                                          GUEST_PCRS)
            pcrs = dev.pcr_read(GUEST_PCRS)
        return {"instance": self.instance, "vm_quote": encode_b64(attest),
                "vm_signature": encode_b64(signature),
                "vm_pcrs": {"sha256": {str(p): v.hex()
                                       for p, v in pcrs[SHA256].items()}},
                "vtpm_certificate": self.metadata["vtpm_chain"]}


@pytest.fixture(scope="module")
def world(swtpm_module_pool, swtpm_ca, tmp_path_factory):
    """Two enrolled hosts (compute-a, compute-b) with a trusted verdict,
    a vTPM CA each, and two vTPMs (one per host)."""
    host_a, host_b, vtpm_a, vtpm_b = swtpm_module_pool(4)
    attesters = {}
    log = swtpm_pool_module.BOOTED_HOST_LOGS["ubuntu-2104"]
    for name, tpm in (("compute-a", host_a), ("compute-b", host_b)):
        swtpm_pool_module.boot_from_event_log(tpm, log)
        attesters[name] = Attester(name, tpm.device,
                                   event_log_path=str(log))
    tmp = tmp_path_factory.mktemp("deep-db")
    db = db_api.Connection(db_api.make_context_manager(
        "sqlite:///%s" % (tmp / "deep.sqlite")))
    migration.upgrade(engine=db.get_engine())
    agents = LocalAgents(attesters)
    manager = ConductorManager("conductor-1", db,
                               keystore.generate_signing_key(), agents,
                               None, swtpm_ca.bundle_pem)
    cas, guests = {}, {}
    for name, tpm, vtpm in (("compute-a", host_a, vtpm_a),
                            ("compute-b", host_b, vtpm_b)):
        manager.enroll_host({}, name,
                            ek_sha256=pool_harness.ek_sha256(tpm))
        verdict = manager.attest_now({}, name)["verdict"]
        assert verdict["status"] == "trusted", verdict
        cas[name] = binding.HostCA(name, tpm.device)
        instance = str(uuid.uuid4())
        provisioner = binding.Provisioner(cas[name])
        guests[name] = Guest(vtpm, provisioner.provision(
            vtpm.tcti, instance), instance)
    return {"manager": manager, "agents": agents, "cas": cas,
            "guests": guests, "tpms": {"compute-a": host_a,
                                       "compute-b": host_b},
            "vtpms": {"compute-a": vtpm_a, "compute-b": vtpm_b}}


def _challenge(manager, guest) -> bytes:
    import base64
    return base64.b64decode(manager.challenge_instance(
        {}, guest.instance)["nonce"])


def _keys(manager):
    return keystore.key_set([keystore.public_key_from_pem(
        manager.public_pem)])


# --- the chain on real TPMs --------------------------------------------------

def test_provisioned_chain_binds_the_vtpm_to_its_host(world):
    guest = world["guests"]["compute-a"]
    manager = world["manager"]
    ak = manager._state("compute-a").ak
    bound = vtpm_binding.verify_chain("compute-a", ak,
                                      guest.metadata["vtpm_chain"],
                                      guest.instance)
    with tpm_device.TPMDevice(guest.tpm.tcti) as dev:
        assert bound.ak.raw == dev.load_ak(binding.VTPM_AK_HANDLE).public
        assert bound.ek_sha256 == vtpm_binding.ek_sha256(dev.ek_public())
    # Host B's registered AK does not lead to it.
    with pytest.raises(vtpm_binding.VTPMChainForeignHost):
        vtpm_binding.verify_chain("compute-b", manager._state(
            "compute-b").ak, guest.metadata["vtpm_chain"])


def test_ca_key_is_non_exportable_and_certified_again_after_restart(world):
    ca = world["cas"]["compute-a"]
    with world["tpms"]["compute-a"].device() as dev:
        assert ca.ca_handle in dev.persistent_handles()
    again = binding.HostCA("compute-a", world["tpms"]["compute-a"].device)
    certification = again.ensure()  # the key exists: certified, not made
    assert certification.public == ca.ensure().public
    vtpm_binding.verify_ca("compute-a", world["manager"]._state(
        "compute-a").ak, certification)


# --- deep attestation --------------------------------------------------------

def test_one_instance_is_attested_with_its_host(world):
    manager, guest = world["manager"], world["guests"]["compute-a"]
    evidence = guest.quote(_challenge(manager, guest))
    (entry,) = manager.deep_attest({}, "compute-a", [evidence])
    assert "error" not in entry, entry
    assert entry["verdict"]["status"] == "trusted"
    assert entry["verdict"]["level"] == 1
    assert entry["verdict"]["appraisal"] == "vtpm-bound-measured"
    claims = deep.verify_instance_result(entry["signed_result"],
                                         _keys(manager),
                                         int(manager.clock()))
    assert claims["submods"]["host"]["name"] == "compute-a"
    assert claims["sub"] == guest.instance
    # The host TPM quoted over the commitment to exactly this VM quote.
    binding_ = claims["binding"]
    quote = Evidence.from_wire({"version": 2, "host": "x",
                                "quote": evidence["vm_quote"],
                                "signature": evidence["vm_signature"],
                                "pcrs": evidence["vm_pcrs"]}).quote
    assert world["agents"].nonces[-1] == deep.host_nonce(
        bytes.fromhex(binding_["verifier_nonce"]),
        bytes.fromhex(binding_["merkle_root"]))
    assert deep.verify_inclusion(
        __import__("hashlib").sha256(quote).digest(),
        binding_["leaf_index"], binding_["tree_size"],
        [bytes.fromhex(p) for p in binding_["proof"]],
        bytes.fromhex(binding_["merkle_root"]))


@pytest.mark.slow
def test_hundred_instances_cost_one_host_quote(world):
    """100 instances of one host (vTPM AKs provisioned one after the other
    in a swtpm standing in for 100 vTPMs; each quotes before the next is
    provisioned) are attested with a single host quote."""
    manager, agents = world["manager"], world["agents"]
    vtpm = world["vtpms"]["compute-a"]
    provisioner = binding.Provisioner(world["cas"]["compute-a"])
    evidence = []
    for _ in range(100):
        instance = str(uuid.uuid4())
        guest = Guest(vtpm, provisioner.provision(vtpm.tcti, instance),
                      instance)
        evidence.append(guest.quote(_challenge(manager, guest)))
    before = len(agents.nonces)
    entries = manager.deep_attest({}, "compute-a", evidence)
    assert len(agents.nonces) == before + 1
    assert [e.get("error") for e in entries] == [None] * 100
    assert {e["verdict"]["status"] for e in entries} == {"trusted"}
    assert len({e["instance"] for e in entries}) == 100
    # Re-provision the module's guest AK for the tests that follow.
    guest = world["guests"]["compute-a"]
    guest.metadata = provisioner.provision(vtpm.tcti, guest.instance)


# --- a compromised host ------------------------------------------------------

class LyingAgents(LocalAgents):
    """The agent of a compromised host: ``lie(host, nonce)`` returns the
    evidence wire it sends instead of an honest answer."""

    def __init__(self, honest: LocalAgents, lie) -> None:
        super().__init__(honest.attesters)
        self.lie = lie

    def get_evidence(self, context, host, nonce, banks, ima_start,
                     event_log, conductor=None):
        import base64
        return self.lie(host, base64.b64decode(nonce))


@pytest.fixture
def lying(world):
    manager = world["manager"]
    honest = manager.agents

    def install(lie):
        manager.agents = LyingAgents(honest, lie)
    yield install
    manager.agents = honest


def test_host_quote_over_a_nonce_of_its_own(world, lying):
    manager, guest = world["manager"], world["guests"]["compute-a"]
    attester = world["agents"].attesters["compute-a"]
    lying(lambda host, nonce: attester.evidence(
        os.urandom(32), [SHA256], event_log=False).to_wire())
    with pytest.raises(deep.HostQuoteNotCommitted):
        manager.deep_attest({}, "compute-a", [
            guest.quote(_challenge(manager, guest))])


def test_host_relays_another_hosts_quote(world, lying):
    """compute-a's agent gets compute-b's TPM to quote the right nonce."""
    manager, guest = world["manager"], world["guests"]["compute-a"]
    other = world["agents"].attesters["compute-b"]

    def relay(host, nonce):
        wire = other.evidence(nonce, [SHA256], event_log=False).to_wire()
        return dict(wire, host="compute-a")
    lying(relay)
    with pytest.raises(deep.HostQuoteInvalid, match="Signature"):
        manager.deep_attest({}, "compute-a", [
            guest.quote(_challenge(manager, guest))])


def test_host_presents_another_hosts_vm(world):
    """compute-a relays the quote of a VM on compute-b, with its chain."""
    manager, guest_b = world["manager"], world["guests"]["compute-b"]
    (entry,) = manager.deep_attest({}, "compute-a", [
        guest_b.quote(_challenge(manager, guest_b))])
    assert entry["error"]["type"] == "VMChainForeignHost"
    assert "verdict" not in entry


def test_host_presents_another_hosts_ca_certificate(world):
    """compute-a shows its own vTPM's certificate under compute-b's CA
    certification."""
    manager, guest = world["manager"], world["guests"]["compute-a"]
    evidence = guest.quote(_challenge(manager, guest))
    chain = dict(evidence["vtpm_certificate"],
                 ca=world["guests"]["compute-b"].metadata["vtpm_chain"]["ca"])
    (entry,) = manager.deep_attest({}, "compute-a", [
        dict(evidence, vtpm_certificate=chain)])
    assert entry["error"]["type"] == "VMChainForeignHost"


def test_host_ca_issues_a_certificate_naming_another_host(world):
    """compute-a's CA (its TPM key: the compromised host can use it)
    certifies its vTPM as one running on compute-b."""
    manager, guest = world["manager"], world["guests"]["compute-a"]
    forged_ca = binding.HostCA("compute-b", world["tpms"]["compute-a"].device,
                               ca_handle=0x81008101)
    with tpm_device.TPMDevice(guest.tpm.tcti) as dev:
        ak = dev.load_ak(binding.VTPM_AK_HANDLE).public
        ek = dev.ek_public()
    chain = forged_ca.issue(guest.instance, ak, ek)
    evidence = dict(guest.quote(_challenge(manager, guest)),
                    vtpm_certificate=chain.to_wire())
    (entry,) = manager.deep_attest({}, "compute-b", [evidence])
    assert entry["error"]["type"] == "VMChainForeignHost"
    assert "registered AK of compute-b" in entry["error"]["reason"]


def test_replayed_vm_quote(world):
    manager, guest = world["manager"], world["guests"]["compute-a"]
    evidence = guest.quote(_challenge(manager, guest))
    (first,) = manager.deep_attest({}, "compute-a", [evidence])
    assert "error" not in first
    (again,) = manager.deep_attest({}, "compute-a", [evidence])
    assert again["error"]["type"] == "VMQuoteReplayed"


def test_vm_quote_over_a_wrong_nonce(world):
    manager, guest = world["manager"], world["guests"]["compute-a"]
    _challenge(manager, guest)
    (entry,) = manager.deep_attest({}, "compute-a", [
        guest.quote(os.urandom(32))])
    assert entry["error"]["type"] == "VMNonceMismatch"


def test_untrusted_host(world):
    manager, guest = world["manager"], world["guests"]["compute-b"]
    host = manager.db.get_host_by_name("compute-b")
    state = manager._state("compute-b")
    manager._record([(state, __import__(
        "trusted_pools.protocol.verdict", fromlist=["x"]).unknown_verdict(
        host="compute-b", reason="agent silent",
        issued_at=int(manager.clock()), validity=60))])
    try:
        with pytest.raises(deep.HostNotTrusted, match="unknown"):
            manager.deep_attest({}, "compute-b", [
                guest.quote(_challenge(manager, guest))])
    finally:
        assert manager.attest_now({}, "compute-b")["verdict"]["status"] \
            == "trusted"
        assert host.hostname == "compute-b"


def test_stale_host_verdict(world):
    manager, guest = world["manager"], world["guests"]["compute-a"]
    real_clock = manager.clock
    manager.clock = lambda: real_clock() + manager.validity + 1
    try:
        with pytest.raises(deep.HostVerdictStale, match="expired"):
            manager.deep_attest({}, "compute-a", [
                guest.quote(_challenge(manager, guest))])
    finally:
        manager.clock = real_clock


# --- the guest's own tools, and the host TPM's signature ---------------------

def test_quote_made_with_tpm2_quote_as_in_a_guest(world, tmp_path):
    """The guest runs tpm2-tools' tpm2_quote against its vTPM; its files
    become the conductor's input unchanged."""
    import base64
    import subprocess
    manager, guest = world["manager"], world["guests"]["compute-a"]
    nonce = _challenge(manager, guest)
    files = {k: tmp_path / k for k in ("msg", "sig", "pcrs")}
    subprocess.run(
        ["tpm2_quote", "-c", hex(binding.VTPM_AK_HANDLE), "-q", nonce.hex(),
         "-l", "sha256:0,1,2,3,4,5,6,7", "-m", str(files["msg"]),
         "-s", str(files["sig"]), "-o", str(files["pcrs"])],
        env=dict(os.environ, TPM2TOOLS_TCTI=guest.tpm.tcti),
        check=True, capture_output=True)
    item = deep.VMEvidence.from_tpm2_tools(
        guest.instance, files["msg"].read_bytes(),
        files["sig"].read_bytes(), files["pcrs"].read_bytes(),
        guest.metadata["vtpm_chain"])
    (entry,) = manager.deep_attest({}, "compute-a", [item.to_wire()])
    assert "error" not in entry, entry
    assert entry["verdict"]["status"] == "trusted"
    assert base64.b64decode(item.to_wire()["vm_quote"]) == \
        files["msg"].read_bytes()


def test_device_sign_with_the_ca_key(world):
    import hashlib
    from trusted_pools import exception
    from trusted_pools.tpm import quote as quotes, structures
    ca = world["cas"]["compute-a"]
    public = structures.parse_public(ca.ensure().public)
    digest = hashlib.sha256(b"message").digest()
    with world["tpms"]["compute-a"].device() as dev:
        signature = dev.sign(ca.ca_handle, digest)
        quotes.verify_signature(public, b"message", signature)
        with pytest.raises(exception.InvalidSignature):
            quotes.verify_signature(public, b"other", signature)
        with pytest.raises(exception.InvalidParameterValue):
            dev.sign(ca.ca_handle, b"short")
        # A restricted key (the AK) signs no outside digest without a
        # ticket: the TPM refuses.
        with pytest.raises(exception.TPMError):
            dev.sign(tpm_device.DEFAULT_AK_HANDLE, digest)
        assert dev.transient_handles() == []


def test_malformed_instance_evidence_is_refused_alone(world):
    manager, guest = world["manager"], world["guests"]["compute-a"]
    good = guest.quote(_challenge(manager, guest))
    entries = manager.deep_attest({}, "compute-a", [
        dict(good, vm_quote="not base64!"), good, "junk"])
    assert [e.get("error", {}).get("type") for e in entries] == [
        "MalformedEvidence", None, "MalformedEvidence"]
    assert entries[1]["verdict"]["status"] == "trusted"


def test_host_relays_another_vms_quote_of_its_own(world):
    """Two VMs on compute-a; the host presents VM 2's fresh quote (over VM
    1's nonce) as VM 1's evidence, under VM 1's chain."""
    manager, vm1 = world["manager"], world["guests"]["compute-a"]
    vtpm = world["vtpms"]["compute-a"]
    instance = str(uuid.uuid4())
    provisioner = binding.Provisioner(world["cas"]["compute-a"],
                                      ak_handle=0x81010003)
    vm2 = Guest(vtpm, provisioner.provision(vtpm.tcti, instance), instance)
    with tpm_device.TPMDevice(vtpm.tcti) as dev:
        attest, signature = dev.quote(0x81010003, _challenge(manager, vm1),
                                      GUEST_PCRS)
    forged = dict(vm2.quote(os.urandom(32)), instance=vm1.instance,
                  vm_quote=encode_b64(attest),
                  vm_signature=encode_b64(signature),
                  vtpm_certificate=vm1.metadata["vtpm_chain"])
    (entry,) = manager.deep_attest({}, "compute-a", [forged])
    assert entry["error"]["type"] == "VMQuoteInvalid"
    assert "Signature" in entry["error"]["reason"]
    # Under VM 2's own chain it is VM 2's certificate, not VM 1's.
    (entry,) = manager.deep_attest({}, "compute-a", [
        dict(forged, vtpm_certificate=vm2.metadata["vtpm_chain"])])
    assert entry["error"]["type"] == "VMChainRefused"
    assert "for instance %s" % instance in entry["error"]["reason"]


def test_host_extends_a_boot_pcr_after_its_verdict(world, swtpm_pool):
    """A host's root extends PCR 4 (the boot loader's PCR) after its
    trusted verdict: same boot counters, but not the boot judged. (A host
    of its own: its PCRs cannot be put back.)"""
    import hashlib
    manager, agents = world["manager"], world["agents"]
    (tpm,) = swtpm_pool(1)
    log = swtpm_pool_module.BOOTED_HOST_LOGS["ubuntu-2104"]
    swtpm_pool_module.boot_from_event_log(tpm, log)
    agents.attesters["compute-c"] = Attester(
        "compute-c", tpm.device, event_log_path=str(log))
    manager.enroll_host({}, "compute-c",
                        ek_sha256=pool_harness.ek_sha256(tpm))
    assert manager.attest_now({}, "compute-c")["verdict"]["status"] == \
        "trusted"
    vtpm = world["vtpms"]["compute-b"]
    instance = str(uuid.uuid4())
    guest = Guest(vtpm, binding.Provisioner(
        binding.HostCA("compute-c", tpm.device),
        ak_handle=0x81010004).provision(vtpm.tcti, instance), instance)
    guest_ak = 0x81010004

    def quote(nonce):
        with tpm_device.TPMDevice(vtpm.tcti) as dev:
            attest, signature = dev.quote(guest_ak, nonce, GUEST_PCRS)
        return dict(guest.quote(nonce), vm_quote=encode_b64(attest),
                    vm_signature=encode_b64(signature))
    (entry,) = manager.deep_attest({}, "compute-c", [
        quote(_challenge(manager, guest))])
    assert "error" not in entry, entry
    with tpm.device() as dev:
        dev.pcr_extend(4, {SHA256: hashlib.sha256(b"evil").digest()})
    try:
        with pytest.raises(deep.HostVerdictStale, match="sha256:4"):
            manager.deep_attest({}, "compute-c", [
                quote(_challenge(manager, guest))])
    finally:
        agents.attesters.pop("compute-c").close()


# --- instance challenges kept in the database --------------------------------

def _conductor(world, name):
    """Another conductor process on the same database (or this one
    restarted: a new manager with the same name)."""
    manager = world["manager"]
    return ConductorManager(name, manager.db, keystore.generate_signing_key(),
                            world["agents"], None, manager._ca_bundle)


def test_replayed_quote_is_refused_after_a_conductor_restart(world):
    """The quote of an attestation that succeeded, sent again after the
    conductor restarted (its memory gone): the nonce was spent in the
    database."""
    manager, guest = world["manager"], world["guests"]["compute-a"]
    evidence = guest.quote(base64.b64decode(manager.challenge_instance(
        {}, guest.instance, "compute-a")["nonce"]))
    (entry,) = manager.deep_attest({}, "compute-a", [evidence])
    assert "error" not in entry, entry
    restarted = _conductor(world, manager.host)
    (entry,) = restarted.deep_attest({}, "compute-a", [evidence])
    assert entry["error"]["type"] == "VMQuoteReplayed"
    assert "verdict" not in entry and "signed_result" not in entry


def test_challenge_issued_by_one_conductor_is_completed_on_another(world):
    manager, guest = world["manager"], world["guests"]["compute-a"]
    other = _conductor(world, "conductor-2")
    evidence = guest.quote(base64.b64decode(manager.challenge_instance(
        {}, guest.instance, "compute-a")["nonce"]))
    (entry,) = other.deep_attest({}, "compute-a", [evidence])
    assert "error" not in entry, entry
    claims = deep.verify_instance_result(entry["signed_result"],
                                         _keys(other), int(other.clock()))
    assert claims["iss"] == "conductor-2"
    # Spent for every conductor: the issuer refuses it now.
    (entry,) = manager.deep_attest({}, "compute-a", [evidence])
    assert entry["error"]["type"] == "VMQuoteReplayed"


def test_nonce_issued_for_the_instance_on_another_host(world):
    """A nonce asked for compute-a's instance as if it ran on compute-b
    does not serve a deep attestation of compute-a, and is not spent by
    the attempt."""
    manager, guest = world["manager"], world["guests"]["compute-a"]
    nonce = base64.b64decode(manager.challenge_instance(
        {}, guest.instance, "compute-b")["nonce"])
    evidence = guest.quote(nonce)
    (entry,) = manager.deep_attest({}, "compute-a", [evidence])
    assert entry["error"]["type"] == "VMNonceMismatch"
    assert "host compute-b" in entry["error"]["reason"]
    assert manager.instance_challenges.consume_many(
        "compute-b", [(guest.instance, nonce)]) == [None]


def test_nonce_issued_for_another_instance_in_the_same_batch(world):
    """compute-a's agent (or whoever relays) answers for instance X with a
    quote over the nonce issued to instance Y of the same batch."""
    manager = world["manager"]
    guest = world["guests"]["compute-a"]
    vtpm = world["vtpms"]["compute-a"]
    provisioner = binding.Provisioner(world["cas"]["compute-a"],
                                      ak_handle=0x81010200)
    other_instance = str(uuid.uuid4())
    other = Guest(vtpm, provisioner.provision(vtpm.tcti, other_instance),
                  other_instance, ak_handle=0x81010200)
    mine = base64.b64decode(manager.challenge_instance(
        {}, guest.instance, "compute-a")["nonce"])
    theirs = base64.b64decode(manager.challenge_instance(
        {}, other.instance, "compute-a")["nonce"])
    first, second = manager.deep_attest({}, "compute-a", [
        guest.quote(theirs), other.quote(mine)])
    for entry, owner in ((first, other.instance), (second, guest.instance)):
        assert entry["error"]["type"] == "VMNonceMismatch", entry
        assert owner in entry["error"]["reason"]


# --- instance policies (golden guest measurements) ---------------------------

@pytest.fixture
def policies(world):
    """The conductor's database, with every instance-policy assignment
    made by a test removed afterwards (the world is shared)."""
    db = world["manager"].db
    yield db
    for a in db.list_instance_policy_assignments():
        db.unassign_instance_policy(a.kind, a.target)


def _store(db, name, pcrs_body, level=3):
    body = deep.InstancePolicy.from_body(name, 1, level, pcrs_body).body()
    return db.create_instance_policy_version(name, level, body, "test")


def _with_image(manager, guest, image, host=None) -> bytes:
    return base64.b64decode(manager.challenge_instance(
        {}, guest.instance, host, image=image)["nonce"])


def _wrong(body):
    """``body`` with PCR 0's value changed."""
    return {bank: {index: ("ff" * 32 if index == "0" else value)
                   for index, value in values.items()}
            for bank, values in body.items()}


def test_instance_policy_captured_from_a_verified_verdict(world, policies):
    """Capture pins what the latest verdict verified; a guest that quotes
    those values is trusted at the policy's level (capped by its host)."""
    manager, guest = world["manager"], world["guests"]["compute-a"]
    (entry,) = manager.deep_attest({}, "compute-a", [
        guest.quote(_challenge(manager, guest))])
    assert entry["verdict"]["level"] == 1
    stored = policies.instance_verdict(guest.instance).verdict.pcrs
    with tpm_device.TPMDevice(guest.tpm.tcti) as dev:
        now = dev.pcr_read(GUEST_PCRS)[SHA256]
    assert stored == {"sha256": {str(p): v.hex() for p, v in now.items()}}
    captured = deep.capture_policy("golden-guest", 1, 3, stored,
                                   pcrs=range(8))
    record = policies.create_instance_policy_version(
        "golden-guest", 3, captured.body(), "test")
    policies.assign_instance_policy("instance", guest.instance,
                                    record.name)
    (entry,) = manager.deep_attest({}, "compute-a", [
        guest.quote(_challenge(manager, guest))])
    assert "error" not in entry, entry
    verdict = entry["verdict"]
    assert (verdict["status"], verdict["appraisal"], verdict["policy"]) == (
        "trusted", "policy", "golden-guest@%d" % record.version)
    assert verdict["level"] == min(3, verdict["host_level"])
    claims = deep.verify_instance_result(entry["signed_result"],
                                         _keys(manager),
                                         int(manager.clock()))
    assert claims["submods"]["vm"]["policy"] == verdict["policy"]


def test_guest_pcrs_that_differ_from_the_policy(world, policies):
    manager, guest = world["manager"], world["guests"]["compute-a"]
    with tpm_device.TPMDevice(guest.tpm.tcti) as dev:
        pcr0 = dev.pcr_read(GUEST_PCRS)[SHA256][0].hex()
    record = _store(policies, "strict-guest", {"sha256": {"0": "ab" * 32}})
    policies.assign_instance_policy("instance", guest.instance,
                                    record.name, record.version)
    (entry,) = manager.deep_attest({}, "compute-a", [
        guest.quote(_challenge(manager, guest))])
    assert entry["error"]["type"] == "VMPolicyViolation"
    assert entry["verdict"]["status"] == "untrusted"
    label = "strict-guest@%d" % record.version
    assert entry["verdict"]["reasons"] == [
        "instance policy %s: sha256 PCR 0 expected %s, got %s"
        % (label, "ab" * 32, pcr0)]
    assert policies.instance_verdict(guest.instance).verdict.status == \
        "untrusted"


def test_host_rewrites_the_guest_pcrs_to_the_policy(world, policies):
    """A compromised host sends the policy's values instead of what the
    vTPM quoted: the quote's PCR digest does not match, no verdict."""
    manager, guest = world["manager"], world["guests"]["compute-a"]
    record = _store(policies, "rewrite-guest", {"sha256": {"0": "ab" * 32}})
    policies.assign_instance_policy("instance", guest.instance, record.name)
    evidence = guest.quote(_challenge(manager, guest))
    evidence["vm_pcrs"]["sha256"]["0"] = "ab" * 32
    (entry,) = manager.deep_attest({}, "compute-a", [evidence])
    assert entry["error"]["type"] == "VMQuoteInvalid"
    assert "verdict" not in entry


def test_image_policy_comes_from_the_challenge_and_instance_wins(
        world, policies):
    """The image is the trusted caller's word, kept with the nonce; an
    instance's own assignment wins over its image's."""
    manager, guest = world["manager"], world["guests"]["compute-a"]
    (entry,) = manager.deep_attest({}, "compute-a", [
        guest.quote(_challenge(manager, guest))])
    verified = policies.instance_verdict(guest.instance).verdict.pcrs
    image, other_image = str(uuid.uuid4()), str(uuid.uuid4())
    good = _store(policies, "image-good", verified)
    bad = _store(policies, "image-bad", _wrong(verified))
    policies.assign_instance_policy("image", image, bad.name)
    policies.assign_instance_policy("image", other_image, good.name)

    (entry,) = manager.deep_attest({}, "compute-a", [
        guest.quote(_with_image(manager, guest, image))])
    assert entry["verdict"]["status"] == "untrusted"
    assert entry["verdict"]["policy"] == "image-bad@%d" % bad.version
    # A challenge that names no image: no image policy applies (the
    # caller must name it; the instance gets level 1, vTPM-bound only).
    (entry,) = manager.deep_attest({}, "compute-a", [
        guest.quote(_challenge(manager, guest))])
    assert (entry["verdict"]["status"], entry["verdict"]["level"],
            entry["verdict"]["policy"]) == ("trusted", 1, None)
    # The instance's own assignment wins over the image's.
    policies.assign_instance_policy("instance", guest.instance, good.name)
    (entry,) = manager.deep_attest({}, "compute-a", [
        guest.quote(_with_image(manager, guest, image))])
    assert entry["verdict"]["status"] == "trusted"
    assert entry["verdict"]["policy"] == "image-good@%d" % good.version


def test_host_cannot_claim_another_image(world, policies):
    """The host (or whoever relays the guest's evidence) cannot choose the
    image: the evidence has no such field, and a nonce issued for another
    instance (whose challenge named a lenient image) is refused without
    a verdict."""
    manager, guest = world["manager"], world["guests"]["compute-a"]
    (entry,) = manager.deep_attest({}, "compute-a", [
        guest.quote(_challenge(manager, guest))])
    verified = policies.instance_verdict(guest.instance).verdict.pcrs
    strict_image, lenient_image = str(uuid.uuid4()), str(uuid.uuid4())
    strict = _store(policies, "claim-strict", _wrong(verified))
    lenient = _store(policies, "claim-lenient", verified)
    policies.assign_instance_policy("image", strict_image, strict.name)
    policies.assign_instance_policy("image", lenient_image, lenient.name)

    evidence = guest.quote(_with_image(manager, guest, strict_image))
    (entry,) = manager.deep_attest({}, "compute-a", [
        dict(evidence, image=lenient_image)])
    assert entry["error"]["type"] == "MalformedEvidence"
    # The same quote, honestly sent, is judged by the caller's image.
    (entry,) = manager.deep_attest({}, "compute-a", [evidence])
    assert entry["verdict"]["status"] == "untrusted"
    assert entry["verdict"]["policy"] == "claim-strict@%d" % strict.version
    # A nonce the caller asked for another instance, with the lenient
    # image: its image is not applied to this instance, and the nonce
    # cannot be spent by it.
    someone = str(uuid.uuid4())
    theirs = base64.b64decode(manager.challenge_instance(
        {}, someone, image=lenient_image)["nonce"])
    before = policies.instance_verdict(guest.instance).verdict
    (entry,) = manager.deep_attest({}, "compute-a", [guest.quote(theirs)])
    assert entry["error"]["type"] == "VMNonceMismatch"
    assert "verdict" not in entry
    assert policies.instance_verdict(guest.instance).verdict == before


def test_a_policy_in_use_cannot_be_deleted(world, policies):
    record = _store(policies, "in-use", {"sha256": {"0": "00" * 32}})
    instance = str(uuid.uuid4())
    policies.assign_instance_policy("instance", instance, record.name)
    with pytest.raises(exception.InstancePolicyInUse):
        policies.delete_instance_policy(record.name)
    policies.unassign_instance_policy("instance", instance)
    assert policies.delete_instance_policy(record.name) == 1
    with pytest.raises(exception.InstancePolicyNotFound):
        policies.get_instance_policy(record.name)


def test_an_assignment_to_a_vanished_policy_gives_no_verdict(world, policies):
    """The instance is held to a policy whose row is gone (removed around
    the API): its quote is not judged as "no policy" (trusted, level 1);
    the batch fails, nothing is stored, and the nonce stays unspent."""
    import sqlalchemy as sa
    from trusted_pools.db import models
    manager, guest = world["manager"], world["guests"]["compute-a"]
    (entry,) = manager.deep_attest({}, "compute-a", [
        guest.quote(_challenge(manager, guest))])
    before = policies.instance_verdict(guest.instance).verdict
    record = _store(policies, "vanishing", {"sha256": {"0": "00" * 32}})
    policies.assign_instance_policy("instance", guest.instance, record.name)
    with policies._writer() as session:
        session.execute(sa.delete(models.InstancePolicy).where(
            models.InstancePolicy.name == record.name))
    nonce = _with_image(manager, guest, None, "compute-a")
    with pytest.raises(exception.InstancePolicyNotFound):
        manager.deep_attest({}, "compute-a", [guest.quote(nonce)])
    assert policies.instance_verdict(guest.instance).verdict == before
    assert manager.instance_challenges.consume_many(
        "compute-a", [(guest.instance, nonce)]) == [None]
