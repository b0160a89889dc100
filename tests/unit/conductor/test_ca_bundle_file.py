"""[conductor] ek_ca_bundle is read again when the file changes: an
operator who adds a missing intermediate CA need not restart (issue 14,
friction 2)."""

import os

import pytest

from trusted_pools import exception
from trusted_pools.conductor.service import CABundleFile


def test_a_changed_bundle_is_read_again(tmp_path):
    path = tmp_path / "ek-ca.pem"
    path.write_bytes(b"root only\n")
    bundle = CABundleFile(str(path))
    assert bundle() == b"root only\n"
    path.write_bytes(b"root only\nand the intermediate\n")
    assert bundle() == b"root only\nand the intermediate\n"


def test_same_size_rewrite_is_noticed(tmp_path):
    path = tmp_path / "ek-ca.pem"
    path.write_bytes(b"AAAA")
    bundle = CABundleFile(str(path))
    assert bundle() == b"AAAA"
    path.write_bytes(b"BBBB")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert bundle() == b"BBBB"


def test_an_unreadable_or_removed_bundle_keeps_the_last_good_one(tmp_path,
                                                                  caplog):
    path = tmp_path / "ek-ca.pem"
    path.write_bytes(b"good")
    bundle = CABundleFile(str(path))
    path.unlink()
    assert bundle() == b"good"
    path.mkdir()  # exists, cannot be read as a file
    assert bundle() == b"good"
    assert "Keeping the EK CA bundle" in caplog.text


def test_a_missing_bundle_at_start_is_a_config_error(tmp_path):
    with pytest.raises(exception.ConfigInvalid) as info:
        CABundleFile(str(tmp_path / "absent.pem"))
    assert "ek_ca_bundle" in str(info.value)
