"""The evidence message an agent sends: round trip, and nothing but typed
errors for whatever else arrives on the bus."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from trusted_pools import exception
from trusted_pools.protocol import evidence as evidence_mod
from trusted_pools.protocol.evidence import Evidence, IMATail, Limits

SHA256 = 0x000B


def _evidence(**changes) -> Evidence:
    values = dict(host="compute-1", quote=b"\xffTCG" + bytes(60),
                  signature=b"\x00\x18" + bytes(70),
                  pcrs={SHA256: {i: bytes([i]) * 32 for i in range(24)}},
                  epoch_id="7-abcd", event_log=b"log bytes",
                  event_log_digest=hashlib.sha256(b"log bytes").hexdigest(),
                  ima=IMATail(5, b"10 abc ima-ng sha256:00 /x\n"))
    values.update(changes)
    return Evidence(**values)


def test_round_trip_keeps_every_field():
    original = _evidence()
    parsed = Evidence.from_wire(original.to_wire())
    assert parsed.quote == original.quote
    assert parsed.pcrs == original.pcrs
    assert parsed.ima == original.ima
    assert parsed.event_log == original.event_log
    assert parsed.digest() == original.digest()


def test_event_log_digest_is_computed_not_trusted():
    wire = _evidence().to_wire()
    wire["event_log_digest"] = "00" * 32
    parsed = Evidence.from_wire(wire)
    assert parsed.event_log_digest != "00" * 32


@pytest.mark.parametrize("field,value", [
    ("version", 3), ("version", True), ("host", ""), ("host", 5),
    ("quote", "%%%"),
    ("quote", ""), ("pcrs", {}), ("pcrs", {"md5": {}}),
    ("pcrs", {"sha256": {"24": "00" * 32}}),
    ("pcrs", {"sha256": {"0": "00" * 20}}), ("ima", {"start": -1}),
    ("ima", {"start": True, "data": ""}), ("event_log_digest", "xyz"),
])
def test_each_malformed_field_is_named(field, value):
    wire = _evidence().to_wire()
    wire[field] = value
    with pytest.raises(exception.MalformedEvidence):
        Evidence.from_wire(wire)


def test_over_the_limit_is_rejected_before_decoding():
    wire = _evidence().to_wire()
    wire["event_log"] = base64.b64encode(bytes(5000)).decode()
    with pytest.raises(exception.EvidenceTooLarge):
        Evidence.from_wire(wire, Limits(max_event_log=1000))


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([
    "version", "host", "epoch_id", "quote", "signature", "pcrs",
    "event_log", "event_log_digest", "ima"]), _json))
def test_arbitrary_messages_give_evidence_or_a_typed_error(wire):
    try:
        Evidence.from_wire(wire)
    except exception.TrustedPoolsError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["quote", "signature", "host", "epoch_id", "ima",
                        "pcrs", "event_log"]), _json)
def test_one_field_replaced_gives_evidence_or_a_typed_error(field, value):
    wire = _evidence().to_wire()
    wire[field] = value
    try:
        Evidence.from_wire(wire)
    except exception.TrustedPoolsError:
        pass


def test_binary_ima_tail_says_its_format_and_round_trips():
    binary = IMATail(7, b"\x0a\x00\x00\x00" + bytes(40), "binary",
                     SHA256, count=1)
    original = _evidence(ima=binary)
    wire = original.to_wire()
    assert wire["version"] == 2
    assert wire["ima"]["format"] == "binary"
    assert wire["ima"]["template_hash_alg"] == "sha256"
    assert "count" not in wire["ima"]  # the verifier counts for itself
    parsed = Evidence.from_wire(wire)
    assert parsed.ima == binary and parsed.ima.count is None
    # The format is part of what the evidence digest covers.
    assert parsed.digest() == original.digest()
    assert parsed.digest() != _evidence(
        ima=IMATail(7, binary.data, "ascii")).digest()


def test_version_1_messages_of_older_agents_are_ascii():
    wire = _evidence().to_wire()
    wire["version"] = 1
    del wire["ima"]["format"]
    parsed = Evidence.from_wire(wire)
    assert parsed.ima.fmt == "ascii" and parsed.ima.start == 5
    # ... and cannot claim a format they did not have.
    wire["ima"]["format"] = "binary"
    with pytest.raises(exception.MalformedEvidence, match="version 2"):
        Evidence.from_wire(wire)


@pytest.mark.parametrize("ima,reason", [
    ({"start": 0, "data": ""}, "ima.format"),
    ({"start": 0, "data": "", "format": "xml"}, "ima.format"),
    ({"start": 0, "data": "", "format": "ascii",
      "template_hash_alg": "sha256"}, "binary list only"),
    ({"start": 0, "data": "", "format": "binary",
      "template_hash_alg": "md4"}, "no known hash"),
    ({"start": 0, "data": "", "format": "binary", "lines": 3},
     "unknown keys lines"),
])
def test_ima_format_fields_are_strict(ima, reason):
    wire = _evidence().to_wire()
    wire["ima"] = ima
    with pytest.raises(exception.MalformedEvidence, match=reason):
        Evidence.from_wire(wire)


# --- the PCR map's parser against the one it replaced (issue 15) -------------

def _reference_pcrs(value):
    """evidence._pcrs before issue 15 (a hex check, then a second decode)."""
    from collections.abc import Mapping
    from trusted_pools.tpm import constants
    if not isinstance(value, Mapping) or not value:
        raise evidence_mod._malformed("pcrs must map bank names to PCR "
                                      "values")
    pcrs = {}
    for name, bank in value.items():
        try:
            alg = constants.hash_by_name(str(name))
        except exception.UnsupportedAlgorithm:
            raise evidence_mod._malformed("unknown PCR bank %r" % (name,)
                                          ) from None
        if not isinstance(bank, Mapping) or len(bank) > 24:
            raise evidence_mod._malformed("bank %s must map up to 24 PCRs"
                                          % alg.name)
        pcrs[alg.alg] = {}
        for index, digest in bank.items():
            if not (isinstance(index, str) and index.isdigit()
                    and int(index) < 24):
                raise evidence_mod._malformed("PCR index %r out of range"
                                              % (index,))
            if not evidence_mod._is_hex(digest, alg.digest_size * 2):
                raise evidence_mod._malformed(
                    "PCR %s of bank %s is not a %d-byte hex digest"
                    % (index, alg.name, alg.digest_size))
            pcrs[alg.alg][int(index)] = bytes.fromhex(digest)
    return pcrs


def _pcrs_outcome(fn, value):
    try:
        return ("ok", fn(value))
    except exception.TrustedPoolsError as exc:
        return ("error", type(exc), str(exc))


_PCR_KEYS = st.one_of(st.sampled_from([str(i) for i in range(26)]),
                      st.sampled_from(["07", "٣", "-1", "", " 1", "1.0"]),
                      st.integers(0, 30))
_PCR_VALUES = st.one_of(
    st.binary(min_size=32, max_size=32).map(bytes.hex),
    st.binary(min_size=20, max_size=20).map(bytes.hex),
    st.text(alphabet="0123456789abcdefABCDEF xg", min_size=62,
            max_size=66),
    st.none(), st.integers())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["sha256", "sha1", "SHA256", "md5"]),
                       st.dictionaries(_PCR_KEYS, _PCR_VALUES, max_size=26),
                       min_size=1, max_size=2))
def test_pcr_map_parser_same_as_before(value):
    assert _pcrs_outcome(evidence_mod._pcrs, value) == \
        _pcrs_outcome(_reference_pcrs, value)
