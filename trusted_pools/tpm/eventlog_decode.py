"""Decode the data of VERIFIED event log events into facts policies use.

Only :class:`~trusted_pools.tpm.eventlog.VerifiedEvent` objects are
accepted: decoding an unverified log would invite a policy to trust it.

Every decoded event says how much of it the quote vouches for
(:class:`Binding`), because the event type and data are not covered by the
digest in general:

* ``DATA`` - the digest is the hash of the whole event data: every decoded
  field is bound (the event *type* still is not);
* ``PAYLOAD`` - the digest is the hash of the decoded value only (a UEFI
  variable's value without its name, GRUB's command without its
  ``grub_cmd:`` label, a UTF-16 command line re-encoded): the value is
  bound, its labels are not;
* ``NONE`` - the digest is over something else (an image, a file, a
  firmware volume): only the digest is bound, never the path or address
  shown beside it.

A decoding failure never stops the log: the event decodes to
:class:`Undecodable` holding the typed error.
"""

from __future__ import annotations

import enum
import hmac
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from trusted_pools import exception
from trusted_pools.tpm import constants, efi
from trusted_pools.tpm._reader import Reader
from trusted_pools.tpm.eventlog import EventType, VerifiedEvent, \
    VerifiedEventLog

__all__ = [
    "Binding", "DecodedEvent", "CRTMVersion", "PostCode", "FirmwareBlob",
    "UEFIVariable", "IPLString", "Separator", "EFIAction", "EventTag",
    "Undecodable", "LoadedFile", "BootApplication", "BootSummary",
    "decode_event", "decode_events", "summarize",
]


class Binding(enum.Enum):
    DATA = "data"
    PAYLOAD = "payload"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class CRTMVersion:
    text: str | None  # None when not a UCS-2 string (some firmware: a GUID)
    raw: bytes


@dataclass(frozen=True, slots=True)
class PostCode:
    text: str | None
    base: int | None = None
    length: int | None = None


@dataclass(frozen=True, slots=True)
class FirmwareBlob:
    base: int
    length: int
    description: str | None = None


@dataclass(frozen=True, slots=True)
class UEFIVariable:
    """A UEFI_VARIABLE_DATA and what its value means, when known.

    ``parsed`` is a bool (SecureBoot), a tuple of EFI signature lists (PK,
    KEK, db, dbx, Mok*), one signature entry (EV_EFI_VARIABLE_AUTHORITY), a
    list of numbers (BootOrder), a LoadOption (Boot####) or None.
    """

    guid: str
    name: str
    value: bytes
    parsed: object = None
    trailing: bytes = b""  # bytes after the value (an old shim bug)


@dataclass(frozen=True, slots=True)
class IPLString:
    """EV_IPL text. ``kind``: grub_cmd, kernel_cmdline, path (a file GRUB
    loaded, digest = file hash), cmdline (UTF-16 from systemd-boot/stub),
    or string."""

    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Separator:
    value: bytes
    error: bool  # 0xffffffff (or 1): firmware hit an error before it


@dataclass(frozen=True, slots=True)
class EFIAction:
    text: str


@dataclass(frozen=True, slots=True)
class EventTag:
    tag_id: int
    data: bytes
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Undecodable:
    """The data did not parse as its (claimed) type; ``error`` says why."""

    error: exception.MalformedEvidence

    @property
    def reason(self) -> str:
        return str(self.error)


@dataclass(frozen=True, slots=True)
class DecodedEvent:
    event: VerifiedEvent
    value: object  # one of the classes above, efi.* or bytes (no decoder)
    binding: Binding

    @property
    def decoded(self) -> bool:
        return not isinstance(self.value, Undecodable)


# --- helpers -----------------------------------------------------------------

def _bound(event: VerifiedEvent, preimages: Iterable[bytes]) -> bool:
    """Whether one of ``preimages`` hashes to the event's digest in every
    verified bank."""
    for candidate in preimages:
        if event.digests and all(
                hmac.compare_digest(
                    constants.HASH_ALGORITHMS[alg].digest(candidate), digest)
                for alg, digest in event.digests.items()):
            return True
    return False


def _ascii(data: bytes, what: str) -> str:
    try:
        return data.rstrip(b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        raise exception.MalformedEvidence(what=what,
                                          reason="not UTF-8 text") from None


def _printable(text: str) -> bool:
    return all(c.isprintable() or c in "\t\n\r" for c in text)


# --- per-type decoders: (event) -> (value, payload preimages) ----------------

def _crtm_version(event: VerifiedEvent):
    try:
        text = efi.ucs2(event.data, "S-CRTM version")
        if not _printable(text):
            text = None
    except exception.MalformedEvidence:
        text = None
    return CRTMVersion(text, event.data), ()


def _blob(data: bytes, what: str) -> tuple[int, int]:
    r = Reader(data, what)
    base, length = r.u64le(), r.u64le()
    r.expect_end()
    return base, length


def _post_code(event: VerifiedEvent):
    if len(event.data) == 16:
        try:
            text = event.data.decode("ascii")
            if _printable(text.rstrip("\x00")):
                return PostCode(text.rstrip("\x00")), ()
        except UnicodeDecodeError:
            pass
        base, length = _blob(event.data, "EV_POST_CODE")
        return PostCode(None, base, length), ()
    return PostCode(_ascii(event.data, "EV_POST_CODE")), ()


def _firmware_blob(event: VerifiedEvent):
    return FirmwareBlob(*_blob(event.data, "UEFI_PLATFORM_FIRMWARE_BLOB")), ()


def _firmware_blob2(event: VerifiedEvent):
    r = Reader(event.data, "UEFI_PLATFORM_FIRMWARE_BLOB2")
    description = _ascii(r.bytes(r.u8()), "firmware blob description")
    base, length = r.u64le(), r.u64le()
    r.expect_end()
    return FirmwareBlob(base, length, description), ()


_SIGNATURE_DATABASES = {
    (efi.EFI_GLOBAL_VARIABLE, "PK"), (efi.EFI_GLOBAL_VARIABLE, "KEK"),
    (efi.EFI_IMAGE_SECURITY_DATABASE, "db"),
    (efi.EFI_IMAGE_SECURITY_DATABASE, "dbx"),
    (efi.EFI_GLOBAL_VARIABLE, "PKDefault"),
    (efi.EFI_GLOBAL_VARIABLE, "KEKDefault"),
    (efi.EFI_GLOBAL_VARIABLE, "dbDefault"),
    (efi.EFI_GLOBAL_VARIABLE, "dbxDefault"),
}


def _variable_meaning(event: VerifiedEvent, var: efi.UEFIVariableData):
    key = (var.guid, var.name)
    if key == (efi.EFI_GLOBAL_VARIABLE, "SecureBoot"):
        if len(var.value) > 1:
            raise exception.MalformedEvidence(
                what="SecureBoot variable",
                reason="%d bytes, not 0 or 1" % len(var.value))
        return bool(var.value) and var.value != b"\x00"
    if event.event_type == EventType.EV_EFI_VARIABLE_AUTHORITY:
        if var.guid == efi.SHIM_LOCK:
            # shim: its built-in certificate ("Shim"), else raw values
            # (SbatLevel, MokList*).
            if var.value[:1] == b"\x30":
                return efi.certificate_entry(var.value)
            return None
        if not var.value:
            return None
        return efi.parse_signature_data(var.value)
    if key in _SIGNATURE_DATABASES or (
            var.guid == efi.SHIM_LOCK and var.name.startswith("Mok")):
        return efi.parse_signature_lists(var.value)
    if var.guid == efi.EFI_GLOBAL_VARIABLE and var.name == "BootOrder":
        return efi.parse_boot_order(var.value)
    if (var.guid == efi.EFI_GLOBAL_VARIABLE and len(var.name) == 8
            and var.name.startswith("Boot")
            and all(c in "0123456789ABCDEFabcdef" for c in var.name[4:])):
        return efi.parse_load_option(var.value)
    return None


def _uefi_variable(event: VerifiedEvent):
    var = efi.parse_variable_data(event.data)
    value = UEFIVariable(var.guid, var.name, var.value,
                         _variable_meaning(event, var), var.trailing)
    # Some firmware hashes only the value (EV_EFI_VARIABLE_BOOT notably).
    return value, (var.value,)


_GRUB_PREFIXES = (("grub_cmd: ", "grub_cmd"),
                  ("kernel_cmdline: ", "kernel_cmdline"),
                  ("grub_kernel_cmdline ", "kernel_cmdline"))


def _utf16_text(data: bytes) -> str | None:
    """UTF-16LE text (systemd-boot writes it; some versions drop the
    last byte of the terminator); None if the data is not that."""
    if len(data) < 2 or data[1:2] != b"\x00":
        return None
    body = data if len(data) % 2 == 0 else data + b"\x00"
    try:
        text = body.decode("utf-16-le").rstrip("\x00")
    except UnicodeDecodeError:
        return None
    return text if text and _printable(text) else None


def _ipl(event: VerifiedEvent):
    text16 = _utf16_text(event.data)
    if text16 is not None:
        encoded = text16.encode("utf-16-le")
        return IPLString("cmdline", text16), (encoded, encoded + b"\x00\x00")
    text = _ascii(event.data, "EV_IPL string")
    for prefix, kind in _GRUB_PREFIXES:
        if text.startswith(prefix):
            payload = text[len(prefix):]
            return IPLString(kind, payload), (payload.encode("utf-8"),)
    if event.pcr == 9 and ("/" in text or "\\" in text):
        return IPLString("path", text), ()
    return IPLString("string", text), (text.encode("utf-8"),)


def _separator(event: VerifiedEvent):
    error = event.data in (b"\xff\xff\xff\xff", b"\x01\x00\x00\x00")
    if len(event.data) != 4:
        raise exception.MalformedEvidence(
            what="EV_SEPARATOR", reason="%d bytes, not 4" % len(event.data))
    return Separator(event.data, error), ()


def _efi_action(event: VerifiedEvent):
    return EFIAction(_ascii(event.data, "EV_EFI_ACTION")), ()


def _image_load(event: VerifiedEvent):
    return efi.parse_image_load_event(event.data), ()


def _gpt(event: VerifiedEvent):
    return efi.parse_gpt_data(event.data), ()


def _event_tag(event: VerifiedEvent):
    r = Reader(event.data, "TCG_PCClientTaggedEvent")
    tag_id = r.u32le()
    data = r.bytes(r.u32le())
    r.expect_end()
    try:
        text = data.rstrip(b"\x00").decode("ascii")
        text = text if _printable(text) else None
    except UnicodeDecodeError:
        text = None
    return EventTag(tag_id, data, text), ()


_DECODERS = {
    EventType.EV_S_CRTM_VERSION: _crtm_version,
    EventType.EV_POST_CODE: _post_code,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB: _firmware_blob,
    EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2: _firmware_blob2,
    EventType.EV_EFI_VARIABLE_DRIVER_CONFIG: _uefi_variable,
    EventType.EV_EFI_VARIABLE_BOOT: _uefi_variable,
    EventType.EV_EFI_VARIABLE_BOOT2: _uefi_variable,
    EventType.EV_EFI_VARIABLE_AUTHORITY: _uefi_variable,
    EventType.EV_EFI_BOOT_SERVICES_APPLICATION: _image_load,
    EventType.EV_EFI_BOOT_SERVICES_DRIVER: _image_load,
    EventType.EV_EFI_RUNTIME_SERVICES_DRIVER: _image_load,
    EventType.EV_IPL: _ipl,
    EventType.EV_SEPARATOR: _separator,
    EventType.EV_EFI_ACTION: _efi_action,
    EventType.EV_EFI_GPT_EVENT: _gpt,
    EventType.EV_EFI_GPT_EVENT2: _gpt,
    EventType.EV_EVENT_TAG: _event_tag,
}


def decode_event(event: VerifiedEvent) -> DecodedEvent:
    """Decode one verified event; never raises for bad data."""
    if not isinstance(event, VerifiedEvent):
        raise TypeError("decode_event takes a VerifiedEvent; verify the log "
                        "with verify_event_log() first")
    binding = Binding.DATA if event.data_verified else Binding.NONE
    decoder = _DECODERS.get(event.event_type)
    if decoder is None:
        return DecodedEvent(event, event.data, binding)
    try:
        value, preimages = decoder(event)
    except exception.MalformedEvidence as error:
        return DecodedEvent(event, Undecodable(error), binding)
    if binding is Binding.NONE and _bound(event, preimages):
        binding = Binding.PAYLOAD
    return DecodedEvent(event, value, binding)


def decode_events(log: VerifiedEventLog) -> list[DecodedEvent]:
    if not isinstance(log, VerifiedEventLog):
        raise TypeError("decode_events takes a VerifiedEventLog")
    return [decode_event(e) for e in log.events]


# --- summary -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LoadedFile:
    """A file GRUB (or the kernel's EFI stub) measured. ``path`` is NOT
    bound by the digest; ``digests`` (TPM_ALG_ID -> hex) are."""

    path: str | None
    pcr: int
    digests: dict[int, str]


@dataclass(frozen=True, slots=True)
class BootApplication:
    """An EFI application that ran. ``device_path`` is NOT bound; the
    digests (Authenticode hashes, TPM_ALG_ID -> hex) are."""

    device_path: str | None
    digests: dict[int, str]


@dataclass(slots=True)
class BootSummary:
    """What the verified events say about the boot.

    Only bound values are taken, and only from the PCRs the TCG PC Client
    profile assigns them to: secure boot state and keys from PCR 7 events
    whose whole data is bound, boot variables from PCR 1, GRUB commands and
    command lines from PCR 8, systemd-boot command lines from PCR 8/12,
    files from PCR 9, boot applications from PCR 4. ``None`` means "no
    verified evidence", never "off".
    """

    secure_boot: bool | None = None
    secure_boot_databases: dict[str, tuple] = field(default_factory=dict)
    crtm_version: str | None = None
    boot_order: list[int] | None = None
    boot_entries: dict[str, efi.LoadOption] = field(default_factory=dict)
    boot_applications: list[BootApplication] = field(default_factory=list)
    kernels: list[LoadedFile] = field(default_factory=list)
    initrds: list[LoadedFile] = field(default_factory=list)
    kernel_command_lines: list[str] = field(default_factory=list)
    grub_commands: list[str] = field(default_factory=list)
    efi_actions: list[str] = field(default_factory=list)
    separator_errors: list[int] = field(default_factory=list)
    exit_boot_services: bool = False
    quirks_applied: tuple[str, ...] = ()
    undecodable: list[tuple[int, str]] = field(default_factory=list)


_LINUX_INITRD_TAG = 0x8F3B22EC  # Linux EFI stub: the initrd it loaded


def _hex_digests(event: VerifiedEvent) -> dict[int, str]:
    return {alg: d.hex() for alg, d in event.digests.items()}


def _grub_loaded_paths(commands: Sequence[str]) -> tuple[set[str], set[str]]:
    """Kernel and initrd paths named by GRUB's linux/initrd commands."""
    kernels: set[str] = set()
    initrds: set[str] = set()
    for command in commands:
        words = command.split()
        if not words:
            continue
        if words[0] in ("linux", "linuxefi", "linux16") and len(words) > 1:
            kernels.add(words[1])
        elif words[0] in ("initrd", "initrdefi", "initrd16"):
            initrds.update(words[1:])
    return kernels, initrds


def _looks_like(path: str, prefixes: tuple[str, ...]) -> bool:
    name = posixpath.basename(path.replace("\\", "/"))
    return name.startswith(prefixes)


def _summarize_variable(summary: BootSummary, d: DecodedEvent) -> None:
    var = d.value
    assert isinstance(var, UEFIVariable)
    e = d.event
    if e.pcr == 7 and d.binding is Binding.DATA and e.event_type == \
            EventType.EV_EFI_VARIABLE_DRIVER_CONFIG:
        if var.name == "SecureBoot" and summary.secure_boot is None:
            summary.secure_boot = bool(var.parsed)
        elif isinstance(var.parsed, tuple) and \
                var.name not in summary.secure_boot_databases:
            summary.secure_boot_databases[var.name] = var.parsed
    elif e.pcr == 1 and d.binding is not Binding.NONE:
        if var.name == "BootOrder" and isinstance(var.parsed, list):
            summary.boot_order = var.parsed
        elif isinstance(var.parsed, efi.LoadOption):
            summary.boot_entries[var.name] = var.parsed


def summarize(log: VerifiedEventLog) -> BootSummary:
    """Facts from a verified log (see :class:`BootSummary` for the rules)."""
    decoded = decode_events(log)
    summary = BootSummary(quirks_applied=log.quirks_applied)
    pcr9_paths: list[tuple[str, VerifiedEvent]] = []
    for d in decoded:
        e, value = d.event, d.value
        if isinstance(value, Undecodable):
            summary.undecodable.append((e.index, value.reason))
        elif isinstance(value, UEFIVariable):
            _summarize_variable(summary, d)
        elif isinstance(value, CRTMVersion) and e.pcr == 0 \
                and d.binding is Binding.DATA and summary.crtm_version is None:
            summary.crtm_version = (value.text if value.text is not None
                                    else value.raw.hex())
        elif isinstance(value, efi.ImageLoadEvent) and e.pcr == 4 and \
                e.event_type == EventType.EV_EFI_BOOT_SERVICES_APPLICATION:
            summary.boot_applications.append(
                BootApplication(value.device_path, _hex_digests(e)))
        elif isinstance(value, IPLString):
            if value.kind == "path" and e.pcr == 9:
                pcr9_paths.append((value.text, e))
            elif d.binding is Binding.NONE:
                continue
            elif value.kind == "grub_cmd" and e.pcr == 8:
                summary.grub_commands.append(value.text)
            elif value.kind == "kernel_cmdline" and e.pcr == 8:
                summary.kernel_command_lines.append(value.text)
            elif value.kind == "cmdline" and e.pcr in (8, 12):
                summary.kernel_command_lines.append(value.text)
        elif isinstance(value, EventTag) and e.pcr == 9 and \
                value.tag_id == _LINUX_INITRD_TAG:
            summary.initrds.append(LoadedFile(None, 9, _hex_digests(e)))
        elif isinstance(value, Separator) and value.error and \
                d.binding is Binding.DATA:
            summary.separator_errors.append(e.pcr)
        elif isinstance(value, EFIAction) and d.binding is Binding.DATA:
            summary.efi_actions.append(value.text)
            if e.pcr == 5 and value.text == "Exit Boot Services Invocation":
                summary.exit_boot_services = True
    kernel_paths, initrd_paths = _grub_loaded_paths(summary.grub_commands)
    for path, e in pcr9_paths:
        bare = path.split(")", 1)[-1] if path.startswith("(") else path
        if path in kernel_paths or bare in kernel_paths or _looks_like(
                path, ("vmlinuz", "bzImage", "kernel")):
            summary.kernels.append(LoadedFile(path, 9, _hex_digests(e)))
        elif path in initrd_paths or bare in initrd_paths or _looks_like(
                path, ("initrd", "initramfs")):
            summary.initrds.append(LoadedFile(path, 9, _hex_digests(e)))
    return summary
