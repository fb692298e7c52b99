"""The file-object shapes rafs reads from, declared once (rafs takes file objects, never paths).

Any object with these methods will do: files, ``io.BytesIO``, decompressing readers, a
registry's range reader.
"""

from __future__ import annotations

from typing import Protocol


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class SeekableReadable(Readable, Protocol):
    def seek(self, offset: int, whence: int = 0, /) -> int: ...
