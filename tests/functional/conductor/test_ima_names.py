"""Issue 9 item 6: a file whose name holds a newline (or other odd bytes)
must not be a lever against its host.

Real agent code reads the host's IMA list; a real conductor verifies it
against swtpm quotes over RabbitMQ. A local user of the host can make the
kernel measure a file with any name; with the ascii list such a name used
to split its entry in two and make the host untrusted until it rebooted.
"""

from __future__ import annotations

import copy
import hashlib

import pytest

from tests.pool_harness import TrustedPool, measure_file

pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq, pytest.mark.slow]

ODD_DIGEST = hashlib.sha256(b"a user's harmless script").digest()
# A newline, then text that looks like a whole ascii entry of its own,
# spaces, a tab, a carriage return and bytes that are not UTF-8.
ODD_NAME = (b"/home/user/run me\n10 " + b"ab" * 20 + b" ima-ng sha256:"
            + b"00" * 32 + b" /usr/bin/sudo\t\r\xff\xfe.sh")
UNKNOWN_NAME = b"/home/user/other\nname\x01.sh"


@pytest.fixture
def pool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca):
    pool = TrustedPool(tmp_path, rabbit_conf, swtpm_pool, swtpm_ca,
                       "sqlite:///%s" % (tmp_path / "pool.sqlite"),
                       interval=1)
    pool.configure()
    yield pool
    pool.close()


def _runtime_policy_allowing_odd_file(pool: TrustedPool, host) -> None:
    """Capture both policies from the host; the runtime one also allows
    the odd file's digest (the operator reviewed it)."""
    api = pool.api()
    captured = api.capture_policy({}, host.name)
    runtime = copy.deepcopy(captured["ima"])
    odd_path = ODD_NAME.decode("utf-8", "surrogateescape")
    key = "sha256:" + ODD_DIGEST.hex()
    allowed = next(v for k, v in runtime.items() if isinstance(v, dict)
                   and any(p.startswith("/") for p in v))
    allowed[odd_path] = [key]
    api.create_policy({}, "golden-boot", "measured_boot",
                      captured["measured_boot"])
    api.create_policy({}, "golden-ima", "ima", runtime)
    api.assign_policy({}, "default", "golden-boot")
    api.assign_policy({}, "default", "golden-ima")


def _verdict_after(pool: TrustedPool, host, last_id: int, predicate,
                   timeout: float = 30.0):
    """The host's newest verdict once it is two verdicts past ``last_id``
    (so its quote was taken after the change) and ``predicate`` holds."""
    return pool.wait_for(
        lambda v: host.name in v and v[host.name].id >= last_id + 2
        and predicate(v[host.name]), timeout=timeout)[host.name]


def _first_untrusted_after(pool: TrustedPool, host, last_id: int):
    """The host's first untrusted verdict after ``last_id`` (later ones
    only repeat that the earlier appraisal failed)."""
    _verdict_after(pool, host, last_id, lambda v: v.status == "untrusted")
    host_id = next(h.id for h in pool.db.list_hosts()
                   if h.hostname == host.name)
    return min((v for v in pool.db.verdict_history(host_id)
                if v.id > last_id and v.status == "untrusted"),
               key=lambda v: v.id)


def _trusted_at_runtime_level(pool: TrustedPool, host):
    pool.start_agents()
    pool.start_conductor("conductor-a")
    pool.enroll_all()
    _runtime_policy_allowing_odd_file(pool, host)
    return pool.wait_for(
        lambda v: host.name in v and v[host.name].status == "trusted"
        and "golden-ima" in v[host.name].policy_versions,
        timeout=40)[host.name]


def test_binary_list_odd_name_keeps_host_trusted_and_is_judged(pool):
    (host,) = pool.add_hosts(1, ima_entries=20)
    before = _trusted_at_runtime_level(pool, host)
    assert before.level == 4, before.reasons

    # A local user runs a script whose name holds a newline and a fake
    # entry: its real entry is in the binary list and in PCR 10.
    measure_file(host, ODD_NAME, ODD_DIGEST)
    after = _verdict_after(pool, host, before.id, lambda v: True)
    assert (after.status, after.level) == ("trusted", 4), after.reasons

    # The entry is judged by its digest, not skipped: an odd name that the
    # policy does not know makes the host untrusted, named by entry
    # number, with the name shown safely.
    measure_file(host, UNKNOWN_NAME, hashlib.sha256(b"x").digest())
    bad = _first_untrusted_after(pool, host, after.id)
    assert any("IMA line 22:" in r and "/home/user/other\\x0aname\\x01.sh"
               in r and "is not in policy 'golden-ima'" in r
               for r in bad.reasons), bad.reasons


def test_ascii_list_odd_name_is_regrouped_and_violation_refused(pool):
    (host,) = pool.add_hosts(1, ima_entries=20, ima_format="ascii")
    before = _trusted_at_runtime_level(pool, host)
    assert before.level == 4, before.reasons

    # The kernel prints the name raw: the entry spans two lines. Its
    # template hash shows where it ends, so the host stays trusted.
    measure_file(host, ODD_NAME, ODD_DIGEST)
    after = _verdict_after(pool, host, before.id, lambda v: True)
    assert (after.status, after.level) == ("trusted", 4), after.reasons

    # A violation entry's name is in no hash: where it spans lines nothing
    # can tell where it ends. The ascii list is refused with the reason
    # and the advice (the binary list has no such case). Entry 22, the
    # violation, stands alone; its name's second line is entry 23.
    measure_file(host, b"/home/user/written\nwhile read", b"", violation=True)
    bad = _first_untrusted_after(pool, host, after.id)
    assert any("IMA log line 23 is invalid" in r and "binary_runtime_measurements" in r
               for r in bad.reasons), bad.reasons
