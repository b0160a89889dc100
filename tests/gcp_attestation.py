"""The real attestation recorded from a GCP shielded VM (go-attestation),
loaded once and shared by the tests that need it."""

from __future__ import annotations

import base64
import functools
import json
import pathlib
from dataclasses import dataclass

DATA = pathlib.Path(__file__).parent / "data"
PATH = DATA / "quote/go-attestation/windows_gcp_shielded_vm.json"
_GO_HASH_TO_TPM = {3: 0x0004, 4: 0x000B}  # Go crypto.Hash -> TPM_ALG_ID


@dataclass(frozen=True)
class GCPAttestation:
    ak_public: bytes  # TPMT_PUBLIC
    quote: bytes  # TPMS_ATTEST
    signature: bytes  # TPMT_SIGNATURE
    nonce: bytes
    pcrs: dict[int, dict[int, bytes]]  # TPM_ALG_ID -> index -> value
    event_log: bytes


@functools.lru_cache(maxsize=1)
def load() -> GCPAttestation:
    record = json.loads(PATH.read_text())
    pcrs: dict[int, dict[int, bytes]] = {}
    for entry in record["Log"]["PCRs"]:
        bank = pcrs.setdefault(_GO_HASH_TO_TPM[entry["DigestAlg"]], {})
        bank[entry["Index"]] = base64.b64decode(entry["Digest"])
    return GCPAttestation(
        ak_public=base64.b64decode(record["AK"]["Public"]),
        quote=base64.b64decode(record["Quote"]["Quote"]),
        signature=base64.b64decode(record["Quote"]["Signature"]),
        nonce=base64.b64decode(record["Quote"]["Nonce"]),
        pcrs=pcrs,
        event_log=base64.b64decode(record["Log"]["Raw"]))
