"""What a compute host's hypervisor driver calls around a live migration.

Modelled on the sequence Nova's libvirt driver follows (nova/virt/driver.py,
nova/virt/libvirt/driver.py, Nova 34), one method per step, each a thin
wrapper over the host's :class:`~trusted_pools.vtpm.driver.VTPMDriver`:

* source, Nova's ``check_can_live_migrate_source``: :meth:`source_key`;
* destination, ``pre_live_migration``: :meth:`pre_live_migration`;
* source, ``live_migration``: QEMU moves RAM and the vTPM state blobs (no
  call here);
* destination, ``post_live_migration_at_destination``:
  :meth:`post_live_migration_at_destination`;
* source, ``post_live_migration``: :meth:`post_live_migration`;
* on failure, destination, ``rollback_live_migration_at_destination``:
  :meth:`rollback_live_migration_at_destination`;
* on failure, source, ``rollback_live_migration_at_source``:
  :meth:`rollback_live_migration_at_source`.

Where Nova differs, and why: Nova's libvirt driver reads the vTPM secret on
the source (``check_can_live_migrate_source``) and sends it in the clear in
``migrate_data`` over its RPC bus. Here :meth:`source_key` returns the
migration key to the *agent*, and the migration protocol (the conductor)
carries it to a destination it has just attested, wrapped to a key inside
that destination's TPM; the destination agent unwraps it and passes it to
:meth:`pre_live_migration`. The key never travels in ``migrate_data``.

And the commit point: Nova runs ``post_live_migration`` on the source before
``post_live_migration_at_destination``. For the vTPM the order is the
other way round: the destination confirms that the state arrived
(:meth:`post_live_migration_at_destination`), the protocol records the
commit, and only then does the source erase its copy
(:meth:`post_live_migration`). A source that erased first would lose the
vTPM if the destination then failed. See doc/source/vtpm-live-migration.md.

This module is plain code with no oslo import: the hypervisor driver (or
the agent on its behalf) calls it in-process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from trusted_pools import exception
from trusted_pools.vtpm.driver import (AttachInfo, VTPMDriver, VTPMInfo,
                                       canonical_uuid)

__all__ = ["IncomingVTPM", "LiveMigrationHooks", "check_incoming_uri"]

# QEMU's -incoming forms allowed here: "defer" (then migrate-incoming over
# QMP), tcp:HOST:PORT, unix:/PATH. exec: runs a shell command: never.
_INCOMING_URI = re.compile(
    r"defer|tcp:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}"
    r"|unix:/[^,\s]*")


def check_incoming_uri(uri: str) -> str:
    """``uri`` when it is a QEMU ``-incoming`` value this module hands out
    (``defer``, ``tcp:HOST:PORT``, ``unix:/PATH``), else
    :class:`~trusted_pools.exception.InvalidParameterValue`."""
    if not isinstance(uri, str) or not _INCOMING_URI.fullmatch(uri):
        raise exception.InvalidParameterValue(
            name="incoming_uri", reason="defer, tcp:HOST:PORT or "
            "unix:/PATH (no commas, no exec:)")
    if uri.startswith("tcp:") and not 0 < int(uri.rsplit(":", 1)[1]) < 65536:
        raise exception.InvalidParameterValue(
            name="incoming_uri", reason="port out of range")
    return uri


@dataclass(frozen=True)
class IncomingVTPM:
    """The destination's vTPM, waiting: its status, where the destination
    QEMU connects, and how that QEMU is told to wait for the stream."""

    info: VTPMInfo
    attach: AttachInfo
    incoming_uri: str

    def qemu_args(self) -> list[str]:
        """The destination QEMU's vTPM arguments and ``-incoming``.
        (Everything else on that command line must match the source's.)"""
        return self.attach.qemu_args() + ["-incoming", self.incoming_uri]

    def libvirt_xml(self) -> str:
        """The ``<tpm>`` element of the destination domain XML (libvirt's
        ``VIR_MIGRATE_PARAM_DEST_XML``): the same external backend, on the
        destination's socket."""
        return self.attach.libvirt_xml()


class LiveMigrationHooks:
    """The live-migration calls of one host, over its vTPM driver.

    Every call is idempotent (the driver's steps are): a hypervisor driver
    that lost an answer, or an agent that restarted, calls again.
    """

    def __init__(self, driver: VTPMDriver) -> None:
        self.driver = driver

    # --- before ----------------------------------------------------------

    def source_key(self, instance_uuid: str) -> bytes:
        """Source, before the move (Nova: ``check_can_live_migrate_source``):
        the key the running vTPM encrypts its state blobs with, for the
        migration protocol to wrap to the attested destination. From now
        on the source vTPM is MIGRATING: once its QEMU lets it go it does
        not start again here without :meth:`rollback_live_migration_at_source`.
        Never put this key in Nova's ``migrate_data``."""
        return self.driver.live_migration_key(instance_uuid)

    def pre_live_migration(self, instance_uuid: str, *,
                           migration_key: bytes,
                           metadata: Mapping[str, Any],
                           incoming_uri: str = "defer",
                           model: str = "tpm-crb") -> IncomingVTPM:
        """Destination, before the move (Nova: ``pre_live_migration``): a
        vTPM waiting for the state, and the QEMU arguments of the
        destination guest (``-incoming incoming_uri``). ``migration_key``
        is what the protocol unwrapped in this host's TPM; ``metadata`` the
        source vTPM's."""
        uri = check_incoming_uri(incoming_uri)
        info = self.driver.prepare_incoming(
            instance_uuid, migration_key=migration_key, metadata=metadata)
        return IncomingVTPM(
            info=info, attach=self.driver.attach_info(
                canonical_uuid(instance_uuid), model=model),
            incoming_uri=uri)

    # --- after -----------------------------------------------------------

    def post_live_migration_at_destination(self, instance_uuid: str
                                           ) -> VTPMInfo:
        """Destination, QEMU's migration completed and the *destination*
        QEMU reports the guest running (Nova:
        ``post_live_migration_at_destination``; here it comes *before* the
        source's step): the vTPM is RUNNING here. Its answer is the
        destination's acknowledgement the protocol commits on. (The driver
        refuses a destination whose state never arrived or whose QEMU is
        gone; it cannot see a QEMU that is still about to fail.)"""
        return self.driver.finish_incoming(instance_uuid)

    def post_live_migration(self, instance_uuid: str) -> None:
        """Source, after the protocol committed (Nova:
        ``post_live_migration``): erase the source state and keys."""
        self.driver.finish_outgoing(instance_uuid)

    # --- on failure --------------------------------------------------------

    def rollback_live_migration_at_destination(self, instance_uuid: str
                                               ) -> None:
        """Destination, the move failed or was cancelled before the commit
        (Nova: ``rollback_live_migration_at_destination``): discard the
        incoming vTPM. Call it after the destination QEMU is gone."""
        self.driver.abort_incoming(instance_uuid)

    def rollback_live_migration_at_source(self, instance_uuid: str
                                          ) -> VTPMInfo:
        """Source, the move failed before the commit (Nova:
        ``rollback_live_migration_at_source``): the vTPM is no longer
        MIGRATING and the guest carries on with it here."""
        return self.driver.abort_outgoing(instance_uuid)
