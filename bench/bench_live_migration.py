"""What a vTPM adds to a live migration: the same guest, with and without.

Run: ``.venv/bin/python -m bench.bench_live_migration [--rounds N]``
(two TCG guest boots of about 20 s each, then 2 x N migrations; needs
qemu-system-x86, ovmf and the test guest of tests/guest).

Two guests boot from the same kernel, initramfs and command line
(tests/guest/init.sh, live mode) on this machine: one on the swtpm driver's
vTPM (host A), one with no TPM at all (the baseline, measured in the same
run). Each round migrates each guest once to a fresh destination QEMU
(``-incoming defer``, started before the clock runs), ping-pong between
two driver "hosts" on two host TPMs (swtpms), alternating the two kinds.

Reported, medians over the rounds:

* QEMU's migration, ``migrate`` until ``query-migrate`` says completed,
  and QEMU's own downtime figure: what the vTPM's state blobs add inside
  the stream;
* the whole move as a hypervisor driver runs it: for the vTPM guest the
  driver steps of trusted_pools/vtpm/hooks.py (source key unwrapped in the
  host TPM, destination vTPM prepared with a fresh sealed state key,
  QEMU's migration, destination finished, source QEMU quit, source state
  erased); for the plain guest QEMU's migration and the source QEMU quit.

The migration protocol's own steps (destination attestation, key
wrapping, the bus) are not in here: they belong to the protocol's bench.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid as uuid_lib
from pathlib import Path

from tests import swtpm_pool as sp
from tests.guest import image, live, qemu
from trusted_pools.vtpm.hooks import LiveMigrationHooks
from trusted_pools.vtpm.swtpm import SwtpmDriver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6,
                        help="migrations of each guest")
    args = parser.parse_args()
    sp.require_binaries()
    qemu.find_qemu()
    qemu.find_ovmf()
    image.kernel()
    image.initramfs()
    base = Path(tempfile.mkdtemp(prefix="lmb", dir="/tmp"))
    try:
        ca = sp.LocalCA.create(base / "ca")
        with sp.SwtpmPool(ca, base / "hosts") as pool:
            host_a, host_b = pool.start(2)
            run(host_a, host_b, ca, base, args.rounds)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(host_a: sp.SwtpmInstance, host_b: sp.SwtpmInstance,
        ca: sp.LocalCA, base: Path, rounds: int) -> None:
    drivers = []
    for name, host in (("a", host_a), ("b", host_b)):
        (base / ("run-" + name)).mkdir()
        drivers.append(SwtpmDriver(base / ("state-" + name), host.tcti,
                                   run_dir=base / ("run-" + name),
                                   setup_config=str(ca.setup_conf)))
        drivers[-1].binding_key_public()  # host keys made before timing
    hooks = [LiveMigrationHooks(d) for d in drivers]
    instance = str(uuid_lib.uuid4())
    marker = os.urandom(32)
    drivers[0].create(instance)
    drivers[0].start(instance)

    guests: list[live.LiveGuest] = []
    t0 = time.perf_counter()
    vtpm_guest = live.LiveGuest(
        base, "vtpm-0", marker=marker,
        tpm_args=drivers[0].attach_info(instance).qemu_args())
    plain_guest = live.LiveGuest(base, "plain-0", marker=marker,
                                 tpm_args=[])
    guests += [vtpm_guest, plain_guest]
    vtpm_guest.wait_reading()
    plain_guest.wait_reading()
    print("both guests booted in %.1f s" % (time.perf_counter() - t0))

    samples: dict[str, list[float]] = {k: [] for k in (
        "vtpm_qemu", "plain_qemu", "vtpm_total", "plain_total",
        "vtpm_downtime", "plain_downtime", "vtpm_steps")}
    sock = base / "m.sock"
    try:
        for i in range(rounds):
            src, dst = i % 2, (i + 1) % 2
            # The vTPM guest, with the driver steps around QEMU's part.
            t0 = time.perf_counter()
            key = hooks[src].source_key(instance)
            incoming = hooks[dst].pre_live_migration(
                instance, migration_key=key,
                metadata=drivers[src].status(instance).metadata)
            prepared = time.perf_counter() - t0
            new = live.LiveGuest(base, "vtpm-%d" % (i + 1), marker=marker,
                                 tpm_args=incoming.qemu_args())
            guests.append(new)
            t1 = time.perf_counter()
            result = live.migrate(vtpm_guest, new, "unix:%s" % sock)
            assert result.status == "completed", result.info
            t2 = time.perf_counter()
            hooks[dst].post_live_migration_at_destination(instance)
            vtpm_guest.close()
            hooks[src].post_live_migration(instance)
            t3 = time.perf_counter()
            samples["vtpm_qemu"].append(result.seconds)
            samples["vtpm_downtime"].append(
                result.info.get("downtime", 0) / 1e3)
            samples["vtpm_steps"].append(prepared + (t3 - t2))
            samples["vtpm_total"].append(prepared + (t3 - t1))
            vtpm_guest = new

            # The same guest without a vTPM.
            new = live.LiveGuest(base, "plain-%d" % (i + 1), marker=marker,
                                 tpm_args=[], incoming=True)
            guests.append(new)
            t1 = time.perf_counter()
            result = live.migrate(plain_guest, new, "unix:%s" % sock)
            assert result.status == "completed", result.info
            plain_guest.close()
            t3 = time.perf_counter()
            samples["plain_qemu"].append(result.seconds)
            samples["plain_downtime"].append(
                result.info.get("downtime", 0) / 1e3)
            plain_guest = new
            samples["plain_total"].append(t3 - t1)
        # Both guests still run on their last destination.
        last = vtpm_guest.wait_reading(timeout=60)
        assert last.pcr23 == live.expected_pcr23(marker), last
        assert last.nv == marker.hex()[:32], last
    finally:
        for guest in guests:
            guest.close()
        for driver in drivers:
            for info in driver.list():
                driver.destroy(info.instance_uuid)

    med = {k: statistics.median(v) for k, v in samples.items()}
    print("== live migration, median of %d (same guest, TCG, 256 MiB; "
          "baseline: no TPM, same run) ==" % rounds)
    rows = (("QEMU migration (migrate -> completed)", "vtpm_qemu",
             "plain_qemu"),
            ("QEMU downtime (its own figure)", "vtpm_downtime",
             "plain_downtime"),
            ("whole move (driver steps + QEMU + source quit)",
             "vtpm_total", "plain_total"))
    for label, subject, baseline in rows:
        print("%-48s vTPM %8.1f ms   plain %8.1f ms   added %+8.1f ms   "
              "ratio %.2f" % (label, med[subject] * 1e3, med[baseline] * 1e3,
                              (med[subject] - med[baseline]) * 1e3,
                              med[subject] / med[baseline]))
    print("%-48s %8.1f ms" % ("of which the vTPM driver steps",
                              med["vtpm_steps"] * 1e3))
    print("%-48s %8s" % ("cores", os.cpu_count()))


if __name__ == "__main__":
    main()
