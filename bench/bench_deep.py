"""Deep attestation of 1 and of 100 instances on one host (batched: one
host quote commits to every VM quote) against one plain host attestation,
all on swtpm, ratios in the same run.

Subject: ``ConductorManager.deep_attest`` for one host with 1 or 100
instances: the host's agent quotes once (an in-process Attester on a
swtpm: a real TPM2_Quote), then the conductor verifies the host quote,
each vTPM chain (the host's CA certification once per host, one
certificate per instance), each VM quote, each Merkle inclusion, and
signs one instance verdict each.

Baseline: ``ConductorManager.attest_now`` of the same host: one quote
over a one-off nonce with the event log, verification and appraisal of a
steady host (same boot: no log replay), one verdict signed and stored.

Rounds after the first find each instance's vTPM chain verified already
(the same chain, the same host AK: cached); in each round two more
batches of 100 with the cache cleared show the cost when every chain is
new ("cold"): one through the verifier as it is, one through the chain
binding as it was before the CA certification was looked up by its wire
form (``_bind_before``, the earlier code kept here to compare in the same
run: the chain and its CA certification decoded for every instance).
Each deep attestation also stores its instance verdicts (one transaction
per batch), as the conductor does.

Not counted: the guests' own vTPM quotes (made inside the VMs, in
parallel, before the conductor sees them), which are made between rounds.
Target: 100 batched instances cost less than 3 host attestations.

Run: ``.venv/bin/python -m bench.bench_deep`` (about 20 seconds).
"""

from __future__ import annotations

import base64
import os
import shutil
import statistics
import tempfile
import time
import uuid

from bench._timing import report
from tests import pool_harness
from tests import swtpm_pool as sp
from tests.local_agents import LocalAgents
from trusted_pools.agent.attester import Attester
from trusted_pools.protocol import keystore
from trusted_pools.protocol.evidence import encode_b64
from trusted_pools.conductor.manager import ConductorManager
from trusted_pools.db import api as db_api
from trusted_pools.db import migration
from trusted_pools.tpm.constants import TPM_ALG
from trusted_pools.protocol import vtpm_binding
from trusted_pools.verifier import deep as deep_mod
from trusted_pools.vtpm import binding

TARGET_RATIO = 3.0
ROUNDS = 9
INSTANCES = 100
PER_VTPM = 50            # a swtpm holds about 60 persistent ECC keys
HOST = "compute-bench"
GUEST_PCRS = {TPM_ALG.SHA256: list(range(8))}


def _guest_quote(dev, handle: int, instance: str, chain: dict,
                 nonce: bytes) -> dict:
    attest, signature = dev.quote(handle, nonce, GUEST_PCRS)
    pcrs = dev.pcr_read(GUEST_PCRS)
    return {"instance": instance, "vm_quote": encode_b64(attest),
            "vm_signature": encode_b64(signature),
            "vm_pcrs": {"sha256": {str(p): v.hex() for p, v in
                                   pcrs[TPM_ALG.SHA256].items()}},
            "vtpm_certificate": chain}


def _bind_before(verifier: deep_mod.DeepVerifier):
    """``DeepVerifier.bind`` as it was before this round of work: the
    chain (with its CA certification) decoded for every instance, the
    verified CA looked up by its decoded content."""
    cas: dict = {}
    bound_cache: dict = {}

    def bind(host, host_ak, item):
        chain = vtpm_binding.VTPMChain.from_wire(item.chain, host)
        key = (host_ak.name(), chain.ca, chain.certificate, item.instance)
        bound = bound_cache.get(key)
        if bound is None:
            ca = cas.get((host_ak.name(), chain.ca))
            if ca is None:
                ca = cas[(host_ak.name(), chain.ca)] = \
                    vtpm_binding.verify_ca(host, host_ak, chain.ca)
            bound = bound_cache[key] = vtpm_binding.verify_certificate(
                chain.certificate, ca, host, item.instance)
        return bound
    return bind, lambda: (cas.clear(), bound_cache.clear())


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(base: str) -> float:
    ca = sp.LocalCA.create(os.path.join(base, "ca"))
    with sp.SwtpmPool(ca, os.path.join(base, "pool")) as pool:
        host_tpm, *vtpms = pool.start(1 + INSTANCES // PER_VTPM)
        log = sp.BOOTED_HOST_LOGS["ubuntu-2104"]
        sp.boot_from_event_log(host_tpm, log)
        attester = Attester(HOST, host_tpm.device, event_log_path=str(log))
        db = db_api.Connection(db_api.make_context_manager(
            "sqlite:///%s" % os.path.join(base, "bench.sqlite")))
        migration.upgrade(engine=db.get_engine())
        manager = ConductorManager("conductor-bench", db,
                                   keystore.generate_signing_key(),
                                   LocalAgents({HOST: attester}), None,
                                   ca.bundle_pem)
        manager.enroll_host({}, HOST,
                            ek_sha256=pool_harness.ek_sha256(host_tpm))
        manager.attest_now({}, HOST)
        host_ca = binding.HostCA(HOST, host_tpm.device)
        guests = []  # (device, handle, instance, chain)
        devices = [vtpm.device() for vtpm in vtpms]
        t0 = time.perf_counter()
        for index in range(INSTANCES):
            vtpm = vtpms[index // PER_VTPM]
            handle = 0x81010100 + index % PER_VTPM
            instance = str(uuid.uuid4())
            metadata = binding.Provisioner(host_ca, ak_handle=handle).provision(
                vtpm.tcti, instance)
            guests.append((devices[index // PER_VTPM], handle, instance,
                           metadata["vtpm_chain"]))
        provisioning = (time.perf_counter() - t0) / INSTANCES

        def evidence(count: int) -> list[dict]:
            out = []
            for dev, handle, instance, chain in guests[:count]:
                nonce = base64.b64decode(manager.challenge_instance(
                    {}, instance)["nonce"])
                out.append(_guest_quote(dev, handle, instance, chain, nonce))
            return out

        def deep(items: list[dict]) -> None:
            entries = manager.deep_attest({}, HOST, items)
            bad = [e for e in entries if "error" in e]
            if bad:
                raise RuntimeError("deep attestation failed: %s" % bad[0])

        deep(evidence(INSTANCES))  # warm-up (first CA check, caches)
        host_times, one_times, many_times, guest_times = [], [], [], []
        cold_times, before_times = [], []
        before_bind, before_clear = _bind_before(manager.deep)

        def cold_now() -> float:
            manager.deep.clear_cache()
            items = evidence(INSTANCES)
            return _timed(lambda: deep(items))

        def cold_before() -> float:
            before_clear()
            items = evidence(INSTANCES)
            manager.deep.bind = before_bind
            try:
                return _timed(lambda: deep(items))
            finally:
                del manager.deep.bind
        for index in range(ROUNDS):
            host_times.append(_timed(lambda: manager.attest_now({}, HOST)))
            one = evidence(1)
            one_times.append(_timed(lambda: deep(one)))
            start = time.perf_counter()
            many = evidence(INSTANCES)
            guest_times.append(time.perf_counter() - start)
            many_times.append(_timed(lambda: deep(many)))
            # Alternate which goes first: neither gets the warmer CPU.
            if index % 2:
                before_times.append(cold_before())
                cold_times.append(cold_now())
            else:
                cold_times.append(cold_now())
                before_times.append(cold_before())
        for dev in devices:
            dev.close()
        attester.close()

    host = statistics.median(host_times)
    one = statistics.median(one_times)
    many = statistics.median(many_times)
    ratio_one = statistics.median(o / h for o, h in zip(one_times,
                                                        host_times))
    ratio_many = statistics.median(m / h for m, h in zip(many_times,
                                                         host_times))
    print("== deep attestation on swtpm (%d rounds, medians) ==" % ROUNDS)
    report("host attestation (attest_now, steady host)", host * 1e3,
           unit="ms")
    report("deep attestation, 1 instance", one, host, "host attestation")
    report("deep attestation, %d instances, 1 host quote" % INSTANCES,
           many, host, "host attestation")
    cold = statistics.median(cold_times)
    ratio_cold = statistics.median(c / h for c, h in zip(cold_times,
                                                         host_times))
    report("deep attestation, %d instances, no chain cached" % INSTANCES,
           cold, host, "host attestation")
    before = statistics.median(before_times)
    ratio_before = statistics.median(b / h for b, h in zip(before_times,
                                                           host_times))
    report("  same, chain binding as before (CA decoded per instance)",
           before, host, "host attestation")
    report("  per instance beyond the first",
           (many - one) / (INSTANCES - 1) * 1e6, unit="us")
    report("  (guest side, not counted: %d vTPM quotes)" % INSTANCES,
           statistics.median(guest_times) * 1e3, unit="ms")
    report("  (provisioning per vTPM: AK + certificate)",
           provisioning * 1e3, unit="ms")
    print("ratio deep(1)/host      %.2f" % ratio_one)
    print("ratio deep(%d)/host    %.2f  (target < %.1f: %s)" % (
        INSTANCES, ratio_many, TARGET_RATIO,
        "met" if ratio_many < TARGET_RATIO else "NOT met"))
    print("ratio deep(%d, chains not cached)/host    %.2f  (before: %.2f; "
          "target < %.1f: %s)" % (
              INSTANCES, ratio_cold, ratio_before, TARGET_RATIO,
              "met" if ratio_cold < TARGET_RATIO else "NOT met"))
    return ratio_many


def main() -> None:
    sp.require_binaries()
    base = tempfile.mkdtemp(prefix="bench-deep-")
    try:
        run(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
