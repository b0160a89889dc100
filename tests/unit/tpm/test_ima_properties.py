"""Property tests: any input gives a typed error or a result that is right."""

from __future__ import annotations

import pathlib

from hypothesis import HealthCheck, given, settings, strategies as st

from tests import ima_gen
from trusted_pools import exception
from trusted_pools.tpm import ima
from trusted_pools.tpm.constants import TPM_ALG

SHA1, SHA256 = int(TPM_ALG.SHA1), int(TPM_ALG.SHA256)
DATA = pathlib.Path(__file__).parents[2] / "data" / "ima" / "keylime"
KEYLIME = (DATA / "ima-log-sha256").read_bytes()
ASCII = ima_gen.generate_ascii_log(12, seed=31, violation_every=5) + \
    ima_gen.generate_ascii_log(4, template="ima-sig", seed=32)
BINARY = ima_gen.ascii_to_binary(ASCII)
LOGS = [KEYLIME, ASCII, BINARY]
QUOTED = [{SHA1: ima_gen.naive_replay(log, "sha1"),
           SHA256: ima_gen.naive_replay(log, "sha256")}
          for log in (KEYLIME, ASCII, ASCII)]
TRUTH = [[(e.pcr, e.template_data, e.violation)
          for e in ima.parse_ima_log(log)] for log in LOGS]

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _only_typed_errors(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except exception.TrustedPoolsError:
        return None


@SETTINGS
@given(st.binary(max_size=600), st.sampled_from(["auto", "ascii",
                                                  "binary"]))
def test_arbitrary_bytes(data, fmt):
    entries = _only_typed_errors(ima.parse_ima_log, data, fmt=fmt)
    assert entries is None or isinstance(entries, list)
    result = _only_typed_errors(ima.verify_ima_log, data,
                                {SHA256: b"\x5a" * 32}, fmt=fmt)
    assert result is None


@SETTINGS
@given(st.text(max_size=400))
def test_arbitrary_text(text):
    _only_typed_errors(ima.parse_ima_log, text)
    assert _only_typed_errors(ima.verify_ima_log, text,
                              {SHA1: b"\x33" * 20}) is None


@st.composite
def mutated(draw):
    """A real or generated log, changed in a few places."""
    index = draw(st.integers(0, len(LOGS) - 1))
    data = bytearray(LOGS[index])
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete",
                                   "truncate", "dup-line"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from(b" :\n0af\x00\xffA/"))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
        else:
            end = data.find(b"\n", pos)
            start = data.rfind(b"\n", 0, pos) + 1
            if end > 0:
                data[end + 1:end + 1] = data[start:end + 1]
    return index, bytes(data)


@SETTINGS
@given(mutated())
def test_mutations_never_verify_other_content(case):
    index, data = case
    _only_typed_errors(ima.parse_ima_log, data)
    result = _only_typed_errors(ima.verify_ima_log, data, QUOTED[index])
    if result is None:
        return
    # Success is only allowed when what was verified is what was measured
    # (a mutation may be meaningless, e.g. in a violation's name).
    got = [(e.pcr, e.template_data, e.violation) for e in result.entries]
    truth = TRUTH[index]
    assert result.covered == len(truth)
    for (pcr, tdata, violation), (tpcr, ttdata, tviolation) in zip(got,
                                                                   truth):
        assert (pcr, violation) == (tpcr, tviolation)
        assert violation or tdata == ttdata


@SETTINGS
@given(mutated(), st.integers(0, 20))
def test_mutated_tail_from_state(case, split):
    index, data = case
    truth = LOGS[index]
    entries = ima.parse_ima_log(truth)
    split = min(split, len(entries))
    start = ima.replay_ima(entries[:split], [SHA1, SHA256])
    result = _only_typed_errors(ima.verify_ima_log, data, QUOTED[index],
                                start)
    if result is not None:
        assert result.state.pcrs == QUOTED[index]
        assert result.state.entries == len(entries)
