"""Quotes made by a real TPM (swtpm + tpm2-tools) verify, and tampering fails
with the right reason. Also shows where verify_quote is stricter than
tpm2_checkquote 5.4."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest

from tests.tpm2_tools import ToolFailed, bare_swtpm, read, tpm2, write  # noqa: F401,E501
from trusted_pools import exception
from trusted_pools.tpm import keys, pcrs, quote, structures
from trusted_pools.tpm.constants import TPM_ALG, TPM_ST

pytestmark = pytest.mark.swtpm

SHA1, SHA256, SHA384, SHA512 = (TPM_ALG.SHA1, TPM_ALG.SHA256,
                                TPM_ALG.SHA384, TPM_ALG.SHA512)
SELECTION = "sha1:0,1,2,16+sha256:all+sha384:0,16,23+sha512:16"
AKS = {
    "ak_rsassa": ("rsa", "rsassa"),
    "ak_rsapss": ("rsa", "rsapss"),
    "ak_ecdsa": ("ecc", "ecdsa"),
    "ak_ecdsa2": ("ecc", "ecdsa"),
}


@pytest.fixture(scope="module")
def tpm(bare_swtpm):  # noqa: F811
    tpm2(bare_swtpm, "tpm2_createek", "-c", "ek.ctx", "-G", "rsa",
         "-u", "ek.pub")
    for name, (alg, scheme) in AKS.items():
        tpm2(bare_swtpm, "tpm2_createak", "-C", "ek.ctx", "-c", name + ".ctx",
             "-G", alg, "-g", "sha256", "-s", scheme, "-u", name + ".pub",
             "-n", name + ".name")
    # Give the quoted banks values that differ from their reset state.
    for pcr in (0, 16, 23):
        tpm2(bare_swtpm, "tpm2_pcrextend", "%d:sha1=%s,sha256=%s,sha384=%s,"
             "sha512=%s" % (pcr, "11" * 20, "22" * 32, "33" * 48, "44" * 64))
    return bare_swtpm


def _ak(tpm, name: str) -> structures.Public:
    return structures.load_public(read(tpm, name + ".pub"))


def _quote(tpm, ak: str, selection: str = SELECTION,
           nonce: bytes | None = None) -> tuple[bytes, bytes, bytes, bytes]:
    """(TPMS_ATTEST, TPMT_SIGNATURE, serialized PCR file, nonce)."""
    nonce = os.urandom(16) if nonce is None else nonce
    tpm2(tpm, "tpm2_quote", "-c", ak + ".ctx", "-l", selection,
         "-q", nonce.hex(), "-m", "q.msg", "-s", "q.sig", "-o", "q.pcrs",
         "-g", "sha256", "--scheme", AKS[ak][1])
    return read(tpm, "q.msg"), read(tpm, "q.sig"), read(tpm, "q.pcrs"), nonce


@pytest.fixture(scope="module")
def quotes(tpm):
    return {ak: _quote(tpm, ak) for ak in ("ak_rsassa", "ak_rsapss",
                                           "ak_ecdsa")}


@pytest.mark.parametrize("ak", ["ak_rsassa", "ak_rsapss", "ak_ecdsa"])
def test_real_quote_verifies(tpm, quotes, ak):
    public = _ak(tpm, ak)
    keys.check_ak_attributes(public)
    assert public.name() == read(tpm, ak + ".name")
    msg, sig, pcr_file, nonce = quotes[ak]
    values = pcrs.load_pcr_values(pcr_file)
    assert set(values) == {SHA1, SHA256, SHA384, SHA512}
    assert values[SHA256][16] != b"\0" * 32

    result = quote.verify_quote(public, msg, sig, nonce, values)

    assert result.pcrs == values
    assert [(s.hash_alg, s.pcrs) for s in result.selection] == [
        (SHA1, {0, 1, 2, 16}), (SHA256, set(range(24))),
        (SHA384, {0, 16, 23}), (SHA512, {16})]
    assert result.attest.qualified_signer[:2] == b"\x00\x0b"
    assert result.clock_info.safe


def _pss_salt_length(public: structures.Public, sig: bytes) -> int:
    """Recover the salt length from an RSASSA-PSS signature (RFC 8017,
    EMSA-PSS-VERIFY steps with SHA-256 and MGF1-SHA-256)."""
    numbers = public.public_key().public_numbers()
    em = pow(int.from_bytes(sig, "big"), numbers.e, numbers.n).to_bytes(
        len(public.unique), "big")
    assert em[-1] == 0xBC
    h_len = 32
    masked_db, h = em[:-h_len - 1], em[-h_len - 1:-1]
    mask = b"".join(hashlib.sha256(h + struct.pack(">I", i)).digest()
                    for i in range(len(masked_db) // h_len + 1))
    db = bytes(a ^ b for a, b in zip(masked_db, mask))
    db = bytes([db[0] & 0x7F]) + db[1:]
    return len(db) - db.index(b"\x01") - 1


def test_swtpm_pss_salt_is_digest_or_max(tpm, quotes):
    public = _ak(tpm, "ak_rsapss")
    sig = structures.parse_signature(quotes["ak_rsapss"][1])
    salt = _pss_salt_length(public, sig.sig)
    # TPM 2.0 Part 1 B.7: largest salt (emLen - hLen - 2) or, FIPS, hLen;
    # libtpms (swtpm 0.7) uses the digest size.
    assert salt in quote.pss_salt_lengths(256, 32)
    assert salt == 32


@pytest.mark.parametrize("ak", ["ak_rsassa", "ak_ecdsa"])
def test_wrong_nonce(tpm, quotes, ak):
    msg, sig, pcr_file, nonce = quotes[ak]
    # Flip a bit: the nonce is random, so replacing its last byte with
    # a fixed value left it unchanged one run in 256.
    wrong = nonce[:-1] + bytes([nonce[-1] ^ 0x01])
    with pytest.raises(exception.NonceMismatch):
        quote.verify_quote(_ak(tpm, ak), msg, sig, wrong,
                           pcrs.load_pcr_values(pcr_file))


@pytest.mark.parametrize("bank,pcr", [(SHA1, 2), (SHA256, 16), (SHA384, 23),
                                      (SHA512, 16)])
def test_changed_pcr_value(tpm, quotes, bank, pcr):
    msg, sig, pcr_file, nonce = quotes["ak_ecdsa"]
    values = pcrs.load_pcr_values(pcr_file)
    values[bank][pcr] = bytes([values[bank][pcr][0] ^ 1]) + \
        values[bank][pcr][1:]
    with pytest.raises(exception.PCRDigestMismatch):
        quote.verify_quote(_ak(tpm, "ak_ecdsa"), msg, sig, nonce, values)


def test_missing_and_extra_pcrs(tpm, quotes):
    msg, sig, pcr_file, nonce = quotes["ak_ecdsa"]
    ak = _ak(tpm, "ak_ecdsa")
    values = pcrs.load_pcr_values(pcr_file)
    missing = {b: dict(v) for b, v in values.items()}
    del missing[SHA384][16]
    with pytest.raises(exception.PCRSelectionMismatch) as err:
        quote.verify_quote(ak, msg, sig, nonce, missing)
    assert err.value.kwargs["missing"] == [(SHA384, 16)]
    extra = {b: dict(v) for b, v in values.items()}
    extra[SHA512][0] = b"\0" * 64
    with pytest.raises(exception.PCRSelectionMismatch) as err:
        quote.verify_quote(ak, msg, sig, nonce, extra)
    assert err.value.kwargs["extra"] == [(SHA512, 0)]


def test_wrong_key(tpm, quotes):
    msg, sig, pcr_file, nonce = quotes["ak_ecdsa"]
    values = pcrs.load_pcr_values(pcr_file)
    with pytest.raises(exception.InvalidSignature):
        quote.verify_quote(_ak(tpm, "ak_ecdsa2"), msg, sig, nonce, values)
    with pytest.raises(exception.SignatureSchemeMismatch):
        quote.verify_quote(_ak(tpm, "ak_rsassa"), msg, sig, nonce, values)
    rsa_msg, rsa_sig, rsa_pcrs, rsa_nonce = quotes["ak_rsassa"]
    # An RSASSA signature is not accepted by the key pinned to RSAPSS.
    with pytest.raises(exception.SignatureSchemeMismatch):
        quote.verify_quote(_ak(tpm, "ak_rsapss"), rsa_msg, rsa_sig,
                           rsa_nonce, pcrs.load_pcr_values(rsa_pcrs))


@pytest.fixture(scope="module")
def unrestricted(tpm):
    """A plain (unrestricted) ECC signing key: it will sign anything."""
    tpm2(tpm, "tpm2_createprimary", "-C", "o", "-G", "ecc", "-c", "prim.ctx")
    # A fixed scheme, so that the checks after the AK rules are reached.
    tpm2(tpm, "tpm2_create", "-C", "prim.ctx", "-G", "ecc256:ecdsa-sha256",
         "-u", "u.pub",
         "-r", "u.priv", "-a",
         "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign")
    tpm2(tpm, "tpm2_load", "-C", "prim.ctx", "-u", "u.pub", "-r", "u.priv",
         "-c", "u.ctx")
    return structures.load_public(read(tpm, "u.pub"))


def _sign(tpm, ctx: str, message: bytes) -> bytes:
    write(tpm, "forged.msg", message)
    tpm2(tpm, "tpm2_sign", "-c", ctx, "-g", "sha256", "-s", "ecdsa",
         "-o", "forged.sig", "forged.msg")
    return read(tpm, "forged.sig")


def _forged_quote(genuine: bytes, pcr_digest: bytes,
                  magic: int = 0xFF544347) -> bytes:
    """A genuine TPMS_ATTEST with another magic and PCR digest."""
    return struct.pack(">I", magic) + genuine[4:-32] + pcr_digest


def test_unrestricted_key_is_rejected_as_ak(tpm, quotes, unrestricted):
    with pytest.raises(exception.AKAttributesRejected) as err:
        keys.check_ak_attributes(unrestricted)
    assert err.value.kwargs == {"attribute": "restricted", "expected": "set"}

    msg, _, _, nonce = quotes["ak_ecdsa"]
    lies = {SHA256: {0: b"\0" * 32}}
    # Keep the genuine header (magic, signer, nonce, clock) and claim one
    # zero PCR.
    attest = structures.parse_attest(msg)
    forged = (msg[:len(msg) - len(_quote_info_bytes(attest))]
              + structures.marshal_pcr_selection_list(
                  [structures.PCRSelection(SHA256, frozenset({0}))])
              + structures.marshal_tpm2b(
                  hashlib.sha256(b"\0" * 32).digest()))
    sig = _sign(tpm, "u.ctx", forged)
    # The signature is genuine and the magic right: only the key's
    # attributes tell this apart from a TPM quote. That is why callers
    # must run check_ak_attributes on an AK before verify_quote.
    result = quote.verify_quote(unrestricted, forged, sig, nonce, lies)
    assert result.pcrs == lies
    # A restricted AK refuses to sign the same bytes.
    with pytest.raises(ToolFailed):
        _sign(tpm, "ak_ecdsa.ctx", forged)


def _quote_info_bytes(attest: structures.Attest) -> bytes:
    info = attest.attested
    return (structures.marshal_pcr_selection_list(info.pcr_select)
            + structures.marshal_tpm2b(info.pcr_digest))


def test_bad_magic_signed_by_a_key(tpm, quotes, unrestricted):
    msg, _, pcr_file, nonce = quotes["ak_ecdsa"]
    bad = _forged_quote(msg, msg[-32:], magic=0xFF544348)
    sig = _sign(tpm, "u.ctx", bad)
    with pytest.raises(exception.QuoteMagicInvalid):
        quote.verify_quote(unrestricted, bad, sig, nonce,
                           pcrs.load_pcr_values(pcr_file))


def test_wrong_type_signed_by_a_key(tpm, quotes, unrestricted):
    msg, _, _, nonce = quotes["ak_ecdsa"]
    attest = structures.parse_attest(msg)
    header = struct.pack(">IH", 0xFF544347, TPM_ST.ATTEST_CERTIFY)
    body = msg[6:len(msg) - len(_quote_info_bytes(attest))]
    certify = (header + body + structures.marshal_tpm2b(b"\0\x0b" + b"1" * 32)
               + structures.marshal_tpm2b(b"\0\x0b" + b"2" * 32))
    sig = _sign(tpm, "u.ctx", certify)
    with pytest.raises(exception.QuoteTypeInvalid):
        quote.verify_quote(unrestricted, certify, sig, nonce,
                           {SHA256: {0: b"\0" * 32}})


class TestStricterThanTpm2Checkquote:
    """tpm2_checkquote (5.4) accepts what verify_quote rejects, and the
    reverse for genuine RSA-PSS."""

    def _checkquote(self, tpm, pub, msg, sig, pcr_file, nonce) -> int:
        write(tpm, "c.pub", pub)
        write(tpm, "c.msg", msg)
        write(tpm, "c.sig", sig)
        write(tpm, "c.pcrs", pcr_file)
        return tpm2(tpm, "tpm2_checkquote", "-u", "c.pub", "-m", "c.msg",
                    "-s", "c.sig", "-f", "c.pcrs", "-q", nonce.hex(),
                    "-g", "sha256", check=False, flush=False).returncode

    def test_bad_magic(self, tpm, quotes, unrestricted):
        msg, _, pcr_file, nonce = quotes["ak_ecdsa"]
        bad = _forged_quote(msg, msg[-32:], magic=0x12345678)
        sig = _sign(tpm, "u.ctx", bad)
        assert self._checkquote(tpm, unrestricted.marshal_b(), bad, sig,
                                pcr_file, nonce) == 0
        with pytest.raises(exception.QuoteMagicInvalid):
            quote.verify_quote(unrestricted, bad, sig, nonce,
                               pcrs.load_pcr_values(pcr_file))

    def test_claimed_selection_differs_from_signed(self, tpm):
        # PCRs 4,5 and 6,7 are all still zero: same digest, other PCRs.
        msg, sig, _, nonce = _quote(tpm, "ak_ecdsa", "sha256:4,5")
        tpm2(tpm, "tpm2_pcrread", "sha256:6,7", "-o", "claimed.pcrs",
             "-F", "serialized")
        claimed = read(tpm, "claimed.pcrs")
        ak = _ak(tpm, "ak_ecdsa")
        assert self._checkquote(tpm, ak.marshal_b(), msg, sig, claimed,
                                nonce) == 0
        with pytest.raises(exception.PCRSelectionMismatch):
            quote.verify_quote(ak, msg, sig, nonce,
                               pcrs.load_pcr_values(claimed))

    def test_unrestricted_key(self, tpm, quotes, unrestricted):
        msg, _, pcr_file, nonce = quotes["ak_ecdsa"]
        sig = _sign(tpm, "u.ctx", msg)
        assert self._checkquote(tpm, unrestricted.marshal_b(), msg, sig,
                                pcr_file, nonce) == 0
        with pytest.raises(exception.AKAttributesRejected):
            keys.check_ak_attributes(unrestricted)

    def test_genuine_rsapss(self, tpm, quotes):
        msg, sig, pcr_file, nonce = quotes["ak_rsapss"]
        ak = _ak(tpm, "ak_rsapss")
        assert self._checkquote(tpm, ak.marshal_b(), msg, sig, pcr_file,
                                nonce) != 0
        quote.verify_quote(ak, msg, sig, nonce,
                           pcrs.load_pcr_values(pcr_file))


def test_pcr_file_forms_agree(tpm):
    msg, sig, pcr_file, nonce = _quote(tpm, "ak_ecdsa")
    selection = structures.parse_attest(msg).attested.pcr_select
    tpm2(tpm, "tpm2_pcrread", SELECTION, "-o", "values.pcrs")
    listing = tpm2(tpm, "tpm2_pcrread", SELECTION).stdout
    serialized = pcrs.load_pcr_values(pcr_file)
    assert pcrs.load_pcr_values(read(tpm, "values.pcrs"),
                                selection) == serialized
    assert pcrs.load_pcr_values(listing) == serialized
    quote.verify_quote(_ak(tpm, "ak_ecdsa"), msg, sig, nonce, serialized)


# --- AK scheme and SHA-1 -----------------------------------------------------

def _host_state(public: structures.Public, allow_sha1: bool | None):
    """A conductor's state of a host whose group's measured-boot policy
    sets allow_sha1_quotes (None: the group has no such policy)."""
    from trusted_pools.verifier import policy as policy_mod
    from trusted_pools.verifier import pipeline as verifier
    state = verifier.HostState(host="h", host_id=1, group="g", ak=public)
    boot = None
    if allow_sha1 is not None:
        boot = policy_mod.MeasuredBootPolicy.from_json(
            {"kind": policy_mod.KIND_MEASURED_BOOT,
             "allow_sha1_quotes": allow_sha1,
             "pcrs": {"sha256": {"0": "00" * 32}}}, name="mb", version=1)
    state.policy = verifier.HostPolicies(measured_boot=boot)
    return state


def test_swtpm_sha1_quote_refused_unless_the_policy_allows_it(tpm):
    """An AK fixed to RSASSA-SHA1 on a real TPM makes SHA-1 quotes; the
    conductor refuses them unless the host's measured-boot policy says
    allow_sha1_quotes."""
    from types import SimpleNamespace
    from trusted_pools.verifier import pipeline as verifier
    tpm2(tpm, "tpm2_createak", "-C", "ek.ctx", "-c", "ak_sha1.ctx",
         "-G", "rsa", "-g", "sha1", "-s", "rsassa", "-u", "ak_sha1.pub",
         "-n", "ak_sha1.name")
    public = _ak(tpm, "ak_sha1")
    assert public.scheme_hash == SHA1
    keys.check_ak_attributes(public)
    nonce = os.urandom(16)
    tpm2(tpm, "tpm2_quote", "-c", "ak_sha1.ctx", "-l", "sha256:16",
         "-q", nonce.hex(), "-m", "q.msg", "-s", "q.sig", "-o", "q.pcrs",
         "-g", "sha1", "--scheme", "rsassa")
    evidence = SimpleNamespace(quote=read(tpm, "q.msg"),
                               signature=read(tpm, "q.sig"),
                               pcrs=pcrs.load_pcr_values(read(tpm,
                                                              "q.pcrs")))
    assert structures.parse_signature(evidence.signature).hash_alg == SHA1
    for allow in (None, False):
        with pytest.raises(exception.QuoteHashRefused) as err:
            verifier.check_quote(_host_state(public, allow), evidence, nonce)
        assert "allow_sha1_quotes" in str(err.value)
    verified, _ = verifier.check_quote(_host_state(public, True), evidence,
                                       nonce)
    assert set(verified.pcrs) == {SHA256}


def test_swtpm_will_not_create_a_restricted_key_without_scheme(tpm):
    """libtpms refuses TPM_ALG_NULL for a restricted signing key
    (TPM_RC_SCHEME), so an AK without a fixed scheme comes from a TPM that
    does not follow the specification, or from software: the AK rules
    refuse it (tests/unit/tpm/test_quote.py and test_enrollment_unit.py
    show that with the soft TPM)."""
    tpm2(tpm, "tpm2_createprimary", "-C", "o", "-G", "ecc", "-c",
         "prim_n.ctx")
    with pytest.raises(ToolFailed, match="scheme"):
        tpm2(tpm, "tpm2_create", "-C", "prim_n.ctx", "-G",
             "rsa2048:null:null", "-u", "ak_null.pub", "-r", "ak_null.priv",
             "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth"
             "|restricted|sign")
    tpm2(tpm, "tpm2_flushcontext", "-t")
