"""A bounds-checked big/little-endian reader for untrusted bytes.

Every parser in this package reads through :class:`Reader`, so that running
off the end of a buffer is always a typed :class:`TruncatedEvidence`.
"""

from __future__ import annotations

import struct

from trusted_pools import exception

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U16LE = struct.Struct("<H")
_U32LE = struct.Struct("<I")
_U64LE = struct.Struct("<Q")


class Reader:
    """Sequential reader over ``data``; ``what`` names it in errors."""

    __slots__ = ("data", "offset", "end", "what")

    def __init__(self, data: bytes, what: str, offset: int = 0,
                 end: int | None = None) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError("data must be bytes, not %s" % type(data).__name__)
        self.data = bytes(data)
        self.offset = offset
        self.end = len(self.data) if end is None else end
        self.what = what

    @property
    def remaining(self) -> int:
        return self.end - self.offset

    def at_end(self) -> bool:
        return self.offset >= self.end

    def _need(self, n: int) -> int:
        if n < 0 or self.offset + n > self.end:
            raise exception.TruncatedEvidence(
                what=self.what, needed=n, offset=self.offset,
                available=max(self.remaining, 0))
        start = self.offset
        self.offset += n
        return start

    def bytes(self, n: int) -> bytes:
        start = self._need(n)
        return self.data[start:start + n]

    def _unpack(self, st: struct.Struct) -> int:
        start = self._need(st.size)
        return st.unpack_from(self.data, start)[0]

    def u8(self) -> int:
        return self._unpack(_U8)

    def u16(self) -> int:
        return self._unpack(_U16)

    def u32(self) -> int:
        return self._unpack(_U32)

    def u64(self) -> int:
        return self._unpack(_U64)

    def u16le(self) -> int:
        return self._unpack(_U16LE)

    def u32le(self) -> int:
        return self._unpack(_U32LE)

    def u64le(self) -> int:
        return self._unpack(_U64LE)

    def tpm2b(self) -> bytes:
        """A TPM2B: big-endian UINT16 size, then that many bytes."""
        return self.bytes(self.u16())

    def sub(self, n: int, what: str | None = None) -> "Reader":
        """A reader over the next ``n`` bytes; this reader skips them."""
        start = self._need(n)
        return Reader(self.data, what or self.what, start, start + n)

    def expect_end(self) -> None:
        if self.offset != self.end:
            raise exception.MalformedEvidence(
                what=self.what,
                reason="%d unexpected trailing bytes at offset %d"
                % (self.end - self.offset, self.offset))
