"""Host-side TPM costs on swtpm: quote (RSA and ECC AK), enrollment, and how
many swtpm instances this machine runs at once.

Run: ``.venv/bin/python -m bench.bench_device`` (under 2 minutes; every
swtpm it starts is stopped, also on Ctrl-C).

Baselines measured in the same run: TPM2_PCR_Read through the same ESAPI
connection (a round trip without signing) for the quote, and one
``tpm2_quote`` subprocess per quote (what the product must never do).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time

from bench._timing import median_seconds, report
from tests import swtpm_pool as sp
from trusted_pools.agent import enrollment as agent_en
from trusted_pools.verifier import enrollment as en
from trusted_pools.tpm import quote, structures
from trusted_pools.tpm.constants import TPM_ALG

ECC_AK, RSA_AK = 0x81008001, 0x81008002
SELECTION = {TPM_ALG.SHA256: list(range(24))}
SCALE_LIMIT = 400
SCALE_BUDGET_S = 45.0
MIN_AVAILABLE_FRACTION = 0.25


def _mem_available_kib() -> tuple[int, int]:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            info[key] = int(value.split()[0])
    return info["MemAvailable"], info["MemTotal"]


def bench_quotes(tpm: sp.SwtpmInstance) -> None:
    print("== quote on swtpm (tpm2-pytss, one ESAPI connection) ==")
    with tpm.device() as dev:
        dev.create_ak("ecc", ECC_AK)
        t0 = time.perf_counter()
        dev.create_ak("rsa", RSA_AK)
        rsa_create = time.perf_counter() - t0
        one_pcr = {TPM_ALG.SHA256: [0]}
        read = median_seconds(lambda: dev.pcr_read(one_pcr), 50, 5)
        ecc = median_seconds(lambda: dev.quote(ECC_AK, b"n" * 32, SELECTION),
                             50, 5)
        rsa = median_seconds(lambda: dev.quote(RSA_AK, b"n" * 32, SELECTION),
                             20, 5)
        attest, sig = dev.quote(ECC_AK, b"n" * 32, SELECTION)
        values = dev.pcr_read(SELECTION)
        ak = structures.parse_public(dev.load_ak(ECC_AK).public)
    report("PCR_Read of 1 PCR (baseline: one round trip)", read * 1e6,
           unit="us")
    report("quote, ECC P-256 AK", ecc, read, "PCR_Read")
    report("quote, RSA-2048 AK", rsa, read, "PCR_Read")
    report("RSA AK creation (one run)", rsa_create)
    verify = median_seconds(
        lambda: quote.verify_quote(ak, attest, sig, b"n" * 32, values),
        200, 5)
    report("verify_quote ECC (software, verifier side)", verify, ecc,
           "TPM quote")
    tools = shutil.which("tpm2_quote")
    if tools:
        env = dict(os.environ, TPM2TOOLS_TCTI=tpm.tcti)
        argv = [tools, "-c", hex(ECC_AK), "-l", "sha256:0,1,2,3,4,5,6,7",
                "-q", "6e6f6e6365", "-m", "/dev/null", "-s", "/dev/null"]

        def spawn() -> None:
            subprocess.run(argv, env=env, check=True,
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        spawned = median_seconds(spawn, 5, 3)
        report("quote via a tpm2_quote subprocess (never do this)", spawned,
               ecc, "in-process")


def bench_enrollment(ca: sp.LocalCA, tpm: sp.SwtpmInstance) -> None:
    print("== enrollment (both sides, AK already persisted) ==")
    store = en.DictEnrollmentStore()
    counter = iter(range(10 ** 6))
    with tpm.device() as dev:
        identity = agent_en.collect_identity(dev, ak_handle=ECC_AK)
        bundle = en.load_ca_bundle(ca.bundle_pem)

        def one() -> None:
            host = "h%d" % next(counter)
            ident = agent_en.collect_identity(dev, ak_handle=ECC_AK)
            ch = en.start_enrollment(host, ident.ek_certificate,
                                     ident.ek_public, ident.ak_public,
                                     ca_bundle=bundle, store=store)
            secret = agent_en.answer_challenge(dev, ch.credential_blob,
                                         ch.encrypted_secret,
                                         ak_handle=ECC_AK)
            en.complete_enrollment(store, ch.challenge_id, secret)

        def verifier_only() -> None:
            en.start_enrollment("v", identity.ek_certificate,
                                identity.ek_public, identity.ak_public,
                                ca_bundle=bundle)
        full = median_seconds(one, 10, 3)
        collect = median_seconds(
            lambda: agent_en.collect_identity(dev, ak_handle=ECC_AK), 10, 3)
        verifier = median_seconds(verifier_only, 20, 3)
    report("enrollment, full round (host + verifier)", full)
    report("  host: collect_identity (NV certs, EK, AK)", collect, full,
           "full")
    report("  verifier: chain + EK match + MakeCredential", verifier, full,
           "full")


def bench_provisioning(ca: sp.LocalCA, base: str) -> None:
    print("== provisioning (swtpm_setup with EK + platform certs) ==")
    with sp.SwtpmPool(ca, os.path.join(base, "prov")) as pool:
        t0 = time.perf_counter()
        pool.start(1)
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool.start(4)
        four = time.perf_counter() - t0
    report("provision + start 1 TPM", one)
    report("provision + start 4 TPMs in parallel (per TPM)", four / 4)


def bench_scale(ca: sp.LocalCA, base: str) -> None:
    print("== how many swtpm at once (started unprovisioned, each answers "
          "a PCR_Read) ==")
    available0, total = _mem_available_kib()
    pool = sp.SwtpmPool(ca, os.path.join(base, "scale"), max_workers=2)
    started: list[sp.SwtpmInstance] = []
    stop_reason = "reached the limit of %d" % SCALE_LIMIT
    t0 = time.perf_counter()
    try:
        while len(started) < SCALE_LIMIT:
            if time.perf_counter() - t0 > SCALE_BUDGET_S:
                stop_reason = "time budget of %.0f s" % SCALE_BUDGET_S
                break
            available, _ = _mem_available_kib()
            if available < MIN_AVAILABLE_FRACTION * total:
                stop_reason = "memory: %d MiB available" % (available >> 10)
                break
            try:
                batch = pool.start(10, provision=False)
            except sp.SwtpmFailed as exc:
                stop_reason = "start failed: %s" % str(exc)[:120]
                break
            for tpm in batch:
                with tpm.device() as dev:
                    dev.pcr_read({TPM_ALG.SHA256: [0]})
            started.extend(batch)
        elapsed = time.perf_counter() - t0
        rss = [t.rss_kib() for t in started]
        available1, _ = _mem_available_kib()
    finally:
        pool.close()
    leftover = [t for t in started if t.running]
    print("started %d swtpm in %.1f s (stopped at: %s)"
          % (len(started), elapsed, stop_reason))
    if rss:
        print("RSS per swtpm: median %d KiB, max %d KiB; MemAvailable "
              "dropped %d MiB (%.0f KiB per instance); total memory %d MiB"
              % (statistics.median(rss), max(rss),
                 (available0 - available1) >> 10,
                 (available0 - available1) / len(started), total >> 10))
        per_instance = max((available0 - available1) / len(started), 1)
        print("=> memory bound: about %d instances by RSS (counts shared "
              "pages once per process), about %d by the MemAvailable drop"
              % (available0 // max(statistics.median(rss), 1),
                 available0 // per_instance))
    print("leftover processes after close: %d" % len(leftover))


def main() -> None:
    sp.require_binaries()
    base = tempfile.mkdtemp(prefix="bench-device-")
    try:
        ca = sp.LocalCA.create(os.path.join(base, "ca"))
        with sp.SwtpmPool(ca, os.path.join(base, "main")) as pool:
            tpm = pool.start(1)[0]
            bench_quotes(tpm)
            bench_enrollment(ca, tpm)
        bench_provisioning(ca, base)
        bench_scale(ca, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
