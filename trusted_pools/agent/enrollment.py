"""Host enrollment, the attester's half: what the agent's TPM says and does.

The verifier checks what this sends (the verifier's half is
:mod:`trusted_pools.verifier.enrollment`): the host reads its EK
certificate, EK public area and AK public area (:func:`collect_identity`),
and later releases the verifier's one-time secret with
TPM2_ActivateCredential (:func:`answer_challenge`). Only a TPM holding the
certified EK's private key, with the AK of exactly that Name loaded, can
release it; nothing here decides anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trusted_pools import exception

if TYPE_CHECKING:  # tpm2-pytss is loaded when a device is opened
    from trusted_pools.tpm.device import TPMDevice

__all__ = ["HostIdentity", "answer_challenge", "collect_identity"]


@dataclass(frozen=True)
class HostIdentity:
    """What a host sends to enroll: DER EK certificate, and the EK and AK
    TPMT_PUBLIC areas."""

    ek_certificate: bytes
    ek_public: bytes
    ak_public: bytes


def collect_identity(device: "TPMDevice", *, ak_handle: int | None = None,
                     ak_alg: str = "ecc", ek_kind: str = "rsa2048",
                     create_ak: bool = True) -> HostIdentity:
    """Read the EK certificate and EK public, and the AK at ``ak_handle``
    (created there first when missing and ``create_ak``)."""
    from trusted_pools.tpm import device as device_mod
    handle = device_mod.DEFAULT_AK_HANDLE if ak_handle is None else ak_handle
    cert = device.read_ek_certificate(ek_kind)
    if cert is None:
        raise exception.NotFound(
            reason="the TPM has no %s EK certificate in NV" % ek_kind)
    ek_public = device.ek_public(ek_kind)
    if handle in device.persistent_handles():
        ak = device.load_ak(handle)
    elif create_ak:
        ak = device.create_ak(ak_alg, handle, ek_kind=ek_kind)
    else:
        raise exception.NotFound(reason="no AK at handle %#x" % handle)
    return HostIdentity(ek_certificate=cert, ek_public=ek_public,
                        ak_public=ak.public)


def answer_challenge(device: "TPMDevice", credential_blob: bytes,
                     encrypted_secret: bytes, *,
                     ak_handle: int | None = None,
                     ek_kind: str = "rsa2048") -> bytes:
    """Activate the verifier's credential with this TPM's EK and AK."""
    from trusted_pools.tpm import device as device_mod
    handle = device_mod.DEFAULT_AK_HANDLE if ak_handle is None else ak_handle
    return device.activate_credential(handle, credential_blob,
                                      encrypted_secret, ek_kind=ek_kind)
