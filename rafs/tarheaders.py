"""Tar header iterator: one ``TarEntry`` per member of a layer tar, and a reader for its data.

Implements the reading side of ../shared/spec/image.md §15.2: rules 2 (the name: PAX ``path``
wins, GNU long names resolved; cleaning it is the tree's business), 3 (PAX global headers
ignored), 4 (malformed PAX records refused), 5 (``SCHILY.xattr.*`` records collected,
unfiltered), 6 (entry types; GNU sparse files expanded, never stored as their map) and 7
(uid/gid/mode/mtime from the header, PAX values winning); rafs-v5.md §15 step 2 (extension
headers folded into the following entry, octal and GNU base-256 numbers, PAX ``uid``/``gid``
honoured); NOTES.md 9 (a tar may end at an entry boundary without the end-of-archive blocks).
``rafs.tarstream`` builds the tree from the entries.

The parser is our own: Python's ``tarfile`` needs the end-of-archive blocks, reads ahead and
rejects entry types the spec asks us to accept. Formats: v7, ustar, GNU (long names ``L``/``K``,
base-256 numbers, old sparse ``S``) and PAX (``x``; global ``g`` ignored; GNU sparse 0.0/0.1/1.0).

``TarReader`` reads the stream block by block and yields each entry as soon as its header is
decoded; nothing is buffered ahead. ``TarReader.data(entry)`` opens the data of the entry just
yielded (regular files; sparse ones as their dense expansion, holes generated on the fly) and
charges its size to the ``Budget``; whatever is left unread, or never opened, is skipped when
the iteration resumes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple
from zlib import adler32 as _adler32

from rafs.errors import InvalidInput
from rafs.streams import Readable

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_ENDS = (0, 32)  # what ends an octal header field: NUL or space
_READ_SIZE = 1 << 20
_MAX_META = 1 << 20  # largest PAX / GNU long-name body accepted (Go's archive/tar uses 1 MiB)

_SCHILY = b"SCHILY.xattr."
_SPARSE = b"GNU.sparse."

# Type flags, as ints (``hdr[156]``); the names are tarfile's.
REGTYPE, AREGTYPE, CONTTYPE = ord("0"), 0, ord("7")
LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE = (ord(c) for c in "123456")
GNUTYPE_SPARSE = ord("S")
_PAX, _GLOBAL, _LONGNAME, _LONGLINK = (ord(c) for c in "xgLK")
_EXTENSION = frozenset((_PAX, _LONGNAME, _LONGLINK))  # headers that apply to the next entry
# Types whose size field does not announce data (Go's isHeaderOnlyType); all others have data.
_HEADER_ONLY = frozenset((LNKTYPE, SYMTYPE, CHRTYPE, BLKTYPE, DIRTYPE, FIFOTYPE))


def show_path(path: bytes) -> str:
    """A tar name as error messages quote it."""
    return repr(path.decode("utf-8", "backslashreplace"))


_show = show_path


class SparseMap:
    """Where the stored segments of a sparse file go (``segments is None``: in its data)."""

    __slots__ = ("segments", "size")

    def __init__(self, segments: list[tuple[int, int]] | None, size: int) -> None:
        self.segments = segments
        self.size = size  # the expanded size


class TarEntry(NamedTuple):
    """One member with its extension headers applied (PAX over GNU ``L``/``K`` over ustar)."""

    name: bytes  # as written: PAX ``path`` / GNU long name, ustar prefix joined; not normalised
    linkname: bytes  # PAX ``linkpath`` / GNU long link
    type: int  # type flag byte; a v7 regular file whose name ends in ``/`` comes as DIRTYPE
    mode: int  # the header's mode field, as stored
    uid: int
    gid: int
    mtime: int  # seconds; times before 1970 clamped to 0 like containerd's boundTime
    mtime_nsec: int  # from a PAX mtime, else 0
    size: int  # bytes stored in the archive (of a sparse file: its segments)
    xattrs: dict[bytes, bytes] | None  # SCHILY.xattr.* records, all namespaces; None if none
    sparse: SparseMap | None  # GNU sparse PAX formats; ``S`` entries read theirs with the data
    header: bytes  # the header block, for the fields decoded on demand

    def device(self) -> tuple[int, int]:
        """(major, minor) of a character or block device."""
        hdr, name = self.header, self.name
        return _number(hdr[329:337], "devmajor", name), _number(hdr[337:345], "devminor", name)


_new_entry = tuple.__new__  # TarEntry's fields without the Python-level __new__ (hot path)


class Budget:
    """Bytes of file data still allowed in the layer, sparse files counted expanded.

    A few bytes of tar can declare a sparse file of any size, which a limit on the
    decompressed stream does not see. ``None`` or a negative limit: no limit.
    """

    __slots__ = ("left",)

    def __init__(self, limit: int | None = None) -> None:
        self.left = limit if limit is not None and limit >= 0 else None

    def take(self, size: int, name: bytes, sparse: bool = False) -> None:
        """Charge ``size`` bytes of entry ``name``; InvalidInput beyond the limit."""
        left = self.left
        if left is None:
            return
        if size > left:
            raise InvalidInput(
                f"tar entry {_show(name)} takes the layer's files beyond the configured limit"
                + (" (a sparse file, counted expanded)" if sparse else "")
            )
        self.left = left - size


# --------------------------------------------------------------------------- the iterator


class TarReader:
    """Iterate over the entries of a layer tar; ``data`` reads the current one's content.

    The iteration ends at the end-of-archive marker or at a clean end of the stream between
    entries; ``drain`` then reads the rest, so a wrapping codec verifies its trailer.
    """

    __slots__ = ("_src", "budget", "_current")

    def __init__(self, stream: Readable, budget: Budget | None = None) -> None:
        self._src = _Source(stream)
        self.budget = budget if budget is not None else Budget()
        # The entry just yielded while its data may be opened, then the reader data() made.
        self._current: TarEntry | _EntryReader | None = None

    def drain(self) -> None:
        """Read the stream to its end (bytes after the end marker are ignored)."""
        self._src.drain()

    def data(self, entry: TarEntry) -> _EntryReader | _SparseReader:
        """The content of ``entry``, the entry just yielded, as a reader of ``.size`` bytes.

        ``read(n)`` returns exactly ``min(n, remaining)`` bytes and raises InvalidInput if the
        stream ends early. Sparse files read as their dense expansion; the expanded size is
        charged to the budget first. Call at most once per entry, for types that have data;
        the reader is valid until the iteration resumes.
        """
        if entry is not self._current:
            raise ValueError("TarReader.data: not the entry just yielded, or opened twice")
        name, _, flag, _, _, _, _, _, stored, _, sparse, hdr = entry
        src = self._src
        self._current = data = _EntryReader(src, stored, name)
        if flag == GNUTYPE_SPARSE:
            sparse = _old_gnu_sparse(src, hdr, name)
        budget = self.budget
        if sparse is None:
            if budget.left is not None:  # no call on the common, unlimited path
                budget.take(stored, name)
            return data
        budget.take(sparse.size, name, True)
        segments = sparse.segments if sparse.segments is not None else _read_sparse_map(data, name)
        segments = [(o, n) for o, n in segments if n]
        end = 0
        for offset, length in segments:
            if offset < end or length < 0 or offset + length > sparse.size:
                raise InvalidInput(f"malformed GNU sparse map in {_show(name)}")
            end = offset + length
        if sum(n for _, n in segments) != data.left:
            raise InvalidInput(f"GNU sparse map of {_show(name)} does not match its data")
        return _SparseReader(data, segments, sparse.size)

    def __iter__(self) -> Iterator[TarEntry]:
        src = self._src
        read, skip = src.read, src.skip
        new, header_only, extension = _new_entry, _HEADER_ONLY, _EXTENSION
        pax: dict[bytes, bytes] = {}
        long_name = long_link = None
        pending_at = -1  # offset of an extension header still waiting for its entry
        while True:
            hdr = read(BLOCK)
            if hdr == _ZERO_BLOCK or len(hdr) < BLOCK:
                if hdr.strip(b"\0"):
                    raise InvalidInput(f"truncated tar header at offset {src.tell() - len(hdr)}")
                if pending_at >= 0:
                    raise InvalidInput(
                        f"truncated tar: extension header at offset {pending_at} has no entry"
                    )
                return  # end marker, or a clean end without one (NOTES.md 9)
            if not _checksum_ok(hdr):
                raise InvalidInput(f"corrupt tar header at offset {src.tell() - BLOCK}")

            flag = hdr[156]
            name = hdr[:100]
            cut = name.find(0)
            if cut >= 0:
                name = name[:cut]
            if hdr[257:263] == b"ustar\0" and hdr[345]:
                prefix = hdr[345:476] if hdr[508:512] == b"tar\0" else hdr[345:500]
                name = prefix.split(b"\0", 1)[0] + b"/" + name
            size = _number(hdr[124:136], "size", name)
            if size < 0:
                raise InvalidInput(f"negative size in tar entry {_show(name)}")

            if flag in extension:
                at = src.tell() - BLOCK  # (not kept for every header: the offset is for errors)
                if size > _MAX_META:
                    raise InvalidInput(f"tar extension header at offset {at} is too large")
                body = read(size)
                if len(body) < size or not skip(-size % BLOCK):
                    raise InvalidInput(f"truncated tar: extension header at offset {at} cut short")
                if flag == _PAX:
                    _parse_pax(body, pax, at + BLOCK)
                elif flag == _LONGNAME:
                    long_name = body.split(b"\0", 1)[0]
                else:
                    long_link = body.split(b"\0", 1)[0]
                pending_at = at
                continue
            if flag == _GLOBAL:  # ignored, as containerd does (image.md §15.2 rule 3)
                at = src.tell() - BLOCK
                if not skip(size + (-size % BLOCK)):
                    raise InvalidInput(f"truncated tar: global header at offset {at} cut short")
                continue

            # A real entry: fold in the pending extension headers (PAX wins over GNU).
            if long_name is not None:
                name = long_name
            link = hdr[157:257]
            cut = link.find(0)
            if cut >= 0:
                link = link[:cut]
            if long_link is not None:
                link = long_link
            # _number's common form (octal digits, then NUL or space) for the four fields at
            # once; any other form goes through _number, field by field.
            mode = uid = gid = mtime = -1
            if hdr[107] in _ENDS and hdr[115] in _ENDS and hdr[123] in _ENDS and hdr[147] in _ENDS:
                try:
                    mode, uid = int(hdr[100:107], 8), int(hdr[108:115], 8)
                    gid, mtime = int(hdr[116:123], 8), int(hdr[136:147], 8)
                except ValueError:
                    mode = -1
            if mode < 0 or uid < 0 or gid < 0 or mtime < 0:
                mode = _number(hdr[100:108], "mode", name)
                uid = _number(hdr[108:116], "uid", name)
                gid = _number(hdr[116:124], "gid", name)
                mtime = _number(hdr[136:148], "mtime", name)
            if mtime < 0:
                mtime = 0
            entry = new(
                TarEntry, (name, link, flag, mode, uid, gid, mtime, 0, size, None, None, hdr)
            )
            if pax:
                entry = _apply_pax(pax, entry)
                pax = {}
                size = entry.size
            long_name = long_link = None
            pending_at = -1
            if flag == AREGTYPE and entry.name.endswith(b"/"):
                flag = DIRTYPE  # pre-POSIX tars mark directories by a trailing slash
                entry = entry._replace(type=flag)

            if flag in header_only:
                yield entry
                continue
            self._current = entry
            yield entry
            opened: TarEntry | _EntryReader | None = self._current
            if not isinstance(opened, _EntryReader):  # never opened: skip it
                if flag == GNUTYPE_SPARSE:
                    _old_gnu_sparse(src, hdr, entry.name)  # its map blocks precede the data
                opened = _EntryReader(src, size, entry.name)
            opened.finish()
            # A stream that ends inside the final padding still holds every byte of the entry.
            skip(-size % BLOCK)


# --------------------------------------------------------------------------- stream access


class _Source:
    """Buffered view of the layer stream with an absolute offset for error messages."""

    __slots__ = ("_raw", "_buf", "_pos", "_base")

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._buf = b""
        self._pos = 0
        self._base = 0  # stream offset of _buf[0]

    def tell(self) -> int:
        return self._base + self._pos

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, fewer only at the end of the stream."""
        pos = self._pos
        end = pos + n
        if end <= len(self._buf):
            self._pos = end
            return self._buf[pos:end]
        parts = [self._buf[pos:]] if pos < len(self._buf) else []
        got = len(self._buf) - pos
        self._base += len(self._buf)
        self._buf, self._pos = b"", 0
        while got < n:
            want = n - got
            data = self._raw.read(max(want, _READ_SIZE))
            if not data:
                break
            if len(data) <= want:
                parts.append(data)
                self._base += len(data)
                got += len(data)
            else:
                parts.append(data[:want])
                self._buf, self._pos = data, want
                got = n
        return b"".join(parts)

    def skip(self, n: int) -> bool:
        """Skip ``n`` bytes; False if the stream ended first."""
        end = self._pos + n
        if end <= len(self._buf):
            self._pos = end
            return True
        left = end - len(self._buf)
        self._base += len(self._buf)
        self._buf, self._pos = b"", 0
        while left:
            data = self._raw.read(min(left, _READ_SIZE))
            if not data:
                return False
            self._base += len(data)
            left -= len(data)
        return True

    def drain(self) -> None:
        while self._raw.read(_READ_SIZE):
            pass


class _EntryReader:
    """The bytes of one stored entry; short reads mean a truncated stream."""

    __slots__ = ("_src", "left", "size", "_path")

    def __init__(self, src: _Source, size: int, path: bytes) -> None:
        self._src = src
        self.left = self.size = size
        self._path = path

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0 or n > self.left:
            n = self.left
        if not n:
            return b""
        data = self._src.read(n)
        if len(data) != n:
            raise InvalidInput(f"truncated tar: data of {_show(self._path)} cut short")
        self.left -= n
        return data

    def tell(self) -> int:
        """Offset of the next data byte in the layer stream (zran chunks point there)."""
        return self._src.tell()

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def finish(self) -> None:
        if self.left and not self._src.skip(self.left):
            raise InvalidInput(f"truncated tar: data of {_show(self._path)} cut short")
        self.left = 0


class _SparseReader:
    """Dense view of a sparse file: stored segments from ``data``, zeros in the holes."""

    __slots__ = ("_data", "_segments", "_index", "_pos", "size")

    def __init__(self, data: _EntryReader, segments: list[tuple[int, int]], size: int) -> None:
        self._data = data
        self._segments = segments
        self._index = 0
        self._pos = 0
        self.size = size

    def read(self, n: int = -1, /) -> bytes:
        left = self.size - self._pos
        if n is None or n < 0 or n > left:
            n = left
        parts = []
        while n:
            pos = self._pos
            if self._index < len(self._segments):
                start, length = self._segments[self._index]
            else:
                start, length = self.size, 0
            if pos < start:
                step = min(n, start - pos)
                parts.append(bytes(step))
            else:
                step = min(n, start + length - pos)
                parts.append(self._data.read(step))
                if pos + step == start + length:
                    self._index += 1
            self._pos = pos + step
            n -= step
        return b"".join(parts)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# --------------------------------------------------------------------------- header fields


def _number(field: bytes, what: str, path: bytes) -> int:
    """Octal (NUL/space padded) or GNU base-256 number."""
    if field[-1] in (0, 32):
        try:  # the common form: zero-padded digits and one terminator
            value = int(field[:-1], 8)
            if value >= 0:
                return value
        except ValueError:
            pass
    if field[0] & 0x80:
        if field[0] == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if digits.strip(b"01234567"):
        raise InvalidInput(f"bad {what} field {field!r} in tar entry {_show(path)}")
    return int(digits, 8) if digits else 0


def _checksum_ok(hdr: bytes) -> bool:
    """ustar checksum: byte sum with the checksum field read as spaces."""
    field = hdr[148:156]
    digits = field.split(b"\0", 1)[0].strip(b" ")
    if not digits or digits.strip(b"01234567"):
        return False
    expected = int(digits, 8)
    # Adler-32's low half is 1 + byte sum mod 65521; 256 bytes sum to at most 65280, so
    # two halves give the exact sum ~6x faster than sum(hdr).
    total = (_adler32(hdr[:256]) & 0xFFFF) + (_adler32(hdr[256:]) & 0xFFFF) - 2
    unsigned = total - sum(field) + 8 * 32
    if unsigned == expected:
        return True
    # Some old tars summed signed chars.
    high = sum(1 for b in hdr if b & 0x80) - sum(1 for b in field if b & 0x80)
    return unsigned - 256 * high == expected


def _decimal(value: bytes, key: bytes, path: bytes) -> int:
    if not value.isdigit():
        raise InvalidInput(f"bad PAX {key.decode(errors='replace')} {value!r} in {_show(path)}")
    return int(value)


def _pax_time(value: bytes, path: bytes) -> tuple[int, int]:
    sec, dot, frac = value.partition(b".")
    negative = sec.startswith(b"-")
    digits = sec[1:] if negative else sec
    if not digits.isdigit() or (dot and not frac.isdigit()):
        raise InvalidInput(f"bad PAX mtime {value!r} in {_show(path)}")
    if negative:
        return 0, 0  # before 1970: clamped like containerd's boundTime
    return int(digits), int((frac[:9] or b"0").ljust(9, b"0"))


# --------------------------------------------------------------------------- PAX


def _parse_pax(body: bytes, into: dict[bytes, bytes], at: int) -> None:
    """Fold the records of one PAX header into ``into`` (length-prefixed, newline-safe)."""
    pos, end = 0, len(body)
    offsets: list[bytes] = []
    while pos < end and body[pos] != 0:
        space = body.find(b" ", pos, pos + 20)
        length = body[pos:space]
        if space < 0 or not length.isdigit():
            raise InvalidInput(f"malformed PAX record at offset {at + pos}")
        stop = pos + int(length)
        if stop > end or stop <= space + 1 or body[stop - 1] != 0x0A:
            raise InvalidInput(f"malformed PAX record at offset {at + pos}")
        key, eq, value = body[space + 1 : stop - 1].partition(b"=")
        if not eq or not key or b"\0" in key:
            raise InvalidInput(f"malformed PAX record at offset {at + pos}")
        if key in (b"GNU.sparse.offset", b"GNU.sparse.numbytes"):
            offsets.append(value)  # format 0.0 repeats these: keep them in order
        else:
            into[key] = value
        pos = stop
    if offsets:
        into[b"GNU.sparse.map"] = b",".join(offsets)


def _apply_pax(pax: dict[bytes, bytes], entry: TarEntry) -> TarEntry:
    """``entry`` with the PAX records of its extension headers over the header values."""
    name, link, _, mode, uid, gid, mtime, nsec, size, _, _, hdr = entry
    get = pax.get
    if (value := get(b"path")) is not None:
        name = value
    if (value := get(b"linkpath")) is not None:
        link = value
    if b"\0" in name or b"\0" in link:
        raise InvalidInput(f"NUL byte in PAX path of {_show(name)}")
    if (value := get(b"size")) is not None:
        size = _decimal(value, b"size", name)
    if (value := get(b"uid")) is not None:
        uid = _decimal(value, b"uid", name)
    if (value := get(b"gid")) is not None:
        gid = _decimal(value, b"gid", name)
    if (value := get(b"mtime")) is not None:
        mtime, nsec = _pax_time(value, name)
    xattrs: dict[bytes, bytes] | None = None
    sparse = None
    for key, value in pax.items():
        if key.startswith(_SCHILY):
            if xattrs is None:
                xattrs = {}
            xattrs[key[len(_SCHILY) :]] = value
        elif key.startswith(_SPARSE) and sparse is None:
            sparse, name = _pax_sparse(pax, name)
    return _new_entry(
        TarEntry, (name, link, entry.type, mode, uid, gid, mtime, nsec, size, xattrs, sparse, hdr)
    )


# --------------------------------------------------------------------------- sparse maps


def _pax_sparse(pax: dict[bytes, bytes], name: bytes) -> tuple[SparseMap | None, bytes]:
    """Recognise GNU sparse PAX formats the way Go's archive/tar does."""
    major, minor = pax.get(b"GNU.sparse.major"), pax.get(b"GNU.sparse.minor")
    if major == b"1" and minor == b"0":
        version = 1
    elif (major == b"0" and minor in (b"0", b"1")) or (
        major is None and minor is None and pax.get(b"GNU.sparse.map")
    ):
        version = 0
    else:
        return None, name  # not a GNU sparse file (or an unknown version: plain data)
    name = pax.get(b"GNU.sparse.name", name)
    real = pax.get(b"GNU.sparse.size", pax.get(b"GNU.sparse.realsize"))
    if real is None:
        raise InvalidInput(f"GNU sparse entry {_show(name)} has no real size")
    size = _decimal(real, b"GNU.sparse.size", name)
    if version == 1:
        return SparseMap(None, size), name
    fields = pax.get(b"GNU.sparse.map", b"").split(b",")
    numbers = [_decimal(f, b"GNU.sparse.map", name) for f in fields if fields != [b""]]
    if len(numbers) % 2 or (
        b"GNU.sparse.numblocks" in pax
        and _decimal(pax[b"GNU.sparse.numblocks"], b"GNU.sparse.numblocks", name) * 2
        != len(numbers)
    ):
        raise InvalidInput(f"malformed GNU sparse map in {_show(name)}")
    return SparseMap(list(zip(numbers[::2], numbers[1::2], strict=True)), size), name


def _old_gnu_sparse(src: _Source, hdr: bytes, name: bytes) -> SparseMap:
    """The map of a GNU ``S`` entry: 4 slots in the header, 21 per extension block."""
    segments = []
    block, slots, more = hdr[386:482], 4, hdr[482]
    while True:
        for i in range(slots):
            field = block[i * 24 : i * 24 + 24]
            if not field.strip(b"\0"):
                break
            offset = _number(field[:12], "sparse offset", name)
            segments.append((offset, _number(field[12:], "sparse size", name)))
        if not more:
            break
        ext = src.read(BLOCK)
        if len(ext) < BLOCK:
            raise InvalidInput(f"truncated tar: sparse map of {_show(name)} cut short")
        block, slots, more = ext[:504], 21, ext[504]
    return SparseMap(segments, _number(hdr[483:495], "sparse real size", name))


def _read_sparse_map(data: _EntryReader, name: bytes) -> list[tuple[int, int]]:
    """GNU sparse 1.0: decimal lines (count, then offset/size pairs) padded to a block."""
    buf = b""
    numbers: list[int] = []
    wanted = None
    while wanted is None or len(numbers) < wanted:
        while b"\n" not in buf:
            if not data.left:
                raise InvalidInput(f"malformed GNU sparse map in {_show(name)}")
            buf += data.read(BLOCK)
        line, _, buf = buf.partition(b"\n")
        numbers.append(_decimal(line, b"GNU.sparse map", name))
        if wanted is None:
            wanted = 1 + 2 * numbers[0]
    return list(zip(numbers[1::2], numbers[2::2], strict=True))
