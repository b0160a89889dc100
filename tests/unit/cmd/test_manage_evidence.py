"""trusted-pools-manage evidence verify, on the real GCP attestation."""

from __future__ import annotations

import json
import pathlib

import pytest

from tests import gcp_attestation
from trusted_pools.cmd import manage
from trusted_pools.tpm import eventlog

SHA1 = 0x0004


@pytest.fixture
def gcp_files(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    record = gcp_attestation.load()
    pcrs = record.pcrs[SHA1]
    files = {
        "ak": len(record.ak_public).to_bytes(2, "big") + record.ak_public,
        "quote": record.quote,
        "signature": record.signature,
        "pcrs": b"".join(pcrs[i] for i in sorted(pcrs)),
        "eventlog": record.event_log,
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    return paths


def _argv(paths: dict[str, pathlib.Path], *extra: str,
          nonce: str = "", sha1: bool = True) -> list[str]:
    # The GCP AK's scheme is fixed to RSASSA-SHA1: its quote is SHA-1,
    # which needs the explicit waiver.
    argv = ["evidence", "verify", "--ak", str(paths["ak"]),
            "--quote", str(paths["quote"]),
            "--signature", str(paths["signature"]),
            "--pcrs", str(paths["pcrs"]), "--pcrs-format", "values",
            "--nonce", nonce] + (["--allow-sha1-quotes"] if sha1 else [])
    if "eventlog" in paths:
        argv += ["--eventlog", str(paths["eventlog"])]
    return argv + list(extra)


def _run_json(argv: list[str], capsys: pytest.CaptureFixture[str]
              ) -> tuple[int, dict]:
    code = manage.main(argv + ["--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_sha1_quote_needs_the_waiver(gcp_files, capsys):
    code, result = _run_json(_argv(gcp_files, sha1=False), capsys)
    assert code != 0 and result["verified"] is False
    assert "SHA-1" in json.dumps(result["failure"])
    assert "allow_sha1_quotes" in json.dumps(result["failure"])


def test_real_attestation_verifies(gcp_files, capsys):
    code, result = _run_json(_argv(gcp_files), capsys)
    assert code == 0, result["failure"]
    assert result["verified"] is True
    checks = [c["check"] for c in result["checks"]]
    for expected in ("AK attributes", "quote signature", "nonce",
                     "PCR digest", "event log"):
        assert expected in checks


def test_text_output_names_every_check(gcp_files, capsys):
    assert manage.main(_argv(gcp_files)) == 0
    out = capsys.readouterr().out
    assert "RESULT  all evidence verified" in out
    assert "event log" in out


def test_wrong_nonce_is_rejected(gcp_files, capsys):
    code, result = _run_json(_argv(gcp_files, nonce="00"), capsys)
    assert code == 1
    assert result["failure"]["error"] == "NonceMismatch"


def test_tampered_pcr_is_rejected(gcp_files, capsys):
    data = bytearray(gcp_files["pcrs"].read_bytes())
    data[3 * 20] ^= 0xFF
    gcp_files["pcrs"].write_bytes(bytes(data))
    code, result = _run_json(_argv(gcp_files), capsys)
    assert code == 1
    assert result["failure"]["error"] == "PCRDigestMismatch"


def test_tampered_event_log_is_rejected(gcp_files, capsys):
    log = bytearray(gcp_files["eventlog"].read_bytes())
    # Flip a byte of a measured digest (not of unmeasured event data).
    event = next(e for e in eventlog.parse_event_log(bytes(log)).events
                 if e.is_extended)
    digest = event.digests[SHA1]
    at = bytes(log).index(digest, event.offset)
    log[at] ^= 0x01
    gcp_files["eventlog"].write_bytes(bytes(log))
    code, result = _run_json(_argv(gcp_files), capsys)
    assert code == 1
    assert result["failure"]["check"] == "event log"
    assert result["verified"] is False


def test_forged_signature_is_rejected(gcp_files, capsys):
    sig = bytearray(gcp_files["signature"].read_bytes())
    sig[-1] ^= 0x01
    gcp_files["signature"].write_bytes(bytes(sig))
    code, result = _run_json(_argv(gcp_files), capsys)
    assert code == 1
    assert result["failure"]["error"] == "InvalidSignature"


def test_missing_file_is_bad_usage(gcp_files, capsys, tmp_path):
    gcp_files["quote"] = tmp_path / "does-not-exist"
    assert manage.main(_argv(gcp_files)) == 2
    assert "cannot read" in capsys.readouterr().err


def test_bad_option_is_bad_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        manage.main(["evidence", "verify", "--no-such-option"])
    assert exit_info.value.code == 2


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        manage.main(["evidence", "verify", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--ak", "--quote", "--signature", "--nonce", "--pcrs",
                   "--eventlog", "--ima-log", "--format"):
        assert option in out


def test_ima_log_over_limit_is_rejected(gcp_files, capsys, tmp_path):
    conf = tmp_path / "tp.conf"
    conf.write_text("[attestation]\nmax_ima_log_bytes = 1024\n")
    ima = tmp_path / "ima"
    ima.write_bytes(b"x" * 2048)
    code = manage.main(["--config-file", str(conf)] + _argv(
        gcp_files, "--ima-log", str(ima), "--format", "json"))
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    # The GCP quote covers PCR 10 in SHA-1, so the size limit is reached.
    assert result["failure"]["error"] == "EvidenceTooLarge"


def test_non_quote_attestation_is_rejected(gcp_files, capsys):
    import base64
    import json as json_mod
    record = json_mod.loads(gcp_attestation.PATH.read_text())
    gcp_files["quote"].write_bytes(
        base64.b64decode(record["AK"]["CreateAttestation"]))
    code, result = _run_json(_argv(gcp_files), capsys)
    assert code == 1
    assert result["failure"]["error"] == "QuoteTypeInvalid"


def _pem_ak(gcp_files):
    from cryptography.hazmat.primitives import serialization
    from trusted_pools.tpm import structures
    key = structures.load_public(gcp_attestation.load().ak_public).public_key()
    gcp_files["ak"].write_bytes(key.public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo))


def test_pem_ak_needs_an_explicit_waiver(gcp_files, capsys):
    _pem_ak(gcp_files)
    code, result = _run_json(_argv(gcp_files), capsys)
    assert code == 1
    assert result["failure"]["error"] == "AKAttributesRejected"
    assert "PEM" in result["failure"]["reason"]


def test_pem_ak_verifies_the_quote_when_waived(gcp_files, capsys):
    _pem_ak(gcp_files)
    code, result = _run_json(
        _argv(gcp_files, "--allow-unrestricted-ak"), capsys)
    assert code == 0, result["failure"]
    assert result["checks"][0]["detail"].startswith("NOT CHECKED")
    sig = bytearray(gcp_files["signature"].read_bytes())
    sig[-3] ^= 0x10
    gcp_files["signature"].write_bytes(bytes(sig))
    code, result = _run_json(
        _argv(gcp_files, "--allow-unrestricted-ak"), capsys)
    assert code == 1 and result["failure"]["error"] == "InvalidSignature"
