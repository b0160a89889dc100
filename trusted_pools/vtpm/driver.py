"""The vTPM driver interface: one virtual TPM per instance on this host.

A driver is the vRoT manager of ISO/IEC 27070 5.3 for one compute host: it
creates, runs, stops and destroys one vTPM per instance and keeps the state
of each confidential at rest. The agent loads the driver named by
``[vtpm] driver`` from the ``trusted_pools.vtpm.drivers`` entry-point
namespace (:func:`load_driver`); only that driver is imported.

Contract for every driver:

* instances are named by their Nova instance UUID (canonical lowercase);
* :meth:`VTPMDriver.create` makes a *stopped* vTPM with its endorsement
  credentials; a ``provisioner`` (:data:`Provisioner`) may talk to the new
  TPM once before it is handed to a hypervisor;
* :meth:`~VTPMDriver.start` makes it reachable at
  :meth:`~VTPMDriver.attach_info` for exactly one hypervisor process;
* a vTPM whose process died without being stopped is reported
  :attr:`VTPMStatus.FAILED` with a reason, and :meth:`~VTPMDriver.start`
  runs it again on its state;
* a state that is missing, damaged or not releasable on this host is an
  error (:class:`~trusted_pools.exception.VTPMStateUnusable`,
  :class:`~trusted_pools.exception.VTPMKeyUnavailable`), never a fresh TPM;
* :meth:`~VTPMDriver.destroy` erases the state and the key that protects it.
"""

from __future__ import annotations

import abc
import enum
import re
import uuid as uuid_lib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from xml.sax.saxutils import quoteattr

from trusted_pools import exception

__all__ = [
    "MIGRATION_INCOMING", "MIGRATION_OUTGOING", "NAMESPACE", "AttachInfo",
    "ProvisioningContext", "Provisioner",
    "StateExport", "VTPMDriver", "VTPMInfo", "VTPMStatus",
    "canonical_uuid", "load_driver",
]

NAMESPACE = "trusted_pools.vtpm.drivers"


class VTPMStatus(str, enum.Enum):
    """What a vTPM is doing (the operator view shows these words)."""

    RUNNING = "running"
    STOPPED = "stopped"
    MIGRATING = "migrating"
    FAILED = "failed"


#: :attr:`VTPMInfo.migration` values of a MIGRATING vTPM.
MIGRATION_OUTGOING = "outgoing"
MIGRATION_INCOMING = "incoming"


def canonical_uuid(value: str) -> str:
    """``value`` as a canonical lowercase UUID, or InvalidParameterValue."""
    try:
        return str(uuid_lib.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise exception.InvalidParameterValue(
            name="instance_uuid", reason="%r is not a UUID" % (value,)) \
            from None


@dataclass(frozen=True)
class VTPMInfo:
    """One vTPM as the driver sees it now.

    ``reason`` explains a FAILED (or MIGRATING) status; ``metadata`` is what
    the driver and the provisioner stored at creation. ``migration`` says
    which way a MIGRATING vTPM is going (:data:`MIGRATION_OUTGOING`,
    :data:`MIGRATION_INCOMING`), else None.
    """

    instance_uuid: str
    status: VTPMStatus
    reason: str | None = None
    pid: int | None = None
    socket_path: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    migration: str | None = None


_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class AttachInfo:
    """What a hypervisor needs to connect a guest to a running vTPM.

    The vTPM listens on ``socket_path`` (the swtpm control channel, a UNIX
    socket); the hypervisor connects to it (QEMU's ``emulator`` TPM
    backend; libvirt's ``external`` backend).
    """

    instance_uuid: str
    socket_path: str
    model: str = "tpm-crb"
    chardev_id: str = "chrtpm"
    tpmdev_id: str = "tpm0"

    def __post_init__(self) -> None:
        if self.model not in ("tpm-crb", "tpm-tis"):
            raise exception.InvalidParameterValue(
                name="model", reason="tpm-crb or tpm-tis")
        for name in ("chardev_id", "tpmdev_id"):
            if not _ID.fullmatch(getattr(self, name)):
                raise exception.InvalidParameterValue(
                    name=name, reason="1-64 characters of A-Z a-z 0-9 _ -")
        if not self.socket_path.startswith("/") or "," in self.socket_path:
            # QEMU splits option values at commas.
            raise exception.InvalidParameterValue(
                name="socket_path", reason="an absolute path without commas")

    def libvirt_xml(self) -> str:
        """The domain's ``<tpm>`` device (libvirt 9.0+ external backend:
        libvirt connects the guest to a swtpm it does not run itself)."""
        return ("<tpm model=%s>\n"
                "  <backend type='external'>\n"
                "    <source type='unix' mode='connect' path=%s/>\n"
                "  </backend>\n"
                "</tpm>" % (quoteattr(self.model),
                            quoteattr(self.socket_path)))

    def qemu_args(self) -> list[str]:
        """``qemu-system-*`` arguments attaching the vTPM."""
        return ["-chardev", "socket,id=%s,path=%s"
                % (self.chardev_id, self.socket_path),
                "-tpmdev", "emulator,id=%s,chardev=%s"
                % (self.tpmdev_id, self.chardev_id),
                "-device", "%s,tpmdev=%s" % (self.model, self.tpmdev_id)]


@dataclass(frozen=True)
class ProvisioningContext:
    """Handed to a :data:`Provisioner`: the new vTPM, reachable (only for
    the provisioner's call) at ``tcti`` (a tpm2-tss TCTI string, e.g.
    ``swtpm:path=/.../data.sock``), started and TPM2_Startup done."""

    instance_uuid: str
    tcti: str
    metadata: Mapping[str, Any]


#: A callable run once after the vTPM is manufactured, before any
#: hypervisor sees it. It returns JSON-serialisable metadata (or None),
#: stored with the instance under ``metadata["provisioner"]``. An exception
#: it raises aborts the create, and the half-made vTPM is erased.
Provisioner = Callable[[ProvisioningContext], "Mapping[str, Any] | None"]


@dataclass(frozen=True)
class StateExport:
    """A stopped vTPM's state, for a cold migration or a backup.

    ``files`` are the driver's state files as stored (encrypted);
    ``wrapped_key`` is the state key RSA-OAEP-wrapped (label
    :data:`trusted_pools.tpm.sealing.LABEL_VTPM_STATE`) to the destination's
    binding key; ``metadata`` what :class:`VTPMInfo` shows. Nothing in it is
    usable without the destination's TPM.
    """

    instance_uuid: str
    driver: str
    metadata: Mapping[str, Any]
    files: Mapping[str, bytes]
    wrapped_key: bytes


class VTPMDriver(abc.ABC):
    """Base class of the vTPM drivers. See the module docstring."""

    #: Entry-point name.
    name: str = "abstract"

    #: Called after manufacturing when create() gets no provisioner.
    default_provisioner: Provisioner | None = None

    @classmethod
    def from_conf(cls, conf: Any, **kwargs: Any) -> "VTPMDriver":
        """Build the driver from the ``[vtpm]`` options; ``kwargs`` carry
        what configuration cannot (callables such as a provisioner)."""
        raise exception.VTPMOperationNotSupported(
            driver=cls.name, operation="from_conf",
            reason="the driver takes no configuration")

    @abc.abstractmethod
    def create(self, instance_uuid: str, *,
               provisioner: Provisioner | None = None,
               metadata: Mapping[str, Any] | None = None) -> VTPMInfo:
        """Manufacture a stopped vTPM for ``instance_uuid``
        (:class:`VTPMExists` if there is one)."""

    @abc.abstractmethod
    def start(self, instance_uuid: str) -> VTPMInfo:
        """Run the vTPM; a running one is left alone."""

    @abc.abstractmethod
    def stop(self, instance_uuid: str) -> VTPMInfo:
        """Shut the vTPM down gracefully (state saved); idempotent."""

    @abc.abstractmethod
    def destroy(self, instance_uuid: str) -> None:
        """Stop it if needed and erase its state and key."""

    @abc.abstractmethod
    def status(self, instance_uuid: str) -> VTPMInfo:
        """The vTPM's current status (:class:`VTPMNotFound` if none)."""

    @abc.abstractmethod
    def list(self) -> list[VTPMInfo]:
        """Every vTPM on this host."""

    @abc.abstractmethod
    def socket_path(self, instance_uuid: str) -> str:
        """Where the hypervisor connects once the vTPM runs."""

    def attach_info(self, instance_uuid: str, *, model: str = "tpm-crb"
                    ) -> AttachInfo:
        """Libvirt XML and QEMU arguments for the instance's vTPM."""
        instance_uuid = canonical_uuid(instance_uuid)
        return AttachInfo(instance_uuid, self.socket_path(instance_uuid),
                          model=model)

    def check(self) -> list[VTPMInfo]:
        """Look at every vTPM, record and log the ones that died; return
        the FAILED ones."""
        return [info for info in self.list()
                if info.status is VTPMStatus.FAILED]

    def update_metadata(self, instance_uuid: str,
                        changes: Mapping[str, Any]) -> VTPMInfo:
        """Merge ``changes`` into the vTPM's stored metadata (a migrated
        vTPM's new chain to this host, on commit)."""
        raise exception.VTPMOperationNotSupported(
            driver=self.name, operation="update_metadata",
            reason="this driver keeps no metadata it can change")

    def export_state(self, instance_uuid: str, *, destination_key: Any,
                     live: bool = False) -> StateExport:
        """The stopped vTPM's state for the holder of ``destination_key``
        (a :class:`trusted_pools.tpm.sealing.VerifiedBindingKey`). The
        vTPM is MIGRATING afterwards until :meth:`cancel_migration` or
        :meth:`destroy`. ``live=True`` (a running guest) is not supported
        by any driver yet."""
        raise exception.VTPMOperationNotSupported(
            driver=self.name, operation="export_state",
            reason="this driver cannot export state")

    def import_state(self, export: StateExport) -> VTPMInfo:
        """Create a stopped vTPM from :meth:`export_state` output."""
        raise exception.VTPMOperationNotSupported(
            driver=self.name, operation="import_state",
            reason="this driver cannot import state")

    def cancel_migration(self, instance_uuid: str) -> VTPMInfo:
        """Clear MIGRATING: the source keeps (and may start) its vTPM."""
        raise exception.VTPMOperationNotSupported(
            driver=self.name, operation="cancel_migration",
            reason="this driver cannot export state")

    # --- live migration ------------------------------------------------------
    # A running guest's vTPM state travels inside the hypervisor's own
    # migration stream (QEMU asks the vTPM for its state blobs over the
    # control channel it owns), encrypted by the vTPM with a migration
    # key. The driver's part: give that key out on the source, start a
    # vTPM waiting for the state on the destination, and settle both sides
    # once the caller (the migration protocol) has committed or aborted.
    # Every step is idempotent: a caller that lost an answer asks again.

    def live_migration_key(self, instance_uuid: str) -> bytes:
        """Source: the key the running vTPM encrypts its migration state
        blobs with (released by this host's TPM). The vTPM is MIGRATING
        (outgoing) from now on: once its hypervisor lets it go it will not
        start again here until :meth:`abort_outgoing`."""
        raise exception.VTPMOperationNotSupported(
            driver=self.name, operation="live_migration_key",
            reason="this driver cannot migrate a running vTPM")

    def prepare_incoming(self, instance_uuid: str, *, migration_key: bytes,
                         metadata: Mapping[str, Any]) -> VTPMInfo:
        """Destination: a new vTPM, MIGRATING (incoming), running and
        waiting for its state from a hypervisor started with
        ``-incoming``; it decrypts the state with ``migration_key`` and
        keeps it at rest under a fresh key sealed to this host's TPM.
        ``metadata`` is the source's :attr:`VTPMInfo.metadata`."""
        raise exception.VTPMOperationNotSupported(
            driver=self.name, operation="prepare_incoming",
            reason="this driver cannot receive a running vTPM")

    def check_incoming(self, instance_uuid: str) -> VTPMInfo:
        """Destination, after the hypervisor's migration completed and
        before the conductor commits: raise unless the state arrived and
        the receiving hypervisor holds the vTPM. Changes nothing (an
        abort may still discard the vTPM)."""
        raise exception.VTPMOperationNotSupported(
            driver=self.name, operation="check_incoming",
            reason="this driver cannot receive a running vTPM")

    def finish_incoming(self, instance_uuid: str, *,
                        checked: bool = False) -> VTPMInfo:
        """Destination, after the hypervisor's migration completed: the
        vTPM is RUNNING here (its state arrived; metadata persisted).
        ``checked``: :meth:`check_incoming` passed before the commit, so
        a hypervisor that let go of the vTPM since (the guest stopped
        right after the move) does not stop the committed vTPM from
        being finished; the state must still be there."""
        raise exception.VTPMOperationNotSupported(
            driver=self.name, operation="finish_incoming",
            reason="this driver cannot receive a running vTPM")

    def finish_outgoing(self, instance_uuid: str) -> None:
        """Source, after the migration was committed: erase the state and
        its keys (the vTPM process left with its hypervisor)."""
        raise exception.VTPMOperationNotSupported(
            driver=self.name, operation="finish_outgoing",
            reason="this driver cannot migrate a running vTPM")

    def abort_incoming(self, instance_uuid: str) -> None:
        """Destination, the migration aborted: discard the incoming vTPM
        (refused for a vTPM that is not incoming)."""
        raise exception.VTPMOperationNotSupported(
            driver=self.name, operation="abort_incoming",
            reason="this driver cannot receive a running vTPM")

    def abort_outgoing(self, instance_uuid: str) -> VTPMInfo:
        """Source, the migration aborted: clear MIGRATING; the guest
        carries on with its vTPM here."""
        raise exception.VTPMOperationNotSupported(
            driver=self.name, operation="abort_outgoing",
            reason="this driver cannot migrate a running vTPM")


def load_driver(name: str, *, conf: Any = None, **kwargs: Any
                ) -> VTPMDriver:
    """Load the driver ``name`` from :data:`NAMESPACE` and build it: with
    ``conf`` (an oslo.config ``ConfigOpts``) through its ``from_conf``
    class method (``kwargs`` passed along), otherwise with ``kwargs``.

    Any failure (no such entry point, import error, the constructor
    refusing its options) is :class:`VTPMDriverLoadFailed` naming the
    driver.
    """
    from stevedore import driver as stevedore_driver
    from stevedore import exception as stevedore_exception
    try:
        manager = stevedore_driver.DriverManager(
            NAMESPACE, name, invoke_on_load=False,
            on_load_failure_callback=_reraise)
    except stevedore_exception.NoMatches:
        raise exception.VTPMDriverLoadFailed(
            driver=name, reason="no entry point %r in namespace %s"
            % (name, NAMESPACE)) from None
    except exception.VTPMDriverLoadFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - name the driver, keep cause
        raise exception.VTPMDriverLoadFailed(
            driver=name, reason="%s: %s" % (type(exc).__name__, exc)) \
            from exc
    cls = manager.driver
    if not (isinstance(cls, type) and issubclass(cls, VTPMDriver)):
        raise exception.VTPMDriverLoadFailed(
            driver=name, reason="%r is not a VTPMDriver class" % (cls,))
    try:
        if conf is not None:
            return cls.from_conf(conf, **kwargs)
        return cls(**kwargs)
    except exception.TrustedPoolsError as exc:
        raise exception.VTPMDriverLoadFailed(
            driver=name, reason=exc.kwargs.get("reason") or str(exc)) \
            from exc
    except (TypeError, ValueError, OSError) as exc:
        raise exception.VTPMDriverLoadFailed(
            driver=name, reason="%s: %s" % (type(exc).__name__, exc)) \
            from exc


def _reraise(manager: Any, entrypoint: Any, exc: Exception) -> None:
    raise exception.VTPMDriverLoadFailed(
        driver=entrypoint.name, reason="%s: %s"
        % (type(exc).__name__, exc)) from exc
