"""The swtpm driver's live-migration steps on real swtpm, two hosts.

Two drivers with their own state directories on two host TPMs (swtpms
standing in for two hosts' hardware TPMs). The hypervisor's part is played
here by ``swtpm_ioctl`` on the vTPM's control channel with the very commands
QEMU uses when it migrates a guest (CMD_GET_STATEBLOB on the source,
CMD_SET_STATEBLOB and CMD_INIT on the destination); the real QEMU migration
is tests/functional/vtpm/test_live_migration.py. These tests cover the
driver's records: MIGRATING both ways, idempotent steps, an agent restart
in the middle, a crashed incoming swtpm, a wrong key, and the steps a
compromised caller could replay to clone or destroy a vTPM.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import time
import uuid as uuid_lib
from pathlib import Path

import pytest

from tests.functional.vtpm.conftest import nv_read, nv_write
from trusted_pools import exception
from trusted_pools.vtpm.driver import (MIGRATION_INCOMING, MIGRATION_OUTGOING,
                                       VTPMStatus)

pytestmark = [pytest.mark.swtpm]

MARKER = b"live-migration marker 0123456789"
# swtpm's blob header flags (its swtpm_nvfile.h).
BLOB_ENCRYPTED = 0x1
BLOB_MIGRATION_ENCRYPTED = 0x2
BLOB_MIGRATION_256BIT_KEY = 0x10


def ioctl(sock: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swtpm_ioctl", "--unix", sock, *args],
                          capture_output=True, text=True, timeout=30)


def hypervisor_moves_state(source_sock: str, dest_sock: str,
                           work: Path) -> tuple[bool, dict[str, bytes]]:
    """What QEMU does: the source vTPM's blobs out, into the destination
    vTPM, then TPM init there. (all loads succeeded, the blobs)."""
    blobs = {}
    for kind in ("permanent", "volatile"):
        path = work / kind
        done = ioctl(source_sock, "--save", kind, str(path))
        assert done.returncode == 0, done.stderr
        blobs[kind] = path.read_bytes()
    loaded = all(ioctl(dest_sock, "--load", kind, str(work / kind))
                 .returncode == 0 for kind in ("permanent", "volatile"))
    if loaded:
        assert ioctl(dest_sock, "-i").returncode == 0
    return loaded, blobs


def attach(sock: str) -> socket.socket:
    """Hold the vTPM's control channel the way a running QEMU does (swtpm
    serves one client at a time)."""
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.settimeout(10)
    held.connect(sock)
    # What QEMU sends first: CMD_GET_CAPABILITY (answered once swtpm has
    # accepted the connection).
    held.sendall(struct.pack(">I", 1))
    assert len(held.recv(8)) == 8
    return held


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


@pytest.fixture
def two_hosts(swtpm_pool, make_driver):
    host_a, host_b = swtpm_pool(2)
    return (make_driver(host_a, "a", create_certificates=False),
            make_driver(host_b, "b", create_certificates=False),
            host_a, host_b)


def running_with_marker(driver) -> str:
    """A vTPM with an NV marker, running for a hypervisor."""
    uuid = str(uuid_lib.uuid4())
    driver.create(uuid, metadata={"flavor": "m1.vtpm"})
    driver.start(uuid, host_access=True)
    nv_write(driver.tcti(uuid), MARKER)
    driver.stop(uuid)
    driver.start(uuid)
    return uuid


def files_under(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.rglob("*") if p.is_file())


def test_live_migration_moves_the_state_and_erases_the_source(
        two_hosts, tmp_path):
    source, dest, _, _ = two_hosts
    uuid = running_with_marker(source)
    source_pid = source.status(uuid).pid
    # The running swtpm got this run's migration key on its command line
    # (as a pipe: the key is in no file, the command line names an fd).
    assert b"--migration-key" in Path("/proc/%d/cmdline"
                                      % source_pid).read_bytes()

    key = source.live_migration_key(uuid)
    assert len(key) == 32
    assert key not in files_under(source.state_dir)  # sealed at rest
    assert source.live_migration_key(uuid) == key  # asked again
    info = source.status(uuid)
    assert info.status is VTPMStatus.MIGRATING
    assert info.migration == MIGRATION_OUTGOING and info.pid == source_pid
    with pytest.raises(exception.VTPMInvalidState):
        source.start(uuid)

    incoming = dest.prepare_incoming(uuid, migration_key=key,
                                     metadata=info.metadata)
    assert incoming.status is VTPMStatus.MIGRATING
    assert incoming.migration == MIGRATION_INCOMING
    assert incoming.metadata["user"] == {"flavor": "m1.vtpm"}
    # Asked again (a lost answer): the same vTPM; another key: refused.
    assert dest.prepare_incoming(uuid, migration_key=key,
                                 metadata=info.metadata).pid == incoming.pid
    with pytest.raises(exception.VTPMExists):
        dest.prepare_incoming(uuid, migration_key=os.urandom(32),
                              metadata=info.metadata)
    with pytest.raises(exception.VTPMInvalidState):
        dest.start(uuid)
    assert key not in files_under(dest.state_dir)

    loaded, blobs = hypervisor_moves_state(source.socket_path(uuid),
                                           dest.socket_path(uuid), tmp_path)
    assert loaded
    for kind, blob in blobs.items():
        flags = struct.unpack(">H", blob[4:6])[0]
        # What crosses in the hypervisor's stream: encrypted with the
        # 256-bit migration key, nothing of the state key's.
        assert flags & BLOB_MIGRATION_ENCRYPTED, (kind, hex(flags))
        assert flags & BLOB_MIGRATION_256BIT_KEY, (kind, hex(flags))
        assert not flags & BLOB_ENCRYPTED, (kind, hex(flags))
        assert MARKER not in blob

    # swtpm_ioctl let go of the channel, as a destination QEMU that failed
    # and exited would: once swtpm has seen it go, not finished.
    pid = dest.status(uuid).pid
    deadline = time.monotonic() + 10
    while dest._hypervisor_attached(uuid, pid):
        assert time.monotonic() < deadline, "swtpm keeps the connection"
        time.sleep(0.01)
    with pytest.raises(exception.VTPMInvalidState, match="not attached"):
        dest.finish_incoming(uuid)
    # The fallback check without /proc (a generous timeout here: a loaded
    # test machine must not make an idle swtpm look held).
    assert not dest._hypervisor_attached_probe(uuid, timeout=10)
    qemu_dest = attach(dest.socket_path(uuid))
    assert dest._hypervisor_attached_probe(uuid)
    done = dest.finish_incoming(uuid)
    assert done.status is VTPMStatus.RUNNING and done.migration is None
    assert "received_at" in done.metadata["live_migration"]
    assert done.metadata["binding_key"] != info.metadata["binding_key"]
    assert dest.finish_incoming(uuid).pid == done.pid  # asked again

    source.finish_outgoing(uuid)
    wait_gone(source_pid)  # the source QEMU would never get it back
    assert not (source.state_dir / uuid).exists()
    with pytest.raises(exception.VTPMNotFound):
        source.status(uuid)
    source.finish_outgoing(uuid)  # asked again: nothing left to do

    # The destination keeps the state under its own host's key: it
    # survives a stop and start there, marker included.
    qemu_dest.close()
    dest.stop(uuid)
    dest.start(uuid, host_access=True)
    assert nv_read(dest.tcti(uuid)) == MARKER
    # ... and its next run has a migration key of its own.
    assert dest.live_migration_key(uuid) != key
    dest.abort_outgoing(uuid)


def test_wrong_key_fails_and_the_source_carries_on(two_hosts, tmp_path):
    source, dest, _, _ = two_hosts
    uuid = running_with_marker(source)
    pid = source.status(uuid).pid
    source.live_migration_key(uuid)
    dest.prepare_incoming(uuid, migration_key=os.urandom(32),
                          metadata=source.status(uuid).metadata)

    loaded, _ = hypervisor_moves_state(source.socket_path(uuid),
                                       dest.socket_path(uuid), tmp_path)
    assert not loaded  # swtpm: TPM_DECRYPT_ERROR on CMD_SET_STATEBLOB
    # A caller that would finish anyway gets no fresh TPM in its place.
    with pytest.raises(exception.VTPMStateUnusable, match="missing"):
        dest.finish_incoming(uuid)
    dest.abort_incoming(uuid)
    assert not (dest.state_dir / uuid).exists()
    dest.abort_incoming(uuid)  # asked again

    info = source.abort_outgoing(uuid)
    assert info.status is VTPMStatus.RUNNING and info.pid == pid
    assert source.abort_outgoing(uuid).pid == pid  # asked again
    # A finish replayed after the abort does not erase the only copy.
    with pytest.raises(exception.VTPMInvalidState):
        source.finish_outgoing(uuid)
    assert source.status(uuid).status is VTPMStatus.RUNNING
    # Nor does an abort_incoming aimed at a vTPM that is not arriving.
    with pytest.raises(exception.VTPMInvalidState):
        source.abort_incoming(uuid)
    source.stop(uuid)
    source.start(uuid, host_access=True)
    assert nv_read(source.tcti(uuid)) == MARKER


def test_source_let_go_by_its_hypervisor_does_not_start_again(two_hosts):
    """After the source QEMU quits (it shuts the swtpm down: exit 0), the
    source copy stays MIGRATING: no second copy starts before the caller
    decided; an abort makes it startable again."""
    source, _, _, _ = two_hosts
    uuid = running_with_marker(source)
    pid = source.status(uuid).pid
    source.live_migration_key(uuid)
    assert ioctl(source.socket_path(uuid), "-s").returncode == 0
    wait_gone(pid)
    info = source.status(uuid)
    assert info.status is VTPMStatus.MIGRATING and info.pid is None
    with pytest.raises(exception.VTPMInvalidState):
        source.start(uuid)
    with pytest.raises(exception.VTPMInvalidState):
        source.live_migration_key(uuid)  # nothing runs to migrate
    assert source.abort_outgoing(uuid).status is VTPMStatus.STOPPED
    source.start(uuid, host_access=True)
    assert nv_read(source.tcti(uuid)) == MARKER


def test_agent_restart_in_the_middle_keeps_one_copy_each_side(
        two_hosts, make_driver, tmp_path):
    source, dest, host_a, host_b = two_hosts
    uuid = running_with_marker(source)
    key = source.live_migration_key(uuid)
    metadata = source.status(uuid).metadata
    dest.prepare_incoming(uuid, migration_key=key, metadata=metadata)
    pids = (source.status(uuid).pid, dest.status(uuid).pid)

    # Both agents restart: new drivers on the same directories.
    source = make_driver(host_a, "a", create_certificates=False)
    dest = make_driver(host_b, "b", create_certificates=False)
    assert source.last_recovery.adopted == [uuid]
    assert dest.last_recovery.adopted == [uuid]
    assert not source.last_recovery.reaped and not dest.last_recovery.reaped
    for driver, pid, way in ((source, pids[0], MIGRATION_OUTGOING),
                             (dest, pids[1], MIGRATION_INCOMING)):
        info = driver.status(uuid)
        assert info.status is VTPMStatus.MIGRATING
        assert (info.pid, info.migration) == (pid, way)
    # The protocol resumes by asking again: same key, same vTPM.
    assert source.live_migration_key(uuid) == key
    assert dest.prepare_incoming(uuid, migration_key=key,
                                 metadata=metadata).pid == pids[1]

    loaded, _ = hypervisor_moves_state(source.socket_path(uuid),
                                       dest.socket_path(uuid), tmp_path)
    assert loaded
    with attach(dest.socket_path(uuid)):
        assert dest.finish_incoming(uuid).status is VTPMStatus.RUNNING
    source.finish_outgoing(uuid)
    running = [p for p in os.listdir("/proc") if p.isdigit()
               and is_swtpm(int(p)) and uuid.encode()
               in Path("/proc/%s/cmdline" % p).read_bytes()]
    assert running == [str(pids[1])]


def test_crashed_incoming_swtpm_is_reported(two_hosts):
    source, dest, _, _ = two_hosts
    uuid = running_with_marker(source)
    key = source.live_migration_key(uuid)
    pid = dest.prepare_incoming(uuid, migration_key=key,
                                metadata={"user": {}}).pid
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    failed = dest.check()
    assert [i.instance_uuid for i in failed] == [uuid]
    assert failed[0].migration == MIGRATION_INCOMING
    assert "incoming swtpm (pid %d) exited" % pid in failed[0].reason
    with pytest.raises(exception.VTPMInvalidState):
        dest.start(uuid)
    with pytest.raises(exception.VTPMInvalidState, match="failed"):
        dest.finish_incoming(uuid)
    with pytest.raises(exception.VTPMInvalidState):
        dest.prepare_incoming(uuid, migration_key=key, metadata={})
    dest.abort_incoming(uuid)
    assert dest.list() == []
    # The source was never touched.
    assert source.abort_outgoing(uuid).status is VTPMStatus.RUNNING


def test_refusals(two_hosts):
    source, dest, _, _ = two_hosts
    stopped = str(uuid_lib.uuid4())
    source.create(stopped)
    with pytest.raises(exception.VTPMInvalidState):
        source.live_migration_key(stopped)
    with pytest.raises(exception.VTPMInvalidState):
        source.finish_outgoing(stopped)  # not leaving: never erased
    assert source.status(stopped).status is VTPMStatus.STOPPED
    with pytest.raises(exception.VTPMExists):  # never overwrites a vTPM
        source.prepare_incoming(stopped, migration_key=os.urandom(32),
                                metadata={})
    for bad in (b"short", "x" * 32, None):
        with pytest.raises(exception.InvalidParameterValue):
            dest.prepare_incoming(stopped, migration_key=bad, metadata={})
    with pytest.raises(exception.InvalidParameterValue):
        dest.prepare_incoming("not-a-uuid", migration_key=os.urandom(32),
                              metadata={})
    for metadata in ({"x": object()}, {"x": "y" * 70000}, ["not", "a map"]):
        with pytest.raises(exception.InvalidParameterValue):
            dest.prepare_incoming(stopped, migration_key=os.urandom(32),
                                  metadata=metadata)
    assert dest.list() == []
    with pytest.raises(exception.VTPMNotFound):
        source.abort_outgoing(str(uuid_lib.uuid4()))


def test_vtpm_started_by_an_older_version_is_not_live_migrated(two_hosts):
    """A swtpm started before this version has no migration key: QEMU
    would carry its state in the clear, so no key is handed out."""
    source, _, _, _ = two_hosts
    uuid = str(uuid_lib.uuid4())
    source.create(uuid)
    # What the previous driver did at start: no --migration-key.
    source._launch(uuid, source._unwrap(uuid, source._wrapped_key(uuid)),
                   False)
    assert source.status(uuid).status is VTPMStatus.RUNNING
    with pytest.raises(exception.VTPMOperationNotSupported,
                       match="without a migration key"):
        source.live_migration_key(uuid)
    assert source.status(uuid).status is VTPMStatus.RUNNING  # untouched
    source.stop(uuid)
    source.start(uuid)  # once restarted it has one
    assert len(source.live_migration_key(uuid)) == 32
    source.abort_outgoing(uuid)


def test_prepare_that_crashed_before_its_metadata_starts_over(two_hosts):
    source, dest, _, _ = two_hosts
    uuid = running_with_marker(source)
    key = source.live_migration_key(uuid)
    # The agent died right after making the directory and its marker.
    (dest.state_dir / uuid).mkdir(mode=0o700)
    (dest.state_dir / uuid / "incoming.json").write_text("{}")
    assert dest.list() == []  # no metadata: not a vTPM yet
    info = dest.prepare_incoming(uuid, migration_key=key, metadata={})
    assert info.status is VTPMStatus.MIGRATING and is_swtpm(info.pid)
    dest.abort_incoming(uuid)
    source.abort_outgoing(uuid)
