"""A real guest live-migrates, its vTPM inside QEMU's migration stream.

Two hosts on this machine: two swtpm vTPM drivers with their own state
directories on two host TPMs (swtpms standing in for two hosts' hardware
TPMs), and two QEMU processes (TCG): the source runs the guest on driver
A's vTPM, the destination starts with ``-incoming defer`` on the vTPM that
driver B prepared. The guest (tests/guest/init.sh, live mode) extends
PCR 23 with a random marker and writes it into an NV index at boot, then
reads both back from its vTPM once a second. The migration goes over QMP
with the calls a hypervisor driver makes (trusted_pools/vtpm/hooks.py).

One boot serves the module (about 20 s): first a destination holding the
wrong migration key (the migration fails, the source guest carries on with
its vTPM), then the right one (the guest reads its marker from the
destination's vTPM; the source's state is erased).

A missing qemu-system-x86_64, OVMF, kernel or busybox FAILS these tests
with the package to install (tools/bootstrap.sh installs them).
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import uuid as uuid_lib
from pathlib import Path

import pytest

from tests.functional.vtpm.test_live_migration_driver import is_swtpm
from tests.guest import image, live, qemu
from trusted_pools import exception
from trusted_pools.vtpm.driver import (MIGRATION_OUTGOING, VTPMStatus)
from trusted_pools.vtpm.hooks import LiveMigrationHooks
from trusted_pools.vtpm.swtpm import STATE_FILE, SwtpmDriver

pytestmark = [pytest.mark.slow, pytest.mark.swtpm]


def _require_parts() -> None:
    try:
        qemu.find_qemu()
        qemu.find_ovmf()
        image.kernel()
        image.initramfs()
    except image.GuestPartMissing as exc:
        pytest.fail("the live-migration test cannot run: %s" % exc)


def _swtpm_pids(state_dir: Path) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and is_swtpm(int(name)):
            try:
                argv = Path("/proc/%s/cmdline" % name).read_bytes()
            except OSError:
                continue
            if str(state_dir).encode() in argv:
                pids.append(int(name))
    return pids


@pytest.fixture(scope="module")
def moved(swtpm_module_pool, swtpm_ca, tmp_path_factory):
    """The whole scenario, once; what the tests look at."""
    _require_parts()
    host_a, host_b = swtpm_module_pool(2)
    base = tmp_path_factory.mktemp("live")
    run_dir = Path(tempfile.mkdtemp(prefix="tplm", dir="/tmp"))
    (run_dir / "a").mkdir()
    (run_dir / "b").mkdir()
    source_driver = SwtpmDriver(base / "state-a", host_a.tcti,
                                run_dir=run_dir / "a",
                                setup_config=str(swtpm_ca.setup_conf))
    dest_driver = SwtpmDriver(base / "state-b", host_b.tcti,
                              run_dir=run_dir / "b",
                              setup_config=str(swtpm_ca.setup_conf))
    source, dest = (LiveMigrationHooks(source_driver),
                    LiveMigrationHooks(dest_driver))
    instance = str(uuid_lib.uuid4())
    marker = os.urandom(32)
    facts: dict = {"instance": instance, "marker": marker,
                   "source_driver": source_driver,
                   "dest_driver": dest_driver}
    guests: list[live.LiveGuest] = []
    try:
        source_driver.create(instance, metadata={"flavor": "vtpm.small"})
        facts["source_pid"] = source_driver.start(instance).pid
        src = live.LiveGuest(
            base, "source", marker=marker,
            tpm_args=source_driver.attach_info(instance).qemu_args())
        guests.append(src)
        facts["booted"] = src.wait_reading()

        # 1. A destination that holds the wrong key.
        key = source.source_key(instance)
        facts["source_migrating"] = source_driver.status(instance)
        wrong = dest.pre_live_migration(
            instance, migration_key=os.urandom(32),
            metadata=facts["source_migrating"].metadata)
        bad = live.LiveGuest(base, "wrong-dest", marker=marker,
                             tpm_args=wrong.qemu_args())
        guests.append(bad)
        facts["wrong"] = live.migrate(src, bad,
                                      "unix:%s" % (run_dir / "m1.sock"))
        facts["wrong_dest_exit"] = bad.wait_exit(30)
        facts["wrong_dest_log"] = bad.qemu_log()
        with pytest.raises(exception.VTPMStateUnusable):
            dest.post_live_migration_at_destination(instance)
        dest.rollback_live_migration_at_destination(instance)
        facts["dest_after_rollback"] = dest_driver.list()
        facts["source_after_rollback"] = \
            source.rollback_live_migration_at_source(instance)
        facts["source_status_after_failure"] = \
            src.qmp.command("query-status")["status"]
        last = src.readings()[-1].n
        facts["source_carries_on"] = src.wait_reading(after=last, timeout=60)

        # 2. The attested destination, with the key.
        assert source.source_key(instance) == key  # same swtpm run
        incoming = dest.pre_live_migration(
            instance, migration_key=key,
            metadata=source_driver.status(instance).metadata)
        facts["incoming"] = incoming
        good = live.LiveGuest(base, "dest", marker=marker,
                              tpm_args=incoming.qemu_args())
        guests.append(good)
        facts["good"] = live.migrate(src, good,
                                     "unix:%s" % (run_dir / "m2.sock"))
        facts["dest_qemu_status"] = good.qmp.command("query-status")["status"]
        facts["source_qemu_status"] = \
            src.qmp.command("query-status")["status"]
        facts["last_source_reading"] = src.readings()[-1]
        facts["finished"] = dest.post_live_migration_at_destination(instance)
        # libvirt ends the source QEMU after a completed migration; its
        # swtpm exits with it. Then the commit, then the source erases.
        src.close()
        facts["source_status_after_quit"] = source_driver.status(instance)
        source.post_live_migration(instance)
        facts["source_dir_exists"] = (source_driver.state_dir /
                                      instance).exists()
        facts["source_swtpms"] = _swtpm_pids(source_driver.state_dir)
        facts["dest_swtpms"] = _swtpm_pids(dest_driver.state_dir)
        facts["on_dest"] = good.wait_reading(timeout=60)
        facts["dest_status"] = dest_driver.status(instance)
        facts["dest_state"] = (dest_driver.state_dir / instance / "tpm" /
                               STATE_FILE).read_bytes()
        good.close()
        print("live migration with the vTPM: %.2f s (QEMU downtime %s ms); "
              "wrong key failed after %.2f s; guest reading %d on the "
              "source, %d on the destination" % (
                  facts["good"].seconds, facts["good"].info.get("downtime"),
                  facts["wrong"].seconds, facts["last_source_reading"].n,
                  facts["on_dest"].n))
        yield facts
    finally:
        for guest in guests:
            guest.close()
        for driver in (source_driver, dest_driver):
            for info in driver.list():
                try:
                    driver.destroy(info.instance_uuid)
                except Exception:  # noqa: BLE001 - best effort
                    pass
        shutil.rmtree(run_dir, ignore_errors=True)


def test_guest_marked_its_vtpm_on_the_source(moved):
    booted = moved["booted"]
    assert booted.pcr23 == live.expected_pcr23(moved["marker"])
    assert booted.nv == moved["marker"].hex()[:32]
    info = moved["source_migrating"]
    assert info.status is VTPMStatus.MIGRATING
    assert info.migration == MIGRATION_OUTGOING
    assert info.pid == moved["source_pid"]


def test_wrong_key_fails_the_migration(moved):
    assert moved["wrong"].status == "failed"
    assert moved["wrong_dest_exit"] != 0
    # QEMU's own words: swtpm refused the state blob.
    assert "decryption error" in moved["wrong_dest_log"]
    assert moved["dest_after_rollback"] == []


def test_source_guest_carries_on_with_its_vtpm_after_the_failure(moved):
    assert moved["source_status_after_failure"] == "running"
    after = moved["source_after_rollback"]
    assert after.status is VTPMStatus.RUNNING
    assert after.pid == moved["source_pid"]
    reading = moved["source_carries_on"]
    assert reading.pcr23 == live.expected_pcr23(moved["marker"])
    assert reading.nv == moved["marker"].hex()[:32]


def test_guest_reads_its_vtpm_state_on_the_destination(moved):
    assert moved["good"].status == "completed"
    assert moved["dest_qemu_status"] == "running"
    assert moved["source_qemu_status"] == "postmigrate"
    on_dest = moved["on_dest"]
    # The guest's own counter goes on: same guest, now on the destination.
    assert on_dest.n > moved["last_source_reading"].n
    assert on_dest.pcr23 == live.expected_pcr23(moved["marker"])
    assert on_dest.nv == moved["marker"].hex()[:32]
    status = moved["dest_status"]
    assert status.status is VTPMStatus.RUNNING and status.migration is None
    assert status.metadata["user"] == {"flavor": "vtpm.small"}
    assert moved["finished"].pid == moved["incoming"].info.pid


def test_destination_keeps_the_state_sealed_to_its_own_host(moved):
    state = moved["dest_state"]
    flags = struct.unpack(">H", state[4:6])[0]
    assert flags & 0x9 == 0x9  # encrypted, 256-bit key
    assert moved["marker"].hex()[:32].encode() not in state
    source_binding = moved["source_migrating"].metadata["binding_key"]
    assert moved["dest_status"].metadata["binding_key"] != source_binding


def test_source_state_erased_and_one_copy_runs(moved):
    # Until the commit the source copy stays MIGRATING (no restart here).
    assert moved["source_status_after_quit"].status is VTPMStatus.MIGRATING
    assert not moved["source_dir_exists"]
    assert moved["source_swtpms"] == []
    assert moved["dest_swtpms"] == [moved["dest_status"].pid]
    with pytest.raises(exception.VTPMNotFound):
        moved["source_driver"].status(moved["instance"])
