"""What the agent does with its TPM: identity, credential activation and
evidence for a nonce. No bus here; :mod:`.manager` exposes it over RPC."""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Callable, Iterable, Mapping

from trusted_pools import exception
from trusted_pools.attestation import enrollment
from trusted_pools.attestation.evidence import Evidence, IMATail
from trusted_pools.tpm import device as tpm_device

# Every PCR of each requested bank: the verifier decides what matters.
ALL_PCRS = tuple(range(24))


class Attester:
    """One host's attester. Serialises TPM access (one command at a time).

    ``open_device`` returns a new :class:`TPMDevice`; a connection is kept
    and re-opened after an error, so a restarted TPM (or swtpm) is picked
    up without restarting the agent.
    """

    def __init__(self, host: str,
                 open_device: Callable[[], tpm_device.TPMDevice], *,
                 ak_handle: int = tpm_device.DEFAULT_AK_HANDLE,
                 ak_alg: str = "ecc", ek_kind: str = "rsa2048",
                 event_log_path: str | None = None,
                 ima_log_path: str | None = None,
                 pcr_read_retries: int = 5) -> None:
        self.host = host
        self._open_device = open_device
        self._device: tpm_device.TPMDevice | None = None
        self._lock = threading.Lock()
        self.ak_handle = ak_handle
        self.ak_alg = ak_alg
        self.ek_kind = ek_kind
        self.event_log_path = event_log_path or None
        self.ima_log_path = ima_log_path or None
        self.pcr_read_retries = pcr_read_retries

    def _with_device(self, action: Callable[[tpm_device.TPMDevice], object]):
        with self._lock:
            if self._device is None:
                self._device = self._open_device()
            try:
                return action(self._device)
            except (exception.TPMError, exception.TPMUnreachable):
                self._drop_device()
                raise

    def _drop_device(self) -> None:
        if self._device is not None:
            try:
                self._device.close()
            finally:
                self._device = None

    def close(self) -> None:
        with self._lock:
            self._drop_device()

    def identity(self) -> enrollment.HostIdentity:
        return self._with_device(lambda dev: enrollment.collect_identity(
            dev, ak_handle=self.ak_handle, ak_alg=self.ak_alg,
            ek_kind=self.ek_kind))

    def activate_credential(self, credential_blob: bytes,
                            encrypted_secret: bytes) -> bytes:
        return self._with_device(lambda dev: enrollment.answer_challenge(
            dev, credential_blob, encrypted_secret,
            ak_handle=self.ak_handle, ek_kind=self.ek_kind))

    def evidence(self, nonce: bytes, banks: Iterable[int], *,
                 epoch_id: str | None = None, ima_start: int = 0,
                 event_log: bool = True,
                 known_event_log_digest: str | None = None) -> Evidence:
        """Quote ``nonce`` over every PCR of ``banks``, with the logs.

        The event log is left out when ``event_log`` is false or its
        digest equals ``known_event_log_digest`` (the verifier has it).
        """
        selection = {bank: ALL_PCRS for bank in banks}
        quote, signature, pcrs = self._with_device(
            lambda dev: self._quote(dev, nonce, selection))
        # Logs are read after the quote: they can only have grown, and the
        # verifier accepts the prefix that replays to the quoted PCRs.
        log = self._read(self.event_log_path)
        digest = None if log is None else hashlib.sha256(log).hexdigest()
        if not event_log or digest == known_event_log_digest:
            log = None
        return Evidence(host=self.host, quote=quote, signature=signature,
                        pcrs=pcrs, epoch_id=epoch_id, event_log=log,
                        event_log_digest=digest,
                        ima=self._ima_tail(ima_start))

    def _quote(self, dev: tpm_device.TPMDevice, nonce: bytes,
               selection: Mapping[int, Iterable[int]]):
        # PCR values and quote are separate commands; IMA may extend PCR 10
        # between them. Read before and after and retry until they agree.
        for _ in range(self.pcr_read_retries):
            before = dev.pcr_read(selection)
            quote, signature = dev.quote(self.ak_handle, nonce, selection)
            if dev.pcr_read(selection) == before:
                return quote, signature, before
        raise exception.TemporaryFailure(
            reason="PCR values kept changing while quoting; retry")

    @staticmethod
    def _read(path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise exception.TemporaryFailure(
                reason="cannot read %s: %s" % (path, exc.strerror)) from exc

    def _ima_tail(self, start: int) -> IMATail | None:
        data = self._read(self.ima_log_path)
        if data is None:
            return None
        # Entries end at "\n" only, as the kernel writes them and the
        # verifier counts them: a path may hold any other byte.
        offset = 0
        for _ in range(start):
            end = data.find(b"\n", offset)
            if end < 0:
                # Shorter than the verifier thinks: the host rebooted.
                # Send it all; the verifier sees the reboot too.
                return IMATail(0, data)
            offset = end + 1
        return IMATail(start, data[offset:])


def parse_handle(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise exception.ConfigInvalid(
            reason="[tpm] ak_handle %r is not a hexadecimal handle" % text
        ) from None


def default_open_device(tcti: str) -> Callable[[], tpm_device.TPMDevice]:
    return lambda: tpm_device.TPMDevice(tcti)


__all__ = ["Attester", "ALL_PCRS", "default_open_device", "parse_handle",
           "os"]
