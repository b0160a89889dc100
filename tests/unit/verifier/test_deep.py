"""Deep attestation decisions with software hosts and vTPMs: one verdict
per instance, never above its host, and a typed refusal for each attack a
compromised host can make."""

from __future__ import annotations

import hashlib
import os

import pytest
from tests.unit.verifier.test_deep_soft import (SHA256, SoftHost, SoftVTPM,
                                                standing)
from trusted_pools import exception
from trusted_pools.verifier import deep
from trusted_pools.protocol import keystore, results
from trusted_pools.protocol.levels import AssuranceLevel

NOW = 1500


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def signing_key():
    return keystore.generate_signing_key()


@pytest.fixture
def verifier(signing_key):
    return deep.DeepVerifier(deep.InstanceResultSigner(signing_key, "c-1"),
                             validity=300)


def _batch(verifier, host, vtpms, nonces=None, chains=None):
    items = []
    for i, vtpm in enumerate(vtpms):
        nonce = verifier.challenge(vtpm.instance) if nonces is None \
            else nonces[i]
        items.append(host.evidence(vtpm, nonce, None if chains is None
                                   else chains[i]))
    return deep.prepare_batch(host.name, items)


def _run(verifier, host, batch, **kw):
    host_quote = kw.pop("host_quote", None) or host.host_quote(
        batch.host_nonce)
    return verifier.verify_batch(
        batch, host_ak=kw.pop("host_ak", host.ak_public),
        standing=kw.pop("standing", standing(host.name)),
        host_quote=host_quote, now=kw.pop("now", NOW), **kw)


def _only(outcomes):
    (outcome,) = outcomes
    return outcome


# --- what verifies -----------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2, 5, 17])
def test_batch_gives_every_instance_a_signed_verdict(verifier, signing_key,
                                                     count):
    host = SoftHost()
    vtpms = [SoftVTPM() for _ in range(count)]
    batch = _batch(verifier, host, vtpms)
    outcomes = _run(verifier, host, batch)
    keys = keystore.key_set([keystore.public_key_of(signing_key)])
    for vtpm, outcome in zip(vtpms, outcomes):
        assert outcome.error is None, outcome.error
        assert outcome.verdict.status == "trusted"
        assert outcome.verdict.appraisal == "vtpm-bound-measured"
        assert outcome.verdict.level == AssuranceLevel.IDENTITY
        claims = deep.verify_instance_result(outcome.signed_result, keys,
                                             NOW)
        assert claims["sub"] == vtpm.instance
        assert set(claims["submods"]) == {"host", "vm"}
        assert claims["submods"]["host"]["name"] == host.name
        binding = claims["binding"]
        # The result carries what a third party needs to check the link.
        vm_quote = batch.items[binding["leaf_index"]].quote
        assert hashlib.sha256(vm_quote).hexdigest() == \
            claims["submods"]["vm"]["quote_sha256"]
        deep.check_commitment(
            vtpm.instance, vm_quote,
            binding["leaf_index"], binding["tree_size"],
            [bytes.fromhex(p) for p in binding["proof"]],
            bytes.fromhex(binding["merkle_root"]),
            bytes.fromhex(binding["verifier_nonce"]), batch.host_nonce)


def test_instance_level_never_exceeds_the_hosts(verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    policy = deep.InstancePolicy("guest-boot", 1, {
        SHA256: {p: frozenset({vtpm.pcrs[SHA256][p]}) for p in range(8)}})
    verifier.policy_for = lambda instance: policy
    for host_level, expected in ((4, 3), (3, 3), (2, 2), (1, 1)):
        batch = _batch(verifier, host, [vtpm])
        outcome = _only(_run(verifier, host, batch,
                             standing=standing(level=host_level)))
        assert outcome.error is None
        assert outcome.verdict.status == "trusted"
        assert outcome.verdict.level == expected
        assert outcome.verdict.policy == "guest-boot@1"


def test_verdict_expires_no_later_than_the_hosts(verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    outcome = _only(_run(verifier, host, _batch(verifier, host, [vtpm]),
                         standing=standing(expires_at=NOW + 10)))
    assert outcome.verdict.expires_at == NOW + 10


# --- the instance token is not a host verdict --------------------------------

def test_host_verdict_consumers_refuse_instance_tokens(verifier, signing_key):
    host, vtpm = SoftHost(), SoftVTPM()
    outcome = _only(_run(verifier, host, _batch(verifier, host, [vtpm])))
    keys = keystore.key_set([keystore.public_key_of(signing_key)])
    with pytest.raises(exception.ResultMalformed):
        results.verify_result(outcome.signed_result, keys, NOW)
    # Nor the batch's JWS alone, nor an instance's own JWS.
    batch_jws = outcome.signed_result.split("~")[0]
    single = verifier.signer.sign(outcome.verdict)
    for token in (batch_jws, single):
        with pytest.raises(exception.ResultMalformed, match="typ"):
            results.verify_result(token, keys, NOW)


def _batch_result(verifier, count=3):
    host = SoftHost()
    vtpms = [SoftVTPM() for _ in range(count)]
    outcomes = _run(verifier, host, _batch(verifier, host, vtpms))
    keys = keystore.key_set([keystore.public_key_of(verifier.signer._key)])
    return outcomes, keys


def test_batch_results_share_one_signature_and_verify_alone(verifier):
    outcomes, keys = _batch_result(verifier, 5)
    tokens = [o.signed_result for o in outcomes]
    assert len({t.split("~")[0] for t in tokens}) == 1
    for outcome, token in zip(outcomes, tokens):
        claims = deep.verify_instance_result(token, keys, NOW)
        assert claims["sub"] == outcome.instance
        assert claims["status"] == "trusted"
    # An instance's own JWS (unbatched) verifies the same way.
    single = verifier.signer.sign(outcomes[0].verdict)
    assert deep.verify_instance_result(single, keys, NOW)["sub"] == \
        outcomes[0].instance


def _b64(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_batch_result_with_forged_or_swapped_claims(verifier):
    """Whoever holds the results of a batch (a host's operator, a tenant)
    edits one instance's claims, or presents another instance's claims
    under this one's proof: refused."""
    import base64
    import json
    outcomes, keys = _batch_result(verifier, 3)
    jws, claims_b64, index, proof = outcomes[0].signed_result.split("~")
    claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=="))
    forged = dict(claims, level=4)
    from trusted_pools.protocol.verdict import canonical_json
    attempts = [
        "~".join((jws, _b64(canonical_json(forged)), index, proof)),
        "~".join((jws, outcomes[1].signed_result.split("~")[1], index,
                  proof)),
        "~".join((jws, claims_b64, "1", proof)),
        "~".join((jws, claims_b64, index, proof[:-4])),
        "~".join((jws, claims_b64, "\u00b2", proof)),
        "~".join((jws, claims_b64, "-0", proof)),
        "~".join((jws, "", index, proof)),
        "~".join((jws, claims_b64 + "*", index, proof)),
    ]
    for token in attempts:
        with pytest.raises((exception.ResultSignatureInvalid,
                            exception.ResultMalformed)):
            deep.verify_instance_result(token, keys, NOW)
    # A batch signed by another key does not vouch for these claims.
    other = deep.InstanceResultSigner(keystore.generate_signing_key(),
                                      verifier.signer.issuer)
    (foreign,) = other.sign_batch([outcomes[0].verdict])
    with pytest.raises(exception.ResultKeyUnknown):
        deep.verify_instance_result(foreign, keys, NOW)
    with pytest.raises(exception.ResultMalformed):
        deep.verify_instance_result(outcomes[0].signed_result + "~x",
                                    keys, NOW)


def test_instance_verifier_refuses_host_tokens(signing_key):
    from trusted_pools.protocol import verdict as verdict_mod
    v = verdict_mod.unknown_verdict(host="h", reason="r", issued_at=NOW,
                                    validity=60)
    token = results.sign_verdict(v, signing_key, "c-1", sequence=1)
    keys = keystore.key_set([keystore.public_key_of(signing_key)])
    with pytest.raises(exception.ResultMalformed):
        deep.verify_instance_result(token, keys, NOW)


def test_instance_token_with_another_key_or_expired(verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    outcome = _only(_run(verifier, host, _batch(verifier, host, [vtpm])))
    other = keystore.key_set([keystore.public_key_of(
        keystore.generate_signing_key())])
    with pytest.raises(exception.ResultKeyUnknown):
        deep.verify_instance_result(outcome.signed_result, other, NOW)
    keys = keystore.key_set([keystore.public_key_of(
        verifier.signer._key)])
    with pytest.raises(exception.ResultExpired):
        deep.verify_instance_result(outcome.signed_result, keys, NOW + 3600)


# --- the host ----------------------------------------------------------------

@pytest.mark.parametrize("status,level", [("untrusted", 2), ("unknown", 0)])
def test_host_not_trusted(verifier, status, level):
    host, vtpm = SoftHost(), SoftVTPM()
    with pytest.raises(deep.HostNotTrusted, match=status):
        _run(verifier, host, _batch(verifier, host, [vtpm]),
             standing=standing(status=status, level=level))


def test_host_verdict_expired(verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    with pytest.raises(deep.HostVerdictStale, match="expired"):
        _run(verifier, host, _batch(verifier, host, [vtpm]),
             standing=standing(expires_at=NOW))


def test_host_verdict_too_old(verifier):
    verifier.max_host_age = 60
    host, vtpm = SoftHost(), SoftVTPM()
    with pytest.raises(deep.HostVerdictStale, match="old"):
        _run(verifier, host, _batch(verifier, host, [vtpm]),
             standing=standing(issued_at=NOW - 61))


def test_host_quote_over_another_nonce(verifier):
    """The compromised host answers with a quote over a nonce of its
    choosing (e.g. a root without the VM it wants to hide)."""
    host, vtpm = SoftHost(), SoftVTPM()
    batch = _batch(verifier, host, [vtpm])
    with pytest.raises(deep.HostQuoteNotCommitted, match="another nonce"):
        _run(verifier, host, batch, host_quote=host.host_quote(
            os.urandom(32)))


def test_host_quote_committing_to_another_batch(verifier):
    host, a, b = SoftHost(), SoftVTPM(), SoftVTPM()
    batch = _batch(verifier, host, [a])
    other = _batch(verifier, host, [b])
    with pytest.raises(deep.HostQuoteNotCommitted):
        _run(verifier, host, batch, host_quote=host.host_quote(
            other.host_nonce))


def test_batch_whose_tree_is_not_over_its_quotes(verifier):
    """A batch put together by hand with the tree of other quotes: the
    host's quote commits to that tree, not to these VMs."""
    host, a, b = SoftHost(), SoftVTPM(), SoftVTPM()
    batch = _batch(verifier, host, [a])
    other = _batch(verifier, host, [b])
    forged = deep.Batch(batch.host, batch.verifier_nonce, batch.items,
                        other.tree)
    with pytest.raises(deep.HostQuoteNotCommitted, match="not over"):
        _run(verifier, host, forged)


def test_host_quote_from_another_hosts_tpm(verifier):
    host, other, vtpm = SoftHost(), SoftHost("compute-b"), SoftVTPM()
    batch = _batch(verifier, host, [vtpm])
    with pytest.raises(deep.HostQuoteInvalid, match="Signature"):
        _run(verifier, host, batch,
             host_quote=other.host_quote(batch.host_nonce))


def test_host_tpm_restarted_since_its_verdict(verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    batch = _batch(verifier, host, [vtpm])

    class Baseline:
        clock, reset_count, restart_count = 100, 6, 3
    with pytest.raises(deep.HostVerdictStale, match="reset or restarted"):
        _run(verifier, host, batch, baseline=Baseline)


def test_host_quote_with_clock_before_the_baseline(verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    batch = _batch(verifier, host, [vtpm])

    class Baseline:
        clock, reset_count, restart_count = 10 ** 12, 7, 3
    with pytest.raises(deep.HostQuoteInvalid, match="not after"):
        _run(verifier, host, batch, baseline=Baseline)


# --- the VM ------------------------------------------------------------------

def test_replayed_vm_quote(verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    nonce = verifier.challenge(vtpm.instance)
    first = _only(_run(verifier, host, _batch(verifier, host, [vtpm],
                                              nonces=[nonce])))
    assert first.error is None
    again = _only(_run(verifier, host, _batch(verifier, host, [vtpm],
                                              nonces=[nonce])))
    assert isinstance(again.error, deep.VMQuoteReplayed)
    assert again.verdict is None


def test_vm_quote_over_a_nonce_never_issued(verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    outcome = _only(_run(verifier, host, _batch(
        verifier, host, [vtpm], nonces=[os.urandom(32)])))
    assert isinstance(outcome.error, deep.VMNonceMismatch)
    assert "issued no such nonce" in outcome.error.message


def test_vm_quote_over_another_instances_nonce(verifier):
    host, vtpm, other = SoftHost(), SoftVTPM(), SoftVTPM()
    nonce = verifier.challenge(other.instance)
    outcome = _only(_run(verifier, host, _batch(verifier, host, [vtpm],
                                                nonces=[nonce])))
    assert isinstance(outcome.error, deep.VMNonceMismatch)
    assert other.instance in outcome.error.message


def test_vm_nonce_expires():
    clock = Clock()
    book = deep.NonceBook(ttl=10, clock=clock)
    instance = SoftVTPM().instance
    nonce = book.issue(instance)
    clock.now = 10
    with pytest.raises(deep.VMNonceMismatch, match="expired"):
        book.consume(instance, nonce)


def test_garbage_quote_does_not_burn_the_nonce(verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    nonce = verifier.challenge(vtpm.instance)
    good = host.evidence(vtpm, nonce)
    bad = deep.VMEvidence(good.instance, good.quote, good.signature[:-1]
                          + bytes([good.signature[-1] ^ 1]), good.pcrs,
                          good.chain)
    batch = deep.prepare_batch(host.name, [bad])
    outcome = _only(_run(verifier, host, batch))
    assert isinstance(outcome.error, deep.VMQuoteInvalid)
    assert not isinstance(outcome.error, deep.VMQuoteReplayed)
    outcome = _only(_run(verifier, host,
                         deep.prepare_batch(host.name, [good])))
    assert outcome.error is None


def test_relayed_quote_of_a_vm_on_another_host(verifier):
    """Host A relays a genuine quote of a VM on host B, with B's chain."""
    a, b, vtpm = SoftHost("compute-a"), SoftHost("compute-b"), SoftVTPM()
    batch = _batch(verifier, a, [vtpm], chains=[b.chain(vtpm)])
    outcome = _only(_run(verifier, a, batch))
    assert isinstance(outcome.error, deep.VMChainForeignHost)


def test_relayed_quote_under_this_hosts_chain(verifier):
    """Host A presents B's VM quote under the chain of one of its own
    vTPMs: the quote is not signed by the certified AK."""
    a, vtpm, impostor = SoftHost("compute-a"), SoftVTPM(), SoftVTPM()
    nonce = verifier.challenge(vtpm.instance)
    attest, sig = impostor.quote(nonce)
    item = deep.VMEvidence(vtpm.instance, attest, sig, impostor.pcrs,
                           a.chain(vtpm).to_wire())
    outcome = _only(_run(verifier, a, deep.prepare_batch(a.name, [item])))
    assert isinstance(outcome.error, deep.VMQuoteInvalid)


def test_one_bad_instance_does_not_sink_the_batch(verifier):
    host = SoftHost()
    vtpms = [SoftVTPM() for _ in range(3)]
    nonces = [verifier.challenge(v.instance) for v in vtpms]
    nonces[1] = os.urandom(32)
    outcomes = _run(verifier, host, _batch(verifier, host, vtpms,
                                           nonces=nonces))
    assert [o.error is None for o in outcomes] == [True, False, True]


def test_vm_pcrs_against_an_instance_policy(verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    policy = deep.InstancePolicy("guest-boot", 2, {
        SHA256: {0: frozenset({bytes(32)}), 4: frozenset({bytes(32)})}})
    verifier.policy_for = lambda instance: policy
    outcome = _only(_run(verifier, host, _batch(verifier, host, [vtpm])))
    assert isinstance(outcome.error, deep.VMPolicyViolation)
    assert outcome.verdict.status == "untrusted"
    assert "PCR 0" in outcome.error.message and "PCR 4" in \
        outcome.error.message
    assert outcome.signed_result is not None


def test_commitment_check_refuses_a_wrong_proof_or_root():
    quotes_ = [os.urandom(60) for _ in range(5)]
    tree = deep.MerkleTree([hashlib.sha256(q).digest()
                            for q in quotes_])
    nonce = os.urandom(32)
    extra = deep.host_nonce(nonce, tree.root)
    deep.check_commitment("i", quotes_[3], 3, 5, tree.proof(3), tree.root,
                          nonce, extra)
    with pytest.raises(deep.HostQuoteNotCommitted, match="inclusion"):
        deep.check_commitment("i", quotes_[3], 3, 5, tree.proof(2),
                              tree.root, nonce, extra)
    other = deep.MerkleTree([hashlib.sha256(q).digest()
                             for q in quotes_[:4]])
    with pytest.raises(deep.HostQuoteNotCommitted, match="commitment"):
        deep.check_commitment("i", quotes_[3], 3, 4, other.proof(3),
                              other.root, nonce, extra)


def test_batch_inputs_are_validated():
    host, vtpm = SoftHost(), SoftVTPM()
    item = host.evidence(vtpm, bytes(32))
    with pytest.raises(exception.InvalidParameterValue):
        deep.prepare_batch(host.name, [])
    with pytest.raises(exception.InvalidParameterValue, match="twice"):
        deep.prepare_batch(host.name, [item, item])


def test_vm_evidence_wire_form():
    host, vtpm = SoftHost(), SoftVTPM()
    item = host.evidence(vtpm, bytes(32))
    from trusted_pools.protocol.evidence import encode_b64
    wire = {"instance": vtpm.instance, "vm_quote": encode_b64(item.quote),
            "vm_signature": encode_b64(item.signature),
            "vm_pcrs": {"sha256": {str(p): v.hex() for p, v in
                                   vtpm.pcrs[SHA256].items()}},
            "vtpm_certificate": item.chain}
    parsed = deep.VMEvidence.from_wire(wire)
    assert parsed == item
    with pytest.raises(exception.MalformedEvidence):
        deep.VMEvidence.from_wire(dict(wire, extra=1))
    with pytest.raises(exception.MalformedEvidence):
        deep.VMEvidence.from_wire(dict(wire, instance="x"))


def test_vm_evidence_to_wire_round_trips():
    host, vtpm = SoftHost(), SoftVTPM()
    item = host.evidence(vtpm, bytes(32))
    assert deep.VMEvidence.from_wire(item.to_wire()) == item


def test_vm_evidence_from_tpm2_tools_files():
    host, vtpm = SoftHost(), SoftVTPM()
    item = host.evidence(vtpm, bytes(32))
    # tpm2_quote -o: the digests in the quote's selection order.
    raw = b"".join(vtpm.pcrs[SHA256][p] for p in sorted(vtpm.pcrs[SHA256]))
    parsed = deep.VMEvidence.from_tpm2_tools(
        vtpm.instance, item.quote, item.signature, raw, item.chain)
    assert parsed == item
    with pytest.raises(exception.EvidenceError):
        deep.VMEvidence.from_tpm2_tools(vtpm.instance, b"\x00" * 10,
                                        item.signature, raw, item.chain)


def test_cached_chain_is_not_reused_for_another_host_or_instance(verifier):
    """A chain verified once is cached by (host AK, chain, instance): the
    same chain shown for another host, or for another instance, is
    verified again and refused."""
    a, b, vtpm = SoftHost("compute-a"), SoftHost("compute-b"), SoftVTPM()
    chain = a.chain(vtpm)
    first = _only(_run(verifier, a, _batch(verifier, a, [vtpm],
                                           chains=[chain])))
    assert first.error is None
    other = _only(_run(verifier, b, _batch(verifier, b, [vtpm],
                                           chains=[chain])))
    assert isinstance(other.error, deep.VMChainForeignHost)
    impostor = SoftVTPM()
    item = a.evidence(impostor, verifier.challenge(impostor.instance),
                      chain=chain)
    outcome = _only(_run(verifier, a, deep.prepare_batch(a.name, [item])))
    assert isinstance(outcome.error, deep.VMChainRefused)
    assert "for instance" in outcome.error.message


def test_host_boot_pcrs_changed_since_its_verdict(verifier):
    """A compromised host extends a boot PCR after its verdict (same TPM
    boot, so the counters agree): the quote shows it."""
    host, vtpm = SoftHost(), SoftVTPM()
    judged = tuple((SHA256, p, v) for p, v in sorted(
        host.pcrs[SHA256].items()))
    outcome = _only(_run(verifier, host, _batch(verifier, host, [vtpm]),
                         boot_pcrs=judged))
    assert outcome.error is None
    host.pcrs[SHA256][4] = bytes(32)
    with pytest.raises(deep.HostVerdictStale, match="sha256:4"):
        _run(verifier, host, _batch(verifier, host, [vtpm]),
             boot_pcrs=judged)


def test_tampered_instance_token_is_refused(verifier, signing_key):
    import base64
    import json
    host, vtpm = SoftHost(), SoftVTPM()
    outcome = _only(_run(verifier, host, _batch(verifier, host, [vtpm])))
    keys = keystore.key_set([keystore.public_key_of(signing_key)])
    header, payload, signature = outcome.signed_result.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["level"] = 4
    forged = base64.urlsafe_b64encode(json.dumps(
        claims, sort_keys=True, separators=(",", ":")).encode()
    ).rstrip(b"=").decode()
    with pytest.raises(exception.ResultSignatureInvalid):
        deep.verify_instance_result(".".join((header, forged, signature)),
                                    keys, NOW)
    with pytest.raises(exception.ResultMalformed):
        deep.verify_instance_result("a.b", keys, NOW)


def test_vm_nonce_named_for_a_host_serves_only_that_host():
    book = deep.NonceBook()
    instance = SoftVTPM().instance
    nonce = book.issue(instance, "compute-a")
    with pytest.raises(deep.VMNonceMismatch, match="host compute-a"):
        book.consume(instance, nonce, "compute-b")
    book.consume(instance, nonce, "compute-a")
    with pytest.raises(deep.VMQuoteReplayed):
        book.consume(instance, nonce, "compute-a")


def test_batch_results_signed_with_an_es256_key(verifier):
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    verifier.signer = deep.InstanceResultSigner(key, "conductor-es")
    outcomes, _ = _batch_result(verifier, 2)
    keys = keystore.key_set([keystore.public_key_of(key)])
    for outcome in outcomes:
        assert deep.verify_instance_result(
            outcome.signed_result, keys, NOW)["iss"] == "conductor-es"
    single = verifier.signer.sign(outcomes[0].verdict)
    assert deep.verify_instance_result(single, keys, NOW)["sub"] == \
        outcomes[0].instance


# --- instance policies (golden guest measurements) ---------------------------

def test_instance_policy_reasons_name_policy_bank_pcr_expected_and_got(
        verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    good = vtpm.pcrs[SHA256][4]
    policy = deep.InstancePolicy("guest-boot", 7, {
        SHA256: {0: frozenset({b"\x11" * 32}), 4: frozenset({good}),
                 12: frozenset({b"\x22" * 32})}})
    verifier.policy_for = lambda instance: policy
    outcome = _only(_run(verifier, host, _batch(verifier, host, [vtpm])))
    assert outcome.verdict.status == "untrusted"
    assert outcome.verdict.policy == "guest-boot@7"
    assert list(outcome.verdict.reasons) == [
        "instance policy guest-boot@7: sha256 PCR 0 expected %s, got %s"
        % ("11" * 32, vtpm.pcrs[SHA256][0].hex()),
        # PCR 12 was not in the guest's quote.
        "instance policy guest-boot@7: sha256 PCR 12 not quoted "
        "(expected %s)" % ("22" * 32)]


def test_matching_instance_policy_gives_its_level_capped_by_the_host(
        verifier):
    host, vtpm = SoftHost(), SoftVTPM()
    body = deep.pcrs_wire(vtpm.pcrs)
    policy = deep.capture_policy("golden", 1, 3, body, pcrs=[0, 1, 4])
    assert sorted(policy.pcrs[SHA256]) == [0, 1, 4]
    verifier.policy_for = lambda instance: policy
    outcome = _only(_run(verifier, host, _batch(verifier, host, [vtpm])))
    assert outcome.error is None
    assert (outcome.verdict.status, outcome.verdict.appraisal,
            outcome.verdict.policy) == ("trusted", "policy", "golden@1")
    assert outcome.verdict.level == 3
    # Never above the host's level.
    capped = _only(_run(verifier, host, _batch(verifier, host, [vtpm]),
                        standing=standing(host.name, level=2)))
    assert capped.verdict.level == 2 and capped.verdict.status == "trusted"
    # With no policy: vTPM-bound, measured, level 1.
    verifier.policy_for = lambda instance: None
    plain = _only(_run(verifier, host, _batch(verifier, host, [vtpm])))
    assert (plain.verdict.level, plain.verdict.appraisal) == (
        1, "vtpm-bound-measured")
    # The verified PCRs come with the outcome (what a capture reads).
    assert deep.pcrs_wire(plain.pcrs) == body


def test_batch_policy_hook_is_asked_with_the_instance_and_its_nonce(
        verifier):
    """The conductor's hook picks a policy from the instance and the
    nonce the verified quote was made over (the challenge, whose trusted
    caller named the image): nothing else of the evidence."""
    host = SoftHost()
    vtpms = [SoftVTPM(), SoftVTPM()]
    nonces = [verifier.challenge(v.instance) for v in vtpms]
    strict = deep.InstancePolicy("strict", 1, {
        SHA256: {0: frozenset({b"\x00" * 32})}})
    asked = []

    def policies_for(claims):
        asked.append(list(claims))
        return [strict if nonce == nonces[1] else None
                for _instance, nonce in claims]
    verifier.policies_for = policies_for
    outcomes = _run(verifier, host, _batch(verifier, host, vtpms, nonces))
    assert asked == [[(vtpms[0].instance, nonces[0]),
                      (vtpms[1].instance, nonces[1])]]
    assert [o.verdict.status for o in outcomes] == ["trusted", "untrusted"]

    verifier.policies_for = lambda claims: []
    with pytest.raises(exception.TemporaryFailure):
        _run(verifier, host, _batch(verifier, host, vtpms))


@pytest.mark.parametrize("level,pcrs,where", [
    (4, {"sha256": {"0": "00" * 32}}, "level"),
    (1, {"sha256": {"0": "00" * 32}}, "level"),
    (3, {}, "pcrs"),
    (3, {"md5": {"0": "00" * 16}}, "pcrs"),
    (3, {"sha256": {"24": "00" * 32}}, "pcrs.sha256"),
    (3, {"sha256": {"-1": "00" * 32}}, "pcrs.sha256"),
    (3, {"sha256": {"0": "00" * 20}}, "pcrs.sha256.0"),
    (3, {"sha256": {"0": "zz" * 32}}, "pcrs.sha256.0"),
    (3, {"sha256": {"0": []}}, "pcrs.sha256.0"),
    (3, {"sha256": {"0": ["00" * 32] * 65}}, "pcrs.sha256.0"),
    (3, {"sha256": {}}, "pcrs.sha256"),
    # Non-canonical indexes: "00" would replace "0"'s values, "\u00b2"
    # passes str.isdigit() but not int().
    (3, {"sha256": {"0": "00" * 32, "00": "11" * 32}}, "pcrs.sha256"),
    (3, {"sha256": {"\u00b2": "00" * 32}}, "pcrs.sha256"),
    (3, {"sha256": {"\u0660": "00" * 32}}, "pcrs.sha256"),
    (3, {"sha256": {"+1": "00" * 32}}, "pcrs.sha256"),
    (3, {"sha256": {0: "00" * 32}}, "pcrs.sha256"),
    # One bank under two spellings: the second would replace the first.
    (3, {"sha256": {"0": "00" * 32}, "SHA256": {"0": "11" * 32}},
     "pcrs.sha256"),
])
def test_instance_policy_body_is_checked(level, pcrs, where):
    with pytest.raises(exception.InvalidParameterValue) as caught:
        deep.InstancePolicy.from_body("p", 1, level, pcrs)
    assert caught.value.kwargs["name"] == where


@pytest.mark.parametrize("name", ["", "a/b", "a b", "tab\there",
                                  "x" * 256, None])
def test_instance_policy_name_is_one_the_api_can_address(name):
    """trusted-pools-manage stores through this loader: a name with '/'
    or spaces would be stored but never reachable at
    /v1/instance-policies/{name}."""
    with pytest.raises(exception.InvalidParameterValue) as caught:
        deep.InstancePolicy.from_body(name, 1, 3, {"sha256": {"0": "00" * 32}})
    assert caught.value.kwargs["name"] == "name"


def test_instance_policy_body_round_trips():
    body = {"sha256": {"0": ["aa" * 32, "00" * 32], "4": "bb" * 32},
            "sha1": {"7": "cc" * 20}}
    policy = deep.InstancePolicy.from_body("p", 2, 2, body)
    assert policy.level == AssuranceLevel.PLATFORM_FIRMWARE
    assert policy.body() == {
        "sha1": {"7": ["cc" * 20]},
        "sha256": {"0": ["00" * 32, "aa" * 32], "4": ["bb" * 32]}}
    assert deep.InstancePolicy.from_body("p", 2, 2, policy.body()) == policy


def test_capture_takes_only_what_was_asked_for():
    verified = {"sha256": {"0": "00" * 32, "4": "44" * 32}}
    with pytest.raises(exception.InvalidParameterValue):
        deep.capture_policy("p", 1, 3, verified, pcrs=[9])
    with pytest.raises(exception.InvalidParameterValue):
        deep.capture_policy("p", 1, 3, verified, banks=["sha1"])
    assert deep.capture_policy("p", 1, 3, verified, pcrs=[4]).body() == {
        "sha256": {"4": ["44" * 32]}}
