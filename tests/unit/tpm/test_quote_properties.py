"""Properties: hostile bytes only ever produce TrustedPoolsError, and
mutated evidence never verifies."""

from __future__ import annotations

import base64
import json
import pathlib

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests import soft_tpm
from trusted_pools import exception
from trusted_pools.tpm import keys, pcrs, quote, structures
from trusted_pools.tpm.constants import TPM_ALG

DATA = pathlib.Path(__file__).parents[2] / "data"
GCP = json.loads((DATA / "quote/go-attestation/windows_gcp_shielded_vm.json")
                 .read_text())
GCP_AK = base64.b64decode(GCP["AK"]["Public"])
GCP_QUOTE = base64.b64decode(GCP["Quote"]["Quote"])
GCP_SIG = base64.b64decode(GCP["Quote"]["Signature"])
GCP_PCRS = {TPM_ALG.SHA1: {e["Index"]: base64.b64decode(e["Digest"])
                           for e in GCP["Log"]["PCRs"]
                           if e["DigestAlg"] == 3}}

_ECC_AK = soft_tpm.SoftAK.ecc()
_ECC_PCRS = soft_tpm.random_pcrs((TPM_ALG.SHA256, TPM_ALG.SHA384), (0, 7))
_ECC_QUOTE, _ECC_SIG = _ECC_AK.quote(b"nonce", _ECC_PCRS)

# (AK public, quote, signature, nonce, PCR values) that verify.
CASES = [
    (GCP_AK, GCP_QUOTE, GCP_SIG, b"", GCP_PCRS),
    (_ECC_AK.public_bytes, _ECC_QUOTE, _ECC_SIG, b"nonce", _ECC_PCRS),
]

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

PARSERS = [structures.parse_public, structures.parse_public_b,
           structures.load_public, structures.parse_attest,
           structures.parse_signature, structures.parse_pcr_selection_list,
           pcrs.load_pcr_values]


def _exercise(parser, data: bytes) -> None:
    try:
        result = parser(data)
    except exception.TrustedPoolsError:
        return
    if isinstance(result, structures.Public):
        for use in (result.name, result.public_key,
                    lambda: keys.check_ak_attributes(result)):
            try:
                use()
            except exception.TrustedPoolsError:
                pass


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` with a flip, overwrite, insertion, deletion or cut."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete",
                                     "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0, 0xFF, 0x80, 0x01]))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and data:
            del data[at:at + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del data[at:]
    result = bytes(data)
    assume(result != original)
    return result


@SETTINGS
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_into_every_parser(data):
    for parser in PARSERS:
        _exercise(parser, data)


@SETTINGS
@given(case=st.sampled_from(range(len(CASES))), data=st.data())
def test_mutated_real_structures_into_every_parser(case, data):
    for original in CASES[case][:3]:
        blob = data.draw(mutated(original))
        for parser in PARSERS:
            _exercise(parser, blob)


def _must_not_verify(ak_bytes, quote_bytes, sig, nonce, values) -> None:
    try:
        ak = structures.load_public(ak_bytes)
        quote.verify_quote(ak, quote_bytes, sig, nonce, values)
    except exception.TrustedPoolsError:
        return
    raise AssertionError("mutated evidence verified")


@SETTINGS
@given(case=st.sampled_from(range(len(CASES))), data=st.data())
def test_mutated_quote_never_verifies(case, data):
    ak, q, sig, nonce, values = CASES[case]
    _must_not_verify(ak, data.draw(mutated(q)), sig, nonce, values)


@SETTINGS
@given(case=st.sampled_from(range(len(CASES))), data=st.data())
def test_mutated_signature_never_verifies(case, data):
    ak, q, sig, nonce, values = CASES[case]
    _must_not_verify(ak, q, data.draw(mutated(sig)), nonce, values)


@SETTINGS
@given(case=st.sampled_from(range(len(CASES))), data=st.data())
def test_mutated_nonce_never_verifies(case, data):
    ak, q, sig, nonce, values = CASES[case]
    other = data.draw(st.binary(max_size=64))
    assume(other != nonce)
    _must_not_verify(ak, q, sig, other, values)


@SETTINGS
@given(case=st.sampled_from(range(len(CASES))), data=st.data())
def test_mutated_pcr_values_never_verify(case, data):
    ak, q, sig, nonce, values = CASES[case]
    changed = {bank: dict(v) for bank, v in values.items()}
    bank = data.draw(st.sampled_from(sorted(changed)))
    action = data.draw(st.sampled_from(["value", "drop", "add", "bank"]))
    if action == "value":
        pcr = data.draw(st.sampled_from(sorted(changed[bank])))
        changed[bank][pcr] = data.draw(mutated(changed[bank][pcr]))
    elif action == "drop":
        del changed[bank][data.draw(st.sampled_from(sorted(changed[bank])))]
    elif action == "add":
        pcr = data.draw(st.integers(0, 63).filter(
            lambda p: p not in changed[bank]))
        changed[bank][pcr] = bytes(len(next(iter(values[bank].values()))))
    else:
        other = data.draw(st.sampled_from(
            [b for b in (TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384,
                         TPM_ALG.SHA512, TPM_ALG.SM3_256)
             if b not in changed]))
        changed[other] = {0: b"\0" * 32}
    _must_not_verify(ak, q, sig, nonce, changed)


def _same_key(a: structures.Public, b: structures.Public) -> bool:
    return (a.public_key().public_numbers() == b.public_key().public_numbers()
            and (a.scheme, a.scheme_hash) == (b.scheme, b.scheme_hash)
            and bool(b.attributes
                     & structures.ObjectAttributes.SIGN_ENCRYPT))


@SETTINGS
@given(case=st.sampled_from(range(len(CASES))), data=st.data())
def test_mutated_ak_only_verifies_if_it_is_the_same_key(case, data):
    """Attribute bits and the auth policy are not signed: a mutation that
    keeps the key, scheme and sign bit may verify; nothing else may."""
    ak, q, sig, nonce, values = CASES[case]
    mutated_ak = data.draw(mutated(ak))
    try:
        public = structures.load_public(mutated_ak)
        quote.verify_quote(public, q, sig, nonce, values)
    except exception.TrustedPoolsError:
        return
    assert _same_key(structures.load_public(ak), public)


@SETTINGS
@given(case=st.sampled_from(range(len(CASES))), data=st.data())
def test_fast_quote_parser_agrees_with_the_checked_parser(case, data):
    """The hot-path parsers return exactly what the Reader-based parser
    returns, or defer to it."""
    blob = data.draw(st.one_of(mutated(CASES[case][1]),
                               st.just(CASES[case][1])))
    fast = structures._parse_quote_fast(blob)
    try:
        checked = structures._parse_attest_checked(blob)
    except exception.TrustedPoolsError:
        assert fast is None
        return
    assert fast is None or fast == checked
    assert structures.parse_attest(blob) == checked
    sig = data.draw(st.one_of(mutated(CASES[case][2]),
                              st.just(CASES[case][2])))
    try:
        parsed = structures.parse_signature(sig)
    except exception.TrustedPoolsError:
        return
    # Re-parse through the Reader path by handing over a bytearray.
    assert parsed == structures.parse_signature(bytearray(sig))
