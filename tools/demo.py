"""The main job of trusted_pools at this stage of the project.

1. Verify a real attestation recorded from a Google Cloud shielded VM's TPM
   (shipped in tests/data): its files are written out the way tpm2-tools
   would, then checked with ``trusted-pools-manage evidence verify``.
2. Show that the same evidence with one byte changed is rejected.
3. If swtpm and tpm2-tools are present, make a fresh quote on a real
   software TPM 2.0 with tpm2-tools and verify it with the same command.

Exit status is non-zero if any step does not give the expected outcome.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
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


def free_port_pair() -> int:
    """A port P with P+1 also free: the swtpm TCTI expects control at P+1."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of TCP ports on 127.0.0.1")


def swtpm_quote(workdir: pathlib.Path) -> dict[str, pathlib.Path] | None:
    """Start a swtpm, create an ECC AK with tpm2-tools, quote PCRs 0-7."""
    if not (shutil.which("swtpm") and shutil.which("tpm2_quote")):
        print("swtpm or tpm2-tools missing: skipping the live TPM step "
              "(apt-get install swtpm tpm2-tools)")
        return None
    state = workdir / "swtpm"
    state.mkdir()
    port = free_port_pair()
    ctrl = port + 1
    subprocess.run(
        ["swtpm", "socket", "--tpm2", "--tpmstate", "dir=%s" % state,
         "--server", "type=tcp,port=%d,bindaddr=127.0.0.1" % port,
         "--ctrl", "type=tcp,port=%d,bindaddr=127.0.0.1" % ctrl,
         "--flags", "not-need-init,startup-clear", "--daemon",
         "--pid", "file=%s/pid" % state], check=True)
    env = dict(os.environ, TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=%d"
               % port)

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
        pid = (state / "pid").read_text().strip()
        subprocess.call(["kill", pid])
    return {"ak": workdir / "ak.pub", "quote": workdir / "quote.msg",
            "signature": workdir / "quote.sig", "pcrs": workdir / "quote.pcrs"}


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="trusted-pools-demo-") as tmp:
        workdir = pathlib.Path(tmp)
        banner("1. A real attestation from a GCP shielded VM's TPM")
        paths = write_gcp_files(workdir)
        failures += verify(paths, nonce="") != 0

        banner("2. The same evidence with one PCR value changed")
        tampered = bytearray(paths["pcrs"].read_bytes())
        tampered[7 * 20] ^= 0x01
        bad = dict(paths, pcrs=workdir / "gcp-pcrs-tampered.bin")
        bad["pcrs"].write_bytes(bytes(tampered))
        failures += verify(bad, nonce="") != 1

        banner("3. A fresh quote from a real software TPM 2.0 (swtpm)")
        live = swtpm_quote(workdir)
        if live is not None:
            rc = subprocess.call(MANAGE + [
                "evidence", "verify", "--ak", str(live["ak"]),
                "--quote", str(live["quote"]),
                "--signature", str(live["signature"]),
                "--nonce", "c0ffee00deadbeef", "--pcrs", str(live["pcrs"])])
            failures += rc != 0
    banner("demo %s" % ("PASSED" if not failures else "FAILED"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
