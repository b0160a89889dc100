"""The swtpm test pool itself: real, distinct, provisioned TPMs that go away,
and booted-host PCRs that equal a real event log's replay."""

from __future__ import annotations

import os

import pytest
from cryptography import x509

from tests import swtpm_pool as sp
from trusted_pools import exception
from trusted_pools.tpm import eventlog
from trusted_pools.tpm.constants import TPM_ALG

pytestmark = pytest.mark.swtpm


def _alive(pid: int) -> bool:
    try:
        status = open("/proc/%d/status" % pid).read()
    except OSError:
        return False
    return "State:\tZ" not in status


def test_pool_starts_distinct_provisioned_tpms_and_stops_them(swtpm_ca,
                                                              tmp_path):
    with sp.SwtpmPool(swtpm_ca, tmp_path) as pool:
        tpms = pool.start(3)
        assert len({t.port for t in tpms}) == 3
        pids = [t.pid for t in tpms]
        assert all(_alive(p) for p in pids)
        certs = []
        for tpm in tpms:
            with tpm.device() as dev:
                found = dev.read_ek_certificates()
                assert set(found) == {"rsa2048", "ecc384-high"}
                assert dev.read_nv(0x01C08000)  # platform certificate
                certs.append(x509.load_der_x509_certificate(
                    found["rsa2048"]))
        # Each TPM has its own EK, certified by the pool's CA.
        assert len({c.public_key().public_numbers().n for c in certs}) == 3
        issuer = x509.load_pem_x509_certificate(
            swtpm_ca.issuer_cert_path.read_bytes())
        assert all(c.issuer == issuer.subject for c in certs)
    assert not any(_alive(p) for p in pids)
    assert all(t.pid is None for t in tpms)


def test_teardown_happens_even_when_the_test_body_fails(swtpm_ca, tmp_path):
    pids = []
    with pytest.raises(RuntimeError):
        with sp.SwtpmPool(swtpm_ca, tmp_path) as pool:
            pids = [t.pid for t in pool.start(2)]
            raise RuntimeError("test body failed")
    assert pids and not any(_alive(p) for p in pids)


def test_fixture_instance_is_reachable(swtpm_instance):
    assert swtpm_instance.running
    with swtpm_instance.device() as dev:
        assert 0x81010001 in dev.persistent_handles()


def test_stop_then_device_is_unreachable(swtpm_instance):
    tcti = swtpm_instance.tcti
    swtpm_instance.stop()
    from trusted_pools.tpm.device import TPMDevice
    with pytest.raises(exception.TPMUnreachable):
        TPMDevice(tcti)


def test_kill_by_pid_file_for_an_instance_started_elsewhere(swtpm_instance):
    """An instance object that did not start the daemon (another process
    did) still stops it through the pid file."""
    pid = swtpm_instance.pid
    stranger = sp.SwtpmInstance(swtpm_instance.state_dir, swtpm_instance.ca)
    stranger.stop()
    # The real owner reaps its child; the process is gone either way.
    swtpm_instance.stop()
    assert not _alive(pid)


def test_missing_binary_is_reported_with_the_apt_line(monkeypatch):
    monkeypatch.setattr(sp, "REQUIRED_BINARIES",
                        ("swtpm", "swtpm_no_such_tool"))
    assert sp.missing_binaries() == ["swtpm_no_such_tool"]
    with pytest.raises(sp.SwtpmMissing) as info:
        sp.require_binaries()
    assert "swtpm_no_such_tool" in str(info.value)
    assert "apt-get install" in str(info.value)


@pytest.mark.parametrize("log_name", sorted(sp.BOOTED_HOST_LOGS))
def test_booted_pcrs_equal_the_log_replay(swtpm_instance, log_name):
    result = sp.boot_from_event_log(swtpm_instance,
                                    sp.BOOTED_HOST_LOGS[log_name])
    replayed = eventlog.replay_event_log(
        eventlog.parse_event_log(result.log_bytes))
    assert result.extended_events > 20
    with swtpm_instance.device() as dev:
        values = dev.pcr_read({alg: list(replayed[alg])
                               for alg in result.banks})
    for alg in result.banks:
        assert values[alg] == replayed[alg], alg
    assert TPM_ALG.SHA256 in result.banks


def test_tampered_kernel_changes_only_pcr4(swtpm_instance):
    path = sp.BOOTED_HOST_LOGS["arch-linux"]
    raw = path.read_bytes()
    index = sp.kernel_event_index(raw)
    result = sp.boot_from_event_log(swtpm_instance, path, tamper=index)
    assert result.tampered_index == index
    log = eventlog.parse_event_log(raw)
    replayed = eventlog.replay_event_log(log)
    with swtpm_instance.device() as dev:
        values = dev.pcr_read({TPM_ALG.SHA256: list(
            replayed[TPM_ALG.SHA256])})[TPM_ALG.SHA256]
    differing = [p for p in replayed[TPM_ALG.SHA256]
                 if values[p] != replayed[TPM_ALG.SHA256][p]]
    assert differing == [4]
    with pytest.raises(exception.ReplayMismatch) as info:
        eventlog.verify_event_log(log, {TPM_ALG.SHA256: values})
    assert info.value.kwargs["pcrs"] == [4]


def test_log_with_startup_locality_is_refused(swtpm_instance):
    path = sp.EVENTLOG_DIR / "keylime" / "binary_bios_measurements"
    with pytest.raises(ValueError, match="StartupLocality"):
        sp.boot_from_event_log(swtpm_instance, path)


def test_restart_resets_pcrs_but_keeps_persistent_objects(swtpm_instance):
    sp.boot_from_event_log(swtpm_instance, sp.BOOTED_HOST_LOGS["arch-linux"])
    with swtpm_instance.device() as dev:
        before = dev.persistent_handles()
        assert dev.pcr_read({TPM_ALG.SHA256: [0]})[TPM_ALG.SHA256][0] \
            != bytes(32)
    swtpm_instance.restart()
    with swtpm_instance.device() as dev:
        assert dev.persistent_handles() == before
        assert dev.pcr_read({TPM_ALG.SHA256: [0]})[TPM_ALG.SHA256][0] \
            == bytes(32)


def test_no_swtpm_of_ours_survives_the_module(swtpm_ca, tmp_path):
    with sp.SwtpmPool(swtpm_ca, tmp_path) as pool:
        pool.start(1)
    ours = [p for p in os.listdir("/proc") if p.isdigit()
            and str(tmp_path).encode() in _cmdline(int(p))]
    assert ours == []


def _cmdline(pid: int) -> bytes:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read()
    except OSError:
        return b""
