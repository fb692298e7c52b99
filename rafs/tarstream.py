"""Single-pass reader that turns an (uncompressed) layer tar into a ``LayerTree``.

Implements ../shared/spec/image.md §15.2 (input normalisation) and §15.6 (hard links inside a
layer), rafs-v5.md §15 (building the tree from a tar stream, with the upstream defects fixed) and
NOTES.md items 3 (xattr namespaces) and 9 (tars without end blocks). Whiteout markers stay
ordinary entries; ``rafs.overlay`` interprets them.

The header parser is our own: Python's ``tarfile`` needs the end-of-archive blocks, reads ahead
and rejects entry types the spec asks us to accept. Formats: v7, ustar, GNU (long names ``L``/``K``,
base-256 numbers, old sparse ``S``) and PAX (``x``; global ``g`` ignored; GNU sparse 0.0/0.1/1.0).

File data is never buffered: each regular file is handed to ``add_file(reader, size)`` as a
reader bounded to that entry (sparse files as their dense expansion, holes generated on the fly).
The reader's ``read(n)`` returns exactly ``min(n, remaining)`` bytes and raises InvalidInput if
the stream ends early. Whatever the callback leaves unread is skipped.

Semantics worth knowing (each is a choice of the spec, see the sections above):
* duplicate path: the later entry wins; a directory entry on an existing directory replaces only
  its metadata; ``./`` replaces the root's metadata;
* a missing parent becomes an implicit 0755 root:root directory; a non-directory in the way of
  a later entry's parent is replaced by one (the overlay rule for lower layers, image.md §15.4),
  except for whiteout markers, which are dropped there: the non-directory already hides
  everything below it (NOTES.md 9: a tool may emit a file, then whiteouts beneath it);
* a hard link to an entry earlier in the layer shares its ``Node`` (any non-directory type)
  and leaves its metadata alone: tar writers repeat the target's values in the link entry,
  and where a hand-made tar does not, appliers disagree (containerd re-applies owner and
  mtime but, through a quirk, not the mode; umoci keeps the target's), so the target wins;
* a hard link whose target is not in the layer is reported in ``lower_links`` (absolute paths);
* numbers that do not fit (negative mtimes) are clamped to 0 like containerd's ``boundTime``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Protocol
from zlib import adler32 as _adler32

from rafs.errors import InvalidInput
from rafs.model import Chunk, LayerTree, Node, new_dir, new_root

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_READ_SIZE = 1 << 20
_MAX_META = 1 << 20  # largest PAX / GNU long-name body accepted (Go's archive/tar uses 1 MiB)

# Namespaces RAFS can encode (rafs-v6.md §10); anything else is dropped with a warning.
_XATTR_PREFIXES = (b"user.", b"trusted.", b"security.")
_XATTR_NAMES = (b"system.posix_acl_access", b"system.posix_acl_default")

_SCHILY = b"SCHILY.xattr."
_SPARSE = b"GNU.sparse."

# Type flags (as ints: ``hdr[156]``).
_REG, _AREG, _CONT = ord("0"), 0, ord("7")
_LNK, _SYM, _CHR, _BLK, _DIR, _FIFO = (ord(c) for c in "123456")
_PAX, _GLOBAL, _LONGNAME, _LONGLINK, _GNUSPARSE = (ord(c) for c in "xgLKS")
_KIND = {
    _REG: stat.S_IFREG,
    _AREG: stat.S_IFREG,
    _CONT: stat.S_IFREG,
    _GNUSPARSE: stat.S_IFREG,
    _SYM: stat.S_IFLNK,
    _CHR: stat.S_IFCHR,
    _BLK: stat.S_IFBLK,
    _DIR: stat.S_IFDIR,
    _FIFO: stat.S_IFIFO,
}


class Reader(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


AddFile = Callable[[Reader, int], list[Chunk]]


def keep_xattr(name: bytes) -> bool:
    """True for the xattr namespaces RAFS can store (rafs-v6.md §10, NOTES.md 3)."""
    return name.startswith(_XATTR_PREFIXES) or name in _XATTR_NAMES


def read_layer(
    stream: Reader,
    add_file: AddFile,
    warnings: list[str] | None = None,
    max_file_bytes: int | None = None,
) -> LayerTree:
    """Read one layer tar from ``stream`` (see the module docstring for the rules).

    ``warnings`` collects one line per dropped xattr (NOTES.md 3); the caller adds image and
    layer names. The stream is read to its end, so a wrapping codec verifies its trailer.
    ``max_file_bytes`` bounds the total size of the regular files, sparse files counted
    expanded: a few bytes of tar can declare a sparse file of any size, which a limit on the
    decompressed stream does not see.
    """
    src = _Source(stream)
    tree = _TreeBuilder(warnings if warnings is not None else [])
    _parse(src, tree, add_file, [max_file_bytes if max_file_bytes is not None else -1])
    src.drain()
    return tree.result()


# --------------------------------------------------------------------------- stream access


class _Source:
    """Buffered view of the layer stream with an absolute offset for error messages."""

    __slots__ = ("_raw", "_buf", "_pos", "_base")

    def __init__(self, raw: Reader) -> None:
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

    __slots__ = ("_src", "left", "_path")

    def __init__(self, src: _Source, size: int, path: bytes) -> None:
        self._src = src
        self.left = size
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

    __slots__ = ("_data", "_segments", "_index", "_pos", "_size")

    def __init__(self, data: _EntryReader, segments: list[tuple[int, int]], size: int) -> None:
        self._data = data
        self._segments = segments
        self._index = 0
        self._pos = 0
        self._size = size

    def read(self, n: int = -1, /) -> bytes:
        left = self._size - self._pos
        if n is None or n < 0 or n > left:
            n = left
        parts = []
        while n:
            pos = self._pos
            if self._index < len(self._segments):
                start, length = self._segments[self._index]
            else:
                start, length = self._size, 0
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


def _show(path: bytes) -> str:
    return repr(path.decode("utf-8", "backslashreplace"))


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


def _split(path: bytes, shown: bytes) -> list[bytes]:
    """Normalised components: relative, ``.``/empty dropped, ``..`` resolved without escaping."""
    parts = [p for p in path.split(b"/") if p and p != b"."]
    if b".." in parts:
        resolved: list[bytes] = []
        for part in parts:
            if part != b"..":
                resolved.append(part)
            elif resolved:
                resolved.pop()
            else:
                raise InvalidInput(f"tar entry {_show(shown)} escapes the layer root")
        parts = resolved
    if len(path) > 255 and any(len(p) > 255 for p in parts):
        raise InvalidInput(f"tar entry {_show(shown)} has a name longer than 255 bytes")
    return parts


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


# --------------------------------------------------------------------------- tree building


_MAX_SYMLINK_HOPS = 40  # Linux's limit before ELOOP


def _resolve(base: list[bytes], target: bytes) -> list[bytes]:
    """A symlink target as root-relative components, clamped at the root (fs.RootPath)."""
    out = [] if target.startswith(b"/") else list(base)
    for part in target.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if out:
                out.pop()
            continue
        out.append(part)
    return out


class _TreeBuilder:
    """Applies entries to the layer's tree in stream order."""

    __slots__ = ("root", "warnings", "_pending")

    def __init__(self, warnings: list[str]) -> None:
        self.root = new_root()
        self.warnings = warnings
        # Hard links to targets outside this layer: link key -> (target key, parent dir).
        self._pending: dict[bytes, tuple[bytes, Node]] = {}

    def parent(self, parts: list[bytes], marker: bool = False) -> Node | None:
        """The directory an entry goes into, creating implicit parents on the way.

        A parent that is a symlink written earlier in this layer is followed inside the
        layer's root, as containerd's applier resolves paths (fs.RootPath: absolute targets
        and ``..`` cannot leave the root); ``parts`` is rewritten in place to the resolved
        path. Symlinks of lower layers are not in this tree and so are never followed.
        None for a whiteout marker below a non-directory of this layer: that non-directory
        already hides everything below it, so the marker has no effect (NOTES.md 9).
        """
        hops = 0
        node = self.root
        depth = 0
        while depth < len(parts) - 1:
            name = parts[depth]
            child = node.children.get(name)  # type: ignore[union-attr]
            if child is not None and child.children is None and child.is_symlink:
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise InvalidInput(
                        f"too many levels of symbolic links in {_show(b'/'.join(parts))}"
                    )
                parts[:] = _resolve(parts[:depth], child.target) + parts[depth + 1 :]
                node, depth = self.root, 0
                continue
            if child is None or child.children is None:
                key = b"/".join(parts[: depth + 1]) if self._pending else None
                if marker and (child is not None or key in self._pending):
                    return None
                # Missing (or a non-directory in the way): an implicit directory.
                child = new_dir(0o755, implicit=True)
                node.children[name] = child  # type: ignore[index]
                if key is not None:
                    self._pending.pop(key, None)
            node = child
            depth += 1
        return node

    def add(self, parts: list[bytes], node: Node) -> None:
        if not parts:
            if node.children is None:
                raise InvalidInput("tar entry for the layer root is not a directory")
            self.root.copy_meta_from(node)
            return
        name = parts[-1]
        marker = name.startswith(b".wh.") or node.is_whiteout_device
        parent = self.parent(parts, marker)
        if parent is None:
            return
        old = parent.children.get(name)  # type: ignore[union-attr]
        if old is not None and old.children is not None and node.children is not None:
            old.copy_meta_from(node)
        else:
            parent.children[name] = node  # type: ignore[index]
        if self._pending:
            self._pending.pop(b"/".join(parts), None)

    def link(self, parts: list[bytes], target: list[bytes], meta: Node, path: bytes) -> None:
        node: Node | None = self.root
        for name in target:
            node = node.children.get(name) if node.children is not None else None  # type: ignore[union-attr]
            if node is None:
                break
        if node is None:
            self._link_lower(parts, b"/".join(target), path)
            return
        if node.children is not None:
            raise InvalidInput(
                f"hard link {_show(path)} points at directory {_show(b'/'.join(target))}"
            )
        if not parts:
            raise InvalidInput("tar entry for the layer root is not a directory")
        self.add(parts, node)

    def _link_lower(self, parts: list[bytes], target: bytes, path: bytes) -> None:
        if not parts:
            raise InvalidInput("tar entry for the layer root is not a directory")
        target = self._pending.get(target, (target, None))[0]  # link to a link below
        parent = self.parent(parts)
        assert parent is not None
        parent.children.pop(parts[-1], None)  # type: ignore[union-attr]
        key = b"/".join(parts)
        self._pending.pop(key, None)  # re-insert: keep stream order of the last one
        self._pending[key] = (target, parent)

    def xattr(self, node: Node, name: bytes, value: bytes, path: bytes) -> None:
        if keep_xattr(name):
            node.xattrs[name] = value
        else:
            self.warnings.append(
                f"dropped xattr {_show(name)} of {_show(path)}: namespace not representable in RAFS"
            )

    def result(self) -> LayerTree:
        links = []
        for key, (target, parent) in self._pending.items():
            # Only links whose directory is still the one they were created in survive.
            node: Node | None = self.root
            for name in key.split(b"/")[:-1]:
                node = node.children.get(name) if node and node.children is not None else None
            if node is parent:
                links.append((b"/" + key, b"/" + target))
        return LayerTree(self.root, links)


# --------------------------------------------------------------------------- the parser


def _parse(src: _Source, tree: _TreeBuilder, add_file: AddFile, budget: list[int]) -> None:
    """``budget[0]``: file bytes still allowed (negative: no limit)."""
    pax: dict[bytes, bytes] = {}
    long_name = long_link = None
    pending_at = -1  # offset of an extension header still waiting for its entry
    read = src.read
    while True:
        at = src.tell()
        hdr = read(BLOCK)
        if hdr == _ZERO_BLOCK or len(hdr) < BLOCK:
            if hdr.strip(b"\0"):
                raise InvalidInput(f"truncated tar header at offset {at}")
            if pending_at >= 0:
                raise InvalidInput(
                    f"truncated tar: extension header at offset {pending_at} has no entry"
                )
            return  # end marker, or a clean end without one (NOTES.md 9)
        if not _checksum_ok(hdr):
            raise InvalidInput(f"corrupt tar header at offset {at}")

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

        if flag in (_PAX, _LONGNAME, _LONGLINK):
            if size > _MAX_META:
                raise InvalidInput(f"tar extension header at offset {at} is too large")
            body = read(size)
            if len(body) < size or not src.skip(-size % BLOCK):
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
            if not src.skip(size + (-size % BLOCK)):
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
        mode = _number(hdr[100:108], "mode", name)
        uid = _number(hdr[108:116], "uid", name)
        gid = _number(hdr[116:124], "gid", name)
        mtime = _number(hdr[136:148], "mtime", name)
        nsec = 0
        sparse = None
        node = Node(mode=0)
        if pax:
            name, link, size, uid, gid, mtime, nsec, sparse = _apply_pax(
                pax, tree, node, name, link, size, uid, gid, mtime
            )
        pax = {}
        long_name = long_link = None
        pending_at = -1
        if mtime < 0:
            mtime = 0

        if flag == _AREG and name.endswith(b"/"):
            flag = _DIR  # pre-POSIX tars mark directories by a trailing slash
        parts = _split(name, name)
        node.uid, node.gid, node.mtime, node.mtime_nsec = uid, gid, mtime, nsec

        if flag == _LNK:
            node.mode = mode & 0o7777  # not S_IMODE: a base-256 field may not fit mode_t
            tree.link(parts, _split(link, link), node, name)
            continue
        kind = _KIND.get(flag)
        if kind is None:
            raise InvalidInput(f"tar entry {_show(name)} has unsupported type {chr(flag)!r}")
        node.mode = kind | (mode & 0o7777)
        if kind == stat.S_IFREG:
            if flag == _GNUSPARSE:
                sparse = _old_gnu_sparse(src, hdr, name)
            _read_file(src, node, size, sparse, name, add_file, budget)
        elif kind == stat.S_IFDIR:
            node.children = {}
        elif kind == stat.S_IFLNK:
            # Linux has no lchmod: an unpacked symlink is always 0777 whatever the header says.
            node.mode = stat.S_IFLNK | 0o777
            node.target = link
        elif kind != stat.S_IFIFO:
            major = _number(hdr[329:337], "devmajor", name)
            minor = _number(hdr[337:345], "devminor", name)
            # The kernel's dev_t has a 12-bit major and a 20-bit minor; mknod refuses more, and
            # the bootstraps' 32-bit rdev fields would silently keep other numbers.
            if not (0 <= major <= 0xFFF and 0 <= minor <= 0xFFFFF):
                raise InvalidInput(f"bad device number {major}:{minor} in tar entry {_show(name)}")
            node.rdev = os.makedev(major, minor)
        tree.add(parts, node)


def _apply_pax(pax, tree, node, name, link, size, uid, gid, mtime):
    """PAX records over the header values; xattrs go straight onto ``node``."""
    nsec = 0
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
    sparse = None
    for key, value in pax.items():
        if key.startswith(_SCHILY):
            tree.xattr(node, key[len(_SCHILY) :], value, name)
        elif key.startswith(_SPARSE) and sparse is None:
            sparse, name = _pax_sparse(pax, name)
    return name, link, size, uid, gid, mtime, nsec, sparse


# --------------------------------------------------------------------------- file data


class _SparseSpec:
    """Where the stored segments of a sparse file go (``map is None``: read it from data)."""

    __slots__ = ("map", "size")

    def __init__(self, segments: list[tuple[int, int]] | None, size: int) -> None:
        self.map = segments
        self.size = size


def _pax_sparse(pax: dict[bytes, bytes], name: bytes) -> tuple[_SparseSpec | None, bytes]:
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
        return _SparseSpec(None, size), name
    fields = pax.get(b"GNU.sparse.map", b"").split(b",")
    numbers = [_decimal(f, b"GNU.sparse.map", name) for f in fields if fields != [b""]]
    if len(numbers) % 2 or (
        b"GNU.sparse.numblocks" in pax
        and _decimal(pax[b"GNU.sparse.numblocks"], b"GNU.sparse.numblocks", name) * 2
        != len(numbers)
    ):
        raise InvalidInput(f"malformed GNU sparse map in {_show(name)}")
    return _SparseSpec(list(zip(numbers[::2], numbers[1::2], strict=True)), size), name


def _old_gnu_sparse(src: _Source, hdr: bytes, name: bytes) -> _SparseSpec:
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
    return _SparseSpec(segments, _number(hdr[483:495], "sparse real size", name))


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


def _read_file(
    src: _Source,
    node: Node,
    stored: int,
    sparse: _SparseSpec | None,
    name: bytes,
    add_file: AddFile,
    budget: list[int],
) -> None:
    data = _EntryReader(src, stored, name)
    if budget[0] >= 0:
        size = stored if sparse is None else sparse.size
        if size > budget[0]:
            raise InvalidInput(
                f"tar entry {_show(name)} takes the layer's files beyond the configured limit"
                + (" (a sparse file, counted expanded)" if sparse is not None else "")
            )
        budget[0] -= size
    if sparse is None:
        node.size = stored
        if stored:
            node.chunks = add_file(data, stored)
    else:
        segments = sparse.map if sparse.map is not None else _read_sparse_map(data, name)
        segments = [(o, n) for o, n in segments if n]
        end = 0
        for offset, length in segments:
            if offset < end or length < 0 or offset + length > sparse.size:
                raise InvalidInput(f"malformed GNU sparse map in {_show(name)}")
            end = offset + length
        if sum(n for _, n in segments) != data.left:
            raise InvalidInput(f"GNU sparse map of {_show(name)} does not match its data")
        node.size = sparse.size
        if sparse.size:
            node.chunks = add_file(_SparseReader(data, segments, sparse.size), sparse.size)
    data.finish()
    # A stream that ends inside the final padding still holds every byte of the entry.
    src.skip(-stored % BLOCK)
