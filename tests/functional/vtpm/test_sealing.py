"""State at rest sealed to the host's TPM, attacked the way a compromised
compute host would: its files are the attacker's (copied elsewhere,
edited, replaced), its TPM keys are not. Every refusal is a typed error
and no fresh TPM ever replaces the state."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid as uuid_lib

import pytest

from tests.functional.vtpm.conftest import nv_read, nv_write
from trusted_pools import exception
from trusted_pools.tpm import sealing
from trusted_pools.tpm.constants import TPM_ALG
from trusted_pools.tpm.structures import load_public
from trusted_pools.vtpm.driver import VTPMStatus
from trusted_pools.vtpm.swtpm import STATE_FILE

SECRET = b"an NV value of the guest"


def new_uuid() -> str:
    return str(uuid_lib.uuid4())


def made_with_nv(driver) -> str:
    uuid = new_uuid()
    driver.create(uuid)
    driver.start(uuid, host_access=True)
    nv_write(driver.tcti(uuid), SECRET)
    driver.stop(uuid)
    return uuid


def assert_not_started(driver, uuid):
    assert driver.status(uuid).status is not VTPMStatus.RUNNING
    assert not (driver.state_dir / uuid / "swtpm.pid").exists()


def test_binding_key_in_the_host_tpm(host_tpm, make_driver):
    """The driver's key is the decrypt-only, non-duplicable key that an AK
    certifies, with the EK as parent (the qualified Name says so)."""
    driver = make_driver(host_tpm)
    public = driver.binding_key_public()
    with host_tpm.device() as dev:
        ak = dev.create_ak("ecc")
        key = dev.load_binding_key(driver.binding_key_handle,
                                   ak_handle=ak.handle,
                                   qualifying_data=b"nonce-1")
        ek = dev.esapi.read_public(dev._object(0x81010001))[0]
    assert key.public == public
    ek_qn = sealing.qualified_name(
        sealing.hierarchy_qualified_name(0x4000000B),
        load_public(ek.publicArea.marshal()))
    verified = sealing.check_binding_key(
        key.public, key.certify_attest, key.certify_signature, ak.public,
        qualifying_data=b"nonce-1", parent_qualified_name=ek_qn)
    assert verified.name == key.name


def test_state_copied_to_another_host_does_not_decrypt(swtpm_pool,
                                                       make_driver):
    host_a, host_b = swtpm_pool(2)
    driver_a = make_driver(host_a, "a")
    driver_b = make_driver(host_b, "b")
    driver_b.binding_key_public()  # host B has its own binding key
    uuid = made_with_nv(driver_a)

    # The attacker copies the whole instance directory to host B.
    shutil.copytree(driver_a.state_dir / uuid, driver_b.state_dir / uuid)
    with pytest.raises(exception.VTPMKeyUnavailable,
                       match="another TPM or is damaged"):
        driver_b.start(uuid)
    assert_not_started(driver_b, uuid)

    # Nor does host B's swtpm open it with a key of B's choosing.
    (driver_b.state_dir / uuid / "state-key.wrapped").write_bytes(
        sealing.wrap_secret(driver_b.binding_key_public(), b"\1" * 32,
                            sealing.LABEL_VTPM_STATE))
    with pytest.raises(exception.VTPMStateUnusable, match="HMAC"):
        driver_b.start(uuid)
    assert_not_started(driver_b, uuid)

    # On host A the same files still work.
    driver_a.start(uuid, host_access=True)
    assert nv_read(driver_a.tcti(uuid)) == SECRET


def test_corrupted_wrapped_key(host_tpm, make_driver):
    driver = make_driver(host_tpm)
    uuid = made_with_nv(driver)
    path = driver.state_dir / uuid / "state-key.wrapped"
    good = path.read_bytes()
    path.write_bytes(good[:100] + bytes([good[100] ^ 0x40]) + good[101:])
    with pytest.raises(exception.VTPMKeyUnavailable, match="damaged"):
        driver.start(uuid)
    assert_not_started(driver, uuid)
    path.unlink()
    with pytest.raises(exception.VTPMStateUnusable,
                       match="state-key.wrapped is missing"):
        driver.start(uuid)
    path.write_bytes(good)
    driver.start(uuid, host_access=True)
    assert nv_read(driver.tcti(uuid)) == SECRET


@pytest.mark.parametrize("damage,error,match", [
    ("flip", exception.VTPMStateUnusable, "HMAC"),
    ("truncate", exception.VTPMStateUnusable, "length|truncated"),
    ("delete", exception.VTPMStateUnusable, "missing"),
])
def test_corrupted_state_file(host_tpm, make_driver, damage, error, match):
    """A damaged state is a clear error; swtpm never starts a fresh TPM in
    its place (a deleted state would give one)."""
    driver = make_driver(host_tpm)
    uuid = made_with_nv(driver)
    path = driver.state_dir / uuid / "tpm" / STATE_FILE
    good = path.read_bytes()
    if damage == "flip":
        middle = len(good) // 2
        path.write_bytes(good[:middle] + bytes([good[middle] ^ 1])
                         + good[middle + 1:])
    elif damage == "truncate":
        path.write_bytes(good[:len(good) - 16])
    else:
        path.unlink()
    with pytest.raises(error, match=match) as info:
        driver.start(uuid)
    assert info.value.kwargs["instance"] == uuid
    assert_not_started(driver, uuid)
    path.write_bytes(good)
    driver.start(uuid, host_access=True)
    assert nv_read(driver.tcti(uuid)) == SECRET


def test_unencrypted_state_is_refused(host_tpm, make_driver, tmp_path):
    """The attacker swaps in a fresh, unencrypted TPM state of its own
    (whose seeds it knows): refused before swtpm runs."""
    driver = make_driver(host_tpm)
    uuid = made_with_nv(driver)
    plain = tmp_path / "plain"
    plain.mkdir()
    subprocess.run(["swtpm_setup", "--tpm2", "--tpmstate", str(plain),
                    "--createek", "--config", "/dev/null"], check=True,
                   capture_output=True)
    shutil.copy(plain / STATE_FILE, driver.state_dir / uuid / "tpm")
    with pytest.raises(exception.VTPMStateUnusable, match="not encrypted"):
        driver.start(uuid)
    assert_not_started(driver, uuid)


def test_pcr_policy_refuses_after_the_host_boot_changed(host_tpm,
                                                        make_driver):
    selection = {TPM_ALG.SHA256: [7]}
    driver = make_driver(host_tpm, binding_pcrs=selection)
    uuid = made_with_nv(driver)
    public = load_public(driver.binding_key_public())
    with host_tpm.device() as dev:
        assert public.auth_policy == dev.policy_pcr_digest(selection)
        assert public.auth_policy == sealing.policy_pcr_digest(
            dev.pcr_read(selection))
    driver.start(uuid)
    driver.stop(uuid)

    with host_tpm.device() as dev:  # the host boots something else
        dev.pcr_extend(7, {TPM_ALG.SHA256: b"\x42" * 32,
                           TPM_ALG.SHA1: b"\x42" * 20})
    with pytest.raises(exception.VTPMKeyUnavailable, match="PCR"):
        driver.start(uuid)
    assert_not_started(driver, uuid)


def test_cold_migration_to_a_verified_host(swtpm_pool, make_driver):
    """Export re-wraps the state key to the destination's certified
    binding key; the destination runs it; the source may not start it."""
    host_a, host_b = swtpm_pool(2)
    driver_a = make_driver(host_a, "a")
    driver_b = make_driver(host_b, "b")
    uuid = made_with_nv(driver_a)
    driver_b.binding_key_public()
    with host_b.device() as dev:
        ak = dev.create_ak("ecc")
        key = dev.load_binding_key(driver_b.binding_key_handle,
                                   ak_handle=ak.handle,
                                   qualifying_data=b"migration nonce")
    destination = sealing.check_binding_key(
        key.public, key.certify_attest, key.certify_signature, ak.public,
        qualifying_data=b"migration nonce")

    with pytest.raises(exception.VTPMOperationNotSupported, match="live"):
        driver_a.export_state(uuid, destination_key=destination, live=True)
    with pytest.raises(TypeError):
        driver_a.export_state(uuid, destination_key=key.public)
    export = driver_a.export_state(uuid, destination_key=destination)
    assert driver_a.status(uuid).status is VTPMStatus.MIGRATING
    with pytest.raises(exception.VTPMInvalidState):
        driver_a.start(uuid)

    driver_b.import_state(export)
    assert driver_b.status(uuid).status is VTPMStatus.STOPPED
    driver_b.start(uuid, host_access=True)
    assert nv_read(driver_b.tcti(uuid)) == SECRET
    driver_b.stop(uuid)

    driver_a.destroy(uuid)
    assert not (driver_a.state_dir / uuid).exists()


def test_state_key_never_reaches_a_file(host_tpm, make_driver):
    """The unwrapped key (as the host TPM releases it) is in no file of
    the state or run directories, raw or hex, while the vTPM runs; swtpm
    got it on a pipe."""
    driver = make_driver(host_tpm)
    uuid = made_with_nv(driver)
    pid = driver.start(uuid).pid
    with host_tpm.device() as dev:
        key = dev.rsa_decrypt(
            driver.binding_key_handle,
            (driver.state_dir / uuid / "state-key.wrapped").read_bytes(),
            sealing.LABEL_VTPM_STATE)
    assert len(key) == 32
    for root in (driver.state_dir, driver.run_dir):
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert key not in data and key.hex().encode() not in \
                    data.lower(), path
    files = {os.path.basename(target) for target in (
        os.readlink("/proc/%d/fd/%s" % (pid, fd))
        for fd in os.listdir("/proc/%d/fd" % pid)) if target.startswith("/")}
    assert files <= {"swtpm.log", ".lock", STATE_FILE, "null"}, files
