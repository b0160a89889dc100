"""IMA measurement lists: real keylime logs, generated logs, tampering."""

from __future__ import annotations

import hashlib
import pathlib

import pytest

from tests import ima_gen
from trusted_pools import exception
from trusted_pools.tpm import ima
from trusted_pools.tpm.constants import TPM_ALG

DATA = pathlib.Path(__file__).parents[2] / "data" / "ima" / "keylime"
SHA1, SHA256, SHA384 = int(TPM_ALG.SHA1), int(TPM_ALG.SHA256), \
    int(TPM_ALG.SHA384)
SM3 = 0x0012
FILES = {"ima-log-sha1": "sha1", "ima-log-sha256": "sha256",
         "ima-log-sha384": "sha384", "ima-log-sha512": "sha512",
         "ima-log-sm3_256": "sm3_256", "ima-log-unknown": "unknown"}
# Files whose template hashes are SHA-1 (the legacy list format).
SHA1_LISTS = ["ima-log-sha1", "ima-log-sha256", "ima-log-sha384",
              "ima-log-sha512"]


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def quoted_for(data: bytes, banks=(SHA1, SHA256)) -> dict[int, bytes]:
    return {b: ima_gen.naive_replay(data, {SHA1: "sha1", SHA256: "sha256",
                                           SHA384: "sha384"}[b])
            for b in banks}


# --- the keylime logs --------------------------------------------------------

@pytest.mark.parametrize("name,alg", sorted(FILES.items()))
def test_keylime_logs_parse(name, alg):
    entries = ima.parse_ima_log(read(name), template_hash_alg=(
        SM3 if alg in ("sm3_256", "unknown") else None))
    assert [e.line for e in entries] == [1, 2]
    assert [e.path for e in entries] == ["boot_aggregate", "/data"]
    assert {e.file_hash_alg for e in entries} == {alg}
    assert all(e.template_name == "ima-ng" and e.pcr == 10 for e in entries)
    assert entries[0].is_boot_aggregate and not entries[1].is_boot_aggregate
    hex_digest = read(name).split(b"\n")[1].split(b" ")[3].split(b":")[1]
    assert entries[1].file_hash == bytes.fromhex(hex_digest.decode())


@pytest.mark.parametrize("name", SHA1_LISTS)
def test_keylime_recorded_sha1_template_hashes_match(name):
    entries = ima.parse_ima_log(read(name))
    checked = 0
    for e in entries:
        assert e.template_hash_alg == SHA1
        if e.violation:
            assert e.template_hash == bytes(20)
            continue
        assert hashlib.sha1(e.template_data).digest() == e.template_hash
        checked += 1
    assert checked >= 1


@pytest.mark.parametrize("name", SHA1_LISTS)
def test_keylime_replay_and_verify(name):
    data = read(name)
    state = ima.replay_ima(ima.parse_ima_log(data), [SHA1, SHA256])
    assert state.entries == 2
    assert state.pcrs == quoted_for(data)
    result = ima.verify_ima_log(data, state.pcrs)
    assert result.covered == 2 and result.uncovered == 0
    assert result.state.pcrs == state.pcrs
    assert [e.path for e in result.entries] == ["boot_aggregate", "/data"]
    assert result.boot_aggregate is result.entries[0]


def test_keylime_sm3_list_has_sm3_template_hashes():
    data = read("ima-log-sm3_256")
    entries = ima.parse_ima_log(data, template_hash_alg=SM3)
    assert hashlib.new("sm3", entries[1].template_data).digest() == \
        entries[1].template_hash
    state = ima.replay_ima(entries, [SM3, SHA256])
    result = ima.verify_ima_log(data, state.pcrs, template_hash_alg=SM3)
    assert result.covered == 2
    # Taken as a SHA-256 list its recorded hashes do not match.
    with pytest.raises(exception.IMAEntryInvalid) as err:
        ima.verify_ima_log(data, state.pcrs)
    assert err.value.kwargs["line"] == 2


def test_keylime_unknown_alg_replays_but_recorded_hash_is_foreign():
    # The 'unknown' file reuses line 2's template hash of the sm3 file for
    # different data: it replays (the algorithm need not be known) but its
    # recorded hash is rightly rejected.
    data = read("ima-log-unknown")
    entries = ima.parse_ima_log(data, template_hash_alg=SM3)
    assert len(entries[1].file_hash) == 29
    state = ima.replay_ima(entries, [SHA256])
    assert state.pcrs[SHA256] == ima_gen.naive_replay(data)
    with pytest.raises(exception.IMAEntryInvalid) as err:
        ima.verify_ima_log(data, state.pcrs, template_hash_alg=SM3)
    assert err.value.kwargs["line"] == 2
    result = ima.verify_ima_log(data, state.pcrs, template_hash_alg=SM3,
                                check_template_hashes=False)
    assert result.covered == 2


@pytest.mark.parametrize("name", SHA1_LISTS)
def test_keylime_every_single_byte_change_is_rejected(name):
    data = read(name)
    quoted = quoted_for(data)
    line_of = [data.count(b"\n", 0, i) + 1 for i in range(len(data))]
    violations = {e.line for e in ima.parse_ima_log(data) if e.violation}
    uncovered = 0
    for i in range(len(data) - 1):  # the final newline is optional
        tampered = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
        try:
            result = ima.verify_ima_log(tampered, quoted)
        except exception.TrustedPoolsError as exc:
            err = pytest.ExceptionInfo.from_exception(exc)
        else:
            # Only a violation's algorithm name and path are outside the
            # PCR (the kernel extends 0xff.. for it); the result says so.
            entry = result.entries[line_of[i] - 1]
            assert line_of[i] in violations and entry.violation, i
            uncovered += 1
            continue
        if isinstance(err.value, exception.IMAEntryInvalid):
            assert err.value.kwargs["line"] == line_of[i], (i, err.value)
        else:
            assert isinstance(err.value, (exception.ReplayMismatch,
                                          exception.MalformedEvidence)), i
    assert uncovered <= 20


# --- tampering named by line -------------------------------------------------

def _tamper(data: bytes, line: int, field: int, new: bytes) -> bytes:
    lines = data.split(b"\n")
    parts = lines[line - 1].split(b" ", 4)
    parts[field] = new
    lines[line - 1] = b" ".join(parts)
    return b"\n".join(lines)


@pytest.mark.parametrize("field,new", [
    (3, b"sha256:" + b"ab" * 32),          # file digest
    (4, b"/usr/bin/evil"),                 # path
    (1, b"12" * 20),                       # recorded template hash
    (3, b"sha512:" + b"ab" * 32),          # file hash algorithm name
])
def test_tampered_line_is_named(field, new):
    data = ima_gen.generate_ascii_log(50, seed=1)
    quoted = quoted_for(data, [SHA256])
    tampered = _tamper(data, 37, field, new)
    with pytest.raises(exception.IMAEntryInvalid) as err:
        ima.verify_ima_log(tampered, quoted)
    assert err.value.kwargs["line"] == 37
    assert "37" in str(err.value)


def test_consistent_tamper_fails_replay():
    data = ima_gen.generate_ascii_log(50, seed=2)
    quoted = quoted_for(data, [SHA256])
    fields = [b"sha256:\0" + b"\x11" * 32, b"/usr/bin/evil\0"]
    line = ima_gen.ascii_line(10, "ima-ng", fields)  # recorded hash fixed up
    lines = data.split(b"\n")
    lines[19] = line.rstrip(b"\n")
    with pytest.raises(exception.ReplayMismatch) as err:
        ima.verify_ima_log(b"\n".join(lines), quoted)
    assert err.value.kwargs == {"log": "IMA log", "bank": "sha256",
                                "pcrs": [10]}


# --- templates, formats, rules -----------------------------------------------

@pytest.mark.parametrize("template", ["ima-ng", "ima-sig", "ima-buf", "ima"])
def test_templates_ascii_and_binary_agree(template):
    data = ima_gen.generate_ascii_log(60, template=template, seed=3,
                                      violation_every=17)
    binary = ima_gen.ascii_to_binary(data)
    text_entries = ima.parse_ima_log(data)
    bin_entries = ima.parse_ima_log(binary)
    assert ima.parse_ima_log(binary, fmt="binary") == bin_entries
    assert [(e.template_data, e.path, e.file_hash, e.sig, e.buf,
             e.violation) for e in text_entries] == \
        [(e.template_data, e.path, e.file_hash, e.sig, e.buf, e.violation)
         for e in bin_entries]
    assert sum(e.violation for e in text_entries) == 3
    quoted = quoted_for(data)
    for log in (data, binary):
        assert ima.replay_ima(ima.parse_ima_log(log),
                              [SHA1, SHA256]).pcrs == quoted
        result = ima.verify_ima_log(log, quoted)
        assert result.covered == 60
    if template == "ima-sig":
        assert any(e.sig for e in text_entries)
        assert any(e.sig == b"" for e in text_entries)
    if template == "ima-buf":
        assert all(e.buf for e in text_entries)


@pytest.mark.parametrize("name", sorted(FILES))
def test_keylime_binary_conversion_replays_the_same(name):
    data = read(name)
    binary = ima_gen.ascii_to_binary(data)
    th = SM3 if name.endswith(("sm3_256", "unknown")) else None
    a = ima.replay_ima(ima.parse_ima_log(data, template_hash_alg=th),
                       [SHA1, SHA256])
    b = ima.replay_ima(ima.parse_ima_log(binary, template_hash_alg=th),
                       [SHA1, SHA256])
    assert a == b


def test_ima_template_name_padding_rule():
    fields = [b"\x01" * 20, b"/bin/sh\0"]
    entry = ima.parse_ima_log(ima_gen.ascii_line(10, "ima", fields))[0]
    assert entry.template_data == b"\x01" * 20 + b"/bin/sh" + bytes(249)
    assert len(entry.template_data) == 276
    assert hashlib.sha1(entry.template_data).digest() == entry.template_hash


def test_ima_sig_line_with_trailing_space_stripped():
    fields = [b"sha256:\0" + b"\x02" * 32, b"/bin/a b\0", b""]
    line = ima_gen.ascii_line(10, "ima-sig", fields)
    assert line.endswith(b"a b \n")
    fields[1] = b"/bin/ab\0"
    stripped = ima_gen.ascii_line(10, "ima-sig", fields).rstrip(b" \n")
    for log, path in ((line, "/bin/a b"), (stripped, "/bin/ab")):
        entry = ima.parse_ima_log(log)[0]
        assert entry.path == path and entry.sig == b""
        assert hashlib.sha1(entry.template_data).digest() == \
            entry.template_hash


def test_violation_extends_ff_and_sha1_padded_rule_is_opt_in():
    data = ima_gen.generate_ascii_log(30, seed=4, violation_every=7)
    entries = ima.parse_ima_log(data)
    assert [e.line for e in entries if e.violation] == [8, 15, 22, 29]
    assert ima.replay_ima(entries, [SHA256]).pcrs[SHA256] == \
        ima_gen.naive_replay(data)
    # Kernels before 5.1: SHA-1 template hash (0xff*20) zero padded.
    pcr = bytes(32)
    for e in entries:
        th = b"\xff" * 20 if e.violation else \
            hashlib.sha1(e.template_data).digest()
        pcr = hashlib.sha256(pcr + th + bytes(12)).digest()
    with pytest.raises(exception.ReplayMismatch):
        ima.verify_ima_log(data, {SHA256: pcr})
    result = ima.verify_ima_log(data, {SHA256: pcr}, allow_sha1_padded=True)
    assert result.sha1_padded and result.covered == 30
    assert ima.replay_ima(entries, [SHA256], sha1_padded=True).pcrs == {
        SHA256: pcr}


def test_other_pcr_needs_its_quote():
    data = ima_gen.generate_ascii_log(5, seed=5) + \
        ima_gen.generate_ascii_log(3, seed=6, pcr=11).split(b"\n", 1)[1]
    entries = ima.parse_ima_log(data)
    assert [e.pcr for e in entries] == [10] * 5 + [11] * 2
    state = ima.replay_ima(entries, [SHA256])
    with pytest.raises(exception.IMAEntryInvalid) as err:
        ima.verify_ima_log(data, state.pcrs)
    assert err.value.kwargs["line"] == 6
    quoted = {(SHA256, 10): state.pcrs[SHA256],
              (SHA256, 11): state.other_pcrs[(SHA256, 11)]}
    result = ima.verify_ima_log(data, quoted)
    assert result.covered == 7
    assert result.state.other_pcrs == state.other_pcrs


# --- incremental and prefix --------------------------------------------------

def test_incremental_equals_full():
    data = ima_gen.generate_ascii_log(200, seed=7, violation_every=50)
    lines = data.splitlines(keepends=True)
    head, tail = b"".join(lines[:120]), b"".join(lines[120:])
    full = quoted_for(data)
    first = ima.verify_ima_log(head, quoted_for(head))
    assert first.state.entries == 120
    # whole log, offset remembered
    a = ima.verify_ima_log(data, full, first.state)
    # only the tail
    b = ima.verify_ima_log(tail, full, first.state, tail=True)
    # whole log, state saved without its offset (entries counted)
    saved = ima.ReplayState.from_dict(dict(first.state.to_dict(),
                                           offset=None))
    c = ima.verify_ima_log(data, full, saved)
    for result in (a, b, c):
        assert result.state.entries == 200 and result.covered == 80
        assert result.state.pcrs == full
        assert [e.line for e in result.entries] == list(range(121, 201))
    assert a.state.offset == b.state.offset == c.state.offset == len(data)
    # replay_ima: from a saved state, whole list or tail
    entries = ima.parse_ima_log(data)
    mid = ima.replay_ima(entries[:120], [SHA1, SHA256])
    assert ima.replay_ima(entries, [SHA1, SHA256], mid).pcrs == full
    assert ima.replay_ima(ima.parse_ima_log(tail, start_line=121),
                          [SHA1, SHA256], mid).pcrs == full
    with pytest.raises(exception.MalformedEvidence):
        ima.replay_ima(entries[130:], [SHA256], mid)


def test_incremental_binary():
    data = ima_gen.ascii_to_binary(ima_gen.generate_ascii_log(40, seed=8))
    entries = ima.parse_ima_log(data)
    head_state = ima.replay_ima(entries[:25], [SHA256])
    first = ima.verify_ima_log(data, head_state.pcrs)  # prefix of 25
    assert first.covered == 25 and first.uncovered == 15
    full = ima.replay_ima(entries, [SHA256]).pcrs
    second = ima.verify_ima_log(data, full, first.state)
    assert second.covered == 15 and second.state.pcrs == full
    third = ima.verify_ima_log(data, full, ima.ReplayState(
        25, head_state.pcrs))  # no offset: entries are skipped by parsing
    assert third.state == second.state


def test_longest_prefix_matching_the_quote():
    data = ima_gen.generate_ascii_log(100, seed=9)
    head = b"".join(data.splitlines(keepends=True)[:60])
    result = ima.verify_ima_log(data, quoted_for(head))
    assert (result.covered, result.uncovered) == (60, 40)
    assert result.state.entries == 60 and len(result.entries) == 60
    nothing_new = ima.verify_ima_log(data, quoted_for(head), result.state)
    assert nothing_new.covered == 0 and nothing_new.uncovered == 40
    rest = ima.verify_ima_log(data, quoted_for(data), result.state)
    assert rest.covered == 40 and rest.state.entries == 100


def test_banks_must_agree_on_the_prefix():
    data = ima_gen.generate_ascii_log(20, seed=10)
    head = b"".join(data.splitlines(keepends=True)[:10])
    quoted = {SHA1: quoted_for(head)[SHA1], SHA256: quoted_for(data)[SHA256]}
    with pytest.raises(exception.ReplayMismatch):
        ima.verify_ima_log(data, quoted)


def test_shorter_log_than_state():
    data = ima_gen.generate_ascii_log(10, seed=11)
    state = ima.verify_ima_log(data, quoted_for(data)).state
    short = b"".join(data.splitlines(keepends=True)[:5])
    with pytest.raises(exception.MalformedEvidence):
        ima.verify_ima_log(short, quoted_for(data),
                           ima.ReplayState(10, state.pcrs))


# --- malformed input ---------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    b"hello",
    b"10 " + b"ab" * 20,
    b"10 " + b"ab" * 20 + b" ima-ng",
    b"10 " + b"ab" * 20 + b" ima-ng sha256:abc /x",        # odd hex
    b"10 " + b"ab" * 19 + b" ima-ng sha256:ab /x",         # hash size
    b"99 " + b"ab" * 20 + b" ima-ng sha256:ab /x",         # PCR
    b"10 " + b"ab" * 20 + b" my-template a b",             # template
    b"10 " + b"ab" * 20 + b" ima-ng :ab /x",               # no alg
    b"",                                                   # empty line
])
def test_garbled_line_named(garbage):
    data = ima_gen.generate_ascii_log(8, seed=12)
    lines = data.split(b"\n")
    lines[4] = garbage
    bad = b"\n".join(lines)
    with pytest.raises(exception.IMAEntryInvalid) as err:
        ima.parse_ima_log(bad)
    assert err.value.kwargs["line"] == 5
    with pytest.raises(exception.IMAEntryInvalid) as err:
        ima.verify_ima_log(bad, quoted_for(data))
    assert err.value.kwargs["line"] == 5


def test_truncated_ascii_line():
    data = ima_gen.generate_ascii_log(8, seed=13)
    lines = data.split(b"\n")
    lines[2] = lines[2][:70]
    with pytest.raises(exception.IMAEntryInvalid) as err:
        ima.verify_ima_log(b"\n".join(lines), quoted_for(data))
    assert err.value.kwargs["line"] == 3


def test_truncated_binary():
    data = ima_gen.ascii_to_binary(ima_gen.generate_ascii_log(8, seed=14))
    sizes = [len(ima_gen.ascii_to_binary(line + b"\n")) for line in
             ima_gen.generate_ascii_log(8, seed=14).splitlines()]
    cut = sum(sizes[:5]) + 30
    with pytest.raises(exception.TruncatedEvidence) as err:
        ima.parse_ima_log(data[:cut])
    assert err.value.kwargs["line"] == 6
    # Verification takes the whole entries and leaves the partly read one
    # for the next round (the agent read the list while it grew).
    text = ima_gen.generate_ascii_log(8, seed=14)
    quoted = {SHA256: ima_gen.naive_replay(
        b"".join(text.splitlines(keepends=True)[:5]))}
    result = ima.verify_ima_log(data[:cut], quoted, fmt="binary")
    assert (result.covered, result.uncovered) == (5, 0)
    assert result.incomplete == 30 and result.end == sum(sizes[:5])


def test_size_limit():
    data = ima_gen.generate_ascii_log(20, seed=15)
    with pytest.raises(exception.EvidenceTooLarge):
        ima.parse_ima_log(data, max_size=len(data) - 1)
    with pytest.raises(exception.EvidenceTooLarge):
        ima.verify_ima_log(data, quoted_for(data), max_size=100)
    assert len(ima.parse_ima_log(data, max_size=len(data))) == 20


def test_str_input_and_max_entries():
    data = ima_gen.generate_ascii_log(20, seed=16)
    assert ima.parse_ima_log(data.decode()) == ima.parse_ima_log(data)
    assert [e.line for e in ima.parse_ima_log(data, max_entries=5,
                                              start_line=11)] == \
        list(range(11, 16))


def test_fast_path_matches_strict_parser():
    data = ima_gen.generate_ascii_log(300, seed=17, violation_every=13)
    data += ima_gen.generate_ascii_log(5, template="ima-sig", seed=18)
    lines = data.splitlines()
    batch = ima._ascii_batch(lines, 1, None)
    strict = ima.parse_ima_log(data)
    assert batch.datas == [e.template_data for e in strict]
    assert batch.violations == [e.line - 1 for e in strict if e.violation]


def test_bad_arguments():
    data = ima_gen.generate_ascii_log(3, seed=19)
    with pytest.raises(exception.InvalidParameterValue):
        ima.verify_ima_log(data, {})
    with pytest.raises(exception.InvalidParameterValue):
        ima.verify_ima_log(data, {SHA256: b"short"})
    with pytest.raises(exception.UnsupportedAlgorithm):
        ima.verify_ima_log(data, {0x99: bytes(32)})
    with pytest.raises(exception.InvalidParameterValue):
        ima.verify_ima_log(data, quoted_for(data, [SHA256]),
                           ima.ReplayState.initial([SHA1]))
    with pytest.raises(exception.InvalidParameterValue):
        ima.ReplayState(1, {SHA256: bytes(20)})
    with pytest.raises(exception.InvalidParameterValue):
        ima.ReplayState.from_dict({"entries": "x"})
    state = ima.ReplayState(3, {SHA256: bytes(32)}, {(SHA1, 11): bytes(20)},
                            offset=9, fmt="ascii")
    assert ima.ReplayState.from_dict(state.to_dict()) == state


# --- boot_aggregate ----------------------------------------------------------

def test_boot_aggregate_rule():
    pcrs = {i: hashlib.sha256(b"pcr%d" % i).digest() for i in range(10)}
    sha1_pcrs = {i: hashlib.sha1(b"pcr%d" % i).digest() for i in range(10)}
    expected = hashlib.sha256(b"".join(pcrs[i] for i in range(10))).digest()
    assert ima.compute_boot_aggregate(pcrs, SHA256) == expected
    assert ima.compute_boot_aggregate(sha1_pcrs, SHA1) == hashlib.sha1(
        b"".join(sha1_pcrs[i] for i in range(8))).digest()
    assert ima.compute_boot_aggregate(pcrs, SHA256, include_pcr8_9=False) \
        == hashlib.sha256(b"".join(pcrs[i] for i in range(8))).digest()
    with pytest.raises(exception.InvalidParameterValue):
        ima.compute_boot_aggregate({0: bytes(32)}, SHA256)

    line = ima_gen.ascii_line(10, "ima-ng", [b"sha256:\0" + expected,
                                             b"boot_aggregate\0"])
    data = line + b"".join(
        ima_gen.generate_ascii_log(5, seed=20).splitlines(True)[1:])
    result = ima.verify_ima_log(data, quoted_for(data, [SHA256]))
    entry = result.boot_aggregate
    assert entry is not None and entry.file_hash == expected
    assert ima.boot_aggregate_matches(entry, {SHA256: pcrs})
    changed = {**pcrs, 9: bytes(32)}
    assert not ima.boot_aggregate_matches(entry, {SHA256: changed})
    assert not ima.boot_aggregate_matches(entry, {SHA1: sha1_pcrs})
    assert not ima.boot_aggregate_matches(result.entries[1],
                                          {SHA256: pcrs})
