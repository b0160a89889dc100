"""Access to a real TPM 2.0 (a host's TPM or a swtpm) through tpm2-pytss.

This is the only module of ``trusted_pools.tpm`` that talks to a TPM; the
rest of the package parses and verifies what it returns. The agent on each
compute host holds one :class:`TPMDevice` per TCTI (``device:/dev/tpmrm0``
on real hosts, ``swtpm:host=127.0.0.1,port=P`` in tests). Every command runs
in-process through ESAPI: no tool is spawned per quote.

Key hierarchy (decided here, documented for operators):

* **EK**: the persistent EK at the TCG handle (0x81010001 for RSA-2048,
  0x81010002 for ECC P-256, 0x81010016 for the high-range ECC P-384 EK that
  swtpm 0.7 provisions) if present, otherwise a transient EK created from
  the TCG default template (with the template and nonce from NV if the
  manufacturer left them), flushed after the command. Using a persistent EK
  is safe without re-deriving it: the verifier encrypts the credential to
  the key in the EK *certificate*, so a stranger's key at that handle could
  never activate it.
* **AK**: a restricted signing key (RSA-2048 RSASSA/SHA-256 or ECC P-256
  ECDSA/SHA-256, ``fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|
  noDA|restricted|sign``) created as a child of the EK, as ``tpm2_createak``
  and Keylime do, so AK and EK live and die with the same (endorsement)
  hierarchy and no storage primary key has to be generated first. It is
  persisted with EvictControl (default handle :data:`DEFAULT_AK_HANDLE`) so
  later quotes need no parent, session or load. ``noDA``: the AK has an
  empty authValue, so dictionary-attack protection adds nothing, and a DA
  lockout caused by another program must not stop attestation.
* **EK authorization**: a low-range EK (no ``userWithAuth``) is used
  through a policy session satisfied by PolicySecret(TPM_RH_ENDORSEMENT);
  a high-range EK with ``userWithAuth`` takes a password session.

swtpm has three transient object slots and no resource manager: every
transient object and session opened here is flushed before the method
returns, also when the TPM refuses the command.

Errors: a TPM or TSS response code becomes :class:`~trusted_pools.exception.
TPMError` (``command``, ``rc``, ``decoded`` from :mod:`.rc`), a DA lockout
the :class:`~trusted_pools.exception.TPMLockout` subclass, and a TPM that
cannot be reached :class:`~trusted_pools.exception.TPMUnreachable`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

# ESAPI logs every TPM error to stderr on its own; we raise typed errors
# with the decoded code instead. Set before tpm2_pytss loads libtss2; an
# operator's own TSS2_LOG setting wins.
os.environ.setdefault("TSS2_LOG", "all+NONE")

from tpm2_pytss import (  # noqa: E402
    ESAPI, ESYS_TR, TPM2_ALG, TPM2_CAP, TPM2_HT, TPM2_SE,
    TPM2B_DIGEST, TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT, TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE, TPMA_OBJECT, TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION, TPMS_PCR_SELECTION, TPMT_HA, TPMT_SIG_SCHEME,
    TPMT_SYM_DEF, TPMT_TK_CREATION, TPMT_TK_HASHCHECK, TPM2_RH, TPM2_ST,
    TSS2_Exception, TPM2B_DATA, TPM2B_PUBLIC_KEY_RSA, TPMT_RSA_DECRYPT,
    TPM2B_PRIVATE,
)
from tpm2_pytss.utils import (  # noqa: E402
    NoSuchIndex, NVReadEK, create_ek_template,
)

from trusted_pools import exception  # noqa: E402
from trusted_pools.tpm import constants, rc as tpm_rc  # noqa: E402

__all__ = [
    "AK_ALGORITHMS", "DEFAULT_AK_HANDLE", "DEFAULT_BINDING_KEY_HANDLE",
    "EK_SLOTS", "AttestationKey", "BindingKey", "CertifiedKey", "EKSlot",
    "PCRValues", "PCRSelectionSpec", "TPMDevice", "TransportKey",
]

# alg (TPM_ALG hash id) -> PCR indices.
PCRSelectionSpec = Mapping[int, Iterable[int]]
# alg -> {pcr: value}.
PCRValues = dict[int, dict[int, bytes]]

# An owner-range persistent handle away from the SRK (0x81000001) and the
# TCG endorsement range (0x8101xxxx, where the EKs live).
DEFAULT_AK_HANDLE = 0x81008001
# The host binding key (decrypt-only, see create_binding_key) sits beside it.
DEFAULT_BINDING_KEY_HANDLE = 0x81008002

AK_ALGORITHMS = ("ecc", "rsa")
_PCR_READ_MAX = 8  # TPM2_PCR_Read returns at most 8 digests per call.
_NUM_PCRS = 24


@dataclass(frozen=True)
class EKSlot:
    """Where one kind of EK lives (TCG EK Credential Profile 2.0, 2.2.1)."""

    kind: str
    template: str           # tpm2-pytss template name
    cert_index: int         # NV index of the EK certificate
    persistent_handle: int  # where provisioning usually persists the EK


EK_SLOTS: dict[str, EKSlot] = {s.kind: s for s in (
    EKSlot("rsa2048", "EK-RSA2048", 0x01C00002, 0x81010001),
    EKSlot("ecc256", "EK-ECC256", 0x01C0000A, 0x81010002),
    EKSlot("rsa2048-high", "EK-HIGH-RSA2048", 0x01C00012, 0x81010012),
    EKSlot("ecc256-high", "EK-HIGH-ECC256", 0x01C00014, 0x81010014),
    EKSlot("ecc384-high", "EK-HIGH-ECC384", 0x01C00016, 0x81010016),
)}


@dataclass(frozen=True)
class AttestationKey:
    """A persisted AK: its handle, TPMT_PUBLIC bytes and Name."""

    handle: int
    public: bytes
    name: bytes


@dataclass(frozen=True)
class CertifiedKey:
    """A key created in the TPM and certified by an AK.

    ``public`` is TPMT_PUBLIC; ``private`` is the TPM2B_PRIVATE blob
    (encrypted by the parent, only loadable in this TPM) so the key can be
    loaded again; ``certify_*`` is TPM2_Certify by the AK and
    ``creation_*`` TPM2_CertifyCreation (attest is TPMS_ATTEST, signature
    TPMT_SIGNATURE). ``handle`` is set when the key was persisted.
    """

    public: bytes
    name: bytes
    private: bytes
    certify_attest: bytes
    certify_signature: bytes
    creation_attest: bytes
    creation_signature: bytes
    creation_data: bytes
    handle: int | None = None


@dataclass(frozen=True)
class BindingKey:
    """A persisted host binding key (:meth:`TPMDevice.create_binding_key`).

    ``public`` is TPMT_PUBLIC and ``name`` its Name; ``certify_attest`` and
    ``certify_signature`` (TPMS_ATTEST, TPMT_SIGNATURE) are TPM2_Certify by
    the AK when one was asked for, else None. Unverified until
    :func:`trusted_pools.tpm.sealing.check_binding_key` says otherwise.
    """

    handle: int
    public: bytes
    name: bytes
    certify_attest: bytes | None = None
    certify_signature: bytes | None = None


@dataclass(frozen=True)
class TransportKey:
    """A one-time decrypt-only key made in this TPM for one vTPM migration
    (:meth:`TPMDevice.create_transport_key`). ``private`` is the
    TPM2B_PRIVATE blob, encrypted by the EK's storage key: only this TPM
    can load it again (the agent keeps it to survive a restart).
    ``certify_*`` is TPM2_Certify by the AK over the caller's nonce."""

    public: bytes
    name: bytes
    private: bytes
    certify_attest: bytes
    certify_signature: bytes


_AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.NODA | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT)

# A TPM-resident, non-restricted signing key for binding other objects
# (vTPM state, migration) to this TPM; it cannot leave the TPM.
_BOUND_KEY_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.NODA | TPMA_OBJECT.SIGN_ENCRYPT)

# The host binding key: RSA-2048 OAEP/SHA-256, decrypt only, not
# duplicable (fixedTPM, fixedParent), generated inside the TPM. Without a
# PCR policy userWithAuth lets the (empty) authValue authorize its use; with
# one, userWithAuth is clear and only the policy does.
_BINDING_KEY_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.NODA
    | TPMA_OBJECT.DECRYPT)
_BINDING_KEY_TEMPLATE = "rsa2048:oaep-sha256:null"

_KEY_TEMPLATES = {
    "ecc": "ecc256:ecdsa-sha256:null",
    "rsa": "rsa2048:rsassa-sha256:null",
}


def _template(alg: str, attributes: TPMA_OBJECT) -> TPM2B_PUBLIC:
    try:
        spec = _KEY_TEMPLATES[alg]
    except KeyError:
        raise exception.InvalidParameterValue(
            name="alg", reason="%r is not one of %s"
            % (alg, ", ".join(_KEY_TEMPLATES))) from None
    return TPM2B_PUBLIC.parse(spec, objectAttributes=attributes,
                              nameAlg=TPM2_ALG.SHA256)


def _selection(selection: PCRSelectionSpec) -> TPML_PCR_SELECTION:
    """Build a TPML_PCR_SELECTION, validating banks and indices."""
    if not selection:
        raise exception.InvalidParameterValue(
            name="selection", reason="select at least one PCR")
    entries = []
    for alg, pcrs in sorted(selection.items()):
        constants.hash_algorithm(alg)  # UnsupportedAlgorithm otherwise
        bitmap = bytearray(3)
        for pcr in pcrs:
            if isinstance(pcr, bool) or not isinstance(pcr, int) \
                    or not 0 <= pcr < _NUM_PCRS:
                raise exception.InvalidParameterValue(
                    name="selection", reason="PCR index %r out of range "
                    "0-%d" % (pcr, _NUM_PCRS - 1))
            bitmap[pcr // 8] |= 1 << (pcr % 8)
        entries.append(TPMS_PCR_SELECTION(
            hash=alg, sizeofSelect=3, pcrSelect=bytes(bitmap)))
    return TPML_PCR_SELECTION(entries)


def _selected_pcrs(sel: TPMS_PCR_SELECTION) -> list[int]:
    bitmap = bytes(sel.pcrSelect)[:sel.sizeofSelect]
    return [i * 8 + bit for i, octet in enumerate(bitmap)
            for bit in range(8) if octet & (1 << bit)]


class TPMDevice:
    """One open connection to a TPM. Use as a context manager.

    Not thread-safe: a TPM runs one command at a time, and so does an
    ESAPI context. The agent serialises access to its device.
    """

    def __init__(self, tcti: str, *, endorsement_auth: bytes = b"",
                 owner_auth: bytes = b"") -> None:
        if not isinstance(tcti, str) or not tcti:
            raise exception.InvalidParameterValue(
                name="tcti", reason="a TCTI string such as "
                "device:/dev/tpmrm0 is required")
        self.tcti = tcti
        try:
            self._esapi: ESAPI | None = ESAPI(tcti)
        except TSS2_Exception as exc:
            raise exception.TPMUnreachable(
                tcti=tcti, reason=tpm_rc.describe_rc(exc.rc)) from None
        except (ValueError, OSError, RuntimeError) as exc:
            # TCTILdr raises plain errors for unknown TCTI names.
            raise exception.TPMUnreachable(tcti=tcti, reason=str(exc)) \
                from None
        try:
            # First round trip: a TCTI that loaded but has no TPM behind it
            # (nothing listening) fails here, not in the caller's command.
            self._call("GetCapability", self.esapi.get_capability,
                       TPM2_CAP.TPM_PROPERTIES, 0x100, 1)
        except exception.TPMError as exc:
            self.close()
            raise exception.TPMUnreachable(
                tcti=tcti, reason=exc.kwargs.get("decoded", str(exc))) \
                from None
        except exception.TPMUnreachable:
            self.close()
            raise
        self.esapi.tr_set_auth(ESYS_TR.ENDORSEMENT, endorsement_auth)
        self.esapi.tr_set_auth(ESYS_TR.OWNER, owner_auth)

    # --- lifecycle -------------------------------------------------------

    @property
    def esapi(self) -> ESAPI:
        if self._esapi is None:
            raise exception.InvalidParameterValue(
                name="device", reason="the TPM connection is closed")
        return self._esapi

    def close(self) -> None:
        """Close the ESAPI context (and its TCTI). Safe to call twice."""
        if self._esapi is not None:
            esapi, self._esapi = self._esapi, None
            esapi.close()

    def __enter__(self) -> "TPMDevice":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- error translation ------------------------------------------------

    def _call(self, command: str, fn, *args, **kwargs):
        """Run one ESAPI call; TSS2 errors become the project's types."""
        try:
            return fn(*args, **kwargs)
        except TSS2_Exception as exc:
            raise self._error(command, exc.rc) from None

    def _error(self, command: str, rc: int) -> exception.TrustedPoolsError:
        decoded = tpm_rc.decode_rc(rc)
        if decoded.layer == 10:  # TCTI: the transport, not the TPM.
            return exception.TPMUnreachable(tcti=self.tcti,
                                            reason=str(decoded))
        fields = dict(command=command, rc=rc, decoded=str(decoded),
                      name=decoded.name, handle=decoded.handle,
                      parameter=decoded.parameter, session=decoded.session)
        if decoded.is_lockout:
            return exception.TPMLockout(**fields)
        return exception.TPMError(**fields)

    def _flush(self, handle: ESYS_TR) -> None:
        """Flush a transient object or session; never masks an error."""
        try:
            self.esapi.flush_context(handle)
        except TSS2_Exception:
            pass

    # --- NV and EK ----------------------------------------------------------

    def _nv_reader(self) -> NVReadEK:
        return self._call("GetCapability", NVReadEK, self.esapi)

    def read_nv(self, index: int) -> bytes | None:
        """The contents of NV index ``index``, or None if it is not defined.

        EK certificate indices are readable with their own (empty) auth.
        """
        reader = self._nv_reader()
        try:
            return self._call("NV_Read", reader, index)
        except NoSuchIndex:
            return None
        except exception.TPMError as exc:
            if exc.kwargs.get("name") == "TPM_RC_HANDLE":
                return None
            raise

    def read_ek_certificates(self) -> dict[str, bytes]:
        """EK certificates (DER) by EK kind, for every index that exists."""
        certs = {}
        for slot in EK_SLOTS.values():
            data = self.read_nv(slot.cert_index)
            if data:
                certs[slot.kind] = _strip_nv_padding(data)
        return certs

    def read_ek_certificate(self, kind: str = "rsa2048") -> bytes | None:
        """The DER EK certificate of ``kind``, None if the TPM has none."""
        data = self.read_nv(_ek_slot(kind).cert_index)
        return _strip_nv_padding(data) if data else None

    def _persistent_handles(self) -> set[int]:
        handles: set[int] = set()
        more, start = True, TPM2_HT.PERSISTENT << 24
        while more:
            more, data = self._call(
                "GetCapability", self.esapi.get_capability,
                TPM2_CAP.HANDLES, start, 64)
            found = [int(h) for h in data.data.handles]
            handles.update(found)
            if not found:
                break
            start = max(found) + 1
        return handles

    def persistent_handles(self) -> set[int]:
        """Every persistent object handle (0x81xxxxxx) in the TPM."""
        return self._persistent_handles()

    @contextlib.contextmanager
    def _ek(self, kind: str) -> Iterator[ESYS_TR]:
        """The EK of ``kind``, loaded for one use; transient ones flushed."""
        slot = _ek_slot(kind)
        if slot.persistent_handle in self._persistent_handles():
            yield self._call("ReadPublic", self.esapi.tr_from_tpmpublic,
                             slot.persistent_handle)
            return
        try:
            _, template = create_ek_template(slot.template,
                                             self._nv_reader())
        except ValueError as exc:
            raise exception.NotFound(
                reason="no %s EK on this TPM: %s" % (kind, exc)) from None
        handle = self._call("CreatePrimary", self.esapi.create_primary,
                            None, template, ESYS_TR.ENDORSEMENT)[0]
        try:
            yield handle
        finally:
            self._flush(handle)

    def ek_public(self, kind: str = "rsa2048") -> bytes:
        """The EK's TPMT_PUBLIC bytes (what the certificate certifies)."""
        with self._ek(kind) as ek:
            public = self._call("ReadPublic", self.esapi.read_public, ek)[0]
        return public.publicArea.marshal()

    @contextlib.contextmanager
    def _ek_session(self, ek: ESYS_TR) -> Iterator[ESYS_TR]:
        """An authorization for using the EK (see the module docstring)."""
        public = self._call("ReadPublic", self.esapi.read_public, ek)[0]
        area = public.publicArea
        if area.objectAttributes & TPMA_OBJECT.USERWITHAUTH:
            yield ESYS_TR.PASSWORD
            return
        session = self._call(
            "StartAuthSession", self.esapi.start_auth_session,
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), area.nameAlg)
        try:
            self._call("PolicySecret", self.esapi.policy_secret,
                       ESYS_TR.ENDORSEMENT, session)
            yield session
        finally:
            self._flush(session)

    # --- AK -----------------------------------------------------------------

    def create_ak(self, alg: str = "ecc", handle: int = DEFAULT_AK_HANDLE,
                  *, ek_kind: str = "rsa2048",
                  replace: bool = False) -> AttestationKey:
        """Create an AK under the EK, persist it at ``handle``, return it.

        An object already at ``handle`` is a :class:`Conflict` unless
        ``replace`` is set, in which case it is evicted first (the old AK's
        registration becomes useless: its private part is gone).
        """
        _check_persistent_handle(handle)
        template = _template(alg, _AK_ATTRIBUTES)
        if handle in self._persistent_handles():
            if not replace:
                raise exception.Conflict(
                    reason="persistent handle %#x is in use; pass "
                    "replace=True to evict it" % handle)
            self.evict(handle)
        with self._ek(ek_kind) as ek:
            with self._ek_session(ek) as session:
                private, public = self._call(
                    "Create", self.esapi.create, ek, None, template,
                    session1=session)[:2]
            with self._ek_session(ek) as session:
                transient = self._call("Load", self.esapi.load, ek,
                                       private, public, session1=session)
        try:
            self._call("EvictControl", self.esapi.evict_control,
                       ESYS_TR.OWNER, transient, handle)
        finally:
            self._flush(transient)
        return self.load_ak(handle)

    def load_ak(self, handle: int = DEFAULT_AK_HANDLE) -> AttestationKey:
        """The persisted AK at ``handle`` (after a restart, say)."""
        _check_persistent_handle(handle)
        tr = self._object(handle)
        public, name, _ = self._call("ReadPublic", self.esapi.read_public, tr)
        return AttestationKey(handle=handle,
                              public=public.publicArea.marshal(),
                              name=bytes(name))

    def evict(self, handle: int) -> None:
        """Remove the persistent object at ``handle``."""
        _check_persistent_handle(handle)
        tr = self._object(handle)
        self._call("EvictControl", self.esapi.evict_control,
                   ESYS_TR.OWNER, tr, handle)

    def _object(self, handle: int) -> ESYS_TR:
        _check_persistent_handle(handle)
        return self._call("ReadPublic(%#x)" % handle,
                          self.esapi.tr_from_tpmpublic, handle)

    # --- PCRs and quotes -----------------------------------------------------

    def quote(self, ak_handle: int, nonce: bytes,
              selection: PCRSelectionSpec) -> tuple[bytes, bytes]:
        """TPM2_Quote: (TPMS_ATTEST bytes, TPMT_SIGNATURE bytes).

        The AK's own scheme (RSASSA or ECDSA with SHA-256) signs.
        """
        _check_nonce(nonce)
        ak = self._object(ak_handle)
        attest, signature = self._call(
            "Quote", self.esapi.quote, ak, _selection(selection), nonce)
        return bytes(attest.attestationData), signature.marshal()

    def pcr_read(self, selection: PCRSelectionSpec) -> PCRValues:
        """Current PCR values: {hash alg: {pcr: digest}}.

        TPM2_PCR_Read returns at most 8 digests per call, so the read is
        repeated for what it left out; a bank the TPM does not have is a
        :class:`TPMError`, not an empty answer.
        """
        wanted = {alg: sorted(set(pcrs)) for alg, pcrs in selection.items()}
        _selection(wanted)  # validate
        values: PCRValues = {alg: {} for alg in wanted}
        while True:
            todo = {alg: [p for p in pcrs if p not in values[alg]]
                    for alg, pcrs in wanted.items()}
            todo = {alg: pcrs for alg, pcrs in todo.items() if pcrs}
            if not todo:
                return values
            _, out_sel, digests = self._call(
                "PCR_Read", self.esapi.pcr_read, _selection(todo))
            digest_list = [bytes(d) for d in digests]
            position = 0
            for sel in out_sel:
                for pcr in _selected_pcrs(sel):
                    if position >= len(digest_list):
                        break
                    values[int(sel.hash)][pcr] = digest_list[position]
                    position += 1
            if position == 0:
                raise exception.InvalidParameterValue(
                    name="selection", reason="the TPM returned no value for "
                    "%s: PCR bank not allocated on this TPM" % {
                        constants.hash_algorithm(a).name: p
                        for a, p in todo.items()})

    def pcr_extend(self, pcr: int, digests: Mapping[int, bytes]) -> None:
        """TPM2_PCR_Extend of ``pcr`` with one digest per bank."""
        if isinstance(pcr, bool) or not isinstance(pcr, int) \
                or not 0 <= pcr < _NUM_PCRS:
            raise exception.InvalidParameterValue(
                name="pcr", reason="%r out of range 0-%d"
                % (pcr, _NUM_PCRS - 1))
        values = []
        for alg, digest in sorted(digests.items()):
            size = constants.hash_algorithm(alg).digest_size
            if len(digest) != size:
                raise exception.InvalidParameterValue(
                    name="digests", reason="%d-byte digest for a %d-byte "
                    "bank" % (len(digest), size))
            values.append(_tpmt_ha(alg, digest))
        self._call("PCR_Extend", self.esapi.pcr_extend,
                   ESYS_TR.PCR0 + pcr, TPML_DIGEST_VALUES(values))

    # --- credential activation -----------------------------------------------

    def activate_credential(self, ak_handle: int, credential_blob: bytes,
                            encrypted_secret: bytes, *,
                            ek_kind: str = "rsa2048") -> bytes:
        """TPM2_ActivateCredential: the secret the verifier sealed to this
        TPM's EK for the AK's Name. ``credential_blob`` and
        ``encrypted_secret`` are the TPM2B_ID_OBJECT and
        TPM2B_ENCRYPTED_SECRET contents (without their size prefix).

        A TPM that does not hold both the EK and the named AK fails with a
        :class:`TPMError` (integrity or value check), never a wrong secret.
        """
        for name, value in (("credential_blob", credential_blob),
                            ("encrypted_secret", encrypted_secret)):
            if not isinstance(value, (bytes, bytearray)) or not value \
                    or len(value) > 0xFFFF:
                raise exception.InvalidParameterValue(
                    name=name, reason="1 to 65535 bytes are required")
        ak = self._object(ak_handle)
        with self._ek(ek_kind) as ek:
            with self._ek_session(ek) as session:
                secret = self._call(
                    "ActivateCredential", self.esapi.activate_credential,
                    ak, ek, TPM2B_ID_OBJECT(bytes(credential_blob)),
                    TPM2B_ENCRYPTED_SECRET(bytes(encrypted_secret)),
                    session1=ESYS_TR.PASSWORD, session2=session)
        return bytes(secret)

    # --- certification -------------------------------------------------------

    def certify(self, object_handle: int, ak_handle: int,
                qualifying_data: bytes = b"") -> tuple[bytes, bytes]:
        """TPM2_Certify of a persistent object by the AK:
        (TPMS_ATTEST, TPMT_SIGNATURE)."""
        _check_nonce(qualifying_data)
        return self._certify(self._object(object_handle),
                             self._object(ak_handle), qualifying_data)

    def _certify(self, obj: ESYS_TR, ak: ESYS_TR,
                 qualifying_data: bytes) -> tuple[bytes, bytes]:
        attest, signature = self._call(
            "Certify", self.esapi.certify, obj, ak, qualifying_data,
            TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
            session1=ESYS_TR.PASSWORD, session2=ESYS_TR.PASSWORD)
        return bytes(attest.attestationData), signature.marshal()

    def certify_creation(self, object_handle: int, ak_handle: int,
                         creation_hash: bytes, creation_ticket: bytes,
                         qualifying_data: bytes = b"") -> tuple[bytes, bytes]:
        """TPM2_CertifyCreation: proof by the AK that the TPM itself
        created the object (``creation_ticket`` is a marshalled
        TPMT_TK_CREATION from the Create that made it)."""
        _check_nonce(qualifying_data)
        try:
            ticket, used = TPMT_TK_CREATION.unmarshal(creation_ticket)
        except Exception:  # noqa: BLE001 - pytss raises assorted errors
            raise exception.InvalidParameterValue(
                name="creation_ticket",
                reason="not a TPMT_TK_CREATION") from None
        if used != len(creation_ticket):
            raise exception.InvalidParameterValue(
                name="creation_ticket", reason="trailing bytes")
        return self._certify_creation(
            self._object(object_handle), self._object(ak_handle),
            creation_hash, ticket, qualifying_data)

    def _certify_creation(self, obj: ESYS_TR, ak: ESYS_TR,
                          creation_hash: bytes, ticket: TPMT_TK_CREATION,
                          qualifying_data: bytes) -> tuple[bytes, bytes]:
        attest, signature = self._call(
            "CertifyCreation", self.esapi.certify_creation, ak, obj,
            qualifying_data, TPM2B_DIGEST(creation_hash),
            TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL), ticket)
        return bytes(attest.attestationData), signature.marshal()

    def create_certified_key(self, ak_handle: int, alg: str = "ecc", *,
                             qualifying_data: bytes = b"",
                             persist_handle: int | None = None,
                             ek_kind: str = "rsa2048") -> CertifiedKey:
        """Create a non-exportable signing key under the EK and have the AK
        certify it (TPM2_Certify and TPM2_CertifyCreation), so a verifier
        that trusts the AK knows the key lives in this TPM.

        With ``persist_handle`` the key is also made persistent there.
        """
        _check_nonce(qualifying_data)
        if persist_handle is not None:
            _check_persistent_handle(persist_handle)
        template = _template(alg, _BOUND_KEY_ATTRIBUTES)
        ak = self._object(ak_handle)
        with self._ek(ek_kind) as ek:
            with self._ek_session(ek) as session:
                (private, public, creation_data, creation_hash,
                 ticket) = self._call(
                    "Create", self.esapi.create, ek,
                    TPM2B_SENSITIVE_CREATE(), template,
                    session1=session)
            with self._ek_session(ek) as session:
                key = self._call("Load", self.esapi.load, ek, private,
                                 public, session1=session)
        try:
            cert_attest, cert_sig = self._certify(key, ak, qualifying_data)
            creation_attest, creation_sig = self._certify_creation(
                key, ak, bytes(creation_hash), ticket, qualifying_data)
            name = bytes(self._call("ReadPublic", self.esapi.read_public,
                                    key)[1])
            if persist_handle is not None:
                self._call("EvictControl", self.esapi.evict_control,
                           ESYS_TR.OWNER, key, persist_handle)
        finally:
            self._flush(key)
        return CertifiedKey(
            public=public.publicArea.marshal(), name=name,
            private=private.marshal(), certify_attest=cert_attest,
            certify_signature=cert_sig, creation_attest=creation_attest,
            creation_signature=creation_sig,
            creation_data=creation_data.marshal(), handle=persist_handle)

    # --- host binding key (decrypt-only, for wrapping secrets to this TPM) ---

    def policy_pcr_digest(self, selection: PCRSelectionSpec) -> bytes:
        """The PolicyPCR policy digest (SHA-256) over the *current* values
        of ``selection``, computed by the TPM in a trial session."""
        session = self._call(
            "StartAuthSession", self.esapi.start_auth_session,
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
        try:
            self._call("PolicyPCR", self.esapi.policy_pcr, session,
                       TPM2B_DIGEST(), _selection(selection))
            return bytes(self._call("PolicyGetDigest",
                                    self.esapi.policy_get_digest, session))
        finally:
            self._flush(session)

    def create_binding_key(self, handle: int = DEFAULT_BINDING_KEY_HANDLE,
                           *, pcr_selection: PCRSelectionSpec | None = None,
                           ak_handle: int | None = None,
                           qualifying_data: bytes = b"",
                           ek_kind: str = "rsa2048",
                           replace: bool = False) -> "BindingKey":
        """Create the host binding key under the EK and persist it.

        The key is RSA-2048 with the OAEP/SHA-256 scheme fixed, ``decrypt``
        set and ``sign``/``restricted`` clear, ``fixedTPM|fixedParent|
        sensitiveDataOrigin``: the private part was made in this TPM and can
        never leave it. With ``pcr_selection`` its authPolicy is PolicyPCR
        over the current values of those PCRs and ``userWithAuth`` is clear:
        it decrypts only while the host's PCRs still hold those values.
        With ``ak_handle`` the AK certifies it (TPM2_Certify over
        ``qualifying_data``). An object already at ``handle`` is a
        :class:`Conflict` unless ``replace`` is set (whatever was wrapped to
        the old key is lost).
        """
        _check_persistent_handle(handle)
        _check_nonce(qualifying_data)
        attributes = _BINDING_KEY_ATTRIBUTES
        policy = b""
        if pcr_selection:
            policy = self.policy_pcr_digest(pcr_selection)
        else:
            attributes |= TPMA_OBJECT.USERWITHAUTH
        template = TPM2B_PUBLIC.parse(
            _BINDING_KEY_TEMPLATE, objectAttributes=attributes,
            nameAlg=TPM2_ALG.SHA256)
        template.publicArea.authPolicy = TPM2B_DIGEST(policy)
        if handle in self._persistent_handles():
            if not replace:
                raise exception.Conflict(
                    reason="persistent handle %#x is in use; pass "
                    "replace=True to evict it" % handle)
            self.evict(handle)
        with self._ek(ek_kind) as ek:
            with self._ek_session(ek) as session:
                private, public = self._call(
                    "Create", self.esapi.create, ek,
                    TPM2B_SENSITIVE_CREATE(), template,
                    session1=session)[:2]
            with self._ek_session(ek) as session:
                key = self._call("Load", self.esapi.load, ek, private,
                                 public, session1=session)
        try:
            self._call("EvictControl", self.esapi.evict_control,
                       ESYS_TR.OWNER, key, handle)
        finally:
            self._flush(key)
        return self.load_binding_key(handle, ak_handle=ak_handle,
                                     qualifying_data=qualifying_data)

    def load_binding_key(self, handle: int = DEFAULT_BINDING_KEY_HANDLE,
                         *, ak_handle: int | None = None,
                         qualifying_data: bytes = b"") -> "BindingKey":
        """The persisted binding key at ``handle``; with ``ak_handle`` a
        fresh TPM2_Certify of it over ``qualifying_data`` (a verifier's
        nonce) is included. Checking what it is is the caller's business:
        :func:`trusted_pools.tpm.sealing.check_binding_key`."""
        _check_nonce(qualifying_data)
        tr = self._object(handle)
        public, name, _ = self._call("ReadPublic", self.esapi.read_public, tr)
        attest = signature = None
        if ak_handle is not None:
            attest, signature = self._certify(tr, self._object(ak_handle),
                                              qualifying_data)
        return BindingKey(handle=handle, public=public.publicArea.marshal(),
                          name=bytes(name), certify_attest=attest,
                          certify_signature=signature)

    # --- one-time transport keys (vTPM migration) -----------------------------

    def create_transport_key(self, ak_handle: int, *,
                             qualifying_data: bytes = b"",
                             ek_kind: str = "rsa2048") -> TransportKey:
        """A transient key with the binding key's attributes (RSA-2048,
        OAEP/SHA-256, decrypt only, fixedTPM|fixedParent|
        sensitiveDataOrigin, no policy) made under the EK, certified by the
        AK over ``qualifying_data`` and flushed again: nothing persistent
        is used, so any number of migrations can be in flight."""
        _check_nonce(qualifying_data)
        template = TPM2B_PUBLIC.parse(
            _BINDING_KEY_TEMPLATE,
            objectAttributes=_BINDING_KEY_ATTRIBUTES
            | TPMA_OBJECT.USERWITHAUTH, nameAlg=TPM2_ALG.SHA256)
        ak = self._object(ak_handle)
        with self._ek(ek_kind) as ek:
            with self._ek_session(ek) as session:
                private, public = self._call(
                    "Create", self.esapi.create, ek,
                    TPM2B_SENSITIVE_CREATE(), template,
                    session1=session)[:2]
            with self._ek_session(ek) as session:
                key = self._call("Load", self.esapi.load, ek, private,
                                 public, session1=session)
        try:
            attest, signature = self._certify(key, ak, qualifying_data)
            name = bytes(self._call("ReadPublic", self.esapi.read_public,
                                    key)[1])
        finally:
            self._flush(key)
        return TransportKey(public=public.publicArea.marshal(), name=name,
                            private=private.marshal(),
                            certify_attest=attest,
                            certify_signature=signature)

    def transport_decrypt(self, public: bytes, private: bytes,
                          ciphertext: bytes, label: bytes, *,
                          ek_kind: str = "rsa2048") -> bytes:
        """Load a transport key (:meth:`create_transport_key`) under the
        EK, TPM2_RSA_Decrypt ``ciphertext`` with ``label`` (zero-terminated,
        as in :meth:`rsa_decrypt`), flush it. A blob of another TPM does
        not load; a ciphertext for another key fails: :class:`TPMError`."""
        if not isinstance(ciphertext, (bytes, bytearray)) or not ciphertext \
                or len(ciphertext) > 512:
            raise exception.InvalidParameterValue(
                name="ciphertext", reason="1 to 512 bytes are required")
        if not isinstance(label, (bytes, bytearray)) or len(label) > 64 \
                or not label or label[-1] != 0:
            raise exception.InvalidParameterValue(
                name="label", reason="1 to 64 bytes ending with a zero "
                "octet are required")
        try:
            pub, used = TPM2B_PUBLIC.unmarshal(
                len(public).to_bytes(2, "big") + bytes(public))
            priv, used_private = TPM2B_PRIVATE.unmarshal(bytes(private))
        except Exception:  # noqa: BLE001 - pytss raises assorted errors
            raise exception.InvalidParameterValue(
                name="transport key", reason="not a TPMT_PUBLIC and "
                "TPM2B_PRIVATE pair") from None
        if used_private != len(private):
            raise exception.InvalidParameterValue(
                name="transport key", reason="trailing bytes")
        scheme = TPMT_RSA_DECRYPT(scheme=TPM2_ALG.OAEP)
        scheme.details.oaep.hashAlg = TPM2_ALG.SHA256
        with self._ek(ek_kind) as ek:
            with self._ek_session(ek) as session:
                key = self._call("Load", self.esapi.load, ek, priv, pub,
                                 session1=session)
        try:
            return bytes(self._call(
                "RSA_Decrypt", self.esapi.rsa_decrypt, key,
                TPM2B_PUBLIC_KEY_RSA(bytes(ciphertext)), scheme,
                TPM2B_DATA(bytes(label)), session1=ESYS_TR.PASSWORD))
        finally:
            self._flush(key)

    def rsa_decrypt(self, handle: int, ciphertext: bytes, label: bytes, *,
                    pcr_selection: PCRSelectionSpec | None = None) -> bytes:
        """TPM2_RSA_Decrypt (OAEP/SHA-256) with the persistent key at
        ``handle``. ``label`` must end with a zero octet (the TPM adds one
        otherwise, and the sender must have used the same bytes).

        A key with an authPolicy is used through a policy session satisfied
        by PolicyPCR over ``pcr_selection`` (required then); PCRs that moved
        since the key was made fail with TPM_RC_POLICY_FAIL. A ciphertext
        made for another key, or altered, fails with TPM_RC_VALUE. Both are
        :class:`TPMError`, never wrong plaintext.
        """
        if not isinstance(ciphertext, (bytes, bytearray)) or not ciphertext \
                or len(ciphertext) > 512:
            raise exception.InvalidParameterValue(
                name="ciphertext", reason="1 to 512 bytes are required")
        if not isinstance(label, (bytes, bytearray)) or len(label) > 64 \
                or (label and label[-1] != 0):
            raise exception.InvalidParameterValue(
                name="label", reason="at most 64 bytes ending with a zero "
                "octet are required")
        tr = self._object(handle)
        public = self._call("ReadPublic", self.esapi.read_public, tr)[0]
        has_policy = len(bytes(public.publicArea.authPolicy)) > 0
        scheme = TPMT_RSA_DECRYPT(scheme=TPM2_ALG.OAEP)
        scheme.details.oaep.hashAlg = TPM2_ALG.SHA256
        if not has_policy:
            return bytes(self._call(
                "RSA_Decrypt", self.esapi.rsa_decrypt, tr,
                TPM2B_PUBLIC_KEY_RSA(bytes(ciphertext)), scheme,
                TPM2B_DATA(bytes(label)), session1=ESYS_TR.PASSWORD))
        if not pcr_selection:
            raise exception.InvalidParameterValue(
                name="pcr_selection", reason="the key at %#x has a PCR "
                "policy: name the PCRs it was bound to" % handle)
        session = self._call(
            "StartAuthSession", self.esapi.start_auth_session,
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY,
            TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL), TPM2_ALG.SHA256)
        try:
            self._call("PolicyPCR", self.esapi.policy_pcr, session,
                       TPM2B_DIGEST(), _selection(pcr_selection))
            return bytes(self._call(
                "RSA_Decrypt", self.esapi.rsa_decrypt, tr,
                TPM2B_PUBLIC_KEY_RSA(bytes(ciphertext)), scheme,
                TPM2B_DATA(bytes(label)), session1=session))
        finally:
            self._flush(session)

    def sign(self, handle: int, digest: bytes) -> bytes:
        """TPM2_Sign of ``digest`` with the persistent signing key at
        ``handle`` (the key's own scheme; a NULL validation ticket, so only
        an unrestricted key signs): TPMT_SIGNATURE bytes.

        ``digest`` must be as long as the scheme's hash. A caller that
        signs its own structures prefixes them with a domain tag before
        hashing, so a signature can never pass for one over a TPMS_ATTEST.
        """
        if not isinstance(digest, (bytes, bytearray)) or \
                len(digest) not in (20, 32, 48, 64):
            raise exception.InvalidParameterValue(
                name="digest", reason="a SHA-1/256/384/512 digest is "
                "required")
        key = self._object(handle)
        signature = self._call(
            "Sign", self.esapi.sign, key, TPM2B_DIGEST(bytes(digest)),
            TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL),
            TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL))
        return signature.marshal()

    # --- administration ------------------------------------------------------

    def reset_dictionary_attack(self, lockout_auth: bytes = b"") -> None:
        """TPM2_DictionaryAttackLockReset. A wrong ``lockout_auth`` fails
        with TPM_RC_AUTH_FAIL and then locks the lockout hierarchy itself
        (:class:`TPMLockout`) for lockoutRecovery seconds."""
        self.esapi.tr_set_auth(ESYS_TR.LOCKOUT, lockout_auth)
        self._call("DictionaryAttackLockReset",
                   self.esapi.dictionary_attack_lock_reset, ESYS_TR.LOCKOUT)

    def transient_handles(self) -> list[int]:
        """Transient objects currently loaded (tests check for leaks)."""
        _, data = self._call("GetCapability", self.esapi.get_capability,
                             TPM2_CAP.HANDLES, TPM2_HT.TRANSIENT << 24, 64)
        return [int(h) for h in data.data.handles]


def _tpmt_ha(alg: int, digest: bytes) -> TPMT_HA:
    ha = TPMT_HA(hashAlg=alg)
    member = {TPM2_ALG.SHA1: "sha1", TPM2_ALG.SHA256: "sha256",
              TPM2_ALG.SHA384: "sha384", TPM2_ALG.SHA512: "sha512"}[alg]
    setattr(ha.digest, member, digest)
    return ha


def _ek_slot(kind: str) -> EKSlot:
    try:
        return EK_SLOTS[kind]
    except KeyError:
        raise exception.InvalidParameterValue(
            name="ek_kind", reason="%r is not one of %s"
            % (kind, ", ".join(EK_SLOTS))) from None


def _check_persistent_handle(handle: int) -> None:
    if isinstance(handle, bool) or not isinstance(handle, int) \
            or not 0x81000000 <= handle <= 0x81FFFFFF:
        raise exception.InvalidParameterValue(
            name="handle", reason="%r is not a persistent handle "
            "(0x81000000-0x81ffffff)" % (handle,))


def _check_nonce(nonce: bytes) -> None:
    # TPM2B_DATA holds at most sizeof(TPMT_HA) = 66 bytes.
    if not isinstance(nonce, (bytes, bytearray)) or len(nonce) > 64:
        raise exception.InvalidParameterValue(
            name="nonce", reason="bytes of at most 64 octets are required")


def _strip_nv_padding(data: bytes) -> bytes:
    """NV indices are sized generously; a DER certificate says its own
    length (SEQUENCE header), so cut what follows it."""
    if len(data) < 4 or data[0] != 0x30:
        return data
    first = data[1]
    if first < 0x80:
        length, header = first, 2
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            return data
        length = int.from_bytes(data[2:2 + count], "big")
        header = 2 + count
    end = header + length
    return data[:end] if end <= len(data) else data
