"""``trusted-pools-vtpm``: argument handling, exit codes and output formats,
against an in-memory driver defined here (the real driver on real swtpm is
in tests/functional/vtpm/test_vtpm_cli.py)."""

from __future__ import annotations

import io
import json
import shlex
import xml.etree.ElementTree as ET

import pytest

from trusted_pools import exception
from trusted_pools.cmd import vtpm as cli
from trusted_pools.conf import CONF
from trusted_pools.vtpm.driver import VTPMDriver, VTPMInfo, VTPMStatus

UUID = "0b5c4f1e-8a2d-4c3b-9e7f-1a2b3c4d5e6f"
OTHER = "7d1e2f3a-4b5c-4d6e-8f90-a1b2c3d4e5f6"


class FakeDriver(VTPMDriver):
    """Instances in a dict; records the calls it got."""

    name = "fake"

    def __init__(self) -> None:
        self.vtpms: dict[str, VTPMInfo] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_start: exception.TrustedPoolsError | None = None

    def socket_path(self, instance_uuid: str) -> str:
        return "/run/tp/%s.sock" % instance_uuid

    def _get(self, uuid: str) -> VTPMInfo:
        if uuid not in self.vtpms:
            raise exception.VTPMNotFound(instance=uuid)
        return self.vtpms[uuid]

    def create(self, instance_uuid, *, provisioner=None, metadata=None):
        self.calls.append(("create", instance_uuid))
        if instance_uuid in self.vtpms:
            raise exception.VTPMExists(instance=instance_uuid)
        info = VTPMInfo(instance_uuid, VTPMStatus.STOPPED,
                        metadata={"provisioner": {"vtpm_ak_handle": 1}})
        self.vtpms[instance_uuid] = info
        return info

    def start(self, instance_uuid):
        self.calls.append(("start", instance_uuid))
        old = self._get(instance_uuid)
        if self.fail_start is not None:
            raise self.fail_start
        info = VTPMInfo(instance_uuid, VTPMStatus.RUNNING, pid=4242,
                        socket_path=self.socket_path(instance_uuid),
                        metadata=old.metadata)
        self.vtpms[instance_uuid] = info
        return info

    def stop(self, instance_uuid):
        self.calls.append(("stop", instance_uuid))
        old = self._get(instance_uuid)
        info = VTPMInfo(instance_uuid, VTPMStatus.STOPPED,
                        metadata=old.metadata)
        self.vtpms[instance_uuid] = info
        return info

    def destroy(self, instance_uuid):
        self.calls.append(("destroy", instance_uuid))
        self._get(instance_uuid)
        del self.vtpms[instance_uuid]

    def status(self, instance_uuid):
        self.calls.append(("status", instance_uuid))
        return self._get(instance_uuid)

    def list(self):
        return [self.vtpms[k] for k in sorted(self.vtpms)]


@pytest.fixture
def conf_file(tmp_path):
    path = tmp_path / "tp.conf"
    path.write_text("[vtpm]\ndriver = fake\n")
    yield str(path)
    CONF.reset()


@pytest.fixture
def run(conf_file):
    """run(*argv) -> (exit code, stdout, driver) on one FakeDriver."""
    driver = FakeDriver()

    def call(*argv: str):
        out = io.StringIO()
        code = cli.main(["--config-file", conf_file, *argv],
                        driver_factory=lambda conf: driver, out=out)
        return code, out.getvalue(), driver
    call.driver = driver
    return call


def test_lifecycle_in_json(run):
    code, out, driver = run("create", UUID, "--format", "json")
    assert code == 0
    created = json.loads(out)
    assert created["instance_uuid"] == UUID
    assert created["status"] == "stopped"
    assert created["metadata"]["provisioner"] == {"vtpm_ak_handle": 1}

    code, out, _ = run("start", UUID, "--format", "json")
    assert code == 0 and json.loads(out)["status"] == "running"
    assert json.loads(out)["pid"] == 4242

    code, out, _ = run("list", "--format", "json")
    assert code == 0
    assert [(v["instance_uuid"], v["status"]) for v in json.loads(out)] \
        == [(UUID, "running")]

    code, out, _ = run("stop", UUID, "--format", "json")
    assert code == 0 and json.loads(out)["status"] == "stopped"
    code, out, _ = run("destroy", UUID, "--format", "json")
    assert code == 0
    assert json.loads(out) == {"instance_uuid": UUID, "destroyed": True}
    assert driver.vtpms == {}
    code, out, _ = run("list", "--format", "json")
    assert json.loads(out) == []


def test_table_output(run):
    run("create", UUID)
    run("start", UUID)
    run("create", OTHER)
    code, out, _ = run("list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("+-") and lines[-1].startswith("+-")
    assert "Instance UUID" in lines[1] and "Status" in lines[1]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip()
            for line in lines[3:-1]}
    assert rows == {UUID: "running", OTHER: "stopped"}

    code, out, _ = run("show", UUID)
    assert code == 0
    fields = {line.split("|")[1].strip(): line.split("|")[2].strip()
              for line in out.splitlines()[3:-1]}
    assert fields["status"] == "running" and fields["pid"] == "4242"
    assert fields["socket_path"] == "/run/tp/%s.sock" % UUID
    assert json.loads(fields["metadata.provisioner"]) == {
        "vtpm_ak_handle": 1}

    code, out, _ = run("destroy", UUID)
    assert code == 0 and out.strip() == \
        "destroyed the vTPM of instance %s" % UUID


def test_uppercase_uuid_is_canonicalised(run):
    code, _, driver = run("create", UUID.upper())
    assert code == 0 and driver.calls == [("create", UUID)]


def test_attach_formats(run):
    run("create", UUID)
    run("start", UUID)
    code, out, _ = run("attach", UUID, "--format", "libvirt")
    assert code == 0
    tpm = ET.fromstring(out)
    assert tpm.tag == "tpm" and tpm.get("model") == "tpm-crb"
    source = tpm.find("./backend[@type='external']/source")
    assert source.get("type") == "unix" and source.get("mode") == "connect"
    assert source.get("path") == "/run/tp/%s.sock" % UUID

    code, out, _ = run("attach", UUID, "--format", "qemu",
                       "--model", "tpm-tis")
    assert code == 0
    assert shlex.split(out) == [
        "-chardev", "socket,id=chrtpm,path=/run/tp/%s.sock" % UUID,
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-device", "tpm-tis,tpmdev=tpm0"]

    code, out, _ = run("attach", UUID, "--format", "json")
    data = json.loads(out)
    assert data["socket_path"] == "/run/tp/%s.sock" % UUID
    assert ET.fromstring(data["libvirt_xml"]).tag == "tpm"
    assert data["qemu_args"][0] == "-chardev"


def test_attach_default_is_libvirt(run):
    run("create", UUID)
    code, out, _ = run("attach", UUID)
    assert code == 0 and ET.fromstring(out).tag == "tpm"


@pytest.mark.parametrize("bad", [
    "not-a-uuid", "../../etc/passwd", "<tpm/>", "",
    UUID + "0", UUID + "/../" + OTHER])
@pytest.mark.parametrize("command", ["create", "start", "stop", "destroy",
                                     "show", "attach"])
def test_not_a_uuid_is_usage_error_before_the_driver(run, capsys, bad,
                                                     command):
    code, out, driver = run(command, bad)
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert out == "" and driver.calls == []
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("trusted-pools-vtpm: error: ")
    assert "is not an instance UUID" in err


@pytest.mark.parametrize("command", ["start", "stop", "destroy", "show",
                                     "attach"])
def test_unknown_instance_is_one_line_exit_1(run, capsys, command):
    code, out, _ = run(command, UUID)
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED and out == ""
    assert err == ("trusted-pools-vtpm: error: No vTPM for instance %s on "
                   "this host\n" % UUID)


def test_create_twice(run, capsys):
    assert run("create", UUID)[0] == 0
    code, _, _ = run("create", UUID)
    assert code == cli.EXIT_FAILED
    assert "already exists" in capsys.readouterr().err


def test_driver_error_with_multiline_reason_stays_one_line(run, capsys):
    run("create", UUID)
    run.driver.fail_start = exception.VTPMStateUnusable(
        instance=UUID, reason="swtpm said:\nHMAC check failed\n  at x")
    code, out, _ = run("start", UUID)
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED and out == ""
    assert err.count("\n") == 1 and "HMAC check failed" in err


@pytest.mark.parametrize("argv", [
    [], ["list", "--format", "yaml"], ["attach", UUID, "--format", "table"],
    ["frobnicate", UUID], ["create"], ["start", UUID, "--model", "tpm-crb"]])
def test_argparse_usage_errors_exit_2(run, argv):
    with pytest.raises(SystemExit) as raised:
        run(*argv)
    assert raised.value.code == 2


def test_unknown_driver_is_named(conf_file, tmp_path, capsys):
    """The real driver loader: no entry point 'fake' in the namespace."""
    code = cli.main(["--config-file", conf_file, "list"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED
    assert err.count("\n") == 1 and "vTPM driver fake" in err


def test_missing_config_file_is_usage_error(capsys, tmp_path):
    try:
        code = cli.main(["--config-file", str(tmp_path / "nope.conf"),
                         "list"], driver_factory=lambda conf: FakeDriver())
    finally:
        CONF.reset()
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and err.count("\n") == 1
    assert "configuration error" in err


def test_bad_option_value_is_usage_error(capsys, tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text("[vtpm]\nswtpm_log_level = loud\n")
    try:
        code = cli.main(["--config-file", str(path), "list"],
                        driver_factory=lambda conf: conf.vtpm.swtpm_log_level
                        and FakeDriver())
    finally:
        CONF.reset()
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert err.count("\n") == 1 and "swtpm_log_level" in err


def _journal_conf(tmp_path, journal):
    path = tmp_path / "journal.conf"
    path.write_text("[vtpm]\ndriver = fake\nmigration_journal_dir = %s\n"
                    % journal)
    return str(path)


def test_start_refuses_a_copy_the_epoch_rules_refuse(tmp_path):
    """The hypervisor hook's start obeys the agent's epoch rules: a copy
    newer than the epoch this host saw committed (an aborted migration's
    leftover) and one older than it (a restored backup) do not run; the
    committed one does. The command never creates the agent's journal
    directory."""
    import uuid as uuid_lib

    from trusted_pools.agent.migration import MigrationAgent
    from trusted_pools.protocol import vtpm_migration as proto
    journal = tmp_path / "journal"
    conf = _journal_conf(tmp_path, journal)
    driver = FakeDriver()

    def start():
        err = io.StringIO()
        code = cli.main(["--config-file", conf, "start", UUID],
                        driver_factory=lambda c: driver, out=io.StringIO())
        CONF.reset()
        return code, err

    def copy(epoch):
        driver.vtpms[UUID] = VTPMInfo(
            UUID, VTPMStatus.STOPPED,
            metadata={proto.EPOCH_METADATA_KEY: epoch})
    try:
        copy(1)  # imported by a migration that never committed here
        assert start()[0] == cli.EXIT_FAILED
        assert ("start", UUID) not in driver.calls
        assert not journal.exists()
        # Committed here: it runs.
        MigrationAgent("h", None, None, journal)._save_ended({
            "id": str(uuid_lib.uuid4()), "role": "destination",
            "instance": UUID, "epoch": 1, "step": "committed",
            "kind": "cold"})
        assert start()[0] == cli.EXIT_OK
        assert ("start", UUID) in driver.calls
        # A backup of the copy before the move: stale.
        driver.calls.clear()
        copy(0)
        assert start()[0] == cli.EXIT_FAILED
        assert ("start", UUID) not in driver.calls
    finally:
        CONF.reset()
