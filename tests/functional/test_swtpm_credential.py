"""make_credential in Python; a real TPM (swtpm) releases the secret with
TPM2_ActivateCredential only for the right EK and AK Name."""

from __future__ import annotations

import os

import pytest

from tests.tpm2_tools import ToolFailed, bare_swtpm, read, tpm2, write  # noqa: F401,E501
from trusted_pools.tpm import credential, structures

pytestmark = pytest.mark.swtpm

# TCG EK Credential Profile: PolicyA (PolicySecret(TPM_RH_ENDORSEMENT)) and
# PolicyC (PolicyAuthorizeNV) for SHA-384; the high-range P-384 EK's policy
# is PolicyOR of the two.
POLICY_A_SHA384 = bytes.fromhex(
    "8bbf2266537c171cb56e403c4dc1d4b64f432611dc386e6f532050c3278c930e"
    "143e8bb1133824ccb431053871c6db53")
POLICY_C_SHA384 = bytes.fromhex(
    "d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5"
    "b4947c2d73e63005eed2dc2b3593d165")

EKS = {"rsa": "ek_rsa", "ecc": "ek_ecc256", "ecc384": "ek_ecc384"}


@pytest.fixture(scope="module")
def tpm(bare_swtpm):  # noqa: F811
    for alg, name in EKS.items():
        tpm2(bare_swtpm, "tpm2_createek", "-c", name + ".ctx", "-G", alg,
             "-u", name + ".pub")
    tpm2(bare_swtpm, "tpm2_createak", "-C", "ek_rsa.ctx", "-c", "ak.ctx",
         "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u", "ak.pub",
         "-n", "ak.name")
    write(bare_swtpm, "policyA.sha384", POLICY_A_SHA384)
    write(bare_swtpm, "policyC.sha384", POLICY_C_SHA384)
    return bare_swtpm


def _activate(tpm, ek_name: str, blob: bytes, secret: bytes) -> bytes:
    """tpm2_activatecredential with the EK's policy session."""
    write(tpm, "cred.in", credential.tpm2_tools_credential_file(blob, secret))
    high_range = ek_name == "ek_ecc384"
    tpm2(tpm, "tpm2_startauthsession", "--policy-session", "-S", "s.ctx",
         "-g", "sha384" if high_range else "sha256", flush=False)
    try:
        tpm2(tpm, "tpm2_policysecret", "-S", "s.ctx", "-c", "e", flush=False)
        if high_range:
            tpm2(tpm, "tpm2_policyor", "-S", "s.ctx", "-l",
                 "sha384:policyA.sha384,policyC.sha384", flush=False)
        tpm2(tpm, "tpm2_activatecredential", "-c", "ak.ctx", "-C",
             ek_name + ".ctx", "-i", "cred.in", "-o", "cred.out",
             "-P", "session:s.ctx", flush=False)
        return read(tpm, "cred.out")
    finally:
        tpm2(tpm, "tpm2_flushcontext", "s.ctx", check=False)


@pytest.mark.parametrize("ek_name", sorted(EKS.values()))
def test_activate_returns_secret(tpm, ek_name):
    ek = structures.load_public(read(tpm, ek_name + ".pub"))
    ak = structures.load_public(read(tpm, "ak.pub"))
    assert ak.name() == read(tpm, "ak.name")
    secret = os.urandom(32)
    blob, encrypted = credential.make_credential(ek, ak.name(), secret)
    assert _activate(tpm, ek_name, blob, encrypted) == secret


@pytest.mark.parametrize("ek_name", ["ek_rsa", "ek_ecc256"])
def test_activate_refuses_other_name(tpm, ek_name):
    ek = structures.load_public(read(tpm, ek_name + ".pub"))
    other_name = structures.load_public(read(tpm, "ek_rsa.pub")).name()
    blob, encrypted = credential.make_credential(ek, other_name, b"s" * 16)
    with pytest.raises(ToolFailed, match="integrity"):
        _activate(tpm, ek_name, blob, encrypted)


@pytest.mark.parametrize("ek_type", ["EK-RSA2048", "EK-ECC256"])
def test_activate_through_tpm2_pytss(tpm, ek_type):
    """The returned contents go straight into TPM2B_ID_OBJECT /
    TPM2B_ENCRYPTED_SECRET."""
    try:
        from tpm2_pytss import ESAPI, TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT
        from tpm2_pytss.constants import (ESYS_TR, TPM2_ALG, TPM2_SE,
                                          TPMA_OBJECT)
        from tpm2_pytss.types import (TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE,
                                      TPMT_SYM_DEF)
        from tpm2_pytss.utils import NoSuchIndex, create_ek_template
    except ImportError as exc:
        pytest.fail("tpm2-pytss is missing: %s" % exc)

    def no_nv(index):
        raise NoSuchIndex(index)

    esys = ESAPI(tpm.tcti)
    handles = []
    try:
        _, template = create_ek_template(ek_type, no_nv)
        ek, ek_public = esys.create_primary(
            TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.ENDORSEMENT)[:2]
        handles.append(ek)
        ak_template = TPM2B_PUBLIC.parse(
            "ecc256:ecdsa-sha256:null",
            objectAttributes=(TPMA_OBJECT.RESTRICTED
                              | TPMA_OBJECT.SIGN_ENCRYPT
                              | TPMA_OBJECT.FIXEDTPM
                              | TPMA_OBJECT.FIXEDPARENT
                              | TPMA_OBJECT.SENSITIVEDATAORIGIN
                              | TPMA_OBJECT.USERWITHAUTH))
        ak, ak_public = esys.create_primary(
            TPM2B_SENSITIVE_CREATE(), ak_template, ESYS_TR.ENDORSEMENT)[:2]
        handles.append(ak)
        ak_name = structures.load_public(ak_public.marshal()).name()
        assert ak_name == bytes(esys.tr_get_name(ak))

        secret = os.urandom(20)
        blob, encrypted = credential.make_credential(
            structures.load_public(ek_public.marshal()), ak_name, secret)
        session = esys.start_auth_session(
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
        handles.append(session)
        esys.policy_secret(ESYS_TR.ENDORSEMENT, session, b"", b"", b"", 0)
        released = esys.activate_credential(
            ak, ek, TPM2B_ID_OBJECT(blob), TPM2B_ENCRYPTED_SECRET(encrypted),
            session1=ESYS_TR.PASSWORD, session2=session)
        assert bytes(released) == secret
    finally:
        for handle in reversed(handles):
            try:
                esys.flush_context(handle)
            except Exception:  # noqa: BLE001 - already gone (session)
                pass
        esys.close()
