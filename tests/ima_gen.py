"""Synthetic IMA measurement lists for tests and benchmarks (test side only).

An independent, deliberately plain implementation of the kernel's rules, so
that it can serve as an oracle for trusted_pools.tpm.ima: it never imports
the product. It writes ascii lists the way ima_fs.c prints them (names
raw, so a name holding a newline spans lines), binary entries the way
ima_fs.c writes binary_runtime_measurements, converts ascii lists to the
binary format, and replays a list naively.
"""

from __future__ import annotations

import hashlib
import random
import struct

HASH_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64,
              "sm3": 32, "md5": 16}
TEMPLATE_FIELDS = {
    "ima": ("d", "n"),
    "ima-ng": ("d-ng", "n-ng"),
    "ima-sig": ("d-ng", "n-ng", "sig"),
    "ima-buf": ("d-ng", "n-ng", "buf"),
}


def _u32(n: int) -> bytes:
    return struct.pack("<I", n)


def fields_from_text(template: str, text: bytes) -> list[bytes]:
    """Field data of an ascii line's field text (kernel-written lines)."""
    ids = TEMPLATE_FIELDS[template]
    if template in ("ima", "ima-ng"):
        digest_text, name = text.split(b" ", 1)
        rest: list[bytes] = []
    else:
        digest_text, tail = text.split(b" ", 1)
        name, last = tail.rsplit(b" ", 1)
        rest = [bytes.fromhex(last.decode())]
    if ids[0] == "d":
        digest = bytes.fromhex(digest_text.decode())
    else:
        alg, hexdigest = digest_text.rsplit(b":", 1)
        digest = alg + b":\0" + bytes.fromhex(hexdigest.decode())
    return [digest, name + b"\0"] + rest


def template_data(template: str, fields: list[bytes]) -> bytes:
    """What the template hash covers."""
    if template == "ima":
        return fields[0] + fields[1] + bytes(256 - len(fields[1]))
    return b"".join(_u32(len(f)) + f for f in fields)


def ascii_line(pcr: int, template: str, fields: list[bytes],
               violation: bool = False) -> bytes:
    """One line as ima_fs.c prints it (legacy SHA-1 template hash)."""
    th = bytes(20) if violation else hashlib.sha1(
        template_data(template, fields)).digest()
    texts = []
    for fid, data in zip(TEMPLATE_FIELDS[template], fields):
        if fid == "d":
            texts.append(data.hex().encode())
        elif fid == "d-ng":
            alg, digest = data.split(b":\0", 1)
            texts.append(alg + b":" + digest.hex().encode())
        elif fid in ("n", "n-ng"):
            texts.append(data[:-1])
        else:
            texts.append(data.hex().encode())
    return b"%d %s %s %s\n" % (pcr, th.hex().encode(), template.encode(),
                               b" ".join(texts))


def generate_ascii_log(count: int, *, template: str = "ima-ng",
                       file_hash_alg: str = "sha256", seed: int = 0,
                       violation_every: int | None = None,
                       pcr: int = 10) -> bytes:
    """A list of ``count`` entries: boot_aggregate, then random files."""
    rng = random.Random(seed)
    size = HASH_SIZES.get(file_hash_alg, 32)
    lines = []
    for i in range(count):
        if template == "ima":
            digest = rng.randbytes(20)
        else:
            digest = file_hash_alg.encode() + b":\0" + rng.randbytes(size)
        if i == 0:
            name = b"boot_aggregate"
        else:
            depth = rng.randint(1, 5)
            name = b"/" + b"/".join(
                rng.choice([b"usr", b"lib", b"bin", b"etc", b"x86_64",
                            b"python3.11", b"site packages"])
                for _ in range(depth)) + b"/f%d.so" % i
        fields = [digest, name + b"\0"]
        if template == "ima-sig":
            fields.append(rng.randbytes(rng.choice([0, 0, 70])))
        elif template == "ima-buf":
            fields.append(rng.randbytes(rng.randint(1, 40)))
        violation = bool(violation_every) and i > 0 and \
            i % violation_every == 0
        if violation:  # the kernel zeroes a violation's file digest
            fields[0] = fields[0][:len(fields[0]) - len(
                fields[0].split(b":\0", 1)[-1])] + bytes(size) \
                if template != "ima" else bytes(20)
        lines.append(ascii_line(pcr, template, fields, violation))
    return b"".join(lines)


def binary_entry(pcr: int, template: str, fields: list[bytes],
                 violation: bool = False) -> bytes:
    """One entry as ima_fs.c writes it to binary_runtime_measurements
    (legacy SHA-1 template hash); the name may hold any byte."""
    th = bytes(20) if violation else hashlib.sha1(
        template_data(template, fields)).digest()
    head = _u32(pcr) + th + _u32(len(template)) + template.encode()
    if template == "ima":
        return head + fields[0] + _u32(len(fields[1]) - 1) + fields[1][:-1]
    tdata = template_data(template, fields)
    return head + _u32(len(tdata)) + tdata


def ascii_to_binary(data: bytes) -> bytes:
    """Convert a kernel-written ascii list to binary_runtime_measurements."""
    out = []
    for line in data.splitlines():
        pcr, th, template, text = line.split(b" ", 3)
        name = template.decode()
        fields = fields_from_text(name, text)
        out.append(_u32(int(pcr)) + bytes.fromhex(th.decode())
                   + _u32(len(template)) + template)
        if name == "ima":
            out.append(fields[0] + _u32(len(fields[1]) - 1)
                       + fields[1][:-1])
        else:
            tdata = template_data(name, fields)
            out.append(_u32(len(tdata)) + tdata)
    return b"".join(out)


def naive_replay(data: bytes, bank: str = "sha256") -> bytes:
    """PCR 10 after an ascii list, the slow obvious way."""
    size = hashlib.new(bank).digest_size
    pcr = bytes(size)
    for line in data.splitlines():
        _, th, template, text = line.split(b" ", 3)
        if not any(bytes.fromhex(th.decode())):
            digest = b"\xff" * size
        else:
            digest = hashlib.new(bank, template_data(
                template.decode(),
                fields_from_text(template.decode(), text))).digest()
        pcr = hashlib.new(bank, pcr + digest).digest()
    return pcr
