"""The real-guest test tooling (tests/guest/): archive format, log
parsing, and missing parts named with their package."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest

from tests.guest import image, qemu


def test_cpio_newc_lists_with_a_real_cpio(tmp_path):
    cpio = shutil.which("busybox") or shutil.which("cpio")
    if cpio is None:
        pytest.fail("no cpio: apt-get install -y busybox-static")
    archive = image.cpio_newc({
        "init": (stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
        "usr/bin/tp-attest": (stat.S_IFREG | 0o755, b"x" * 5),
        "bin/sh": (stat.S_IFLNK | 0o777, "busybox"),
    })
    argv = [cpio, "cpio", "-t"] if cpio.endswith("busybox") else \
        [cpio, "-t"]
    listing = subprocess.run(argv, input=archive, capture_output=True,
                             check=True).stdout.decode().split()
    assert set(listing) >= {"init", "usr", "usr/bin", "usr/bin/tp-attest",
                            "bin", "bin/sh", "dev", "proc", "sys"}
    # Deterministic: the cache key is the content.
    assert archive == image.cpio_newc({
        "bin/sh": (stat.S_IFLNK | 0o777, "busybox"),
        "usr/bin/tp-attest": (stat.S_IFREG | 0o755, b"x" * 5),
        "init": (stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
    })


def test_swtpm_log_commands():
    log = (" Ctrl Cmd: length 4\n 00 00 00 10 \n"
           " SWTPM_IO_Read: length 10\n 80 01 00 00 00 0A 00 00 01 44 \n"
           " SWTPM_IO_Write: length 10\n 80 01 00 00 00 0A 00 00 00 00 \n"
           " SWTPM_IO_Read: length 22\n"
           " 80 01 00 00 00 16 00 00 01 82 00 00 00 00 00 00 \n"
           " 00 00 00 00 00 00 \n")
    assert qemu.swtpm_log_commands(log) == [0x144, qemu.TPM2_CC_PCR_EXTEND]


@pytest.mark.parametrize("nonce, handle", [
    (b"", 0x81008001), (b"x" * 65, 0x81008001), (b"x", 0x01C00002)])
def test_guest_append_refuses_bad_requests(nonce, handle):
    with pytest.raises(ValueError):
        qemu.guest_append(nonce, handle)


def test_missing_parts_name_their_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(image.GuestPartMissing, match="qemu-system-x86"):
        qemu.find_qemu()
    monkeypatch.setattr(qemu, "OVMF_PAIRS", (("/nope/C.fd", "/nope/V.fd"),))
    with pytest.raises(image.GuestPartMissing, match="install -y ovmf"):
        qemu.find_ovmf()
    monkeypatch.setattr(image, "BUSYBOX_PATHS", ("/nope/busybox",))
    with pytest.raises(image.GuestPartMissing, match="busybox-static"):
        image.initramfs_files()
    monkeypatch.setenv("TP_GUEST_KERNEL", "/nope/vmlinuz")
    with pytest.raises(image.GuestPartMissing, match="TP_GUEST_KERNEL"):
        image.kernel()


def test_kernel_without_built_in_tpm_driver_is_refused():
    with pytest.raises(image.GuestPartMissing, match="CONFIG_TCG_CRB"):
        image._check_kernel_config("\n".join(
            "%s=y" % o for o in image.REQUIRED_KERNEL_CONFIG
            if o != "CONFIG_TCG_CRB") + "\nCONFIG_TCG_CRB=m\n")
