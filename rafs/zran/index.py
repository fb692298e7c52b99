"""Indexing a gzip layer while it is read: deflate block boundaries with their 32 KiB windows,
and the decompression contexts (checkpoints) chosen among them the way upstream chooses.

Spec: ../shared/spec/blob.md §12 (ZRan contexts), §8.3 (ci v2 zran entries). Upstream facts
(nydus ``utils/src/compress/zlib_random.rs``, ``storage/src/meta/zran.rs``): the layer is
inflated with ``Z_BLOCK`` so inflate stops at every block boundary; a boundary's checkpoint is
(compressed offset, uncompressed offset, pending bits and the byte they come from, the window
= the last ≤ 32 KiB of output of the current gzip member). At the start of every chunk the
builder keeps the current context, or opens a new one at the latest boundary at or before the
chunk, when a boundary was passed since and the context already spans 512 KiB compressed or
its uncompressed span plus a chunk reaches 2 MiB (or when the compressed gap since the
context's last chunk is more than twice its length, and that length is over 512 KiB).

``GzipIndexer`` is the uncompressed stream the tar reader reads; the reader runs ahead of the
chunker, so boundaries are queued (each with references to the output its window is cut
from, cut only for the few that become contexts) until the chunker, which knows the stream
offset of each chunk, asks for the latest one at or before a chunk. Memory stays bounded by
the read-ahead (and by runs of tar entries without file data), never by the layer.
"""

from __future__ import annotations

import ctypes
import hashlib
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass

from rafs.errors import InvalidInput, Unsupported
from rafs.streams import Readable
from rafs.zran import zlib as z

IN_SIZE = 256 << 10  # compressed bytes read at a time
OUT_PIECE = 64 << 10  # most output per inflate call (block ends stop it earlier)

MIN_COMP = 512 << 10  # upstream: RAFS_DEFAULT_CHUNK_SIZE / 2
MAX_COMP = 1 << 20  # upstream: RAFS_DEFAULT_CHUNK_SIZE
MAX_UNCOMP = 2 << 20  # upstream: RAFS_DEFAULT_CHUNK_SIZE * 2
MAX_CONTEXTS = 1 << 24
MAX_CONTEXT_OUT = 16 << 20  # nydusd refuses to inflate more than this for one context


@dataclass(frozen=True, slots=True)
class Boundary:
    """A place decoding can restart: just after a gzip header or a deflate block."""

    in_pos: int
    out_pos: int
    bits: int  # bits of the byte before ``in_pos`` that belong to the next block
    byte: int  # that byte (0 when ``bits`` is 0)
    pieces: tuple[bytes, ...]  # output read out around here, the boundary ``cut`` bytes
    cut: int  # before the end of their concatenation
    size: int  # bytes of window: min(32 KiB, member output so far)

    @property
    def window(self) -> bytes:
        """What ``inflateGetDictionary`` answers here; built only for the few boundaries that
        become contexts (a copy per block would cost more than inflating)."""
        if not self.size:
            return b""
        # From the end backwards, copying only the window: the last piece is a whole read of
        # the tar reader, a MiB or more, and joining it all cost more than inflating did.
        skip, need, out = self.cut, self.size, []
        for piece in reversed(self.pieces):
            if skip >= len(piece):
                skip -= len(piece)
                continue
            stop = len(piece) - skip
            start = max(0, stop - need)
            out.append(piece[start:stop])
            need -= stop - start
            skip = 0
            if not need:
                break
        return b"".join(reversed(out))


@dataclass(slots=True)
class Context:
    """One decompression context (blob.md §12): a checkpoint and the span decoded from it."""

    in_offset: int
    out_offset: int
    in_len: int
    out_len: int
    bits: int
    byte: int
    window: bytes


class GzipIndexer:
    """A readable over the uncompressed bytes of a gzip stream (one or more members) that
    records every block boundary; also counts the compressed bytes, and digests them unless
    told they are verified elsewhere (``hash_input``).

    Inflating stays on the reader's thread: on a thread of its own, each block's return
    waits for the GIL held by the tar reader, and it came out slower (docs/decisions.md).
    """

    def __init__(
        self, raw: Readable, max_bytes: int | None = None, hash_input: bool = True
    ) -> None:
        self._raw = raw
        self._max = max_bytes
        self._inf = z.Inflater(z.GZIP_WBITS)
        self._in = (ctypes.c_ubyte * IN_SIZE)()
        self._in_len = 0  # bytes in _in
        self._out = (ctypes.c_ubyte * (1 << 20))()  # the current read's output
        self._read_start = 0  # out_pos where the current read started
        self._pending: list[tuple[int, int, int, int, int, tuple[bytes, ...]]] = []
        self._last_byte = 0  # last byte of the previous input buffer
        self.in_pos = 0  # compressed bytes consumed by inflate
        self.out_pos = 0  # uncompressed bytes produced
        self.compressed_size = 0  # compressed bytes read from ``raw``
        self.sha256 = hashlib.sha256() if hash_input else None  # None: verified elsewhere
        self.members = 0
        self._member_out = 0  # uncompressed offset where the current member starts
        self._recent: deque[bytes] = deque()  # the current member's last output pieces
        self._recent_size = 0
        self._in_member = True
        self._eof = False
        self.boundaries: deque[Boundary] = deque()
        # (out, in) after each inflate call, for chunk in-offsets; pruned with the boundaries.
        self._points_out: list[int] = [0]
        self._points_in: list[int] = [0]

    # -- the stream ---------------------------------------------------------------------------

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            parts = []
            while part := self.read(1 << 20):
                parts.append(part)
            return b"".join(parts)
        if len(self._out) < n:
            self._out = (ctypes.c_ubyte * n)()
        got = 0
        self._pending = []
        while got < n and not self._eof:
            got += self._step(got, min(n - got, OUT_PIECE))
        data = ctypes.string_at(self._out, got) if got else b""
        # Boundaries met in this read keep references to the output they need: the pieces
        # read out before (the current member's, ≥ 32 KiB when it has that much) and ``data``.
        for in_pos, out_pos, bits, byte, size, before in self._pending:
            cut = got - (out_pos - self._read_start)
            self.boundaries.append(
                Boundary(in_pos, out_pos, bits, byte, (*before, data), cut, size)
            )
        self._read_start = self.out_pos
        if data:
            recent = self._recent
            recent.append(data)
            self._recent_size += got
            while self._recent_size - len(recent[0]) >= z.WINDOW:
                self._recent_size -= len(recent.popleft())
        return data

    def _refill(self) -> bool:
        # Whole buffers: where inflate runs out of input cuts a step, and the steps place
        # the chunks' compressed offsets, so they must not follow how the bytes arrived.
        parts, got = [], 0
        while got < IN_SIZE and (more := self._raw.read(IN_SIZE - got)):
            parts.append(more)
            got += len(more)
        if not got:
            return False
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if self.sha256 is not None:
            self.sha256.update(data)
        self.compressed_size += len(data)
        zs = self._inf.z
        if self._in_len:
            self._last_byte = self._in[self._in_len - 1]
        ctypes.memmove(self._in, data, len(data))
        self._in_len = len(data)
        zs.next_in = ctypes.addressof(self._in)
        zs.avail_in = len(data)
        return True

    def _step(self, at: int, space: int) -> int:
        """Inflate at most ``space`` bytes into the read buffer at ``at``; bytes produced."""
        inf = self._inf
        zs = inf.z
        if zs.avail_in == 0 and not self._refill():
            if self._in_member:
                raise InvalidInput(f"gzip stream truncated after {self.compressed_size} bytes")
            self._eof = True
            return 0
        if not self._in_member:
            if not self._next_member():
                return 0
        zs.next_out = ctypes.addressof(self._out) + at
        zs.avail_out = space
        before = zs.avail_in
        ret = inf.inflate(z.Z_BLOCK)
        self.in_pos += before - zs.avail_in
        produced = space - zs.avail_out
        if produced:
            self.out_pos += produced
            if self._max is not None and self.out_pos > self._max:
                raise InvalidInput(f"layer decompresses beyond the limit of {self._max} bytes")
        if ret == z.Z_STREAM_END:
            self.members += 1
            self._in_member = False
            inf.reset()
        elif ret == z.Z_OK or (ret == z.Z_BUF_ERROR and zs.avail_in == 0):
            if zs.data_type & z.DT_BLOCK_END:
                self._boundary(zs.data_type & z.DT_BITS)
        else:
            raise z.error(f"gzip data at byte {self.in_pos}", ret, inf)
        self._points_out.append(self.out_pos)
        self._points_in.append(self.in_pos)
        return produced

    def _next_member(self) -> bool:
        """After a member: another member follows, or only zero padding to the end."""
        zs = self._inf.z
        while True:
            if zs.avail_in == 0 and not self._refill():
                self._eof = True
                return False
            start = self._in_len - zs.avail_in
            rest = bytes(self._in[start : self._in_len])
            if rest.strip(b"\0"):
                if rest[0] == 0:
                    raise InvalidInput(f"garbage after gzip member at byte {self.in_pos}")
                self._in_member = True
                self._member_out = self.out_pos
                self._recent.clear()
                self._recent_size = 0
                return True
            # zero padding (tolerated, as Python's gzip does)
            self.in_pos += zs.avail_in
            zs.avail_in = 0

    def _boundary(self, bits: int) -> None:
        zs = self._inf.z
        byte = 0
        if bits:
            used = self._in_len - zs.avail_in
            byte = self._in[used - 1] if used else self._last_byte
        size = min(z.WINDOW, self.out_pos - self._member_out)
        recent = tuple(self._recent)
        self._pending.append((self.in_pos, self.out_pos, bits, byte, size, recent))

    # -- queries of the chunker -------------------------------------------------------------

    def latest_boundary(self, out_pos: int) -> Boundary:
        """The last boundary at or before ``out_pos``; older ones are dropped."""
        q = self.boundaries
        while len(q) > 1 and q[1].out_pos <= out_pos:
            q.popleft()
        if not q or q[0].out_pos > out_pos:
            raise InvalidInput(f"no gzip checkpoint before offset {out_pos}")
        # Points older than the kept boundary are no longer asked about.
        cut = bisect_left(self._points_out, q[0].out_pos) - 1
        if cut > 1024:
            del self._points_out[:cut]
            del self._points_in[:cut]
        return q[0]

    def in_at(self, out_pos: int) -> int:
        """Compressed bytes consumed when ``out_pos`` bytes were produced, interpolated
        between the inflate calls around it (upstream reads this from zlib exactly; its
        spacing rule compares it with 512 KiB, so a closer value gives closer spacing)."""
        i = bisect_right(self._points_out, out_pos) - 1
        i = max(i, 0)
        out0, in0 = self._points_out[i], self._points_in[i]
        if out0 == out_pos or i + 1 >= len(self._points_out):
            return in0
        out1, in1 = self._points_out[i + 1], self._points_in[i + 1]
        return in0 + (in1 - in0) * (out_pos - out0) // (out1 - out0)

    def in_after(self, out_pos: int) -> int:
        """Compressed bytes consumed when at least ``out_pos`` bytes were produced."""
        i = bisect_left(self._points_out, out_pos)
        if i >= len(self._points_out):
            raise InvalidInput(f"offset {out_pos} was not decompressed yet")
        return self._points_in[i]


class ContextBuilder:
    """Chooses the context of each chunk (upstream's spacing, module docstring)."""

    def __init__(self, indexer: GzipIndexer, chunk_size: int) -> None:
        self.indexer = indexer
        self.chunk_size = chunk_size
        self.contexts: list[Context] = []
        self._block_start = -1  # in_pos of the boundary the current context starts at
        self._start_in = 0

    def begin(self, out_pos: int) -> int:
        """Context index for a chunk starting at uncompressed ``out_pos``."""
        ix = self.indexer
        latest = ix.latest_boundary(out_pos)
        in_pos = ix.in_at(out_pos)
        if not self.contexts:
            self._open(latest)
        else:
            ctx = self.contexts[-1]
            comp = in_pos - ctx.in_offset
            uncomp = out_pos - ctx.out_offset
            moved = latest.in_pos != self._block_start
            if moved and (comp >= MAX_COMP // 2 or uncomp + self.chunk_size >= MAX_UNCOMP):
                self._open(latest)
            elif moved and comp > 2 * ctx.in_len and ctx.in_len > MIN_COMP:
                self._open(latest)
        self._start_in = in_pos
        return len(self.contexts) - 1

    def end(self, out_pos: int) -> tuple[int, int]:
        """Close the chunk ending at ``out_pos``: (compressed offset, compressed length)."""
        ctx = self.contexts[-1]
        in_end = self.indexer.in_after(out_pos)
        ctx.in_len = in_end - ctx.in_offset
        ctx.out_len = out_pos - ctx.out_offset
        if ctx.out_len > MAX_CONTEXT_OUT:
            raise Unsupported(
                f"a gzip checkpoint would span {ctx.out_len} bytes (no deflate block boundary "
                f"for {MAX_CONTEXT_OUT} bytes); nydusd cannot read it"
            )
        start = min(self._start_in, in_end)
        return start, in_end - start

    def _open(self, b: Boundary) -> None:
        if len(self.contexts) >= MAX_CONTEXTS:
            raise Unsupported("too many gzip checkpoints in one layer")
        self.contexts.append(Context(b.in_pos, b.out_pos, 0, 0, b.bits, b.byte, b.window))
        self._block_start = b.in_pos
