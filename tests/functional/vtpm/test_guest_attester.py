"""The product's guest attester (trusted_pools/guest/attest.sh) run on this
machine against a real swtpm (the swtpm TCTI instead of the guest's
/dev/tpmrm0): what it prints verifies with the project's evidence
library, and its refusals are reported, not turned into evidence.

The same script is /init's attester in the QEMU guest
(tests/functional/vtpm/test_guest_quote.py); these tests take a second.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from trusted_pools import exception
from trusted_pools import guest as product_guest
from trusted_pools.tpm import device, pcrs, quote, structures
from trusted_pools.tpm.constants import TPM_ALG

pytestmark = pytest.mark.swtpm

SHA256 = int(TPM_ALG.SHA256)


@pytest.fixture
def tpm_with_ak(swtpm_instance):
    if shutil.which("tpm2_quote") is None:
        pytest.fail("tpm2_quote missing: apt-get install -y tpm2-tools")
    with device.TPMDevice(swtpm_instance.tcti) as tpm:
        ak = tpm.create_ak("ecc")
        tpm.pcr_extend(7, {SHA256: b"\x07" * 32})
    return swtpm_instance, ak


def _attest(tcti: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(product_guest.ATTEST_SCRIPT), "-T", tcti, "-E", *args],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, TSS2_LOG="all+NONE"))


def test_attester_output_verifies(tpm_with_ak):
    instance, ak = tpm_with_ak
    nonce = os.urandom(32)
    proc = _attest(instance.tcti, "-n", nonce.hex(), "-k", hex(ak.handle),
                   "-l", "sha256:0,7,16")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().endswith("TP-ATTEST-DONE 0")
    evidence = product_guest.parse_output(proc.stdout)
    assert evidence.eventlog is None
    values = pcrs.load_pcr_values(evidence.pcrs)
    verified = quote.verify_quote(structures.parse_public(ak.public),
                                  evidence.quote, evidence.signature,
                                  nonce, values)
    assert set(verified.pcrs[SHA256]) == {0, 7, 16}
    assert verified.pcrs[SHA256][7] != b"\0" * 32
    with pytest.raises(exception.NonceMismatch):
        quote.verify_quote(structures.parse_public(ak.public),
                           evidence.quote, evidence.signature,
                           os.urandom(32), values)


@pytest.mark.parametrize("args, rc, words", [
    (["-n", "xyz", "-k", "0x81008001"], 2, "must be hex"),
    (["-n", "abc", "-k", "0x81008001"], 2, "whole bytes"),
    (["-n", "00" * 65, "-k", "0x81008001"], 2, "at most 64"),
    (["-n", "0011", "-k", "0x01c00002"], 2, "persistent handle"),
    (["-n", "0011", "-k", "0x81000abc"], 5, "tpm2_quote failed"),
])
def test_attester_refusals_are_reported(tpm_with_ak, args, rc, words):
    instance, _ = tpm_with_ak
    proc = _attest(instance.tcti, *args)
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert "TP-ATTEST-DONE %d" % rc in proc.stdout
    with pytest.raises(exception.MalformedEvidence, match=words):
        product_guest.parse_output(proc.stdout)
