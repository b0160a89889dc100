"""trusted_pools.guest.parse_output: framing only, strict about it."""

from __future__ import annotations

import base64

import pytest

from trusted_pools import exception
from trusted_pools.guest import parse_output


def _block(name: str, data: bytes, width: int = 76) -> str:
    text = base64.b64encode(data).decode()
    lines = [text[i:i + width] for i in range(0, len(text), width)] or [""]
    return "TP-ATTEST-BEGIN %s\n%s\nTP-ATTEST-END %s\n" % (
        name, "\n".join(lines), name)


GOOD = (_block("quote-msg", b"\xffTCG" + b"m" * 100)
        + _block("quote-sig", b"s" * 70)
        + _block("quote-pcrs", b"p" * 300)
        + "TP-ATTEST-DONE 0\n")


def test_blocks_come_back_with_console_noise_around_and_inside():
    noisy = GOOD.replace("TP-ATTEST-BEGIN quote-pcrs\n",
                         "[    1.234567] random: crng init done\n"
                         "TP-ATTEST-BEGIN quote-pcrs\n"
                         "[    1.300000] tpm tpm0: something\n")
    evidence = parse_output("OVMF banner\r\n" + noisy + "reboot: Power down")
    assert evidence.quote == b"\xffTCG" + b"m" * 100
    assert evidence.signature == b"s" * 70
    assert evidence.pcrs == b"p" * 300
    assert evidence.eventlog is None


def test_event_log_block_is_optional_and_returned():
    text = GOOD.replace("TP-ATTEST-DONE 0", _block("eventlog", b"E" * 9)
                        + "TP-ATTEST-DONE 0")
    assert parse_output(text).eventlog == b"E" * 9


@pytest.mark.parametrize("text, reason", [
    ("", "no quote-msg"),
    (GOOD.replace(_block("quote-sig", b"s" * 70), ""), "no quote-sig"),
    (GOOD + _block("quote-msg", b"x"), "appears twice"),
    (GOOD.replace("TP-ATTEST-END quote-sig\n", ""), "not terminated"),
    (GOOD + "TP-ATTEST-BEGIN quote-msg\nAAAA\n", "appears twice"),
    (_block("quote-msg", b"x") + "TP-ATTEST-BEGIN quote-sig\nAAAA\n",
     "not terminated"),
    (GOOD.replace("quote-pcrs", "kernel-cmdline"), "unknown block"),
    ("TP-ATTEST-BEGIN quote-msg\nAAA\nTP-ATTEST-END quote-msg\n",
     "not base64"),
    (GOOD + "TP-ATTEST-ERROR tpm2_quote failed: 0x18b\n",
     "tpm2_quote failed: 0x18b"),
])
def test_malformed_output_is_refused(text, reason):
    with pytest.raises(exception.MalformedEvidence, match=reason):
        parse_output(text)


def test_oversized_block_is_refused():
    huge = "TP-ATTEST-BEGIN quote-msg\n" + ("A" * 76 + "\n") * 15000
    with pytest.raises(exception.MalformedEvidence, match="too large"):
        parse_output(huge)


def test_bytes_are_a_type_error():
    with pytest.raises(TypeError):
        parse_output(GOOD.encode())
