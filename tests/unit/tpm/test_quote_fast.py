"""The quote fast path against the reference verifier.

``verify_quote`` accepts on a hand-written fast path and leaves every
rejection to ``verify_quote_reference``. These tests hold it to that: on
real evidence (the go-attestation GCP quote, software TPM quotes of every
scheme the project verifies) the two return equal results, and on mutated
evidence the fast path never accepts anything the reference rejects, so the
error is always the reference's own (same type, same message).
"""

from __future__ import annotations

import copy
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import soft_tpm
from tests.unit.tpm.test_quote_properties import (
    GCP_AK, GCP_PCRS, GCP_QUOTE, GCP_SIG)
from trusted_pools import exception
from trusted_pools.tpm import quote, structures
from trusted_pools.tpm.constants import TPM_ALG

SHA1, SHA256, SHA384 = TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384
NONCE = b"N" * 32


def _soft_case(ak: soft_tpm.SoftAK, banks=(SHA256,), pcrs=range(24),
               nonce: bytes = NONCE):
    values = soft_tpm.random_pcrs(banks, tuple(pcrs))
    attest, sig = ak.quote(nonce, values)
    return ak.public_bytes, attest, sig, nonce, values


_RSA = soft_tpm.SoftAK.rsa()
_PSS = soft_tpm.SoftAK.rsa(sig_alg=TPM_ALG.RSAPSS)
_P256 = soft_tpm.SoftAK.ecc(ec.SECP256R1)
_P384 = soft_tpm.SoftAK.ecc(ec.SECP384R1, hash_alg=SHA384)

# (label, AK public, quote, signature, nonce, PCR values, allow_sha1)
CASES = [
    ("gcp-sha1", GCP_AK, GCP_QUOTE, GCP_SIG, b"", GCP_PCRS, True),
    ("rsassa", *_soft_case(_RSA), False),
    ("rsapss", *_soft_case(_PSS), False),
    ("p256", *_soft_case(_P256), False),
    ("p384", *_soft_case(_P384), False),
    ("p256-two-banks", *_soft_case(_P256, (SHA256, SHA384), (0, 7, 14)),
     False),
    ("rsa-one-pcr", *_soft_case(_RSA, pcrs=(7,), nonce=b"short"), False),
]
IDS = [case[0] for case in CASES]


def _outcome(fn, *args, **kwargs):
    """("ok", result) or ("error", type, message)."""
    try:
        return ("ok", fn(*args, **kwargs))
    except (exception.TrustedPoolsError, TypeError) as exc:
        return ("error", type(exc), str(exc))


def _both(public_bytes: bytes, attest, sig, nonce, values, allow_sha1):
    """The outcome of verify_quote and of the reference, each with its own
    freshly loaded AK (the fast path caches per AK object)."""
    kw = {"allow_sha1": allow_sha1}
    fast = _outcome(quote.verify_quote,
                    structures.load_public(public_bytes), attest, sig,
                    nonce, copy.deepcopy(values), **kw)
    reference = _outcome(quote.verify_quote_reference,
                         structures.load_public(public_bytes), attest, sig,
                         nonce, copy.deepcopy(values), **kw)
    return fast, reference


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_real_evidence_same_result_and_fast_path_taken(case):
    _, public_bytes, attest, sig, nonce, values, allow_sha1 = case
    fast, reference = _both(public_bytes, attest, sig, nonce, values,
                            allow_sha1)
    assert reference[0] == "ok"
    assert fast == reference
    # Every field, nested objects included, compares equal; and the fast
    # path really decided (else this test would prove nothing).
    ak = structures.load_public(public_bytes)
    for _ in range(2):  # the second time through the AK's cached layout
        accepted = quote._accept_quote_fast(ak, attest, sig, nonce, values,
                                            allow_sha1)
        assert accepted == reference[1]
        assert accepted.attest.raw == attest
        assert accepted.pcrs is not values  # a copy, like the reference


def test_sha1_quote_refused_by_the_reference_error():
    _, public_bytes, attest, sig, nonce, values, _ = CASES[0]
    fast, reference = _both(public_bytes, attest, sig, nonce, values, False)
    assert fast == reference
    assert reference[1] is exception.QuoteHashRefused


@pytest.mark.parametrize("case", CASES[1:], ids=IDS[1:])
def test_a_new_shape_after_a_cached_layout(case):
    """One AK object: a quote of one shape caches its layout, then quotes of
    other shapes (nonce size, selection) and a tampered quote of the cached
    shape are decided exactly as the reference decides them."""
    _, public_bytes, attest, sig, nonce, values, allow_sha1 = case
    ak_soft = {_RSA.public_bytes: _RSA, _PSS.public_bytes: _PSS,
               _P256.public_bytes: _P256,
               _P384.public_bytes: _P384}[public_bytes]
    ak = structures.load_public(public_bytes)
    assert quote.verify_quote(ak, attest, sig, nonce, values) == \
        quote.verify_quote_reference(ak, attest, sig, nonce, values)
    other = _soft_case(ak_soft, (ak_soft.hash_alg,), (0, 1), b"x" * 20)
    _, o_attest, o_sig, o_nonce, o_values = other
    assert quote.verify_quote(ak, o_attest, o_sig, o_nonce, o_values) == \
        quote.verify_quote_reference(ak, o_attest, o_sig, o_nonce, o_values)
    # Same shape as the cached layout, one signed field changed and
    # re-signed: the layout is only a shape, every value is checked.
    selection = [structures.PCRSelection(alg, frozenset(bank))
                 for alg, bank in values.items()]
    digest = soft_tpm.pcr_digest(ak_soft.hash_alg, selection, values)
    for kw in ({"magic": 0xFF544347}, {"signer_name": b"\x00\x0b" + b"\x22"
                                        * 32}):
        forged = soft_tpm.attest_quote(selection, digest, nonce, **kw)
        forged_sig = ak_soft.sign(forged)
        fast = _outcome(quote.verify_quote, ak, forged, forged_sig, nonce,
                        values)
        ref = _outcome(quote.verify_quote_reference, ak, forged, forged_sig,
                       nonce, values)
        assert fast == ref
    # Wrong nonce of the same size, same shape.
    assert _outcome(quote.verify_quote, ak, attest, sig, b"M" * len(nonce),
                    values)[1] is exception.NonceMismatch


SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(case=st.sampled_from(CASES), where=st.sampled_from(
    ["quote", "signature", "nonce"]), position=st.integers(0, 2000),
    value=st.integers(0, 255), mode=st.sampled_from(
        ["flip", "truncate", "extend"]))
def test_mutated_bytes_same_outcome(case, where, position, value, mode):
    _, public_bytes, attest, sig, nonce, values, allow_sha1 = case
    parts = {"quote": attest, "signature": sig, "nonce": nonce}
    data = bytearray(parts[where])
    if mode == "flip" and data:
        i = position % len(data)
        data[i] = value if data[i] != value else value ^ 1
    elif mode == "truncate":
        del data[position % (len(data) + 1):]
    else:
        data[position % (len(data) + 1):position % (len(data) + 1)] = \
            bytes([value])
    parts[where] = bytes(data)
    fast, reference = _both(public_bytes, parts["quote"], parts["signature"],
                            parts["nonce"], values, allow_sha1)
    assert fast == reference


@SETTINGS
@given(case=st.sampled_from(CASES), data=st.data())
def test_mutated_pcr_values_same_outcome(case, data):
    _, public_bytes, attest, sig, nonce, values, allow_sha1 = case
    values = copy.deepcopy(values)
    alg = data.draw(st.sampled_from(sorted(values)))
    bank = values[alg]
    change = data.draw(st.sampled_from(
        ["value", "short", "long", "drop", "add", "extra-bank", "str"]))
    pcr = data.draw(st.sampled_from(sorted(bank)))
    if change == "value":
        bank[pcr] = bytes(len(bank[pcr]))
    elif change == "short":
        bank[pcr] = bank[pcr][:-1]
    elif change == "long":
        bank[pcr] = bank[pcr] + b"\x00"
    elif change == "drop":
        del bank[pcr]
    elif change == "add":
        bank[max(bank) + 1] = bytes(len(bank[pcr]))
    elif change == "extra-bank":
        values[0x0012] = {}
    else:
        bank[pcr] = bank[pcr].hex()
    fast, reference = _both(public_bytes, attest, sig, nonce, values,
                            allow_sha1)
    assert fast == reference


@SETTINGS
@given(case=st.sampled_from(CASES[1:]), clock=st.integers(0, 2**64 - 1),
       safe=st.integers(0, 255), extra=st.binary(min_size=32, max_size=32)
       | st.binary(max_size=40))
def test_resigned_shapes_same_outcome(case, clock, safe, extra):
    """Quotes a compromised host could sign with its own AK: any clock,
    an invalid 'safe' byte, any nonce, all correctly signed; decided on
    an AK object whose layout cache holds its genuine quote's shape."""
    _, public_bytes, attest, sig, nonce, values, _ = case
    ak_soft = {_RSA.public_bytes: _RSA, _PSS.public_bytes: _PSS,
               _P256.public_bytes: _P256,
               _P384.public_bytes: _P384}[public_bytes]
    selection = [structures.PCRSelection(alg, frozenset(bank))
                 for alg, bank in values.items()]
    digest = soft_tpm.pcr_digest(ak_soft.hash_alg, selection, values)
    forged = bytearray(soft_tpm.attest_quote(selection, digest, extra,
                                             clock=clock))
    forged[10 + 34 + len(extra) + 16] = safe  # TPMS_CLOCK_INFO.safe
    forged = bytes(forged)
    signature = ak_soft.sign(forged)
    warm = structures.load_public(public_bytes)
    quote.verify_quote(warm, attest, sig, nonce, values)
    fast = _outcome(quote.verify_quote, warm, forged, signature, extra,
                    values)
    reference = _outcome(quote.verify_quote_reference,
                         structures.load_public(public_bytes), forged,
                         signature, extra, values)
    assert fast == reference
    assert struct.unpack_from(">Q", forged, 10 + 34 + len(extra))[0] == clock
