"""Cost of full quote verification against the bare signature check.

Subject: ``verify_quote`` (parse TPMS_ATTEST and TPMT_SIGNATURE, pinned
signature check, magic/type/nonce, PCR selection both ways, PCR digest over
24 SHA-256 PCRs). Baseline: ``cryptography`` verifying the same signature
over the same bytes with an already loaded key (loaded from DER, not shared
with the subject). Target ratio: <= 1.3.

Also measured: ``verify_quote_reference``, the general path every
rejection takes (and what verify_quote was before its accept-only fast
path), for the before/after ratio in the same run.

Subject and baseline are measured in alternating batches and the ratio is
the median of the per-batch ratios, so load from other processes on the
shared machine hits both alike.

Run: ``.venv/bin/python -m bench.bench_quote``
"""

from __future__ import annotations

import statistics

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import (
    encode_dss_signature)

from bench._timing import median_seconds, report
from tests import soft_tpm
from trusted_pools.tpm import quote, structures
from trusted_pools.tpm.constants import TPM_ALG

TARGET_RATIO = 1.3
ROUNDS = 31


def _bare_verifier(ak: soft_tpm.SoftAK, attest: bytes, sig_bytes: bytes):
    """The same check with nothing but cryptography."""
    der_key = ak.private_key.public_key().public_bytes(
        serialization.Encoding.DER,
        serialization.PublicFormat.SubjectPublicKeyInfo)
    public_key = serialization.load_der_public_key(der_key)
    sig = structures.parse_signature(sig_bytes)
    if sig.sig_alg == TPM_ALG.ECDSA:
        der = encode_dss_signature(int.from_bytes(sig.r, "big"),
                                   int.from_bytes(sig.s, "big"))
        algorithm = ec.ECDSA(hashes.SHA256())
        return lambda: public_key.verify(der, attest, algorithm)
    raw, pad, h = sig.sig, padding.PKCS1v15(), hashes.SHA256()
    return lambda: public_key.verify(raw, attest, pad, h)


def bench_one(label: str, ak: soft_tpm.SoftAK, number: int) -> float:
    values = soft_tpm.random_pcrs((TPM_ALG.SHA256,), range(24))
    nonce = b"n" * 32
    attest, sig = ak.quote(nonce, values)
    public = structures.load_public(ak.public_bytes)
    quote.verify_quote(public, attest, sig, nonce, values)  # warm caches

    def subject() -> None:
        quote.verify_quote(public, attest, sig, nonce, values)

    reference_public = structures.load_public(ak.public_bytes)

    def reference() -> None:
        quote.verify_quote_reference(reference_public, attest, sig, nonce,
                                     values)

    bare = _bare_verifier(ak, attest, sig)
    bare()
    reference()
    subjects, baselines, references = [], [], []
    for _ in range(ROUNDS):
        baselines.append(median_seconds(bare, number, repeat=1))
        subjects.append(median_seconds(subject, number, repeat=1))
        references.append(median_seconds(reference, number, repeat=1))
    ratio = statistics.median(s / b for s, b in zip(subjects, baselines))
    before = statistics.median(r / b for r, b in zip(references, baselines))
    report("verify_quote %s, 24 x sha256 PCRs" % label,
           statistics.median(subjects), statistics.median(baselines),
           "bare verify")
    report("  reference path (the verifier before issue 15)",
           statistics.median(references), statistics.median(baselines),
           "bare verify")
    print("  %s: median ratio to bare verify %.2f, reference path %.2f"
          % (label, ratio, before))
    return ratio


def main() -> None:
    ratios = {
        "RSA-2048 RSASSA": bench_one(
            "RSA-2048 RSASSA", soft_tpm.SoftAK.rsa(), 500),
        "ECDSA P-256": bench_one(
            "ECDSA P-256", soft_tpm.SoftAK.ecc(ec.SECP256R1), 250),
    }
    for label, ratio in ratios.items():
        print("%-20s median ratio %.2f (target <= %.1f): %s" % (
            label, ratio, TARGET_RATIO,
            "ok" if ratio <= TARGET_RATIO else "OVER"))


if __name__ == "__main__":
    main()
