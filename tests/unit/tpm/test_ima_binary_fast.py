"""The inlined binary IMA loop against the per-entry reference loop.

``ima._binary_batch`` takes well-formed ima-ng entries on PCR 10 without a
call per entry; ``ima._binary_batch_reference`` is the loop it replaced.
On real lists (the keylime SHA-256 list, generated lists with violations
and other templates) and on mutated lists, both give the same batch
(template data, recorded hashes, violations, PCRs, entry offsets, where
the whole entries end, the strict entries) or the same error.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from tests import ima_gen
from tests.unit.tpm.test_ima_properties import ASCII, KEYLIME
from trusted_pools import exception
from trusted_pools.tpm import ima
from trusted_pools.tpm.constants import TPM_ALG

SHA1, SHA256 = int(TPM_ALG.SHA1), int(TPM_ALG.SHA256)
OTHER_PCR = ima_gen.ascii_line(11, "ima-ng", ima_gen.fields_from_text(
    "ima-ng", b"sha256:" + b"ab" * 32 + b" /usr/bin/other"))
LOGS = [ima_gen.ascii_to_binary(KEYLIME), ima_gen.ascii_to_binary(ASCII),
        ima_gen.ascii_to_binary(ima_gen.generate_ascii_log(
            30, seed=5, violation_every=7) + OTHER_PCR
            + ima_gen.generate_ascii_log(3, template="ima-sig", seed=6))]

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _summary(fn, data: bytes, first: int = 1, th_alg=None):
    try:
        batch = fn(data, first, th_alg)
    except exception.TrustedPoolsError as exc:
        return ("error", type(exc), str(exc))
    n = len(batch.datas)
    entries = []
    for i in range(n):
        try:
            entries.append(batch.entry_at(i))
        except exception.TrustedPoolsError as exc:
            entries.append((type(exc), str(exc)))
    return ("ok", batch.datas, batch.recorded, batch.violations, batch.pcrs,
            batch.th_alg, batch.complete,
            [batch.end_offset(k) for k in range(n + 1)], batch.keys(n),
            entries)


def test_real_lists_same_batch_and_inline_path_taken(monkeypatch):
    for log in LOGS:
        fast = _summary(ima._binary_batch, log)
        assert fast[0] == "ok" and len(fast[1]) >= 2
        assert fast == _summary(ima._binary_batch_reference, log)
    # The inline branch really decides the plain ima-ng entries: only the
    # violations, the other PCR and the other template are parsed strictly.
    strict = []
    real = ima._parse_binary_entry
    monkeypatch.setattr(ima, "_parse_binary_entry",
                        lambda *a: strict.append(1) or real(*a))
    batch = ima._binary_batch(LOGS[2], 1, None)
    assert len(strict) == 1 + 3 and len(batch.datas) == 34
    # The lists hold violations and an entry on another PCR, so both the
    # inline branch and the strict branch are compared above.
    assert _summary(ima._binary_batch, LOGS[2])[3]
    assert _summary(ima._binary_batch, LOGS[2])[4]


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(LOGS)))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete",
                                   "truncate", "zero-hash"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from(b"\x00\x01\x06\x0a\xff:"))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        else:  # a template hash zeroed: a violation, if the data allows
            data[pos:pos + 20] = bytes(20)
    return bytes(data)


@SETTINGS
@given(mutated(), st.sampled_from([None, SHA1, SHA256]))
def test_mutated_lists_same_batch_or_same_error(data, th_alg):
    assert _summary(ima._binary_batch, data, 3, th_alg) == \
        _summary(ima._binary_batch_reference, data, 3, th_alg)


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes_same_batch_or_same_error(data):
    assert _summary(ima._binary_batch, data) == \
        _summary(ima._binary_batch_reference, data)


def test_zeroed_template_hash_of_each_entry():
    """A host that zeroes a recorded hash to pass an entry off as a
    violation: refused (non-zero file digest) by both loops alike."""
    log = LOGS[2]
    offsets = [0]
    while offsets[-1] < len(log):
        offsets.append(ima.walk_binary_entries(log, offsets[-1], 1)[1])
    refused = 0
    for at in offsets[:-1]:
        forged = log[:at + 4] + bytes(20) + log[at + 24:]
        fast = _summary(ima._binary_batch, forged)
        assert fast == _summary(ima._binary_batch_reference, forged)
        refused += fast[0] == "error"
    assert refused >= len(offsets) - 1 - 5  # all but the real violations
