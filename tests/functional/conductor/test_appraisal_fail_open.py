"""Issue 9, items 1 and 2, against the real conductor: hosts that lie with
their event log's data, labels and types are not trusted.

Every host is a swtpm booted from the real GCE Ubuntu event log; the
attackers' firmware measured something else at one event (their TPM holds
it), and their agents send a log rewritten to hide it. The policy is
captured from the good host over the real RPC.
"""

from __future__ import annotations

import hashlib

import pytest

from tests.pool_harness import TrustedPool
from trusted_pools.tpm import eventlog

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

LOG = "ubuntu-2104"
KERNEL_EVENT = 95    # PCR 9: GRUB's /boot/vmlinuz-5.11.0-1006-gcp
CMDLINE_EVENT = 96   # PCR 8: kernel_cmdline: /boot/vmlinuz... panic=-1
BACKDOOR = b"\x7fELF a kernel with a backdoor " * 128


@pytest.fixture
def pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca):
    trusted = TrustedPool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                          "sqlite:///%s" % (tmp_path / "tp.sqlite"))
    trusted.configure()
    try:
        yield trusted
    finally:
        trusted.close()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_lying_logs_do_not_make_hosts_trusted(pool):
    (good,) = pool.add_hosts(1, log=LOG)
    source = good.source_log.read_bytes()
    cmdline = next(e for e in eventlog.parse_event_log(source).events
                   if e.index == CMDLINE_EVENT).data.rstrip(b"\0")
    line = cmdline.removeprefix(b"kernel_cmdline: ") + b" init=/bin/sh"
    tpms = iter(pool.start_tpms(4))
    attackers = {
        # (a) the backdoored kernel's own bytes as the event data
        "kernel-as-data": pool.add_crafted_host(
            KERNEL_EVENT, BACKDOOR, log=LOG, tpm=next(tpms),
            data=BACKDOOR),
        # (b) init=/bin/sh without its label, then under another type
        "cmdline-unlabelled": pool.add_crafted_host(
            CMDLINE_EVENT, line, log=LOG, tpm=next(tpms),
            data=line + b"\0"),
        "cmdline-retyped": pool.add_crafted_host(
            CMDLINE_EVENT, line, log=LOG, tpm=next(tpms), data=line,
            event_type=eventlog.EventType.EV_COMPACT_HASH),
        # (c) the command line measured as an allowed GRUB command
        "no-cmdline": pool.add_crafted_host(
            CMDLINE_EVENT, b"insmod gzio", log=LOG, tpm=next(tpms),
            data=b"grub_cmd: insmod gzio\0"),
    }
    pool.start_agents()
    pool.start_conductor("conductor-a")
    pool.enroll_all()
    api = pool.api()
    captured = api.capture_policy({}, good.name)["measured_boot"]
    assert captured["os_boot"]["kernel_command_lines"]
    api.create_policy({}, "golden-boot", "measured_boot", captured)
    api.assign_policy({}, "default", "golden-boot")
    names = [good.name] + [h.name for h in attackers.values()]
    latest = pool.wait_for(lambda v: all(
        n in v and v[n].policy_versions for n in names), timeout=60)

    assert latest[good.name].status == "trusted", latest[good.name].reasons
    assert latest[good.name].level == 3
    for host in attackers.values():
        assert latest[host.name].status == "untrusted"
        assert latest[host.name].level == 2, latest[host.name].reasons

    def reasons(key):
        return latest[attackers[key].name].reasons

    assert any("PCR 9 event %d (" % KERNEL_EVENT in r
               and "sha256 digest %s" % _sha256(BACKDOOR) in r
               and "kernels" in r for r in reasons("kernel-as-data")), \
        reasons("kernel-as-data")
    for key in ("cmdline-unlabelled", "cmdline-retyped"):
        assert any("PCR 8 event %d (logged as" % CMDLINE_EVENT in r
                   and "init=/bin/sh" in r
                   and "sha256 digest %s" % _sha256(line) in r
                   and "is not the hash of any kernel_command_lines" in r
                   for r in reasons(key)), reasons(key)
    assert any("EV_COMPACT_HASH" in r for r in reasons("cmdline-retyped"))
    assert any("no event of PCR 8 or 12 is the hash of a kernel command "
               "line" in r for r in reasons("no-cmdline")), \
        reasons("no-cmdline")
