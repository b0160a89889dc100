"""What the agent does with its TPM: identity, credential activation and
evidence for a nonce. No bus here; :mod:`.manager` exposes it over RPC."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

from trusted_pools import exception
from trusted_pools.agent import enrollment
from trusted_pools.protocol.evidence import Evidence, IMATail
from trusted_pools.tpm import constants
from trusted_pools.tpm import device as tpm_device
from trusted_pools.tpm import ima

# Every PCR of each requested bank: the verifier decides what matters.
ALL_PCRS = tuple(range(24))
# Bytes read back to check that a remembered position is still in the same
# list: the start of the list (its boot_aggregate differs from boot to
# boot) and the bytes just before the position.
_MARK_CHECK = 128
# Remembered positions: one per conductor's next start and the direct
# challenges' restart points is plenty.
_MAX_MARKS = 16


@dataclass(frozen=True)
class _Mark:
    """Entry ``entries + 1`` of the IMA list starts at byte ``offset``;
    ``before`` holds the _MARK_CHECK bytes before it."""

    entries: int
    offset: int
    before: bytes


class IMAListReader:
    """Reads the tail of the host's IMA list from entry N on.

    Entries are counted, never lines: a binary list is walked by its length
    fields (a file name may hold any byte, a newline included). Walking
    100,000 entries each round would cost more than the rest of the
    evidence, so the byte offsets of the last positions sent are
    remembered and the next tail is read from there, after checking that
    the list there is still the same one (its first bytes, with the
    boot_aggregate that differs from boot to boot, and the bytes just
    before the position).
    """

    def __init__(self, path: str, fmt: str = "binary",
                 template_hash_alg: int | None = None) -> None:
        if fmt not in ("binary", "ascii"):
            raise exception.ConfigInvalid(
                reason="[agent] ima_log_format %r is neither binary nor "
                       "ascii" % fmt)
        self.path = path
        self.fmt = fmt
        self.template_hash_alg = template_hash_alg
        self._head = b""
        self._marks: dict[int, _Mark] = {}
        self._lock = threading.Lock()

    def tail(self, start: int) -> IMATail | None:
        """Entries from number ``start + 1`` on (all of them, from 0, when
        the list holds fewer than ``start``: the host rebooted). None when
        there is no list."""
        with self._lock:
            marks = [m for m in self._marks.values() if m.entries <= start]
            if marks:
                mark = max(marks, key=lambda m: m.entries)
                data = self._read_at(mark)
                if data is not None:
                    want = start - mark.entries
                    walked, offset = self._count(data, _MARK_CHECK, want,
                                                 mark.entries + 1)
                    if walked == want:
                        return self._finish(data, mark.offset - _MARK_CHECK,
                                            start, offset)
            self._marks.clear()
            data = self._read_all()
            if data is None:
                return None
            self._head = data[:_MARK_CHECK]
            walked, offset = self._count(data, 0, start, 1)
            if walked < start:
                # Shorter than the verifier thinks: the host rebooted.
                # Send it all; the verifier sees the reboot too.
                start, offset = 0, 0
            return self._finish(data, 0, start, offset)

    def _finish(self, data: bytes, base: int, start: int, offset: int
                ) -> IMATail:
        """The tail from ``offset`` of ``data`` (read from file offset
        ``base``), remembering where it starts and ends."""
        count, end = self._count(data, offset, None, start + 1)
        self._remember(start, base, offset, data)
        self._remember(start + count, base, end, data)
        return IMATail(start, data[offset:], self.fmt,
                       self.template_hash_alg, count=count)

    def _count(self, data: bytes, offset: int, count: int | None,
               first: int) -> tuple[int, int]:
        return ima.count_entries(data, self.fmt, offset=offset, count=count,
                                 first=first,
                                 template_hash_alg=self.template_hash_alg)

    def _remember(self, entries: int, base: int, offset: int,
                  data: bytes) -> None:
        if offset < _MARK_CHECK or len(self._head) < _MARK_CHECK:
            return
        if len(self._marks) >= _MAX_MARKS and entries not in self._marks:
            del self._marks[min(self._marks)]
        self._marks[entries] = _Mark(entries, base + offset,
                                     data[offset - _MARK_CHECK:offset])

    def _read_all(self) -> bytes | None:
        try:
            with open(self.path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unreadable(exc) from exc

    def _read_at(self, mark: _Mark) -> bytes | None:
        """The list from ``_MARK_CHECK`` bytes before ``mark`` on; None when
        it is no longer the list the mark was taken in."""
        try:
            with open(self.path, "rb") as handle:
                if handle.read(len(self._head)) != self._head:
                    return None
                handle.seek(mark.offset - _MARK_CHECK)
                data = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._unreadable(exc) from exc
        return data if data[:_MARK_CHECK] == mark.before else None

    def _unreadable(self, exc: OSError) -> exception.TemporaryFailure:
        return exception.TemporaryFailure(
            reason="cannot read %s: %s" % (self.path, exc.strerror))


class Attester:
    """One host's attester. Serialises TPM access (one command at a time).

    ``open_device`` returns a new :class:`TPMDevice`; a connection is kept
    and re-opened after an error, so a restarted TPM (or swtpm) is picked
    up without restarting the agent.
    """

    def __init__(self, host: str,
                 open_device: Callable[[], tpm_device.TPMDevice], *,
                 ak_handle: int = tpm_device.DEFAULT_AK_HANDLE,
                 binding_key_handle: int =
                 tpm_device.DEFAULT_BINDING_KEY_HANDLE,
                 ak_alg: str = "ecc", ek_kind: str = "rsa2048",
                 event_log_path: str | None = None,
                 ima_log_path: str | None = None,
                 ima_log_format: str = "binary",
                 ima_template_hash: str = "sha1",
                 pcr_read_retries: int = 5) -> None:
        self.host = host
        self._open_device = open_device
        self._device: tpm_device.TPMDevice | None = None
        self._lock = threading.Lock()
        self.ak_handle = ak_handle
        self.binding_key_handle = binding_key_handle
        self.ak_alg = ak_alg
        self.ek_kind = ek_kind
        self.event_log_path = event_log_path or None
        self.ima_log_path = ima_log_path or None
        th_alg = None if ima_template_hash == "sha1" else int(
            constants.hash_by_name(ima_template_hash).alg)
        self._ima = None if self.ima_log_path is None else IMAListReader(
            self.ima_log_path, ima_log_format, th_alg)
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

    def run_on_device(self, action: Callable[[tpm_device.TPMDevice],
                                             object]):
        """Run ``action(device)`` on the agent's TPM connection, under the
        attester's lock (the vTPM driver's ``host_runner``)."""
        return self._with_device(action)

    @property
    def lock(self) -> threading.Lock:
        """Held around every use of the TPM connection."""
        return self._lock

    @contextlib.contextmanager
    def held_device(self) -> Iterator[tpm_device.TPMDevice]:
        """The kept connection, for a caller that already holds
        :attr:`lock` (the vTPM CA: ``HostCA(..., held_device, lock=lock)``).
        It is not closed on exit: a TPM without a resource manager (swtpm)
        serves one connection at a time, so the agent has only this one."""
        if self._device is None:
            self._device = self._open_device()
        try:
            yield self._device
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

    def binding_key(self, nonce: bytes) -> tpm_device.BindingKey:
        """This host's binding key (created at ``binding_key_handle`` on
        first use, under the EK) with a fresh TPM2_Certify of it by the AK
        over ``nonce``. The key itself stays: every secret released to
        this host was wrapped to it."""
        def certify(dev: tpm_device.TPMDevice) -> tpm_device.BindingKey:
            try:
                return dev.load_binding_key(
                    self.binding_key_handle, ak_handle=self.ak_handle,
                    qualifying_data=nonce)
            except exception.TPMError:
                # Nothing at the handle yet (ReadPublic failed).
                pass
            return dev.create_binding_key(
                self.binding_key_handle, ak_handle=self.ak_handle,
                qualifying_data=nonce, ek_kind=self.ek_kind)
        return self._with_device(certify)

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
        return None if self._ima is None else self._ima.tail(start)


def parse_handle(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise exception.ConfigInvalid(
            reason="[tpm] ak_handle %r is not a hexadecimal handle" % text
        ) from None


def default_open_device(tcti: str) -> Callable[[], tpm_device.TPMDevice]:
    return lambda: tpm_device.TPMDevice(tcti)


__all__ = ["Attester", "ALL_PCRS", "IMAListReader", "default_open_device",
           "parse_handle", "os"]
