"""The live-migration hooks: what each hypervisor step calls, the
destination's QEMU arguments, and the base driver's refusals."""

from __future__ import annotations

import inspect
import os
import xml.etree.ElementTree as ET
from typing import Any, Mapping

import pytest

from trusted_pools import exception
from trusted_pools.vtpm import hooks
from trusted_pools.vtpm.driver import (MIGRATION_INCOMING, VTPMDriver,
                                       VTPMInfo, VTPMStatus)

UUID = "0b6c1f0e-5f5b-4a47-9a1e-3f1d2c3b4a59"
LIVE_METHODS = ("live_migration_key", "prepare_incoming", "check_incoming",
                "finish_incoming", "finish_outgoing", "abort_incoming",
                "abort_outgoing")


class RecordingDriver(VTPMDriver):
    """Records the live-migration calls; the rest is not used here."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def _info(self, status=VTPMStatus.RUNNING, migration=None) -> VTPMInfo:
        return VTPMInfo(UUID, status, migration=migration)

    def live_migration_key(self, instance_uuid: str) -> bytes:
        self.calls.append(("live_migration_key", instance_uuid))
        return b"k" * 32

    def prepare_incoming(self, instance_uuid: str, *, migration_key: bytes,
                         metadata: Mapping[str, Any]) -> VTPMInfo:
        self.calls.append(("prepare_incoming", instance_uuid, migration_key,
                           dict(metadata)))
        return self._info(VTPMStatus.MIGRATING, MIGRATION_INCOMING)

    def check_incoming(self, instance_uuid: str) -> VTPMInfo:
        self.calls.append(("check_incoming", instance_uuid))
        return self._info(VTPMStatus.MIGRATING, MIGRATION_INCOMING)

    def finish_incoming(self, instance_uuid: str, *,
                        checked: bool = False) -> VTPMInfo:
        self.calls.append(("finish_incoming", instance_uuid))
        return self._info()

    def finish_outgoing(self, instance_uuid: str) -> None:
        self.calls.append(("finish_outgoing", instance_uuid))

    def abort_incoming(self, instance_uuid: str) -> None:
        self.calls.append(("abort_incoming", instance_uuid))

    def abort_outgoing(self, instance_uuid: str) -> VTPMInfo:
        self.calls.append(("abort_outgoing", instance_uuid))
        return self._info()

    def socket_path(self, instance_uuid: str) -> str:
        return "/run/tp/%s.sock" % instance_uuid

    create = start = stop = destroy = status = list = None  # type: ignore


class BareDriver(RecordingDriver):
    """Only the abstract methods: the base class's live steps."""

    for _name in LIVE_METHODS:
        locals()[_name] = getattr(VTPMDriver, _name)
    del _name


def test_each_step_calls_its_driver_method():
    driver = RecordingDriver()
    h = hooks.LiveMigrationHooks(driver)
    assert h.source_key(UUID) == b"k" * 32
    incoming = h.pre_live_migration(UUID, migration_key=b"m" * 32,
                                    metadata={"user": {}},
                                    incoming_uri="tcp:127.0.0.1:4444")
    assert incoming.info.status is VTPMStatus.MIGRATING
    assert h.post_live_migration_at_destination(UUID).status is \
        VTPMStatus.RUNNING
    h.post_live_migration(UUID)
    h.rollback_live_migration_at_destination(UUID)
    assert h.rollback_live_migration_at_source(UUID).status is \
        VTPMStatus.RUNNING
    assert [c[0] for c in driver.calls] == [
        "live_migration_key", "prepare_incoming", "finish_incoming",
        "finish_outgoing", "abort_incoming", "abort_outgoing"]
    assert driver.calls[1][2:] == (b"m" * 32, {"user": {}})


def test_destination_qemu_arguments_wait_for_the_stream():
    h = hooks.LiveMigrationHooks(RecordingDriver())
    incoming = h.pre_live_migration(UUID.upper(), migration_key=b"m" * 32,
                                    metadata={}, model="tpm-tis")
    sock = "/run/tp/%s.sock" % UUID
    assert incoming.qemu_args() == [
        "-chardev", "socket,id=chrtpm,path=%s" % sock,
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-device", "tpm-tis,tpmdev=tpm0", "-incoming", "defer"]
    tpm = ET.fromstring(incoming.libvirt_xml())
    assert tpm.find("backend/source").get("path") == sock


@pytest.mark.parametrize("uri", ["defer", "tcp:127.0.0.1:4444",
                                 "tcp:[::1]:4444", "tcp:dest.example:1",
                                 "unix:/run/tp/mig.sock"])
def test_incoming_uris_accepted(uri):
    assert hooks.check_incoming_uri(uri) == uri


@pytest.mark.parametrize("uri", [
    "exec:cat /tmp/x",              # runs a shell on the destination
    "tcp:127.0.0.1:0", "tcp:127.0.0.1:70000", "tcp:127.0.0.1",
    "unix:relative.sock", "unix:/a,b", "defer,x", "", None, 4444,
    "rdma:1.2.3.4:5", "tcp:1.2.3.4:5 -S"])
def test_incoming_uris_refused(uri):
    with pytest.raises(exception.InvalidParameterValue):
        hooks.check_incoming_uri(uri)


def test_a_refused_uri_prepares_nothing():
    driver = RecordingDriver()
    with pytest.raises(exception.InvalidParameterValue):
        hooks.LiveMigrationHooks(driver).pre_live_migration(
            UUID, migration_key=b"m" * 32, metadata={},
            incoming_uri="exec:true")
    assert driver.calls == []


def test_base_driver_refuses_every_live_step_with_its_name():
    driver = BareDriver()
    for name in LIVE_METHODS:
        method = getattr(driver, name)
        kwargs = {"migration_key": os.urandom(32), "metadata": {}} \
            if name == "prepare_incoming" else {}
        with pytest.raises(exception.VTPMOperationNotSupported,
                           match=name):
            method(UUID, **kwargs)


def test_live_step_signatures_are_the_agreed_ones():
    """The migration protocol (conductor/agent) calls these by name."""
    sig = {n: str(inspect.signature(getattr(VTPMDriver, n)))
           for n in LIVE_METHODS}
    assert sig == {
        "live_migration_key": "(self, instance_uuid: 'str') -> 'bytes'",
        "prepare_incoming": "(self, instance_uuid: 'str', *, migration_key:"
                            " 'bytes', metadata: 'Mapping[str, Any]') -> "
                            "'VTPMInfo'",
        "check_incoming": "(self, instance_uuid: 'str') -> 'VTPMInfo'",
        "finish_incoming": "(self, instance_uuid: 'str', *, checked: "
                           "'bool' = False) -> 'VTPMInfo'",
        "finish_outgoing": "(self, instance_uuid: 'str') -> 'None'",
        "abort_incoming": "(self, instance_uuid: 'str') -> 'None'",
        "abort_outgoing": "(self, instance_uuid: 'str') -> 'VTPMInfo'",
    }


def test_operator_view_names_the_direction():
    from trusted_pools.cmd import vtpm as cli
    arriving = VTPMInfo(UUID, VTPMStatus.MIGRATING,
                        migration=MIGRATION_INCOMING)
    assert cli._as_dict(arriving)["migration"] == "incoming"
    assert cli._status_word(arriving) == "migrating (incoming)"
    running = VTPMInfo(UUID, VTPMStatus.RUNNING)
    assert cli._as_dict(running)["migration"] is None
    assert cli._status_word(running) == "running"
