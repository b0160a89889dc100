"""Binary IMA lists as agents send them: tampering named by entry number,
partly read tails left pending, entries found by walking length fields,
names with any byte; ascii entries whose name holds a newline regrouped."""

from __future__ import annotations

import hashlib

import pytest

from tests import ima_gen
from trusted_pools import exception
from trusted_pools.agent.attester import IMAListReader
from trusted_pools.tpm import ima

SHA256 = 0x000B
ODD = b"/tmp/a\nb \t\xff\x01 c"


def _fields(i: int, name: bytes | None = None) -> list[bytes]:
    digest = hashlib.sha256(b"file %d" % i).digest()
    return [b"sha256:\0" + digest, (name or b"/usr/bin/f%d" % i) + b"\0"]


def _log(count: int, odd_at: int | None = None) -> tuple[list[bytes],
                                                          list[bytes]]:
    """(binary entries, template datas); entry ``odd_at`` has ODD name."""
    entries, datas = [], []
    for i in range(count):
        fields = _fields(i, ODD if i == odd_at else None)
        entries.append(ima_gen.binary_entry(10, "ima-ng", fields))
        datas.append(ima_gen.template_data("ima-ng", fields))
    return entries, datas


def _pcr(datas: list[bytes]) -> dict[int, bytes]:
    value = bytes(32)
    for data in datas:
        value = hashlib.sha256(value + hashlib.sha256(data).digest()).digest()
    return {SHA256: value}


def test_odd_name_in_binary_list_is_one_entry():
    entries, datas = _log(6, odd_at=3)
    result = ima.verify_ima_log(b"".join(entries), _pcr(datas), fmt="binary")
    assert result.covered == 6
    assert result.entries[3].path == ODD.decode("utf-8", "surrogateescape")
    assert result.entry_keys[3].endswith(entries[3])


@pytest.mark.parametrize("what,locate", [
    ("file digest", lambda e: len(e) - 20),
    ("name", lambda e: len(e) - 3),
    ("recorded template hash", lambda e: 6),
])
def test_tampered_binary_entry_is_named_by_number(what, locate):
    entries, datas = _log(8)
    bad = bytearray(entries[4])
    bad[locate(bad)] ^= 0x01
    data = b"".join(entries[:4]) + bytes(bad) + b"".join(entries[5:])
    with pytest.raises(exception.IMAEntryInvalid) as err:
        ima.verify_ima_log(data, _pcr(datas), fmt="binary")
    assert err.value.kwargs["line"] == 5, what


def test_tampered_template_name_is_named_or_judged():
    entries, datas = _log(8)
    # ima-ng -> ima-sg: a template no parser knows. The template name is
    # in no hash (the kernel's rule), so the replay holds, but the entry
    # has no name or digest: appraisal refuses it ("carries no file name").
    renamed = entries[4].replace(b"ima-ng", b"ima-sg", 1)
    data = b"".join(entries[:4]) + renamed + b"".join(entries[5:])
    result = ima.verify_ima_log(data, _pcr(datas), fmt="binary")
    assert result.entries[4].path is None
    assert result.entries[4].template_name == "ima-sg"
    # ima-ng -> a length that misframes everything after: named.
    broken = bytearray(entries[4])
    broken[24] = 0  # template name length 6 -> 0
    data = b"".join(entries[:4]) + bytes(broken) + b"".join(entries[5:])
    with pytest.raises(exception.IMAEntryInvalid) as err:
        ima.verify_ima_log(data, _pcr(datas), fmt="binary")
    assert err.value.kwargs["line"] == 5


def test_partly_read_tail_waits_for_the_rest():
    entries, datas = _log(10)
    start = ima.verify_ima_log(b"".join(entries[:4]), _pcr(datas[:4]),
                               fmt="binary").state
    # The agent read entries 5-8 and half of 9; the quote covers 1-7.
    tail = b"".join(entries[4:8]) + entries[8][:30]
    result = ima.verify_ima_log(tail, _pcr(datas[:7]), start, fmt="binary",
                                tail=True)
    assert (result.covered, result.uncovered, result.incomplete) == (3, 1, 30)
    # What the conductor keeps: the whole uncovered entry, not the half.
    pending = tail[result.end:len(tail) - result.incomplete]
    assert pending == entries[7]
    # Next round: the agent resends from entry 9, complete.
    again = ima.verify_ima_log(pending + b"".join(entries[8:]),
                               _pcr(datas), result.state, fmt="binary",
                               tail=True)
    assert (again.covered, again.state.entries) == (3, 10)


def test_walk_finds_entry_n_without_parsing():
    entries, _ = _log(20, odd_at=5)
    data = b"".join(entries)
    walked, offset = ima.walk_binary_entries(data, 0, 7)
    assert (walked, offset) == (7, len(b"".join(entries[:7])))
    assert ima.walk_binary_entries(data + entries[0][:10]) == (20, len(data))
    with pytest.raises(exception.IMAEntryInvalid) as err:
        ima.walk_binary_entries(data[:24] + b"\0\0\0\0" + data[28:])
    assert err.value.kwargs["line"] == 1


def test_agent_reader_counts_entries_and_reuses_offsets(tmp_path,
                                                        monkeypatch):
    path = tmp_path / "binary_runtime_measurements"
    entries, _ = _log(30, odd_at=2)
    path.write_bytes(b"".join(entries[:10]))
    reader = IMAListReader(str(path))
    first = reader.tail(0)
    assert (first.start, first.count, first.fmt) == (0, 10, "binary")
    with open(path, "ab") as handle:
        handle.write(b"".join(entries[10:25]) + entries[25][:17])
    walked = []
    real = ima.count_entries

    def counting(data, fmt, **kw):
        walked.append(len(data) - kw.get("offset", 0))
        return real(data, fmt, **kw)

    monkeypatch.setattr(ima, "count_entries", counting)
    second = reader.tail(10)
    # Read from the remembered offset of entry 11, not from the start.
    assert second.data == b"".join(entries[10:25]) + entries[25][:17]
    assert second.count == 15 and max(walked) < len(b"".join(entries[5:]))
    # Rebooted: a shorter, different list; everything from entry 1.
    path.write_bytes(b"".join(_log(3)[0]))
    rebooted = reader.tail(25)
    assert (rebooted.start, rebooted.count) == (0, 3)


def test_ascii_entry_with_newline_name_is_regrouped():
    fields = [_fields(i, ODD if i == 2 else None) for i in range(5)]
    text = b"".join(ima_gen.ascii_line(10, "ima-ng", f) for f in fields)
    datas = [ima_gen.template_data("ima-ng", f) for f in fields]
    assert text.count(b"\n") == 6
    result = ima.verify_ima_log(text, _pcr(datas), fmt="ascii")
    assert result.covered == 5
    assert result.entries[2].path == ODD.decode("utf-8", "surrogateescape")
    assert ima.count_entries(text, "ascii") == (5, len(text))
