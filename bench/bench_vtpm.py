"""vTPM driver costs on real swtpm: create, start, stop, destroy, memory per
running vTPM, and how many this machine holds.

Run: ``.venv/bin/python -m bench.bench_vtpm`` (about a minute; every swtpm
it starts is stopped).

Baseline measured in the same run: a bare ``swtpm socket --tpm2`` start on
an unencrypted state (until its control channel answers) and its shutdown,
i.e. what the driver adds on top: unwrapping the state key in the host TPM
(TPM2_RSA_Decrypt), the header check, the pipe, the readiness probe.
Memory is VmRSS from /proc/<pid>/status of N running vTPMs; the capacity is
an extrapolation from MemAvailable (no thousands are started).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import time
import uuid as uuid_lib
from pathlib import Path

from tests import swtpm_pool as sp
from trusted_pools.vtpm.swtpm import SwtpmDriver


def _mem_available_kib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def _rss_kib(pid: int) -> int:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _ctrl(path: str, command: int, size: int) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(struct.pack(">I", command))
        return sock.recv(size)


def _bare_start_stop(state: Path, sock: str) -> tuple[float, float]:
    """A bare swtpm on an unencrypted state: start until its control
    channel answers, then CMD_SHUTDOWN until it exited."""
    t0 = time.perf_counter()
    process = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", "dir=%s" % state,
         "--ctrl", "type=unixio,path=%s" % sock, "--flags", "not-need-init"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    while True:
        try:
            if len(_ctrl(sock, 4, 8)) >= 4:
                break
        except OSError:
            time.sleep(0.001)
    started = time.perf_counter() - t0
    t0 = time.perf_counter()
    _ctrl(sock, 3, 4)
    process.wait()
    return started, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10,
                        help="vTPMs created/started/stopped/destroyed")
    parser.add_argument("--running", type=int, default=30,
                        help="vTPMs running at once for the memory figure")
    args = parser.parse_args()
    sp.require_binaries()
    base = Path(tempfile.mkdtemp(prefix="vtb", dir="/tmp"))
    try:
        ca = sp.LocalCA.create(base / "ca")
        with sp.SwtpmPool(ca, base / "host") as pool:
            host, = pool.start(1)
            run(host, ca, base, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(host: sp.SwtpmInstance, ca: sp.LocalCA, base: Path,
        args: argparse.Namespace) -> None:
    (base / "run").mkdir()
    driver = SwtpmDriver(base / "state", host.tcti, run_dir=base / "run",
                         setup_config=str(ca.setup_conf))
    driver.binding_key_public()  # the host key exists before timing

    # Baseline: a bare swtpm on a plain state.
    plain = base / "plain"
    plain.mkdir()
    subprocess.run(["swtpm_setup", "--tpm2", "--tpmstate", str(plain),
                    "--createek", "--config", "/dev/null"], check=True,
                   capture_output=True)
    sock = str(base / "run" / "bare.sock")
    bare = [_bare_start_stop(plain, sock) for _ in range(args.rounds)]
    bare_start = statistics.median(b[0] for b in bare)
    bare_stop = statistics.median(b[1] for b in bare)

    times: dict[str, list[float]] = {k: [] for k in (
        "create (with EK certs)", "create (no certs)", "start", "stop",
        "destroy")}
    plain_driver = SwtpmDriver(base / "state2", host.tcti,
                               run_dir=base / "run",
                               create_certificates=False)
    for _ in range(args.rounds):
        for label, drv in (("create (with EK certs)", driver),
                           ("create (no certs)", plain_driver)):
            uuid = str(uuid_lib.uuid4())
            t0 = time.perf_counter()
            drv.create(uuid)
            times[label].append(time.perf_counter() - t0)
            if drv is plain_driver:
                drv.destroy(uuid)
                continue
            t0 = time.perf_counter()
            drv.start(uuid)
            times["start"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            drv.stop(uuid)
            times["stop"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            drv.destroy(uuid)
            times["destroy"].append(time.perf_counter() - t0)

    print("== vTPM lifecycle (median of %d; ratios against a bare swtpm "
          "in this run) ==" % args.rounds)
    print("%-40s %10.1f ms" % ("bare swtpm start (baseline)",
                               bare_start * 1e3))
    print("%-40s %10.1f ms" % ("bare swtpm shutdown (baseline)",
                               bare_stop * 1e3))
    for label, samples in times.items():
        median = statistics.median(samples)
        base_value = bare_stop if label == "stop" else bare_start
        print("%-40s %10.1f ms   ratio %6.2f vs bare %s"
              % (label, median * 1e3, median / base_value,
                 "shutdown" if label == "stop" else "start"))

    # Memory: N running at once.
    uuids = [str(uuid_lib.uuid4()) for _ in range(args.running)]
    for uuid in uuids:
        plain_driver.create(uuid)
    available_before = _mem_available_kib()
    t0 = time.perf_counter()
    pids = [plain_driver.start(u).pid for u in uuids]
    start_all = time.perf_counter() - t0
    rss = [_rss_kib(p) for p in pids]
    available_after = _mem_available_kib()
    for uuid in uuids:
        plain_driver.destroy(uuid)
    mean_rss = statistics.mean(rss)
    drop = max(0, available_before - available_after) / len(uuids)
    per_vtpm = max(mean_rss, drop)
    print("== %d vTPMs running at once ==" % len(uuids))
    print("%-40s %10.1f ms" % ("start of all, per vTPM",
                               start_all * 1e3 / len(uuids)))
    print("%-40s %10d KiB (max %d)" % ("VmRSS per running vTPM",
                                       mean_rss, max(rss)))
    print("%-40s %10d KiB" % ("MemAvailable drop per vTPM", drop))
    capacity = available_after // per_vtpm if per_vtpm else 0
    print("%-40s %10d  (MemAvailable %d MiB / %d KiB; memory bound, "
          "extrapolated)" % ("vTPMs this machine holds", capacity,
                             available_after // 1024, per_vtpm))
    print("%-40s %10s" % ("cores", os.cpu_count()))


if __name__ == "__main__":
    main()
