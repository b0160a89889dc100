"""UEFI structures found in TCG event data (UEFI 2.x, TCG PC Client PFP).

Every parser reads through the bounds-checked :class:`Reader` and raises
only :class:`MalformedEvidence` (or its subclass TruncatedEvidence). These
functions decode bytes; whether those bytes can be trusted is decided by
the event log verification (see :mod:`trusted_pools.tpm.eventlog`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from trusted_pools import exception
from trusted_pools.tpm._reader import Reader

__all__ = [
    "EFI_GLOBAL_VARIABLE", "EFI_IMAGE_SECURITY_DATABASE", "SHIM_LOCK",
    "EFI_CERT_X509", "EFI_CERT_SHA256",
    "format_guid", "ucs2", "UEFIVariableData", "SignatureEntry",
    "SignatureList", "LoadOption", "ImageLoadEvent", "GPTPartition",
    "GPTData", "parse_variable_data", "parse_signature_lists",
    "parse_signature_data", "certificate_entry", "parse_load_option",
    "parse_device_path",
    "parse_image_load_event", "parse_gpt_data", "parse_boot_order",
]

EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
SHIM_LOCK = "605dab50-e046-4300-abb6-3dd810dd8b23"
EFI_CERT_X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
EFI_CERT_SHA256 = "c1c41626-504c-4092-aca9-41f936934328"
_SIGNATURE_TYPE_NAMES = {
    EFI_CERT_X509: "x509",
    EFI_CERT_SHA256: "sha256",
    "3c5766e8-269c-4e34-aa14-ed776e85b3b6": "rsa2048",
    "826ca512-cf10-4ac9-b187-be01496631bd": "sha1",
    "0b6e5233-a65c-44c9-9407-d9ab83bfc8bd": "sha224",
    "ff3e5307-9fd0-48c9-85f1-8ad56c701e01": "sha384",
    "093e0fae-a6c4-4f50-9f1b-d41e2b89c19a": "sha512",
    "3bd2a492-96c0-4079-b420-fcf98ef103ed": "x509-sha256",
}
_WHAT = "UEFI data"
# Bounds the work a hostile device path can cause (real ones have < 16).
_MAX_DEVICE_PATH_NODES = 512


def _malformed(what: str, reason: str) -> exception.MalformedEvidence:
    return exception.MalformedEvidence(what=what, reason=reason)


def format_guid(raw: bytes) -> str:
    """EFI_GUID (mixed-endian, 16 bytes) as its canonical lowercase text."""
    if len(raw) != 16:
        raise _malformed("EFI_GUID", "%d bytes, not 16" % len(raw))
    return "%08x-%04x-%04x-%s-%s" % (
        int.from_bytes(raw[0:4], "little"), int.from_bytes(raw[4:6], "little"),
        int.from_bytes(raw[6:8], "little"), raw[8:10].hex(), raw[10:16].hex())


def ucs2(raw: bytes, what: str = "UCS-2 string") -> str:
    """Decode UTF-16LE text, dropping trailing NULs; raise if invalid."""
    if len(raw) % 2:
        raise _malformed(what, "odd length %d" % len(raw))
    try:
        text = raw.decode("utf-16-le")
    except UnicodeDecodeError as e:
        raise _malformed(what, "not UTF-16LE: %s" % e.reason) from None
    return text.rstrip("\x00")


def _ucs2_z(r: Reader, what: str) -> str:
    """A NUL-terminated UCS-2 string read from ``r``."""
    chars = []
    while True:
        unit = r.u16le()
        if unit == 0:
            break
        chars.append(unit.to_bytes(2, "little"))
    return ucs2(b"".join(chars), what)


# --- UEFI_VARIABLE_DATA ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class UEFIVariableData:
    """``trailing``: bytes after the declared value. Older shim versions
    log 6 such bytes after their "Shim" certificate; they are kept, not
    rejected, because whether the data is bound is decided over the whole
    event data anyway."""

    guid: str
    name: str
    value: bytes
    trailing: bytes = b""


def parse_variable_data(data: bytes) -> UEFIVariableData:
    """UEFI_VARIABLE_DATA: GUID, name length, data length, name, data."""
    r = Reader(data, "UEFI_VARIABLE_DATA")
    guid = format_guid(r.bytes(16))
    name_chars = r.u64le()
    value_size = r.u64le()
    if name_chars > r.remaining // 2:
        raise exception.TruncatedEvidence(
            what="UEFI_VARIABLE_DATA", needed=name_chars * 2,
            offset=r.offset, available=r.remaining)
    name = ucs2(r.bytes(name_chars * 2), "UEFI variable name")
    if value_size > r.remaining:
        raise exception.TruncatedEvidence(
            what="UEFI_VARIABLE_DATA", needed=value_size, offset=r.offset,
            available=r.remaining)
    value = r.bytes(value_size)
    return UEFIVariableData(guid, name, value, r.bytes(r.remaining))


def parse_boot_order(value: bytes) -> list[int]:
    """BootOrder: an array of UINT16 Boot#### numbers."""
    if len(value) % 2:
        raise _malformed("BootOrder", "odd length %d" % len(value))
    return [int.from_bytes(value[i:i + 2], "little")
            for i in range(0, len(value), 2)]


# --- EFI_SIGNATURE_LIST ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SignatureEntry:
    """One EFI_SIGNATURE_DATA. For X.509 entries ``subject``/``issuer`` are
    set when the certificate parses (``None`` otherwise); for hash entries
    ``data`` is the hash."""

    type: str
    owner: str
    data: bytes
    subject: str | None = None
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class SignatureList:
    type_guid: str
    type: str
    entries: tuple[SignatureEntry, ...]


def _x509_names(der: bytes) -> tuple[str | None, str | None]:
    """Best-effort subject and issuer of a DER certificate."""
    try:
        from cryptography import x509
        with warnings.catch_warnings():
            # Real firmware certificates break RFC 5280 in small ways.
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(der)
            return (cert.subject.rfc4514_string(),
                    cert.issuer.rfc4514_string())
    except Exception:  # noqa: BLE001 - naming is best effort only
        return None, None


def certificate_entry(der: bytes, owner: str = "") -> SignatureEntry:
    """A bare DER certificate (shim's "Shim" authority) as an entry."""
    return _entry("x509", owner, der)


def _entry(sig_type: str, owner: str, data: bytes) -> SignatureEntry:
    if sig_type == "x509":
        subject, issuer = _x509_names(data)
        return SignatureEntry(sig_type, owner, data, subject, issuer)
    return SignatureEntry(sig_type, owner, data)


def _signature_list(r: Reader) -> SignatureList:
    start = r.offset
    type_guid = format_guid(r.bytes(16))
    list_size = r.u32le()
    header_size = r.u32le()
    sig_size = r.u32le()
    if list_size < 28 or sig_size < 16:
        raise _malformed("EFI_SIGNATURE_LIST",
                         "list size %d, signature size %d at offset %d"
                         % (list_size, sig_size, start))
    body = r.sub(list_size - 28, "EFI_SIGNATURE_LIST")
    body.bytes(header_size)
    if body.remaining % sig_size:
        raise _malformed("EFI_SIGNATURE_LIST",
                         "%d bytes of signatures is not a multiple of %d"
                         % (body.remaining, sig_size))
    sig_type = _SIGNATURE_TYPE_NAMES.get(type_guid, type_guid)
    entries = []
    while not body.at_end():
        owner = format_guid(body.bytes(16))
        entries.append(_entry(sig_type, owner, body.bytes(sig_size - 16)))
    return SignatureList(type_guid, sig_type, tuple(entries))


def parse_signature_lists(value: bytes) -> tuple[SignatureList, ...]:
    """The value of PK, KEK, db, dbx, MokList...: EFI_SIGNATURE_LISTs."""
    r = Reader(value, "EFI_SIGNATURE_LIST")
    lists = []
    while not r.at_end():
        lists.append(_signature_list(r))
    return tuple(lists)


def parse_signature_data(value: bytes) -> SignatureEntry:
    """A lone EFI_SIGNATURE_DATA (EV_EFI_VARIABLE_AUTHORITY on "db").

    Its type is not recorded; a DER SEQUENCE is taken for a certificate.
    """
    if len(value) < 17:
        raise _malformed("EFI_SIGNATURE_DATA", "%d bytes" % len(value))
    owner = format_guid(value[:16])
    data = value[16:]
    sig_type = "x509" if data[:1] == b"\x30" else "unknown"
    return _entry(sig_type, owner, data)


# --- device paths ------------------------------------------------------------

def _node_text(node_type: int, subtype: int, body: bytes) -> str:
    """Best-effort UEFI device path node text; unknown nodes as hex."""
    try:
        if node_type == 0x01 and subtype == 0x01 and len(body) == 2:
            return "Pci(0x%x,0x%x)" % (body[1], body[0])
        if node_type == 0x02 and subtype == 0x01 and len(body) == 8:
            hid = int.from_bytes(body[:4], "little")
            uid = int.from_bytes(body[4:], "little")
            if hid == 0x0A0341D0:
                return "PciRoot(0x%x)" % uid
            return "Acpi(0x%08x,0x%x)" % (hid, uid)
        if node_type == 0x03 and subtype == 0x12 and len(body) >= 6:
            return "Sata(0x%x,0x%x,0x%x)" % (
                int.from_bytes(body[0:2], "little"),
                int.from_bytes(body[2:4], "little"),
                int.from_bytes(body[4:6], "little"))
        if node_type == 0x03 and subtype == 0x17 and len(body) >= 4:
            return "NVMe(0x%x,%s)" % (int.from_bytes(body[:4], "little"),
                                      body[4:].hex())
        if node_type == 0x03 and subtype == 0x02 and len(body) == 4:
            return "Scsi(0x%x,0x%x)" % (int.from_bytes(body[:2], "little"),
                                        int.from_bytes(body[2:], "little"))
        if node_type == 0x03 and subtype == 0x05 and len(body) == 2:
            return "USB(0x%x,0x%x)" % (body[0], body[1])
        if node_type == 0x03 and subtype == 0x0B and len(body) >= 32:
            return "MAC(%s)" % body[:6].hex()
        if node_type == 0x04 and subtype == 0x01 and len(body) == 38:
            number = int.from_bytes(body[0:4], "little")
            start = int.from_bytes(body[4:12], "little")
            size = int.from_bytes(body[12:20], "little")
            signature = body[20:36]
            fmt, sig_type = body[36], body[37]
            sig = (format_guid(signature) if sig_type == 2
                   else "0x%08x" % int.from_bytes(signature[:4], "little")
                   if sig_type == 1 else "0")
            return "HD(%d,%s,%s,0x%x,0x%x)" % (
                number, "GPT" if fmt == 2 else "MBR", sig, start, size)
        if node_type == 0x04 and subtype == 0x04:
            return ucs2(body, "device path file name")
        if node_type == 0x04 and subtype == 0x06 and len(body) == 16:
            return "FvFile(%s)" % format_guid(body)
        if node_type == 0x04 and subtype == 0x07 and len(body) == 16:
            return "Fv(%s)" % format_guid(body)
        if node_type == 0x04 and subtype == 0x08 and len(body) == 16:
            return "Offset(0x%x,0x%x)" % (
                int.from_bytes(body[:8], "little"),
                int.from_bytes(body[8:], "little"))
        if node_type in (0x01, 0x03, 0x04) and subtype in (0x04, 0x0A, 0x03) \
                and len(body) >= 16:
            prefix = {0x01: "VenHw", 0x03: "VenMsg", 0x04: "VenMedia"}
            return "%s(%s%s)" % (prefix[node_type], format_guid(body[:16]),
                                 "," + body[16:].hex() if body[16:] else "")
    except exception.MalformedEvidence:
        pass
    return "Path(%d,%d,%s)" % (node_type, subtype, body.hex())


def parse_device_path(data: bytes) -> str:
    """EFI_DEVICE_PATH_PROTOCOL as text, e.g. ``PciRoot(0x0)/.../\\EFI\\x``.

    Structure is checked (every node at least 4 bytes, inside the data);
    node contents are decoded best effort. Several instances are separated
    by ``,``; data after the final end node is ignored (some firmware pads).
    """
    r = Reader(data, "device path")
    instances: list[list[str]] = [[]]
    for _ in range(_MAX_DEVICE_PATH_NODES):
        if r.at_end():
            break
        node_type, subtype, length = r.u8(), r.u8(), r.u16le()
        if length < 4:
            raise _malformed("device path",
                             "node length %d at offset %d"
                             % (length, r.offset - 4))
        body = r.bytes(length - 4)
        if node_type == 0x7F:
            if subtype == 0xFF:
                break
            instances.append([])
            continue
        instances[-1].append(_node_text(node_type, subtype, body))
    else:
        raise _malformed("device path",
                         "more than %d nodes" % _MAX_DEVICE_PATH_NODES)
    return ",".join("/".join(nodes) for nodes in instances if nodes)


# --- EFI_LOAD_OPTION (Boot####) ----------------------------------------------

@dataclass(frozen=True, slots=True)
class LoadOption:
    attributes: int
    description: str
    device_path: str
    device_path_raw: bytes
    optional_data: bytes

    @property
    def active(self) -> bool:
        return bool(self.attributes & 0x1)


def parse_load_option(value: bytes) -> LoadOption:
    """EFI_LOAD_OPTION: attributes, path list length, description, paths."""
    r = Reader(value, "EFI_LOAD_OPTION")
    attributes = r.u32le()
    path_length = r.u16le()
    description = _ucs2_z(r, "load option description")
    raw_path = r.bytes(path_length)
    optional = r.bytes(r.remaining)
    try:
        path = parse_device_path(raw_path)
    except exception.MalformedEvidence:
        path = raw_path.hex()
    return LoadOption(attributes, description, path, raw_path, optional)


# --- UEFI_IMAGE_LOAD_EVENT ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class ImageLoadEvent:
    location: int
    length: int
    link_time_address: int
    device_path: str
    device_path_raw: bytes


def parse_image_load_event(data: bytes) -> ImageLoadEvent:
    """UEFI_IMAGE_LOAD_EVENT (EV_EFI_BOOT_SERVICES_APPLICATION/DRIVER)."""
    r = Reader(data, "UEFI_IMAGE_LOAD_EVENT")
    location, length, link = r.u64le(), r.u64le(), r.u64le()
    path_length = r.u64le()
    if path_length > r.remaining:
        raise exception.TruncatedEvidence(
            what="UEFI_IMAGE_LOAD_EVENT", needed=path_length,
            offset=r.offset, available=r.remaining)
    raw = r.bytes(path_length)
    try:
        path = parse_device_path(raw)
    except exception.MalformedEvidence:
        path = raw.hex()
    return ImageLoadEvent(location, length, link, path, raw)


# --- UEFI_GPT_DATA -----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class GPTPartition:
    type_guid: str
    unique_guid: str
    first_lba: int
    last_lba: int
    attributes: int
    name: str


@dataclass(frozen=True, slots=True)
class GPTData:
    disk_guid: str
    revision: int
    my_lba: int
    first_usable_lba: int
    last_usable_lba: int
    partitions: tuple[GPTPartition, ...]


_GPT_HEADER_SIZE = 92


def parse_gpt_data(data: bytes) -> GPTData:
    """UEFI_GPT_DATA: the 92-byte GPT header, a count, partition entries."""
    r = Reader(data, "UEFI_GPT_DATA")
    if r.bytes(8) != b"EFI PART":
        raise _malformed("UEFI_GPT_DATA", "no 'EFI PART' signature")
    revision = r.u32le()
    r.u32le()  # HeaderSize; the event embeds the 92-byte structure only
    r.bytes(8)  # HeaderCRC32, Reserved
    my_lba, _alternate = r.u64le(), r.u64le()
    first_usable, last_usable = r.u64le(), r.u64le()
    disk_guid = format_guid(r.bytes(16))
    r.u64le()  # PartitionEntryLBA
    r.u32le()  # NumberOfPartitionEntries (on disk, not in the event)
    entry_size = r.u32le()
    r.u32le()  # PartitionEntryArrayCRC32
    count = r.u64le()
    if entry_size < 128 or count * entry_size > r.remaining:
        raise _malformed("UEFI_GPT_DATA",
                         "%d partitions of %d bytes in %d bytes"
                         % (count, entry_size, r.remaining))
    partitions = []
    for _ in range(count):
        entry = r.sub(entry_size, "GPT partition entry")
        partitions.append(GPTPartition(
            format_guid(entry.bytes(16)), format_guid(entry.bytes(16)),
            entry.u64le(), entry.u64le(), entry.u64le(),
            ucs2(entry.bytes(72), "GPT partition name").split("\x00")[0]))
    return GPTData(disk_guid, revision, my_lba, first_usable, last_usable,
                   tuple(partitions))
