"""Appraisal cost for a typical host, against verifying its event log.

The host: the real GCE Ubuntu 21.04 event log (105 verified events, SHA-1,
SHA-256 and SHA-384 banks) with a measured-boot policy captured from it, and
an IMA round of 100 new ima-ng entries appraised against a runtime policy
of 10,000 paths. Baseline (same run): ``verify_event_log`` on the same
parsed log and quoted PCRs, the step the conductor runs just before.

Rows:

* appraise, warm: the steady state. Facts decoded from event subsets (PCR 7
  keys and dbx, GRUB's PCR 8 strings) are cached by content, shared by every
  boot of one host and every host of one image;
* appraise, cold: the same with that cache emptied before every call (a
  host never seen before);
* the runtime share alone, and materialising the 100 IMA entries
  (``VerifiedIMALog.entries``, done by the IMA module on first access);
* parsing the 10,000-path runtime policy (once per policy version: the
  conductor should keep parsed policies by name and version).

Run: .venv/bin/python -m bench.bench_appraisal
"""

from __future__ import annotations

import pathlib

from bench._timing import median_seconds, report
from tests import ima_gen
from trusted_pools.verifier import appraisal, policy
from trusted_pools.tpm import constants, eventlog, ima
from trusted_pools.tpm.quote import VerifiedQuote

SHA256 = int(constants.TPM_ALG.SHA256)
LOG = (pathlib.Path(__file__).resolve().parents[1] / "tests" / "data"
       / "eventlog" / "go-attestation"
       / "ubuntu_2104_shielded_vm_no_secure_boot_eventlog")
PATHS = 10_000
NEW = 100


def _quote(data: bytes, ima_pcr10: bytes) -> VerifiedQuote:
    """What a TPM that booted this way signs: replay, reset values, PCR 10."""
    banks = {}
    for alg, values in eventlog.replay_event_log(
            eventlog.parse_event_log(data)).items():
        size = constants.HASH_ALGORITHMS[alg].digest_size
        banks[alg] = {p: values.get(p, bytes(size)) for p in range(16)}
    banks[SHA256][10] = ima_pcr10
    return VerifiedQuote(None, None, 0, (), banks)


def main() -> None:
    data = LOG.read_bytes()
    parsed = eventlog.parse_event_log(data)
    # PATHS files + boot_aggregate, then NEW more of the same files.
    ima_log = ima_gen.generate_ascii_log(PATHS + 1, seed=7)
    lines = ima_log.splitlines(keepends=True)
    whole = ima_log + b"".join(lines[1:NEW + 1])
    pcr10 = ima.replay_ima(ima.parse_ima_log(whole), [SHA256]).pcrs[SHA256]
    quote = _quote(data, pcr10)
    boot_pcrs = {alg: {p: v for p, v in bank.items() if p != 10}
                 for alg, bank in quote.pcrs.items()}
    verified_log = eventlog.verify_event_log(parsed, boot_pcrs)
    boot = policy.MeasuredBootPolicy.from_json(
        appraisal.capture_measured_boot_policy(verified_log, quote),
        name="boot", version=1)
    # The state the conductor kept from the previous round (with the offset
    # where its entries end, so the next round skips them unread).
    old_pcr10 = ima.replay_ima(ima.parse_ima_log(ima_log), [SHA256]).pcrs
    old_state = ima.verify_ima_log(ima_log, {SHA256: old_pcr10[SHA256]}
                                   ).state
    full = ima.verify_ima_log(whole, {SHA256: pcr10})
    runtime_body = appraisal.capture_runtime_policy(full)
    runtime_body["require_boot_aggregate"] = False
    runtime = policy.RuntimePolicy.from_json(runtime_body, name="ima",
                                             version=1)
    assert len(runtime.digests) == PATHS

    def new_round() -> ima.VerifiedIMALog:
        return ima.verify_ima_log(whole, {SHA256: pcr10}, old_state)

    round_ = new_round()
    assert round_.covered == NEW
    assert len(round_.entries) == NEW  # materialised once for warm rows

    def baseline() -> None:
        eventlog.verify_event_log(parsed, boot_pcrs)

    def appraise() -> appraisal.Appraisal:
        return appraisal.appraise(
            identity=True, quote=quote, event_log=verified_log,
            ima_log=round_, measured_boot_policy=boot,
            runtime_policy=runtime, ima_prior=appraisal.Outcome.PASSED)

    result = appraise()
    assert result.level == 4, result.reasons

    def appraise_cold() -> None:
        appraisal.clear_cache()
        appraise()

    def runtime_only() -> None:
        appraisal.appraise(identity=True, quote=quote, ima_log=round_,
                           runtime_policy=runtime,
                           ima_prior=appraisal.Outcome.PASSED)

    def materialise() -> None:
        assert len(new_round().entries) == NEW

    def verify_round() -> None:
        new_round()

    def parse_policy() -> None:
        policy.RuntimePolicy.from_json(runtime_body, name="ima", version=1)

    print("host: %d verified boot events, %d new IMA entries, runtime "
          "policy of %d paths" % (len(verified_log.events), NEW, PATHS))
    base = median_seconds(baseline, number=50, repeat=7)
    report("verify_event_log (baseline)", base * 1e6, unit="us")
    report("appraise, warm fact cache", median_seconds(
        appraise, number=50, repeat=7), base, "verify_event_log")
    report("appraise, cold fact cache", median_seconds(
        appraise_cold, number=10, repeat=5), base, "verify_event_log")
    report("  runtime rung only (100 entries)", median_seconds(
        runtime_only, number=50, repeat=7), base, "verify_event_log")
    verify_seconds = median_seconds(verify_round, number=10, repeat=5)
    report("  verify_ima_log, 100 new entries (IMA module)",
           verify_seconds, base, "verify_event_log")
    report("  + materialising their IMAEntry objects", median_seconds(
        materialise, number=10, repeat=5) - verify_seconds, base,
        "verify_event_log")
    report("parse a %d-path runtime policy (once per version)" % PATHS,
           median_seconds(parse_policy, number=1, repeat=5), base,
           "verify_event_log")


if __name__ == "__main__":
    main()
