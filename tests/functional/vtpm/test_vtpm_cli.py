"""``trusted-pools-vtpm`` as installed (the console script, in a
subprocess) on the swtpm driver with a real swtpm standing in for the host
TPM: create -> start -> list -> attach -> stop -> destroy, and the errors
a hook sees."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid as uuid_lib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from trusted_pools.protocol import vtpm_binding
from trusted_pools.tpm import structures
from trusted_pools.tpm.device import TPMDevice

HOST = "compute-cli"
SCRIPT = Path(sys.executable).parent / "trusted-pools-vtpm"


@pytest.fixture
def cli(host_tpm, swtpm_ca, tmp_path):
    """run(*argv) -> CompletedProcess of the console script, on a config
    naming the host TPM; the host is enrolled (it has an AK)."""
    # Fail, never skip: the entry point is part of what is tested.
    assert SCRIPT.exists(), "%s missing: pip install -e . in this venv" % (
        SCRIPT,)
    with TPMDevice(host_tpm.tcti) as dev:
        ak = dev.create_ak("ecc")
    run_dir = Path(tempfile.mkdtemp(prefix="vc", dir="/tmp"))
    conf = tmp_path / "trusted-pools.conf"
    conf.write_text(
        "[agent]\nhost = %s\n"
        "[tpm]\ntcti = %s\n"
        "[vtpm]\nstate_dir = %s\nrun_dir = %s\nswtpm_setup_config = %s\n"
        % (HOST, host_tpm.tcti, tmp_path / "state", run_dir,
           swtpm_ca.setup_conf))

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(SCRIPT), "--config-file", str(conf), *argv],
            capture_output=True, text=True, timeout=120,
            env=dict(os.environ, PYTHONWARNINGS="ignore"))

    run.ak_public = ak.public
    run.run_dir = run_dir
    yield run
    # Stop whatever a failed test left running.
    listed = run("list", "--format", "json")
    if listed.returncode == 0:
        for info in json.loads(listed.stdout):
            run("stop", info["instance_uuid"])
    shutil.rmtree(run_dir, ignore_errors=True)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stdout


def _is_swtpm(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        return b"swtpm" in Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return False


def test_lifecycle_through_the_console_script(cli):
    uuid = str(uuid_lib.uuid4())
    created = json.loads(_ok(cli("create", uuid, "--format", "json")))
    assert created["status"] == "stopped"
    # The new vTPM's AK chains to this host's enrolled AK, and to no
    # other host: a vTPM cannot claim a host it does not run on.
    chain = created["metadata"]["provisioner"]["vtpm_chain"]
    host_ak = structures.parse_public(cli.ak_public)
    bound = vtpm_binding.verify_chain(HOST, host_ak, chain, uuid)
    assert bound.host == HOST and bound.instance == uuid
    with pytest.raises(vtpm_binding.VTPMBindingRefused):
        vtpm_binding.verify_chain("compute-other", host_ak, chain, uuid)

    started = json.loads(_ok(cli("start", uuid, "--format", "json")))
    assert started["status"] == "running"
    pid = started["pid"]
    # The swtpm outlives the command that started it.
    assert _is_swtpm(pid)

    listed = json.loads(_ok(cli("list", "--format", "json")))
    assert [(v["instance_uuid"], v["status"], v["pid"]) for v in listed] \
        == [(uuid, "running", pid)]
    table = _ok(cli("list"))
    assert uuid in table and "running" in table

    tpm = ET.fromstring(_ok(cli("attach", uuid, "--format", "libvirt")))
    assert tpm.tag == "tpm" and tpm.get("model") == "tpm-crb"
    backend = tpm.find("backend")
    assert backend.get("type") == "external"
    source = backend.find("source")
    assert source.get("type") == "unix" and source.get("mode") == "connect"
    path = source.get("path")
    assert path == str(cli.run_dir / ("%s.sock" % uuid))
    with socket.socket(socket.AF_UNIX) as ctrl:  # what libvirt connects to
        ctrl.connect(path)
    qemu = _ok(cli("attach", uuid, "--format", "qemu")).split()
    assert "socket,id=chrtpm,path=%s" % path in qemu

    stopped = json.loads(_ok(cli("stop", uuid, "--format", "json")))
    assert stopped["status"] == "stopped" and not _is_swtpm(pid)
    assert not os.path.exists(path)

    assert _ok(cli("destroy", uuid)).strip() == \
        "destroyed the vTPM of instance %s" % uuid
    assert json.loads(_ok(cli("list", "--format", "json"))) == []


def test_errors_are_one_line(cli):
    uuid = str(uuid_lib.uuid4())
    unknown = cli("show", uuid)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr == ("trusted-pools-vtpm: error: No vTPM for "
                              "instance %s on this host\n" % uuid)
    bad = cli("start", "../" + uuid)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "is not an instance UUID" in bad.stderr
    usage = cli("attach", uuid, "--format", "vmware")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
