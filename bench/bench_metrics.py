"""What the conductor's Prometheus hooks add to one attestation.

Subject: the metric work one steady attestation does in the conductor
(three phase timings taken with ``perf_counter`` and observed into the
latency histogram: quote, ima, appraisal; one verdict counted; the empty
rejection tuple walked), on a :class:`ConductorMetrics` with its own
registry, as the manager calls it.

Baseline, measured in the same run: the irreducible crypto of one
attestation (an ECDSA P-256 quote signature check and an Ed25519 verdict
signature). The ratio is the share the metrics add to the cheapest
possible attestation; a real one also replays IMA entries and writes the
database, so the true share is smaller.

Run: .venv/bin/python -m bench.bench_metrics
"""

from __future__ import annotations

import os
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bench._timing import median_seconds, report
from trusted_pools.conductor import metrics as metrics_mod


def _baseline() -> float:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    message = os.urandom(145)
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    signer = ed25519.Ed25519PrivateKey.generate()
    claims = os.urandom(600)

    def one() -> None:
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        signer.sign(claims)

    return median_seconds(one, number=500, repeat=7)


def _subject() -> float:
    metrics = metrics_mod.ConductorMetrics()
    statuses = ("trusted",)

    def one() -> None:
        for phase in ("quote", "ima", "appraisal"):
            started = time.perf_counter()
            metrics.observe(phase, time.perf_counter() - started)
        metrics.rejected_types(())
        metrics.recorded(statuses)

    return median_seconds(one, number=2000, repeat=7)


def main() -> None:
    baseline = _baseline()
    subject = _subject()
    report("metric hooks per attestation", subject, baseline,
           "quote verify + verdict signature")


if __name__ == "__main__":
    main()
