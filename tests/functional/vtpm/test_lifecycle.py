"""The swtpm vTPM driver on real swtpm: lifecycle, provisioning hook,
adoption after an agent restart, crash detection, many instances."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import signal
import socket
import struct
import time
import uuid as uuid_lib
from pathlib import Path

import pytest

from tests.functional.vtpm.conftest import nv_read, nv_write
from trusted_pools import exception
from trusted_pools.tpm.device import TPMDevice
from trusted_pools.vtpm import driver as vtpm_driver
from trusted_pools.vtpm.driver import VTPMStatus
from trusted_pools.vtpm.swtpm import STATE_FILE


def new_uuid() -> str:
    return str(uuid_lib.uuid4())


def rss_kib(pid: int) -> int:
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def is_swtpm(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        return b"swtpm" in Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return False


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 5
    while is_swtpm(pid):
        assert time.monotonic() < deadline, "pid %d does not die" % pid
        time.sleep(0.005)


def test_loaded_by_entry_point(host_tpm, tmp_path, run_dir, swtpm_ca):
    driver = vtpm_driver.load_driver(
        "swtpm", state_dir=str(tmp_path / "s"), host_tcti=host_tpm.tcti,
        run_dir=str(run_dir), setup_config=str(swtpm_ca.setup_conf))
    assert driver.name == "swtpm" and driver.list() == []
    with pytest.raises(exception.VTPMDriverLoadFailed, match="swtpm"):
        vtpm_driver.load_driver("swtpm", state_dir=str(tmp_path / "t"),
                                host_tcti=host_tpm.tcti,
                                swtpm="/nonexistent/swtpm")


def test_lifecycle_nv_survives_stop_and_start(host_tpm, make_driver):
    driver = make_driver(host_tpm)
    uuid = new_uuid()
    info = driver.create(uuid, metadata={"flavor": "m1.small"})
    assert info.status is VTPMStatus.STOPPED
    assert info.metadata["user"] == {"flavor": "m1.small"}
    with pytest.raises(exception.VTPMExists):
        driver.create(uuid)

    # Write an NV index through the data channel (host access mode).
    driver.start(uuid, host_access=True)
    with TPMDevice(driver.tcti(uuid)) as dev:
        assert dev.read_ek_certificate("rsa2048")  # swtpm_setup made it
    nv_write(driver.tcti(uuid), b"written before the stop")
    driver.stop(uuid)

    # The state at rest is AES-256 encrypted: the value is not in it.
    state = (driver.state_dir / uuid / "tpm" / STATE_FILE).read_bytes()
    assert b"written before the stop" not in state
    assert struct.unpack(">H", state[4:6])[0] & 0x9 == 0x9

    # Hypervisor mode: only the control channel, where QEMU connects.
    info = driver.start(uuid)
    assert info.status is VTPMStatus.RUNNING and is_swtpm(info.pid)
    assert driver.start(uuid).pid == info.pid  # idempotent
    attach = driver.attach_info(uuid)
    assert attach.socket_path == info.socket_path
    with socket.socket(socket.AF_UNIX) as ctrl:
        ctrl.connect(attach.socket_path)
    assert not os.path.exists(driver.tcti(uuid).split("=", 1)[1])
    assert driver.stop(uuid).status is VTPMStatus.STOPPED
    assert not is_swtpm(info.pid)
    assert driver.stop(uuid).status is VTPMStatus.STOPPED  # idempotent
    assert not os.path.exists(attach.socket_path)

    driver.start(uuid, host_access=True)
    assert nv_read(driver.tcti(uuid)) == b"written before the stop"
    pid = driver.status(uuid).pid

    driver.destroy(uuid)
    assert not is_swtpm(pid)
    assert not (driver.state_dir / uuid).exists()
    assert list(driver.run_dir.iterdir()) == []
    with pytest.raises(exception.VTPMNotFound):
        driver.status(uuid)
    assert driver.list() == []


def test_provisioner_hook(host_tpm, make_driver):
    """The hook talks to the new vTPM before any hypervisor: it makes a
    persistent key; its metadata is stored; the key is there after an
    agent restart (a new driver on the same directories)."""
    driver = make_driver(host_tpm)
    uuid = new_uuid()
    seen = {}

    def provisioner(ctx: vtpm_driver.ProvisioningContext) -> dict:
        seen["tcti"] = ctx.tcti
        assert ctx.instance_uuid == uuid
        with TPMDevice(ctx.tcti) as dev:
            ak = dev.create_ak("ecc", 0x81000100)
        return {"ak_name": ak.name.hex()}

    info = driver.create(uuid, provisioner=provisioner)
    assert seen["tcti"] == driver.tcti(uuid)
    ak_name = info.metadata["provisioner"]["ak_name"]
    on_disk = json.loads((driver.state_dir / uuid / "metadata.json")
                         .read_text())
    assert on_disk["provisioner"] == {"ak_name": ak_name}
    assert info.status is VTPMStatus.STOPPED  # stopped after provisioning

    restarted = make_driver(host_tpm)
    restarted.start(uuid, host_access=True)
    with TPMDevice(restarted.tcti(uuid)) as dev:
        assert dev.load_ak(0x81000100).name.hex() == ak_name
    restarted.stop(uuid)

    # A later maintenance run replaces the provisioner's metadata.
    assert restarted.provision(uuid, lambda ctx: {"again": True}) == {
        "again": True}
    assert restarted.status(uuid).metadata["provisioner"] == {"again": True}


def test_failing_provisioner_leaves_nothing(host_tpm, make_driver):
    driver = make_driver(host_tpm)
    uuid = new_uuid()

    def provisioner(ctx):
        raise RuntimeError("the host CA is away")

    with pytest.raises(RuntimeError, match="host CA"):
        driver.create(uuid, provisioner=provisioner)
    assert not (driver.state_dir / uuid).exists()
    assert driver.list() == []
    assert not [p for p in os.listdir("/proc") if p.isdigit()
                and str(driver.state_dir).encode() in _cmdline(int(p))]


def _cmdline(pid: int) -> bytes:
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return b""


def test_agent_restart_adopts_and_reaps(host_tpm, make_driver, caplog):
    caplog.set_level(logging.INFO, logger="trusted_pools.vtpm")
    driver = make_driver(host_tpm)
    running, stopped, orphan, crashed = (new_uuid() for _ in range(4))
    for uuid in (running, stopped, orphan, crashed):
        driver.create(uuid)
    pids = {u: driver.start(u).pid for u in (running, orphan, crashed)}

    # While the agent is down: the orphan's instance is destroyed behind
    # its back (metadata gone, swtpm still running); the other crashes.
    (driver.state_dir / orphan / "metadata.json").unlink()
    os.kill(pids[crashed], signal.SIGKILL)
    wait_gone(pids[crashed])
    del driver  # the agent process "restarts": a new driver, same dirs

    restarted = make_driver(host_tpm)
    report = restarted.last_recovery
    assert report.adopted == [running]
    assert report.failed == [crashed]
    assert report.reaped == [pids[orphan]]
    assert not is_swtpm(pids[orphan])

    info = restarted.status(running)
    assert info.status is VTPMStatus.RUNNING and info.pid == pids[running]
    assert restarted.status(stopped).status is VTPMStatus.STOPPED
    failed = restarted.status(crashed)
    assert failed.status is VTPMStatus.FAILED
    assert str(pids[crashed]) in failed.reason
    assert {i.instance_uuid for i in restarted.list()} == {
        running, stopped, crashed}
    # The adopted vTPM is fully managed: it stops gracefully.
    assert restarted.stop(running).status is VTPMStatus.STOPPED
    assert not is_swtpm(pids[running])
    assert "orphan swtpm pid %d" % pids[orphan] in caplog.text


def test_kill_9_is_reported_and_restarts_with_state(host_tpm, make_driver,
                                                    caplog):
    driver = make_driver(host_tpm)
    uuid = new_uuid()
    driver.create(uuid)
    driver.start(uuid, host_access=True)
    nv_write(driver.tcti(uuid), b"survives a crash")
    driver.stop(uuid)

    pid = driver.start(uuid).pid
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while driver.status(uuid).status is VTPMStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="trusted_pools.vtpm"):
        failed = driver.check()
    assert [i.instance_uuid for i in failed] == [uuid]
    assert "pid %d" % pid in failed[0].reason
    assert "exited without being stopped" in failed[0].reason
    assert uuid in caplog.text
    assert driver.status(uuid).status is VTPMStatus.FAILED  # it stays so

    info = driver.start(uuid, host_access=True)
    assert info.status is VTPMStatus.RUNNING and info.reason is None
    assert nv_read(driver.tcti(uuid)) == b"survives a crash"
    driver.stop(uuid)
    assert driver.status(uuid).status is VTPMStatus.STOPPED


@pytest.mark.slow
def test_fifty_instances_on_one_host(host_tpm, make_driver):
    """50 vTPMs created, all running at once, then stopped and destroyed.
    (No certificates: swtpm_localca would only add minutes here.)"""
    driver = make_driver(host_tpm, create_certificates=False)
    uuids = [new_uuid() for _ in range(50)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(driver.create, uuids))
    started = time.monotonic()
    infos = [driver.start(u) for u in uuids]
    start_seconds = time.monotonic() - started
    assert all(i.status is VTPMStatus.RUNNING for i in infos)
    pids = {i.pid for i in infos}
    assert len(pids) == 50 and all(is_swtpm(p) for p in pids)
    rss = [rss_kib(p) for p in pids]
    print("\n50 vTPMs: start %.1f ms each, VmRSS mean %d KiB, max %d KiB"
          % (start_seconds * 20, sum(rss) / len(rss), max(rss)))
    assert max(rss) < 64 * 1024
    assert len(driver.list()) == 50
    for u in uuids:
        assert driver.stop(u).status is VTPMStatus.STOPPED
    assert not any(is_swtpm(p) for p in pids)
    for u in uuids:
        driver.destroy(u)
    assert driver.list() == []


def test_shutdown_by_the_hypervisor_is_a_stop(host_tpm, make_driver):
    """QEMU quitting sends CMD_SHUTDOWN on the control channel and swtpm
    exits 0: that is a stop, not a failure."""
    driver = make_driver(host_tpm)
    uuid = new_uuid()
    driver.create(uuid)
    info = driver.start(uuid)
    with socket.socket(socket.AF_UNIX) as ctrl:  # what QEMU does
        ctrl.connect(info.socket_path)
        ctrl.sendall(struct.pack(">I", 3))
        assert ctrl.recv(4) == b"\0\0\0\0"
    wait_gone(info.pid)
    assert driver.status(uuid).status is VTPMStatus.STOPPED
    assert driver.check() == []
    assert driver.start(uuid).status is VTPMStatus.RUNNING


def test_driver_shares_the_agents_host_tpm_connection(host_tpm,
                                                      make_driver):
    """A swtpm host TPM serves one connection at a time: the driver runs
    its host TPM commands on the attester's connection, kept open."""
    from trusted_pools.agent.attester import Attester, default_open_device
    attester = Attester("compute-0", default_open_device(host_tpm.tcti))
    try:
        attester.identity()  # the attester's connection is open now
        driver = make_driver(host_tpm, host_runner=attester._with_device)
        uuid = new_uuid()
        driver.create(uuid)
        assert driver.start(uuid).status is VTPMStatus.RUNNING
        assert driver.stop(uuid).status is VTPMStatus.STOPPED
        attester.identity()
    finally:
        attester.close()
