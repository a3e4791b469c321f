"""A tiny canonical binary codec for SecAgg messages.

Messages travel over whatever the orchestrator or the Flower app uses, and
several of them are hashed and signed, so their encoding must be canonical:
fixed-width big-endian integers, length-prefixed byte strings, and a magic +
version + type tag in front. Anything malformed is a :class:`BadInput`.
"""

from __future__ import annotations

import struct

from collab.errors import BadInput

MAGIC = b"SAGG"
VERSION = 1


class Writer:
    """Append-only encoder; :meth:`finish` returns the bytes."""

    def __init__(self, tag: int) -> None:
        self._parts: list[bytes] = [MAGIC, bytes([VERSION, tag])]

    def u8(self, v: int) -> Writer:
        self._parts.append(struct.pack(">B", v))
        return self

    def u32(self, v: int) -> Writer:
        self._parts.append(struct.pack(">I", v))
        return self

    def u64(self, v: int) -> Writer:
        self._parts.append(struct.pack(">Q", v))
        return self

    def fixed(self, data: bytes, size: int) -> Writer:
        if len(data) != size:
            raise BadInput(f"expected {size} bytes, got {len(data)}")
        self._parts.append(bytes(data))
        return self

    def var(self, data: bytes) -> Writer:
        self._parts.append(struct.pack(">Q", len(data)))
        self._parts.append(bytes(data))
        return self

    def finish(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Decoder over one message; every read is bounds-checked."""

    def __init__(self, data: bytes, tag: int, what: str) -> None:
        self._data = memoryview(bytes(data))
        self._pos = 0
        self._what = what
        head = self._take(len(MAGIC) + 2)
        if head[: len(MAGIC)] != MAGIC or head[len(MAGIC)] != VERSION or head[len(MAGIC) + 1] != tag:
            raise BadInput(f"not a version {VERSION} secagg {what} message")

    def _take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise BadInput(f"truncated secagg {self._what} message")
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out

    def u8(self) -> int:
        return int(self._take(1)[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self._take(8))[0])

    def fixed(self, size: int) -> bytes:
        return self._take(size)

    def var(self) -> bytes:
        return self._take(self.u64())

    def count(self, limit: int = 1 << 20) -> int:
        """A list length, bounded so a hostile length cannot make us allocate without end."""
        n = self.u32()
        if n > limit:
            raise BadInput(f"secagg {self._what} message lists {n} items (limit {limit})")
        return n

    def done(self) -> None:
        if self._pos != len(self._data):
            raise BadInput(f"{len(self._data) - self._pos} trailing bytes after a secagg {self._what} message")
