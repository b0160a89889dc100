"""Signed attestation results: sign/verify throughput, and the cost of our
parsing and checks over the bare signature operation.

Run: ``.venv/bin/python -m bench.bench_results``.

For each algorithm (ES256, EdDSA) it reports median times and rates for

* ``sign_verdict`` (ResultSigner.sign: claims -> canonical JSON -> JWS
  made by PyJWT's ``PyJWS.encode``)
  against the bare cryptography signature of the same signing input;
* ``verify_result`` (shape and header checks, PyJWT's
  ``PyJWS.decode_complete`` with the pinned algorithm, claim checks, Verdict
  construction) against the bare cryptography verify of the same bytes
  (for ES256 the DER signature is prepared beforehand, so the baseline is
  the pure OpenSSL cost).

The ratios are the overhead of everything that is not the signature.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils

from bench._timing import median_seconds, report
import jwt

from trusted_pools.protocol import keystore, results
from trusted_pools.protocol import verdict as vmod
from trusted_pools.protocol.levels import AssuranceLevel, Outcome, Rung

NOW = 1_700_000_000
NUMBER = 300
REPEAT = 7


def _sample_verdict() -> vmod.Verdict:
    """A realistic untrusted verdict: one IMA failure among good rungs."""
    return vmod.make_verdict(
        host="compute-0042.rack7.example.org",
        outcomes={Rung.IDENTITY: Outcome.PASSED,
                  Rung.PLATFORM_FIRMWARE: Outcome.PASSED,
                  Rung.OS_BOOT: Outcome.PASSED,
                  Rung.RUNTIME: Outcome.UNRECOGNIZED},
        required_level=AssuranceLevel.RUNTIME,
        policy_versions={"measured-boot": 12, "ima-runtime": 31},
        evidence_digest=vmod.evidence_digest(b"evidence" * 100),
        issued_at=NOW, validity=90,
        reasons=["IMA line 4711: /usr/local/bin/miner sha256:9f86d08188... "
                 "not in policy ima-runtime v31"])


def _bare_sign(key: keystore.PrivateKey, data: bytes):
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return lambda: key.sign(data)
    return lambda: key.sign(data, ec.ECDSA(hashes.SHA256()))


def _bare_verify(key: keystore.PrivateKey, token: str):
    head, body, sig = token.split(".")
    data = (head + "." + body).encode("ascii")
    raw = jwt.utils.base64url_decode(sig)
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        return lambda: public.verify(raw, data)
    der = asym_utils.encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                          int.from_bytes(raw[32:], "big"))
    algorithm = ec.ECDSA(hashes.SHA256())
    return lambda: public.verify(der, data, algorithm)


def _bench_algorithm(alg: str, verdict: vmod.Verdict) -> None:
    key = keystore.generate_signing_key(alg)
    signer = results.ResultSigner(key, "conductor-bench")
    keys = keystore.key_set([key])
    token = signer.sign(verdict, sequence=1, jti="bench")
    assert results.verify_result(token, keys, NOW) == verdict
    signing_input = token.rsplit(".", 1)[0].encode("ascii")

    sign_bare = median_seconds(_bare_sign(key, signing_input), NUMBER,
                               REPEAT)
    sign_ours = median_seconds(
        lambda: signer.sign(verdict, sequence=1, jti="bench"), NUMBER, REPEAT)
    verify_bare = median_seconds(_bare_verify(key, token), NUMBER, REPEAT)
    verify_ours = median_seconds(
        lambda: results.verify_result(token, keys, NOW), NUMBER, REPEAT)

    print("%s (token %d chars)" % (alg, len(token)))
    report("  sign_verdict", sign_ours, sign_bare, "bare sign")
    report("  verify_result", verify_ours, verify_bare, "bare verify")
    print("  rates: sign_verdict %8.0f /s   verify_result %8.0f /s   "
          "(bare: sign %8.0f /s, verify %8.0f /s)"
          % (1 / sign_ours, 1 / verify_ours, 1 / sign_bare,
             1 / verify_bare))
    print("  overhead per token: sign %+.1f us, verify %+.1f us"
          % ((sign_ours - sign_bare) * 1e6, (verify_ours - verify_bare)
             * 1e6))


def main() -> None:
    verdict = _sample_verdict()
    print("median of %d runs x %d calls each" % (REPEAT, NUMBER))
    for alg in (keystore.ALG_ES256, keystore.ALG_EDDSA):
        _bench_algorithm(alg, verdict)


if __name__ == "__main__":
    main()
