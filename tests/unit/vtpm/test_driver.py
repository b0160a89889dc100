"""The vTPM driver interface: hypervisor hooks, loading, configuration."""

from __future__ import annotations

import os
import shlex
import tempfile
import xml.etree.ElementTree as ET

import pytest
from oslo_config import cfg

from trusted_pools import exception
from trusted_pools.conf import vtpm as vtpm_conf
from trusted_pools.vtpm import driver as vtpm_driver
from trusted_pools.vtpm.driver import AttachInfo

UUID = "0b6c1f0e-5f5b-4a47-9a1e-3f1d2c3b4a59"
SOCK = "/run/trusted-pools/vtpm/%s.sock" % UUID


def test_libvirt_element_is_an_external_backend():
    tpm = ET.fromstring(AttachInfo(UUID, SOCK).libvirt_xml())
    assert tpm.tag == "tpm" and tpm.attrib == {"model": "tpm-crb"}
    backend, = tpm
    assert backend.tag == "backend" and backend.attrib == {
        "type": "external"}
    source, = backend
    assert source.tag == "source"
    assert source.attrib == {"type": "unix", "mode": "connect",
                             "path": SOCK}


def test_libvirt_element_escapes_the_path():
    path = "/run/a'b\"<c>&d.sock"
    tpm = ET.fromstring(AttachInfo(UUID, path, model="tpm-tis")
                        .libvirt_xml())
    assert tpm.get("model") == "tpm-tis"
    assert tpm.find("backend/source").get("path") == path


def test_qemu_arguments():
    args = AttachInfo(UUID, SOCK).qemu_args()
    assert args == [
        "-chardev", "socket,id=chrtpm,path=%s" % SOCK,
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-device", "tpm-crb,tpmdev=tpm0"]
    assert shlex.split(shlex.join(args)) == args


@pytest.mark.parametrize("kw", [
    dict(socket_path="relative.sock"),
    dict(socket_path="/run/a,b.sock"),    # QEMU would split the option
    dict(socket_path=SOCK, model="tpm-spapr-bogus"),
    dict(socket_path=SOCK, chardev_id="a,b"),
    dict(socket_path=SOCK, tpmdev_id=""),
])
def test_attach_info_refuses_what_would_break_the_command_line(kw):
    with pytest.raises(exception.InvalidParameterValue):
        AttachInfo(UUID, **kw)


def test_canonical_uuid():
    assert vtpm_driver.canonical_uuid(UUID.upper()) == UUID
    for bad in ("", "../etc", "not-a-uuid", None):
        with pytest.raises(exception.InvalidParameterValue):
            vtpm_driver.canonical_uuid(bad)


def test_unknown_driver_is_named():
    with pytest.raises(exception.VTPMDriverLoadFailed) as info:
        vtpm_driver.load_driver("no-such-driver")
    assert info.value.kwargs["driver"] == "no-such-driver"
    assert "no-such-driver" in str(info.value)


def test_driver_refusing_its_options_is_named(tmp_path):
    with pytest.raises(exception.VTPMDriverLoadFailed, match="swtpm") as e:
        vtpm_driver.load_driver("swtpm", state_dir=str(tmp_path),
                                host_tcti="swtpm:port=1",
                                pcr_banks=["md5"])
    assert e.value.kwargs["driver"] == "swtpm"


def test_driver_from_configuration(tmp_path):
    run_dir = tempfile.mkdtemp(prefix="vt", dir="/tmp")
    conf = cfg.ConfigOpts()
    vtpm_conf.register_opts(conf)
    from trusted_pools.conf import tpm as tpm_conf
    tpm_conf.register_opts(conf)
    conf([], default_config_files=[])
    conf.set_override("state_dir", str(tmp_path / "state"), group="vtpm")
    conf.set_override("run_dir", run_dir, group="vtpm")
    conf.set_override("binding_key_pcrs", "sha256:7,0", group="vtpm")
    conf.set_override("pcr_banks", ["sha1", "sha256"], group="vtpm")
    driver = vtpm_driver.load_driver(conf.vtpm.driver, conf=conf)
    assert driver.name == "swtpm"
    assert driver.binding_pcrs == {0x000B: [0, 7]}
    assert driver.pcr_banks == ("sha1", "sha256")
    assert driver.host_tcti == "device:/dev/tpmrm0"
    assert driver.binding_key_handle == 0x81008002
    conf.set_override("binding_key_pcrs", "md5:1", group="vtpm")
    with pytest.raises(exception.VTPMDriverLoadFailed, match="md5"):
        vtpm_driver.load_driver("swtpm", conf=conf)
    conf.set_override("binding_key_pcrs", "", group="vtpm")
    conf.set_override("run_dir", str(tmp_path / ("x" * 60)), group="vtpm")
    with pytest.raises(exception.VTPMDriverLoadFailed, match="too long"):
        vtpm_driver.load_driver("swtpm", conf=conf)
    os.rmdir(run_dir)


@pytest.mark.parametrize("text,expected", [
    ("", None),
    ("sha256:0,2,4,7", {0x000B: [0, 2, 4, 7]}),
    ("sha256:7+sha1:0", {0x000B: [7], 0x0004: [0]}),
])
def test_parse_pcr_selection(text, expected):
    assert vtpm_conf.parse_pcr_selection(text) == expected


@pytest.mark.parametrize("text", ["sha256", "sha256:24", "sha256:a",
                                  "foo:1"])
def test_parse_pcr_selection_refuses(text):
    with pytest.raises(exception.ConfigInvalid):
        vtpm_conf.parse_pcr_selection(text)


def test_options_are_listed_for_the_sample_generator():
    from trusted_pools.conf import opts
    groups = {group.name: names for group, names in opts.list_opts()}
    assert "binding_key_pcrs" in {o.name for o in groups["vtpm"]}
