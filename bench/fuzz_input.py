"""Turning fuzzer bytes into structured inputs (used by bench/fuzz.py).

Every fuzz target takes one ``bytes`` value, whatever the engine (atheris
mutates bytes under coverage guidance; hypothesis draws them). A target
that needs structure reads it from the bytes with :class:`Source`, so one
input file always reproduces one call. Seeds are written with
:func:`pack` so that a target reads its parts back from a real example
before the mutations start changing them.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any, Sequence


def pack(*parts: bytes) -> bytes:
    """Parts as :meth:`Source.chunk` reads them back: a u32 length each."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


class Source:
    """Reads values from fuzzer bytes; past the end it reads zeros, so
    every byte string is a complete input."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out + bytes(n - len(out))

    def byte(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def below(self, n: int) -> int:
        """An integer in [0, n)."""
        return self.u32() % n if n > 1 else 0

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.below(len(options))]

    def chunk(self, limit: int = 1 << 20) -> bytes:
        """A length-prefixed part (see :func:`pack`)."""
        return self.take(min(self.u32(), limit, self.left()))

    def left(self) -> int:
        return max(0, len(self.data) - self.pos)

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out


# Leaves that reach past the first type check of the wire and policy
# parsers more often than random ones do.
_INTERESTING = [
    0, 1, -1, 2 ** 31, 2 ** 63, 2 ** 64 + 1, -(2 ** 70), 1.5, float("nan"),
    float("inf"), True, False, None, "", "0", "sha256", "sha1", "sha384",
    "ascii", "binary", "ima-ng", "ima-sig", "ima", "AAAA", "%%%",
    "ab" * 32, "ab" * 20, "sha256:" + "ab" * 32, "x509:" + "ab" * 32,
    "measured_boot", "trusted", "untrusted", "unknown", "*", "compute-1",
    "10", "0x0b", "\x00", "é" * 3, "a" * 300,
]


def json_value(src: Source, keys: Sequence[str], depth: int = 0) -> Any:
    """A JSON-like value: dicts and lists whose keys come mostly from
    ``keys``, leaves from a table of awkward values, random text, random
    base64 and numbers."""
    kind = src.byte() % (10 if depth < 4 else 6)
    if kind == 0:
        return src.choice(_INTERESTING)
    if kind == 1:
        return src.take(src.below(40)).decode("latin-1")
    if kind == 2:
        return base64.b64encode(src.take(src.below(200))).decode()
    if kind == 3:
        return struct.unpack(">q", src.take(8))[0] >> src.below(64)
    if kind == 4:
        return src.take(src.below(32)).hex()
    if kind == 5:
        return src.choice(keys) if keys else None
    if kind in (6, 7):
        return [json_value(src, keys, depth + 1)
                for _ in range(src.below(5))]
    out: dict[Any, Any] = {}
    for _ in range(src.below(7)):
        key = src.choice(keys) if keys and src.byte() % 4 else \
            src.take(src.below(8)).decode("latin-1")
        if src.byte() % 16 == 0:
            key = src.below(20)  # a non-string key (msgpack can do this)
        out[key] = json_value(src, keys, depth + 1)
    return out


def mutate_json(value: Any, src: Source, keys: Sequence[str]) -> Any:
    """``value`` with a few members replaced, removed or added."""
    if src.left() == 0:
        return value
    if isinstance(value, dict) and value:
        out = dict(value)
        for _ in range(1 + src.below(3)):
            key = src.choice(sorted(out, key=str)) if out else None
            op = src.byte() % 4
            if key is None or op == 0:
                out[src.choice(keys) if keys else "x"] = json_value(src, keys)
            elif op == 1:
                del out[key]
            elif op == 2:
                out[key] = json_value(src, keys)
            else:
                out[key] = mutate_json(out[key], src, keys)
        return out
    if isinstance(value, list) and value:
        out_list = list(value)
        i = src.below(len(out_list))
        out_list[i] = mutate_json(out_list[i], src, keys)
        return out_list
    if isinstance(value, str) and src.flag():
        raw = bytearray(value.encode("utf-8", "surrogatepass"))
        if raw:
            raw[src.below(len(raw))] = src.byte()
        return raw.decode("latin-1")
    return json_value(src, keys)


def structured(src: Source, seeds: Sequence[Any], keys: Sequence[str]
               ) -> Any:
    """A generated value: a seed mutated, a seed as JSON text re-read after
    byte changes, or a fresh random structure."""
    mode = src.byte() % 4
    if seeds and mode in (0, 1):
        return mutate_json(src.choice(seeds), src, keys)
    if seeds and mode == 2:
        text = bytearray(json.dumps(src.choice(seeds)).encode())
        for _ in range(src.below(4)):
            if text:
                text[src.below(len(text))] = src.byte()
        try:
            return json.loads(text)
        except ValueError:
            return text.decode("latin-1")
    return json_value(src, keys)
