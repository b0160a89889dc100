"""Appraisal's memos never change a result.

Two memos make the steady round cheap: the measured-boot findings of one
verified boot under one policy (:class:`MeasuredBootMemo`, kept by the
caller per boot) and the IMA lines a runtime policy object passed. Every
test here compares the memoised result with the one computed from scratch
(no memo, caches cleared, or entries without their ascii lines), for
passing and failing evidence, and checks that another boot, another pinned
PCR value or another policy is appraised again. Evidence is real
(tests/data/eventlog) or generated IMA lists replayed like the kernel does.
"""

from __future__ import annotations

import hashlib

import pytest

from tests import ima_gen
from tests.unit.verifier import test_appraisal as base
from trusted_pools import exception
from trusted_pools.verifier import appraisal as ap
from trusted_pools.verifier import policy as pol
from trusted_pools.protocol.levels import AssuranceLevel, Outcome, Rung
from trusted_pools.verifier import pipeline as verifier
from trusted_pools.tpm import ima
from trusted_pools.tpm.quote import VerifiedQuote

SHA256 = base.SHA256


@pytest.fixture(autouse=True)
def _fresh_caches():
    ap.clear_cache()
    yield
    ap.clear_cache()


class _Counter:
    """Counts calls of a module function while still calling it."""

    def __init__(self, monkeypatch, module, name: str) -> None:
        self.calls = 0
        real = getattr(module, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)


def _boot(quote, log, policy, memo=None, **kw) -> ap.Appraisal:
    return ap.appraise(identity=True, quote=quote, event_log=log,
                       measured_boot_policy=policy, boot_memo=memo, **kw)


# --- measured boot ---------------------------------------------------------

@pytest.mark.parametrize("name", [base.UBUNTU, base.KEYLIME_SB, base.FEDORA])
def test_boot_memo_same_result_for_passing_evidence(name, monkeypatch):
    _, quote, log = base.evidence(name)
    policy = base.captured(log, quote)
    fresh = _boot(quote, log, policy)
    assert fresh.outcomes[Rung.OS_BOOT] is Outcome.PASSED, fresh.reasons
    memo = ap.MeasuredBootMemo()
    counter = _Counter(monkeypatch, ap, "_appraise_measured_boot")
    results = [_boot(quote, log, policy, memo) for _ in range(3)]
    assert results == [fresh] * 3
    assert counter.calls == 1  # the second and third came from the memo


def test_boot_memo_same_result_for_failing_evidence(monkeypatch):
    data, quote, log = base.evidence(base.KEYLIME_SB)
    policy = base.captured(log, quote)
    bad = base.tamper(data, 92)
    bad_quote = base.quote_for(bad)
    bad_log = base.verified(bad, bad_quote)
    fresh = _boot(bad_quote, bad_log, policy)
    assert fresh.level is AssuranceLevel.PLATFORM_FIRMWARE
    failing = [r for r in fresh.reasons if r.startswith("OS boot:")]
    assert failing and any("event 92" in r for r in failing)
    memo = ap.MeasuredBootMemo()
    counter = _Counter(monkeypatch, ap, "_appraise_measured_boot")
    cold = _boot(bad_quote, bad_log, policy, memo)
    warm = _boot(bad_quote, bad_log, policy, memo)
    assert cold == warm == fresh
    assert warm.reasons == fresh.reasons  # same lines, same order
    assert counter.calls == 1


def test_boot_memo_keeps_reasons_of_other_rungs_in_order():
    """Runtime and identity findings are not memoised and stay where
    they were, around the memoised boot findings."""
    _, boot_quote, log = base.evidence(base.UBUNTU)
    ima_data = base.boot_aggregate_log(boot_quote)
    quote = base.ima_quote(ima_data, boot_quote)
    runtime = pol.RuntimePolicy.from_json(
        {"kind": "ima", "digests": {}, "require_boot_aggregate": True},
        name="strict", version=1)
    policy = base.captured(log, boot_quote)
    memo = ap.MeasuredBootMemo()

    def run(memo_):
        return ap.appraise(identity=True, quote=quote, event_log=log,
                           ima_log=base.ima_verified(ima_data, quote),
                           measured_boot_policy=policy,
                           runtime_policy=runtime, boot_memo=memo_)

    fresh = run(None)
    assert fresh.outcomes[Rung.RUNTIME] is Outcome.UNRECOGNIZED
    assert run(memo) == run(memo) == fresh


def test_policy_change_invalidates_boot_memo():
    data, quote, log = base.evidence(base.UBUNTU)
    body = ap.capture_measured_boot_policy(log, quote)
    good = base.boot_policy(body, version=3)
    memo = ap.MeasuredBootMemo()
    assert _boot(quote, log, good, memo).outcomes[Rung.OS_BOOT] \
        is Outcome.PASSED
    # A new version pins another kernel: same log, the memo must not pass.
    changed = dict(body, os_boot=dict(body["os_boot"], kernels={
        "sha256": [base.DIGEST]}))
    newer = base.boot_policy(changed, version=4)
    result = _boot(quote, log, newer, memo)
    assert result == _boot(quote, log, newer)
    assert result.outcomes[Rung.OS_BOOT] is Outcome.UNRECOGNIZED
    assert result.policy_versions == {"prod-boot": 4}
    # Same name and version, other content (a different object): again.
    same_label = base.boot_policy(changed, version=3)
    relabelled = _boot(quote, log, same_label, memo)
    assert relabelled.outcomes[Rung.OS_BOOT] is Outcome.UNRECOGNIZED
    # And back to the good policy: passes again, not the stale failure.
    assert _boot(quote, log, good, memo) == _boot(quote, log, good)


def test_other_boot_invalidates_boot_memo():
    _, quote, log = base.evidence(base.KEYLIME_SB)
    policy = base.captured(log, quote)
    memo = ap.MeasuredBootMemo()
    assert _boot(quote, log, policy, memo).level is AssuranceLevel.OS_BOOT
    data = base.raw(base.KEYLIME_SB)
    bad = base.tamper(data, 92)
    bad_quote = base.quote_for(bad)
    bad_log = base.verified(bad, bad_quote)
    other = _boot(bad_quote, bad_log, policy, memo)
    assert other == _boot(bad_quote, bad_log, policy)
    assert other.level is AssuranceLevel.PLATFORM_FIRMWARE
    # An equal log that is another object is appraised again too.
    again = base.verified(data, quote)
    assert again is not log
    assert _boot(quote, again, policy, memo).level is AssuranceLevel.OS_BOOT


def test_other_pinned_pcr_value_invalidates_boot_memo():
    _, quote, log = base.evidence(base.UBUNTU)
    policy = base.captured(log, quote)
    assert policy.pcrs, "the capture pins PCRs 0, 2, 3, 7"
    memo = ap.MeasuredBootMemo()
    assert _boot(quote, log, policy, memo).outcomes[
        Rung.PLATFORM_FIRMWARE] is Outcome.PASSED
    alg = next(iter(policy.pcrs))
    pcrs = {bank: dict(values) for bank, values in quote.pcrs.items()}
    pcrs[alg][0] = hashlib.new("sha256", b"other firmware").digest()[
        :len(pcrs[alg][0])]
    other = VerifiedQuote(None, None, 0, (), pcrs)
    result = _boot(other, log, policy, memo)
    assert result == _boot(other, log, policy)
    assert result.outcomes[Rung.PLATFORM_FIRMWARE] is Outcome.UNRECOGNIZED
    assert any("PCR 0 (" in r for r in result.reasons)


def test_failed_or_missing_event_log_is_not_memoised():
    _, quote, log = base.evidence(base.UBUNTU)
    policy = base.captured(log, quote)
    memo = ap.MeasuredBootMemo()
    error = exception.ReplayMismatch(log="event log", bank="sha256",
                                     pcrs=[4])
    failed = ap.appraise(identity=True, quote=quote,
                         measured_boot_policy=policy, boot_memo=memo,
                         event_log_error=error)
    assert failed.outcomes[Rung.OS_BOOT] is Outcome.CRYPTO_FAILED
    missing = _boot(quote, None, policy, memo)
    assert missing.outcomes[Rung.OS_BOOT] is Outcome.NOT_APPRAISED
    assert memo.lookup(log, policy, ap._pinned_values(policy, quote.pcrs)
                       ) is None
    assert _boot(quote, log, policy, memo).level is AssuranceLevel.OS_BOOT


def test_boot_memo_type_is_checked():
    _, quote, log = base.evidence(base.UBUNTU)
    with pytest.raises(exception.InvalidParameterValue):
        _boot(quote, log, base.captured(log, quote), memo=object())


def test_conductor_keeps_one_memo_per_verified_boot():
    _, _, log = base.evidence(base.UBUNTU)
    first = verifier.BootRecord("a", (), log)
    second = verifier.BootRecord("a", (), log)
    assert isinstance(first.appraisal, ap.MeasuredBootMemo)
    assert first.appraisal is not second.appraisal
    assert first == second  # the memo takes no part in equality


# --- runtime (IMA) ---------------------------------------------------------

def _without_lines(log: ima.VerifiedIMALog) -> ima.VerifiedIMALog:
    """The same verified log without its ascii lines: entry by entry."""
    entries = log.entries
    return ima.VerifiedIMALog(log.state, log.start, log.covered,
                              log.uncovered, log.sha1_padded,
                              lambda: entries)


def _counting(log: ima.VerifiedIMALog, counts: list[int]
              ) -> ima.VerifiedIMALog:
    """The same verified log counting how often its entries are built."""
    entries = log.entries

    def materialise():
        counts.append(1)
        return entries

    return ima.VerifiedIMALog(log.state, log.start, log.covered,
                              log.uncovered, log.sha1_padded, materialise,
                              log.ascii_lines)


def _runtime(quote, log, policy, **kw) -> ap.Appraisal:
    return base.appraise_ima(quote, log, policy, **kw)


def test_verified_ascii_log_carries_its_lines():
    data = ima_gen.generate_ascii_log(12, seed=4)
    quote = base.ima_quote(data)
    log = base.ima_verified(data, quote)
    assert log.ascii_lines == tuple(data.split(b"\n")[:12])
    assert [e.line for e in log.entries] == list(range(1, 13))
    binary = ima_gen.ascii_to_binary(data)
    from_binary = base.ima_verified(binary, quote, fmt="binary")
    assert from_binary.covered == 12 and from_binary.ascii_lines is None
    with pytest.raises(exception.InvalidParameterValue):
        ima.VerifiedIMALog(log.state, log.start, log.covered, 0, False,
                           lambda: log.entries, log.ascii_lines[:-1])


def test_passing_lines_same_result_and_skip_parsing():
    data = ima_gen.generate_ascii_log(40, seed=6)
    quote = base.ima_quote(data)
    policy = base.runtime(data, quote, require_boot_aggregate=False)
    reference = _runtime(quote, _without_lines(
        base.ima_verified(data, quote)), policy)
    assert reference.outcomes[Rung.RUNTIME] is Outcome.PASSED
    counts: list[int] = []
    cold = _runtime(quote, _counting(base.ima_verified(data, quote),
                                     counts), policy)
    assert counts == [1]
    counts.clear()
    warm = _runtime(quote, _counting(base.ima_verified(data, quote),
                                     counts), policy)
    assert cold == warm == reference
    # Line 1 is never taken from the memo (it may be the boot_aggregate),
    # so a log from entry 1 is parsed; a later round's tail is not.
    assert counts == [1]
    counts.clear()
    head = b"".join(data.splitlines(keepends=True)[:5])
    start = base.ima_verified(head, base.ima_quote(head)).state
    tail = _counting(base.ima_verified(data, quote, start), counts)
    assert tail.start.entries == 5
    result = _runtime(quote, tail, policy, ima_prior=Outcome.PASSED)
    assert result.outcomes[Rung.RUNTIME] is Outcome.PASSED
    assert counts == []  # every line was known to pass: nothing parsed


def test_failing_lines_are_reported_every_time_with_their_number():
    data = ima_gen.generate_ascii_log(30, seed=8)
    quote = base.ima_quote(data)
    policy = base.runtime(data, quote, require_boot_aggregate=False)
    lines = data.splitlines(keepends=True)
    evil = "22" * 32
    bad = b"".join(lines[:7]) + base.retemplate(
        lines[7].rstrip(b"\n"), evil) + b"".join(lines[8:])
    bad_quote = base.ima_quote(bad)
    reference = _runtime(bad_quote, _without_lines(
        base.ima_verified(bad, bad_quote)), policy)
    assert reference.outcomes[Rung.RUNTIME] is Outcome.UNRECOGNIZED
    (reason,) = base.reasons_of(reference, "runtime")
    assert reason.startswith("runtime: IMA line 8: ")
    assert "sha256:%s" % evil in reason
    # Warm the cache with the good log, then appraise the bad one twice.
    _runtime(quote, base.ima_verified(data, quote), policy)
    for _ in range(2):
        result = _runtime(bad_quote, base.ima_verified(bad, bad_quote),
                          policy)
        assert result == reference


def test_same_line_at_another_number_keeps_its_number_in_reasons():
    """A cached pass never hides a failure elsewhere, and failures found
    later name their own line."""
    data = ima_gen.generate_ascii_log(10, seed=12)
    lines = data.splitlines(keepends=True)
    quote = base.ima_quote(data)
    policy = base.runtime(data, quote, require_boot_aggregate=False)
    _runtime(quote, base.ima_verified(data, quote), policy)
    strict = base.runtime(data, quote, require_boot_aggregate=False,
                          digests={})
    repeated = b"".join(lines) + lines[3] + lines[3]
    rep_quote = base.ima_quote(repeated)
    for _ in range(2):
        result = _runtime(rep_quote, base.ima_verified(repeated, rep_quote),
                          strict)
        reference = _runtime(rep_quote, _without_lines(
            base.ima_verified(repeated, rep_quote)), strict)
        assert result == reference
        numbers = [r.split(":", 2)[1].strip() for r in
                   base.reasons_of(result, "runtime")]
        assert numbers[-2:] == ["IMA line 11", "IMA line 12"]


def test_policy_change_invalidates_passing_lines():
    data = ima_gen.generate_ascii_log(20, seed=14)
    quote = base.ima_quote(data)
    policy = base.runtime(data, quote, require_boot_aggregate=False)
    assert _runtime(quote, base.ima_verified(data, quote), policy
                    ).outcomes[Rung.RUNTIME] is Outcome.PASSED
    entry = base.ima_verified(data, quote).entries[4]
    body = policy.to_json()
    body["digests"][entry.path] = ["sha256:" + base.DIGEST]
    for version in (8, policy.version):  # new version; same label too
        changed = pol.RuntimePolicy.from_json(body, name=policy.name,
                                              version=version)
        result = _runtime(quote, base.ima_verified(data, quote), changed)
        assert result == _runtime(quote, _without_lines(
            base.ima_verified(data, quote)), changed)
        (reason,) = base.reasons_of(result, "runtime")
        assert reason.startswith("runtime: IMA line 5: %s has " % entry.path)
    # The old policy still passes from its own memo.
    assert _runtime(quote, base.ima_verified(data, quote), policy
                    ).outcomes[Rung.RUNTIME] is Outcome.PASSED


def test_boot_aggregate_pass_at_line_one_is_not_reused_elsewhere():
    _, boot_quote, _ = base.evidence(base.UBUNTU)
    first = base.boot_aggregate_log(boot_quote, files=0)
    data = first + first  # the same bytes again as line 2
    quote = base.ima_quote(data, boot_quote)
    policy = pol.RuntimePolicy.from_json(
        {"kind": "ima", "digests": {}, "require_boot_aggregate": True},
        name="p", version=1)
    reference = _runtime(quote, _without_lines(
        base.ima_verified(data, quote)), policy)
    for _ in range(2):
        result = _runtime(quote, base.ima_verified(data, quote), policy)
        assert result == reference
        (reason,) = base.reasons_of(result, "runtime")
        assert reason.startswith("runtime: IMA line 2: boot_aggregate (")


def test_violations_same_result_cached_and_not():
    data = ima_gen.generate_ascii_log(25, seed=9, violation_every=7)
    quote = base.ima_quote(data)
    body = ap.capture_runtime_policy(base.ima_verified(data, quote), quote)
    lenient = pol.RuntimePolicy.from_json(body, name="p", version=1)
    strict = pol.RuntimePolicy.from_json(
        dict(body, allow_violations=False), name="p", version=2)
    for policy, expected in ((lenient, Outcome.PASSED),
                             (strict, Outcome.UNRECOGNIZED)):
        reference = _runtime(quote, _without_lines(
            base.ima_verified(data, quote)), policy)
        assert reference.outcomes[Rung.RUNTIME] is expected
        for _ in range(2):
            assert _runtime(quote, base.ima_verified(data, quote),
                            policy) == reference


def test_steady_rounds_with_both_memos_match_uncached():
    """The conductor's steady round (same boot record, new IMA log object
    each round) equals a fresh appraisal of the same evidence."""
    _, boot_quote, log = base.evidence(base.UBUNTU)
    ima_data = base.boot_aggregate_log(boot_quote, files=20)
    quote = base.ima_quote(ima_data, boot_quote)
    first = base.ima_verified(ima_data, quote)
    boot_policy = base.captured(log, boot_quote)
    runtime = pol.RuntimePolicy.from_json(ap.capture_runtime_policy(
        first, quote), name="prod-ima", version=1)
    record = verifier.BootRecord("d", (), log)
    for _ in range(3):
        ima_log = base.ima_verified(ima_data, quote)
        kwargs = dict(identity=True, quote=quote, event_log=log,
                      measured_boot_policy=boot_policy,
                      runtime_policy=runtime)
        result = ap.appraise(ima_log=ima_log, boot_memo=record.appraisal,
                             **kwargs)
        fresh = ap.appraise(ima_log=_without_lines(ima_log), **kwargs)
        assert result == fresh
        assert result.level is AssuranceLevel.RUNTIME, result.reasons
    assert record.appraisal.lookup(
        log, boot_policy, ap._pinned_values(boot_policy, quote.pcrs)
    ) is not None
