"""The main job of trusted_pools: a small trusted pool, end to end.

1. Verify a real attestation recorded from a Google Cloud shielded VM's TPM
   (shipped in tests/data): its files are written out the way tpm2-tools
   would, then checked with ``trusted-pools-manage evidence verify``.
2. Show that the same evidence with one byte changed is rejected.
3. Make a fresh quote on a real software TPM 2.0 (swtpm) with tpm2-tools
   and verify it with the same command.
4. Bring up a small trusted pool on embedded defaults: four compute hosts,
   each a swtpm booted from a real firmware event log (one of them with a
   kernel nobody approved) with an IMA log, one agent per host, one
   conductor, SQLite, and the local RabbitMQ bus. Enroll the hosts (EK
   certificate chain, AK bound by credential activation), capture the
   golden measurements from a good host, attest, and print each host's
   verdict, level and reasons.

Exit status is non-zero if any step does not give the expected outcome.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ATTESTATION = ROOT / "tests/data/quote/go-attestation/windows_gcp_shielded_vm.json"
MANAGE = [sys.executable, "-m", "trusted_pools.cmd.manage"]
SHA1_GO = 3  # Go's crypto.SHA1 numbering, as used in the JSON


def banner(text: str) -> None:
    print("\n=== %s" % text, flush=True)


def write_gcp_files(workdir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Write the recorded attestation as tpm2-tools style files."""
    record = json.loads(ATTESTATION.read_text())
    ak = base64.b64decode(record["AK"]["Public"])
    files = {
        # tpm2-tools' "tss" public format is a TPM2B_PUBLIC.
        "ak": len(ak).to_bytes(2, "big") + ak,
        "quote": base64.b64decode(record["Quote"]["Quote"]),
        "signature": base64.b64decode(record["Quote"]["Signature"]),
        "eventlog": base64.b64decode(record["Log"]["Raw"]),
    }
    sha1 = sorted((p["Index"], base64.b64decode(p["Digest"]))
                  for p in record["Log"]["PCRs"]
                  if p["DigestAlg"] == SHA1_GO)
    files["pcrs"] = b"".join(value for _, value in sha1)
    paths = {}
    for name, data in files.items():
        paths[name] = workdir / ("gcp-" + name + ".bin")
        paths[name].write_bytes(data)
    return paths


def verify(paths: dict[str, pathlib.Path], nonce: str,
           extra: list[str] | None = None) -> int:
    cmd = MANAGE + [
        "evidence", "verify", "--ak", str(paths["ak"]),
        "--quote", str(paths["quote"]),
        "--signature", str(paths["signature"]), "--nonce", nonce,
        "--pcrs", str(paths["pcrs"]), "--pcrs-format", "values",
    ] + (extra or [])
    if "eventlog" in paths:
        cmd += ["--eventlog", str(paths["eventlog"])]
    print("$ trusted-pools-manage " + " ".join(cmd[3:]), flush=True)
    return subprocess.call(cmd)


def swtpm_quote(workdir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Start a swtpm, create an ECC AK with tpm2-tools, quote PCRs 0-7."""
    from tests import swtpm_pool
    swtpm_pool.require_binaries()
    tpm = swtpm_pool.SwtpmInstance(workdir / "swtpm", ca=None,
                                   name="demo").start()
    env = dict(os.environ, TPM2TOOLS_TCTI=tpm.tcti)

    def tool(*argv: str) -> None:
        subprocess.run(argv, check=True, env=env, cwd=workdir,
                       stdout=subprocess.DEVNULL)

    try:
        tool("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
        tool("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc",
             "-g", "sha256", "-s", "ecdsa", "-u", "ak.pub", "-f", "tss")
        tool("tpm2_flushcontext", "-t")
        tool("tpm2_quote", "-c", "ak.ctx", "-l", "sha256:0,1,2,3,4,5,6,7",
             "-q", "c0ffee00deadbeef", "-m", "quote.msg", "-s", "quote.sig",
             "-o", "quote.pcrs", "-g", "sha256")
    finally:
        tpm.stop()
    return {"ak": workdir / "ak.pub", "quote": workdir / "quote.msg",
            "signature": workdir / "quote.sig", "pcrs": workdir / "quote.pcrs"}


POOL_CONF = """[DEFAULT]
transport_url = rabbit://guest:guest@127.0.0.1:5672/%(vhost)s
[trusted_pools]
state_path = %(workdir)s
[database]
connection = sqlite:///%(workdir)s/trusted_pools.sqlite
[conductor]
attestation_interval = 2
"""


def run_pool(workdir: pathlib.Path) -> int:
    """Build the pool with the test-side swtpm harness, then let the real
    services do the rest."""
    from tests import pool_harness, swtpm_pool
    from tests.rabbitmq import rabbitmqctl
    from trusted_pools.common import config, rpc

    # A virtual host of its own keeps the demo's queues apart from any
    # other deployment or test run on the same broker.
    vhost = "trusted-pools-demo-%s" % os.urandom(4).hex()
    if not (rabbitmqctl("add_vhost", vhost) and rabbitmqctl(
            "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")):
        vhost = ""
    conf_path = workdir / "trusted-pools.conf"
    conf_path.write_text(POOL_CONF % {"workdir": workdir, "vhost": vhost})
    conf = config.parse_args(["--config-file", str(conf_path)],
                             "trusted-pools-demo")
    rpc.init(conf)
    ca = swtpm_pool.LocalCA.create(workdir / "ek-ca")
    with swtpm_pool.SwtpmPool(ca, workdir / "tpms") as tpms:
        pool = pool_harness.TrustedPool(
            workdir, conf, tpms.start, ca,
            conf.database.connection, interval=2)
        try:
            return _attest_pool(pool)
        finally:
            started = time.monotonic()
            pool.close()
            print("pool stopped in %.1f s" % (time.monotonic() - started))
            rpc.cleanup()
            if vhost:
                rabbitmqctl("delete_vhost", vhost)



def _attest_pool(pool) -> int:
    pool.configure()
    hosts = pool.add_hosts(4, tamper=[3])
    print("hosts: %s (%s booted a kernel nobody approved)"
          % (", ".join(h.name for h in hosts), hosts[3].name))
    pool.start_agents()
    pool.start_conductor("conductor-1")
    pool.enroll_all()
    print("enrolled: EK certificates chain to the local CA; each EK "
          "approved by its hash (the demo reads it from the swtpm it made, "
          "as an operator would from the inventory); AKs bound by "
          "credential activation")
    api = pool.api()
    captured = api.capture_policy({}, hosts[0].name)
    for kind, body in sorted(captured.items()):
        api.create_policy({}, "golden-" + kind, kind, body)
        api.assign_policy({}, "default", "golden-" + kind)
    print("golden measurements captured from %s: %s" % (
        hosts[0].name, ", ".join(sorted(captured))))
    names = [h.name for h in hosts]
    latest = pool.wait_for(lambda v: all(
        n in v and len(v[n].policy_versions) == len(captured)
        for n in names), timeout=60)
    print()
    print("%-12s %-10s %-5s %s" % ("HOST", "VERDICT", "LEVEL", "REASONS"))
    for name in names:
        verdict = latest[name]
        reasons = "; ".join(verdict.reasons) or "-"
        print("%-12s %-10s %-5d %s" % (name, verdict.status, verdict.level,
                                       reasons[:300]))
    expected = {n: "trusted" for n in names[:3]}
    expected[names[3]] = "untrusted"
    wrong = [n for n in names if latest[n].status != expected[n]]
    if wrong:
        print("UNEXPECTED verdicts for %s" % ", ".join(wrong))
    banner("5. Placing VMs through Nova's HostFilterHandler with "
           "TrustedHostFilter")
    return (1 if wrong else 0) + place_vms(pool, names, set(names[:3]))


def place_vms(pool, names: list[str], trusted: set[str]) -> int:
    """Feed the scheduler filter's cache the way nova-scheduler does (bulk
    refresh of signed verdicts from the conductors' verdict read API,
    checked with the conductor key pinned in configuration), then
    schedule."""
    from nova.scheduler import filters as nova_filters
    from nova.scheduler.filters import compute_capabilities_filter
    from nova.scheduler.filters import compute_filter
    from nova.scheduler.filters import image_props_filter
    from tests import nova_harness
    from trusted_pools.nova.scheduler import listener
    from trusted_pools.nova.scheduler.cache import VerdictCache
    from trusted_pools.nova.scheduler.filters import TrustedHostFilter

    from trusted_pools.conductor import rpcapi as conductor_rpcapi
    cache = VerdictCache(
        listener.load_public_keys([str(pool.conductor_keys_path)]),
        max_age=120, grace=60)
    refresher = listener.TrustListener(
        cache, conductor_rpcapi.VerdictsAPI(timeout=30),
        notification_transport=None, exchange="trusted_pools")
    print("verdicts admitted into the filter's cache (signatures checked "
          "once): %d" % refresher.refresh())
    chain = [compute_filter.ComputeFilter(),
             compute_capabilities_filter.ComputeCapabilitiesFilter(),
             image_props_filter.ImagePropertiesFilter(),
             TrustedHostFilter(cache=cache)]
    hosts = [nova_harness.host_state(name) for name in names]
    handler = nova_filters.HostFilterHandler()
    requests = [
        ("vm-secure-1", {"trust:trusted_host": "required"}, trusted),
        ("vm-secure-2", {"trust:min_level": "4"}, trusted),
        ("vm-plain", {}, set(names)),
    ]
    failures = 0
    print("%-12s %-34s %s" % ("VM", "FLAVOR EXTRA SPECS", "HOSTS THAT PASS"))
    for vm, specs, allowed in requests:
        passed = {h.host for h in handler.get_filtered_objects(
            chain, hosts, nova_harness.request_spec(specs))}
        ok = passed == allowed
        failures += not ok
        print("%-12s %-34s %s%s" % (
            vm, ", ".join("%s=%s" % kv for kv in specs.items()) or "-",
            ", ".join(sorted(passed)) or "none",
            "" if ok else "   <- WRONG, expected %s" % sorted(allowed)))
    for name in sorted(set(names) - trusted):
        print("%s refused: %s" % (name, cache.explain(
            name, 1, 120, cache.monotonic())))
    return failures


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="trusted-pools-demo-") as tmp:
        workdir = pathlib.Path(tmp)
        banner("1. A real attestation from a GCP shielded VM's TPM")
        paths = write_gcp_files(workdir)
        # That TPM's AK signs with SHA-1, which is refused unless waived
        # explicitly (a host's policy must say allow_sha1_quotes).
        print("Without the SHA-1 waiver the quote is refused:", flush=True)
        failures += verify(paths, nonce="") != 1
        sha1 = ["--allow-sha1-quotes"]
        failures += verify(paths, nonce="", extra=sha1) != 0

        banner("2. The same evidence with one PCR value changed")
        tampered = bytearray(paths["pcrs"].read_bytes())
        tampered[7 * 20] ^= 0x01
        bad = dict(paths, pcrs=workdir / "gcp-pcrs-tampered.bin")
        bad["pcrs"].write_bytes(bytes(tampered))
        failures += verify(bad, nonce="", extra=sha1) != 1

        banner("3. A fresh quote from a real software TPM 2.0 (swtpm)")
        live = swtpm_quote(workdir)
        rc = subprocess.call(MANAGE + [
            "evidence", "verify", "--ak", str(live["ak"]),
            "--quote", str(live["quote"]),
            "--signature", str(live["signature"]),
            "--nonce", "c0ffee00deadbeef", "--pcrs", str(live["pcrs"])])
        failures += rc != 0

        banner("4. A small trusted pool: 4 hosts, 1 conductor, SQLite, "
               "RabbitMQ")
        failures += run_pool(workdir) != 0
    banner("demo %s" % ("PASSED" if not failures else "FAILED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
