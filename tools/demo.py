"""The main job of trusted_pools: a small trusted pool, end to end.

1. Verify a real attestation recorded from a Google Cloud shielded VM's TPM
   (shipped in tests/data): its files are written out the way tpm2-tools
   would, then checked with ``trusted-pools-manage evidence verify``.
2. Show that the same evidence with one byte changed is rejected.
3. Make a fresh quote on a real software TPM 2.0 (swtpm) with tpm2-tools
   and verify it with the same command.
4. Bring up a small trusted pool on embedded defaults (tools/demo_pool.py):
   four compute hosts, each a swtpm booted from a real firmware event log
   (one of them with a boot loader nobody approved) with an IMA log, one
   agent per host, one conductor, SQLite, the local RabbitMQ bus (a
   virtual host of its own) and trusted-pools-api with its dashboard on
   127.0.0.1. Enroll the hosts, capture the golden measurements from a
   good host, attest, and print each host's verdict, level and reasons.
5. Place VMs through Nova's HostFilterHandler with TrustedHostFilter.
6. Create vTPMs for the placed VMs whose flavor asks for one, on their
   hosts, with the agents' swtpm vTPM driver (AK certified by the host's
   vTPM CA).
7. Deep-attest one instance (the VM quote comes from a host-side process
   on the vTPM, not a guest: the demo boots no QEMU; it says so).
8. Release the instance's vTPM secret through Nova's castellan backend to
   its trusted host and see it refused to the tampered host.
9. Migrate that vTPM cold to another trusted host (whose Nova then gets
   the secret too) and see a migration to the tampered host refused.
10. Read the dashboard over HTTP: its page, the pool through the API with
    the printed token, a 401 without one.

It ends with a table of hosts, VMs, vTPMs and migrations. ``--hold``
keeps the pool and its dashboard up after the table until Enter.
Exit status is non-zero if any step does not give the expected outcome.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import warnings

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# oslo.service warns at import that eventlet is deprecated; the services
# here run on threads and never use it (trusted_pools.common.service).
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import demo_pool  # noqa: E402 - tools/, next to this file
from demo_support import Story, table_lines  # noqa: E402
ATTESTATION = ROOT / "tests/data/quote/go-attestation/windows_gcp_shielded_vm.json"
MANAGE = [sys.executable, "-m", "trusted_pools.cmd.manage"]
SHA1_GO = 3  # Go's crypto.SHA1 numbering, as used in the JSON


banner = demo_pool.banner


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hold", action="store_true",
                        help="keep the pool and its dashboard up after the "
                             "table until Enter is pressed")
    args = parser.parse_args(argv)
    story = Story()
    with tempfile.TemporaryDirectory(prefix="trusted-pools-demo-") as tmp:
        workdir = pathlib.Path(tmp)
        banner("1. A real attestation from a GCP shielded VM's TPM")
        paths = write_gcp_files(workdir)
        # That TPM's AK signs with SHA-1, which is refused unless waived
        # explicitly (a host's policy must say allow_sha1_quotes).
        print("Without the SHA-1 waiver the quote is refused:", flush=True)
        story.expect(verify(paths, nonce="") == 1,
                     "the SHA-1 quote was not refused")
        sha1 = ["--allow-sha1-quotes"]
        story.expect(verify(paths, nonce="", extra=sha1) == 0,
                     "the GCP evidence did not verify")

        banner("2. The same evidence with one PCR value changed")
        tampered = bytearray(paths["pcrs"].read_bytes())
        tampered[7 * 20] ^= 0x01
        bad = dict(paths, pcrs=workdir / "gcp-pcrs-tampered.bin")
        bad["pcrs"].write_bytes(bytes(tampered))
        story.expect(verify(bad, nonce="", extra=sha1) == 1,
                     "the tampered evidence was not rejected")

        banner("3. A fresh quote from a real software TPM 2.0 (swtpm)")
        live = swtpm_quote(workdir)
        rc = subprocess.call(MANAGE + [
            "evidence", "verify", "--ak", str(live["ak"]),
            "--quote", str(live["quote"]),
            "--signature", str(live["signature"]),
            "--nonce", "c0ffee00deadbeef", "--pcrs", str(live["pcrs"])])
        story.expect(rc == 0, "the swtpm quote did not verify")

        banner("4. A small trusted pool: 4 hosts, 1 conductor, SQLite, "
               "RabbitMQ, trusted-pools-api")
        demo_pool.run_pool(workdir, story, hold=args.hold)
    banner("The pool at the end")
    for line in table_lines(story):
        print(line)
    for what in story.unexpected:
        print("UNEXPECTED: %s" % what)
    banner("demo %s" % ("PASSED" if not story.unexpected else "FAILED"))
    return 1 if story.unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
