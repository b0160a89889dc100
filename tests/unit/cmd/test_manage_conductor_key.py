"""trusted-pools-manage conductor-key: print the public key agents pin,
and make a new key for a rotation, with no openssl (issue 14, friction 5)."""

from __future__ import annotations

import json
import os

import pytest

from trusted_pools.cmd import manage
from trusted_pools.protocol import agent_requests
from trusted_pools.protocol import keystore


def _run(capsys, *argv):
    try:
        code = manage.main(list(argv))
    finally:
        manage.CONF.clear()
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def conf_file(tmp_path):
    key_path = tmp_path / "signing.pem"
    keystore.load_or_create_signing_key(str(key_path))
    path = tmp_path / "tp.conf"
    path.write_text("[conductor]\nsigning_key_path = %s\n" % key_path)
    return str(path), key_path


def test_show_prints_the_key_an_agent_pins(capsys, conf_file, tmp_path):
    conf, key_path = conf_file
    code, out, err = _run(capsys, "--config-file", conf, "conductor-key",
                          "show")
    assert code == 0, err
    # What an agent does with it: verify a request the conductor signed.
    signing = keystore.load_signing_key(str(key_path))
    pinned = keystore.public_key_from_pem(out)
    token = agent_requests.RequestSigner(signing, "c-a").sign(
        "get_identity", "compute-1", {})
    agent_requests.RequestVerifier([pinned], "compute-1").verify(
        "get_identity", {}, token)
    code, out, err = _run(capsys, "--config-file", conf, "conductor-key",
                          "show", "--format", "jwk")
    assert code == 0
    assert json.loads(out)["kid"] == keystore.public_jwk(signing)["kid"]


def test_show_of_an_unreadable_key_fails_clearly(capsys, tmp_path):
    code, out, err = _run(capsys, "conductor-key", "show", "--key",
                          str(tmp_path / "absent.pem"))
    assert code == 1 and out == ""
    assert "cannot open signing key" in err


def test_generate_makes_a_new_private_key_and_refuses_to_overwrite(
        capsys, conf_file, tmp_path):
    conf, key_path = conf_file
    new = tmp_path / "next.pem"
    code, out, err = _run(capsys, "conductor-key", "generate", str(new),
                          "--algorithm", "ES256")
    assert code == 0, err
    assert oct(os.stat(new).st_mode & 0o777) == "0o600"
    created = keystore.load_signing_key(str(new))
    assert keystore.public_key_pem(created) == out
    assert keystore.algorithm_for_key(created) == "ES256"
    assert "signing_key_path = %s" % new in err
    before = key_path.read_bytes()
    code, out, err = _run(capsys, "conductor-key", "generate",
                          str(key_path))
    assert code == 1 and "exists" in err
    assert key_path.read_bytes() == before
