"""The guest side of deep attestation: what runs inside a VM.

``attest.sh`` (next to this module, installed with the package) is the
guest attester: inside a guest with tpm2-tools it quotes the guest's vTPM
over the verifier's nonce with the guest's persistent AK and prints the
evidence as base64 text blocks (a serial console, a log line, an HTTP body:
any text channel carries them). :func:`parse_output` reads those blocks
back on the verifier's side.

Parsing is not trusting: :func:`parse_output` checks the framing only and
returns the raw, *unverified* bytes. Whatever produced the text (the guest,
the host that relayed the console, anyone on the way) is untrusted; the
blobs count only after :func:`trusted_pools.tpm.quote.verify_quote` with the
AK public the verifier recorded and its own nonce.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path

from trusted_pools import exception

__all__ = ["ATTEST_SCRIPT", "BLOCKS", "GuestEvidence", "parse_output"]

ATTEST_SCRIPT = Path(__file__).with_name("attest.sh")

# The blocks attest.sh prints; "eventlog" is optional (a kernel without
# securityfs or a firmware without a log has none).
BLOCKS = ("quote-msg", "quote-sig", "quote-pcrs", "eventlog")
_REQUIRED = ("quote-msg", "quote-sig", "quote-pcrs")
# A console interleaves kernel messages with the attester's lines: inside
# a block only lines that are pure base64 belong to the block.
_BASE64_LINE = re.compile(r"^[A-Za-z0-9+/=]+$")
_MAX_BLOCK = 1 << 20


@dataclass(frozen=True)
class GuestEvidence:
    """Unverified evidence as a guest printed it.

    ``quote`` is TPMS_ATTEST, ``signature`` TPMT_SIGNATURE, ``pcrs`` the
    PCR values file tpm2_quote wrote (read it with
    :func:`trusted_pools.tpm.pcrs.load_pcr_values`), ``eventlog`` the
    firmware's TCG event log or None.
    """

    quote: bytes
    signature: bytes
    pcrs: bytes
    eventlog: bytes | None


def parse_output(text: str) -> GuestEvidence:
    """The evidence blocks in ``text`` (the attester's output, possibly
    with other console lines around and between its lines).

    Raises :class:`~trusted_pools.exception.MalformedEvidence` when the
    attester reported an error, a required block is missing, a block is
    repeated, unterminated or not base64.
    """
    if not isinstance(text, str):
        raise TypeError("text must be str, not %s" % type(text).__name__)
    blocks: dict[str, bytes] = {}
    current: str | None = None
    body: list[str] = []
    error: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if current is None:
            if line.startswith("TP-ATTEST-ERROR "):
                error = line[len("TP-ATTEST-ERROR "):]
            elif line.startswith("TP-ATTEST-BEGIN "):
                current = line[len("TP-ATTEST-BEGIN "):]
                if current not in BLOCKS:
                    raise _malformed("unknown block %r" % current[:40])
                if current in blocks:
                    raise _malformed("block %s appears twice" % current)
                body = []
            continue
        if line == "TP-ATTEST-END " + current:
            try:
                blocks[current] = base64.b64decode("".join(body),
                                                   validate=True)
            except (binascii.Error, ValueError):
                raise _malformed("block %s is not base64" % current) \
                    from None
            current = None
        elif line.startswith("TP-ATTEST-"):
            raise _malformed("block %s is not terminated" % current)
        elif _BASE64_LINE.match(line):
            body.append(line)
            if sum(map(len, body)) > _MAX_BLOCK:
                raise _malformed("block %s is too large" % current)
    if error is not None:
        raise _malformed("the guest attester failed: %s" % error[:500])
    if current is not None:
        raise _malformed("block %s is not terminated" % current)
    missing = [name for name in _REQUIRED if name not in blocks]
    if missing:
        raise _malformed("no %s block" % ", ".join(missing))
    return GuestEvidence(quote=blocks["quote-msg"],
                         signature=blocks["quote-sig"],
                         pcrs=blocks["quote-pcrs"],
                         eventlog=blocks.get("eventlog"))


def _malformed(reason: str) -> exception.TrustedPoolsError:
    return exception.MalformedEvidence(what="guest attester output",
                                       reason=reason)
