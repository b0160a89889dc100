"""vRoT bound to RoT (ISO/IEC 27070 5.3): the agent's side.

Each compute host keeps a **vTPM CA**: a signing key created in the host's
TPM under its EK (non-exportable: ``fixedTPM|fixedParent``), persisted at
:data:`DEFAULT_CA_HANDLE` and certified by the host's enrolled AK with
TPM2_Certify over :func:`~trusted_pools.protocol.vtpm_binding.
ca_qualifying_data` (host name and purpose). For every new vTPM the
:class:`Provisioner` (the vTPM driver's hook, run right after
``swtpm_setup``):

1. opens the new vTPM over its TCTI and creates a persistent restricted
   signing AK in it at :data:`VTPM_AK_HANDLE` (ECC P-256, ECDSA/SHA-256,
   under the vTPM's RSA EK), and reads the vTPM's EK public;
2. has the host CA sign a certificate binding the vTPM AK public, the
   vTPM EK's SHA-256, the instance UUID and the host name
   (:class:`~trusted_pools.protocol.vtpm_binding.VTPMCertificate`; the
   host TPM signs with TPM2_Sign, the key never leaves it);
3. returns the chain (CA certification + certificate) as the metadata
   stored with the instance: the guest, or whoever relays its quote,
   presents it to the conductor with the quote.

After the host re-enrolls (a new AK) the CA key stays and is certified
again by the new AK (:meth:`HostCA.certification` always certifies with
the current AK), so existing vTPM certificates keep chaining.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any, Callable, ContextManager

from trusted_pools import exception
from trusted_pools.protocol import vtpm_binding
from trusted_pools.tpm import device as tpm_device
from trusted_pools.tpm import structures
from trusted_pools.vtpm.driver import canonical_uuid

__all__ = ["DEFAULT_CA_HANDLE", "VTPM_AK_HANDLE", "HostCA", "Provisioner",
           "provision_vtpm_ak"]

#: Where the host's vTPM CA key is persisted (owner range, beside the AK).
DEFAULT_CA_HANDLE = 0x81008100
#: Where each vTPM's attestation key is persisted (inside the vTPM; the
#: guest quotes with it): the same owner-range slot as a host's AK, not
#: 0x81010002, which the TCG reserves for an ECC P-256 EK.
VTPM_AK_HANDLE = 0x81008001


class HostCA:
    """The host's vTPM CA in its TPM. ``open_device`` returns a fresh
    :class:`~trusted_pools.tpm.device.TPMDevice` on the host TPM.

    ``lock`` (any context manager, e.g. the lock the agent's attester
    holds around its TPM commands) is held around every use of the TPM
    here: a TPM without a resource manager (swtpm) has three transient
    object slots, and creating the CA key uses them."""

    def __init__(self, host: str,
                 open_device: Callable[[], tpm_device.TPMDevice], *,
                 ak_handle: int = tpm_device.DEFAULT_AK_HANDLE,
                 ca_handle: int = DEFAULT_CA_HANDLE,
                 alg: str = "ecc",
                 clock: Callable[[], float] = time.time,
                 lock: ContextManager[Any] | None = None) -> None:
        if not isinstance(host, str) or not host:
            raise exception.InvalidParameterValue(
                name="host", reason="a host name is required")
        self.host = host
        self._open = open_device
        self.ak_handle = ak_handle
        self.ca_handle = ca_handle
        self.alg = alg
        self._clock = clock
        self._certification: vtpm_binding.CACertification | None = None
        self._ak_public: bytes | None = None
        self._lock = lock if lock is not None else threading.Lock()

    def ensure(self) -> vtpm_binding.CACertification:
        """Create the CA key if the TPM has none; its certification by the
        current AK (cached while the AK stays the same)."""
        with self._lock, self._open() as dev:
            ak_public = dev.load_ak(self.ak_handle).public
            if self._certification is not None and \
                    ak_public == self._ak_public:
                return self._certification
            qualifying = vtpm_binding.ca_qualifying_data(self.host)
            if self.ca_handle in dev.persistent_handles():
                attest, signature = dev.certify(self.ca_handle,
                                                self.ak_handle, qualifying)
                public = dev.load_ak(self.ca_handle).public
            else:
                key = dev.create_certified_key(
                    self.ak_handle, self.alg, qualifying_data=qualifying,
                    persist_handle=self.ca_handle)
                attest, signature, public = (key.certify_attest,
                                             key.certify_signature,
                                             key.public)
        self._certification = vtpm_binding.CACertification(
            public, attest, signature)
        self._ak_public = ak_public
        return self._certification

    def certification(self) -> vtpm_binding.CACertification:
        return self.ensure()

    def issue(self, instance: str, vtpm_ak_public: bytes,
              vtpm_ek_public: bytes) -> vtpm_binding.VTPMChain:
        """Sign a certificate for one vTPM; the chain to present."""
        ca = self.ensure()
        cert = vtpm_binding.VTPMCertificate(
            host=self.host, instance=canonical_uuid(instance),
            vtpm_ak=bytes(vtpm_ak_public),
            vtpm_ek_sha256=vtpm_binding.ek_sha256(vtpm_ek_public),
            ca_name=structures.parse_public(ca.public).name(),
            issued_at=int(self._clock()), serial=secrets.token_hex(16))
        payload = cert.payload()
        digest = hashlib.sha256(
            vtpm_binding.certificate_message(payload)).digest()
        with self._lock, self._open() as dev:
            signature = dev.sign(self.ca_handle, digest)
        return vtpm_binding.VTPMChain(
            ca, vtpm_binding.VTPMCertificate.token(payload, signature))


def provision_vtpm_ak(tcti: str, *, alg: str = "ecc",
                      handle: int = VTPM_AK_HANDLE,
                      ek_kind: str = "rsa2048") -> tuple[bytes, bytes]:
    """Create the vTPM's persistent AK over ``tcti``: (AK TPMT_PUBLIC,
    EK TPMT_PUBLIC). An AK already there is replaced: a fresh vTPM has
    none, and a second provisioning must not keep a key nobody
    certified."""
    with tpm_device.TPMDevice(tcti) as vtpm:
        ak = vtpm.create_ak(alg, handle, ek_kind=ek_kind, replace=True)
        return ak.public, vtpm.ek_public(ek_kind)


class Provisioner:
    """The vTPM driver's provisioning hook (a
    :data:`trusted_pools.vtpm.driver.Provisioner`): the driver calls it
    with the new vTPM's :class:`~trusted_pools.vtpm.driver.ProvisioningContext`
    and stores what it returns, ``{"vtpm_chain": {...}, "vtpm_ak_handle":
    int}``, with the instance. :meth:`provision` does the same for a vTPM
    reachable at a TCTI outside a driver."""

    def __init__(self, ca: HostCA, *, alg: str = "ecc",
                 ak_handle: int = VTPM_AK_HANDLE) -> None:
        self.ca = ca
        self.alg = alg
        self.ak_handle = ak_handle

    def __call__(self, context: Any) -> dict[str, Any]:
        return self.provision(context.tcti, context.instance_uuid)

    def provision(self, tcti: str, instance: str) -> dict[str, Any]:
        ak_public, ek_public = provision_vtpm_ak(tcti, alg=self.alg,
                                                 handle=self.ak_handle)
        chain = self.ca.issue(instance, ak_public, ek_public)
        return {"vtpm_chain": chain.to_wire(),
                "vtpm_ak_handle": self.ak_handle}
