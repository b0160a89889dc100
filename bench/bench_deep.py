"""Deep attestation of 1 and of 100 instances on one host (batched: one
host quote commits to every VM quote) against one plain host attestation,
all on swtpm, ratios in the same run.

Subject: ``ConductorManager.deep_attest`` for one host with 1 or 100
instances: the host's agent quotes once (an in-process Attester on a
swtpm: a real TPM2_Quote), then the conductor verifies the host quote,
each vTPM chain (the host's CA certification once per host, one
certificate per instance), each VM quote, each Merkle inclusion, signs
one instance verdict each, and spends the batch's nonces and stores its
verdicts in one database transaction.

Baseline: ``ConductorManager.attest_now`` of the same host: one quote
over a one-off nonce with the event log, verification and appraisal of a
steady host (same boot: no log replay), one verdict signed and stored.

Noise. The machine is shared, so its speed changes from one second to
the next. Each round times a host attestation right before and right
after each subject and divides the subject by their mean; the ratio
reported is the median of the rounds' ratios (with its quartiles), and
the subjects' order rotates from round to round so none always runs
first.

Rounds after the first find each instance's vTPM chain verified already
(the same chain, the same host AK: cached); each round also times a
batch of 100 with the cache cleared ("no chain cached"), the cost when
every chain is new.

Not counted: the guests' own vTPM quotes (made inside the VMs, in
parallel, before the conductor sees them), which are made between the
timed calls.
Target: 100 batched instances cost less than 3 host attestations.

Run: ``.venv/bin/python -m bench.bench_deep`` (about 30 seconds).
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
from trusted_pools.vtpm import binding

TARGET_RATIO = 3.0
ROUNDS = 15
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


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time of this process (all threads) and of the swtpm processes
    (user + system, from /proc: clock ticks, so only sums over many calls
    are meaningful)."""
    total = time.process_time()
    for pid in pids:
        with open("/proc/%d/stat" % pid) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


class _Meter:
    """Wall-clock time per call, and CPU time summed per subject."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def timed(self, name: str, fn) -> float:
        cpu = _cpu_seconds(self.pids)
        start = time.perf_counter()
        fn()
        wall = time.perf_counter() - start
        self.cpu[name] = self.cpu.get(name, 0.0) + _cpu_seconds(
            self.pids) - cpu
        self.calls[name] = self.calls.get(name, 0) + 1
        return wall

    def per_call(self, name: str) -> float:
        return self.cpu[name] / self.calls[name]


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
                    {}, instance, HOST)["nonce"])
                out.append(_guest_quote(dev, handle, instance, chain, nonce))
            return out

        def deep(items: list[dict]) -> None:
            entries = manager.deep_attest({}, HOST, items)
            bad = [e for e in entries if "error" in e]
            if bad:
                raise RuntimeError("deep attestation failed: %s" % bad[0])

        deep(evidence(INSTANCES))  # warm-up (first CA check, caches)
        meter = _Meter([tpm.pid for tpm in (host_tpm, *vtpms)])

        def host_attestation() -> float:
            return meter.timed("host", lambda: manager.attest_now({}, HOST))

        def deep_one() -> float:
            items = evidence(1)
            return meter.timed("one", lambda: deep(items))

        def deep_many() -> float:
            items = evidence(INSTANCES)
            return meter.timed("many", lambda: deep(items))

        def deep_cold() -> float:
            items = evidence(INSTANCES)
            manager.deep.clear_cache()
            return meter.timed("cold", lambda: deep(items))

        start = time.perf_counter()
        evidence(INSTANCES)
        guest = time.perf_counter() - start
        subjects = [("one", deep_one), ("many", deep_many),
                    ("cold", deep_cold)]
        ratios: dict[str, list[float]] = {name: [] for name, _ in subjects}
        times: dict[str, list[float]] = {name: [] for name, _ in subjects}
        host_times: list[float] = []
        for index in range(ROUNDS):
            # Rotate the order: no subject always follows the same one.
            shift = index % len(subjects)
            for name, subject in subjects[shift:] + subjects[:shift]:
                before = host_attestation()
                measured = subject()
                after = host_attestation()
                host_times += [before, after]
                times[name].append(measured)
                ratios[name].append(measured / ((before + after) / 2))
        for dev in devices:
            dev.close()
        attester.close()

    host = statistics.median(host_times)
    print("== deep attestation on swtpm (%d rounds; medians, ratios per "
          "round against the host attestations around it) ==" % ROUNDS)
    report("host attestation (attest_now, steady host)", host * 1e3,
           unit="ms")
    labels = {"one": "deep attestation, 1 instance",
              "many": "deep attestation, %d instances, 1 host quote"
              % INSTANCES,
              "cold": "deep attestation, %d instances, no chain cached"
              % INSTANCES}
    for name, label in labels.items():
        report(label, statistics.median(times[name]), host,
               "host attestation")
    report("  per instance beyond the first",
           (statistics.median(times["many"]) - statistics.median(
               times["one"])) / (INSTANCES - 1) * 1e6, unit="us")
    report("  (guest side, not counted: %d vTPM quotes)" % INSTANCES,
           guest * 1e3, unit="ms")
    report("  (provisioning per vTPM: AK + certificate)",
           provisioning * 1e3, unit="ms")
    print("CPU time (this process and the swtpms, summed over the run) per "
          "call: host attestation %.2f ms; ratios: %s" % (
              meter.per_call("host") * 1e3, ", ".join(
                  "deep(%s) %.2f" % ({"one": "1", "many": str(INSTANCES),
                                      "cold": "%d cold" % INSTANCES}[name],
                                     meter.per_call(name)
                                     / meter.per_call("host"))
                  for name in labels)))
    for name in labels:
        low, mid, high = statistics.quantiles(ratios[name], n=4)
        print("ratio deep(%s)/host  median %.2f  (quartiles %.2f-%.2f)%s" % (
            {"one": "1", "many": str(INSTANCES),
             "cold": "%d, chains not cached" % INSTANCES}[name],
            statistics.median(ratios[name]), low, high,
            "" if name == "one" else "  target < %.1f: %s" % (
                TARGET_RATIO, "met" if statistics.median(ratios[name])
                < TARGET_RATIO else "NOT met")))
    return statistics.median(ratios["many"])


def main() -> None:
    sp.require_binaries()
    base = tempfile.mkdtemp(prefix="bench-deep-")
    try:
        run(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
