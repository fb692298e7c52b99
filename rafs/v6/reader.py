"""RAFS v6 bootstrap reader with the validation nydusd applies.

Spec: ../shared/spec/rafs-v6.md §3-§4 (superblock rules), §5 (nids), §6-§8 (tables),
§9-§14 (inodes, xattrs, dirents, chunk indexes, chunk table), §22.1 (runtime checks).
Every malformed input raises ``InvalidImage`` with a one-line message naming the field or
inode at fault; nothing else escapes (struct and index errors are translated here).
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from rafs import codec, sbflags
from rafs.blob import ondisk as blob_od
from rafs.blob.ondisk import BlobFeature
from rafs.errors import InvalidImage, Unsupported
from rafs.model import NO_XATTRS, BlobInfo, Bootstrap, Chunk, Node
from rafs.v6 import ondisk as d


@dataclass
class Superblock:
    """The fields of both superblocks that readers and ``rconv inspect`` report."""

    inos: int
    blocks: int
    meta_blkaddr: int
    extra_devices: int
    flags: int
    blob_table_offset: int
    blob_table_size: int
    chunk_size: int
    chunk_table_offset: int
    chunk_table_size: int
    prefetch_table_offset: int
    prefetch_table_size: int


@dataclass
class Device:
    blob_id: str
    blocks: int
    mapped_blkaddr: int


@dataclass
class V6Image:
    """A parsed v6 bootstrap: the tree plus the on-disk facts a checker needs."""

    bootstrap: Bootstrap
    superblock: Superblock
    devices: list[Device]
    nids: dict[int, int] = field(default_factory=dict)  # id(node) -> nid
    prefetch_nids: list[int] = field(default_factory=list)
    size: int = 0


def read_bootstrap(f: BinaryIO) -> Bootstrap:
    return parse(f.read()).bootstrap


def parse(data: bytes) -> V6Image:
    try:
        return _Parser(data).run()
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidImage(f"malformed RAFS v6 bootstrap: {exc}") from exc


def _blob_id(raw: bytes, where: str) -> str:
    blob_id = raw.rstrip(b"\0").decode("ascii")
    if not blob_id.isprintable():  # it goes into messages, which are one line
        raise InvalidImage(f"{where}: blob id {blob_id!r} has control characters")
    return blob_id


def _flag_choice(flags: int, table: dict[str, int], what: str) -> str:
    found = [name for name, bit in table.items() if flags & bit]
    if len(found) != 1:
        raise InvalidImage(f"superblock flags {flags:#x} must name exactly one {what}")
    return found[0]


class _Parser:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.block = d.BLOCK_SIZE

    def run(self) -> V6Image:
        sb = self._superblock()
        devices = self._devices(sb)
        blobs = self._blob_table(sb, devices)
        chunks = self._chunk_table(sb, blobs)
        self.sb, self.blobs, self.chunks = sb, blobs, chunks
        self.meta = sb.meta_blkaddr * self.block
        self.nodes: dict[int, Node] = {}
        self.paths: dict[int, bytes] = {}
        self._layouts: dict[int, tuple[int, int, int, int]] = {}  # nid -> where its data is
        root = self._tree()
        compressor = _flag_choice(sb.flags, sbflags.COMPRESSOR_FLAGS, "compressor")
        digester = _flag_choice(sb.flags, sbflags.DIGESTER_FLAGS, "digester")
        prefetch_nids = self._prefetch(sb)
        prefetch = [self.paths[n] for n in prefetch_nids if n in self.paths]
        bs = Bootstrap(
            root=root,
            blobs=blobs,
            version=6,
            chunk_size=sb.chunk_size,
            compressor=compressor,
            digester=digester,
            explicit_uid_gid=bool(sb.flags & sbflags.EXPLICIT_UID_GID),
            prefetch=prefetch,
        )
        nids = {id(node): nid for nid, node in self.nodes.items()}
        return V6Image(bs, sb, devices, nids, prefetch_nids, len(self.data))

    # superblocks and tables --------------------------------------------------------------

    def _superblock(self) -> Superblock:
        data = self.data
        if len(data) < d.EXT_SB_OFFSET + 256:
            raise InvalidImage(f"file of {len(data)} bytes is too short for a RAFS v6 bootstrap")
        (magic, checksum, compat, blkszbits, extslots, root_nid, inos, _bt, _btn, blocks,
         meta_blkaddr, xattr_blkaddr, _uuid, _vol, incompat, s_u, extra_devices, devt_slotoff,
         _res) = d.SUPERBLOCK.unpack_from(data, d.SB_OFFSET)  # fmt: skip
        if magic != d.EROFS_MAGIC:
            raise InvalidImage(
                f"bad EROFS magic {magic:#x} at offset 1024 (not a RAFS v6 bootstrap)"
            )
        if blkszbits == 9:
            raise Unsupported("tarfs-mode bootstrap (512-byte blocks) is not supported")
        if blkszbits != d.BLOCK_BITS:
            raise InvalidImage(f"block size bits {blkszbits}, expected 12")
        if len(data) % self.block:
            raise InvalidImage(f"file size {len(data)} is not a multiple of {self.block}")
        if not compat & d.FEATURE_COMPAT_RAFS_V6:
            raise InvalidImage(f"feature_compat {compat:#x} lacks the RAFS v6 bit")
        checks = [
            (checksum == 0, f"superblock checksum {checksum:#x} must be 0"),
            (extslots == 0, f"s_extslots {extslots} must be 0"),
            (inos != 0, "inode count is 0"),
            (xattr_blkaddr == 0, f"shared xattr area at block {xattr_blkaddr} is not allowed"),
            (incompat == d.FEATURE_INCOMPAT, f"feature_incompat {incompat:#x} must be 0xc"),
            (s_u == 0, f"s_u {s_u} must be 0"),
            (devt_slotoff == d.DEVT_SLOT_OFFSET, f"device table slot {devt_slotoff} must be 11"),
            (meta_blkaddr * self.block <= len(data), f"meta block {meta_blkaddr} beyond the file"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidImage(message)
        self.root_nid = root_nid
        (flags, bt_off, bt_size, chunk_size, ct_off, ct_size, pf_off, pf_size, _pad,
         _res2) = d.EXT_SUPERBLOCK.unpack_from(data, d.EXT_SB_OFFSET)  # fmt: skip
        if flags & ~sbflags.KNOWN:
            raise InvalidImage(f"unknown superblock flags {flags & ~sbflags.KNOWN:#x}")
        if flags & sbflags.TARFS_MODE:
            raise Unsupported("tarfs-mode bootstrap is not supported")
        if flags & sbflags.ENCRYPTION_AES_128_XTS:
            raise Unsupported("encrypted RAFS images are not supported")
        if chunk_size & (chunk_size - 1) or not 0x1000 <= chunk_size <= 0x1000000:
            raise InvalidImage(f"chunk size {chunk_size:#x} is not a power of two in [4K, 16M]")
        size = len(data)
        if bt_off % self.block or bt_off < self.block or bt_off + bt_size > size:
            raise InvalidImage(f"blob table at {bt_off:#x}+{bt_size} is out of range")
        if bt_size != 256 * extra_devices:
            raise InvalidImage(f"blob table size {bt_size} != 256 x {extra_devices} devices")
        if ct_size:
            if (
                ct_off % self.block
                or ct_off < self.block
                or ct_size % 80
                or ct_off + ct_size > size
            ):
                raise InvalidImage(f"chunk table at {ct_off:#x}+{ct_size} is out of range")
            if ct_off < bt_off + bt_size and bt_off < ct_off + ct_size:
                raise InvalidImage("chunk table overlaps the blob table")
        if pf_size and pf_off:
            if pf_off < self.block or pf_size % 4 or pf_off + pf_size > size:
                raise InvalidImage(f"prefetch table at {pf_off:#x}+{pf_size} is out of range")
        if d.DEVT_OFFSET + 128 * extra_devices > size:
            raise InvalidImage(f"device table of {extra_devices} slots runs past the file")
        return Superblock(
            inos, blocks, meta_blkaddr, extra_devices, flags, bt_off, bt_size, chunk_size,
            ct_off, ct_size, pf_off, pf_size,
        )  # fmt: skip

    def _devices(self, sb: Superblock) -> list[Device]:
        devices = []
        for k in range(sb.extra_devices):
            tag, blocks, mapped, _ = d.DEVICE_SLOT.unpack_from(self.data, d.DEVT_OFFSET + 128 * k)
            blob_id = _blob_id(tag, f"device slot {k + 1}")
            if blocks == 0:
                raise InvalidImage(f"device {k + 1} ({blob_id[:12]}) has 0 blocks")
            devices.append(Device(blob_id, blocks, mapped))
        ids = [dev.blob_id for dev in devices]
        if len(set(ids)) != len(ids):
            raise InvalidImage("duplicated blob id in the device table")
        return devices

    def _blob_table(self, sb: Superblock, devices: list[Device]) -> list[BlobInfo]:
        blobs = []
        for k in range(sb.extra_devices):
            (raw_id, index, chunk_size, chunk_count, comp, digester, features, csize, usize,
             toc_size, ci_comp, ci_off, ci_csize, ci_usize, toc_digest, meta_digest, meta_size,
             _iv, cipher, _res) = d.BLOB_ENTRY.unpack_from(
                self.data, sb.blob_table_offset + 256 * k
            )  # fmt: skip
            blob_id = _blob_id(raw_id, f"blob table entry {k}")
            where = f"blob table entry {k} ({blob_id[:12]})"
            if index != k:
                raise InvalidImage(f"{where}: index {index}")
            if blob_id != devices[k].blob_id:
                raise InvalidImage(f"{where}: id differs from device slot {k + 1}")
            if chunk_size != sb.chunk_size:
                raise InvalidImage(f"{where}: chunk size {chunk_size:#x} != {sb.chunk_size:#x}")
            try:
                names = (
                    codec.compressor_from_enum(comp),
                    codec.digester_from_enum(digester),
                    codec.compressor_from_enum(ci_comp),
                )
            except InvalidImage as exc:
                raise InvalidImage(f"{where}: {exc}") from None
            if features & blob_od.INCOMPAT_V6:
                raise InvalidImage(f"{where}: incompatible features {features:#x}")
            if not features & BlobFeature.ALIGNED:
                raise InvalidImage(f"{where}: features {features:#x} lack ALIGNED")
            if cipher:
                raise Unsupported(f"{where}: encrypted blob")
            if ci_csize > ci_usize and ci_comp == 0:
                raise InvalidImage(f"{where}: ci sizes {ci_csize}/{ci_usize} disagree")
            if devices[k].blocks * self.block != usize:
                raise InvalidImage(f"{where}: device blocks disagree with size {usize}")
            blobs.append(
                BlobInfo(
                    chunk_size=chunk_size,
                    compressor=names[0],
                    digester=names[1],
                    blob_id=blob_id,
                    chunk_count=chunk_count,
                    compressed_size=csize,
                    uncompressed_size=usize,
                    features=features,
                    ci_compressor=names[2],
                    ci_offset=ci_off,
                    ci_compressed_size=ci_csize,
                    ci_uncompressed_size=ci_usize,
                    toc_size=toc_size,
                    toc_digest=toc_digest,
                    meta_digest=meta_digest,
                    meta_size=meta_size,
                )  # fmt: skip
            )
        return blobs

    def _chunk_table(self, sb: Superblock, blobs: list[BlobInfo]) -> dict[tuple[int, int], Chunk]:
        chunks: dict[tuple[int, int], Chunk] = {}
        for i in range(sb.chunk_table_size // 80):
            record = d.CHUNK_RECORD.unpack_from(self.data, sb.chunk_table_offset + 80 * i)
            digest, blob_index, flags, csize, usize, coff, uoff, _file_off, index, crc = record
            if blob_index >= len(blobs):
                raise InvalidImage(f"chunk table record {i}: blob index {blob_index} too large")
            blob = blobs[blob_index]
            if uoff + usize > blob.uncompressed_size:
                raise InvalidImage(f"chunk table record {i}: beyond blob {blob.blob_id[:12]}")
            if flags & (d.CHUNK_FLAG_BATCH | d.CHUNK_FLAG_ENCRYPTED):
                raise Unsupported(f"chunk table record {i}: batch or encrypted chunk")
            chunks[(blob_index, index)] = Chunk(
                blob, index, digest, coff, csize, uoff, usize,
                bool(flags & d.CHUNK_FLAG_COMPRESSED),
                crc if flags & d.CHUNK_FLAG_HAS_CRC32 else None,
            )  # fmt: skip
        return chunks

    def _prefetch(self, sb: Superblock) -> list[int]:
        nids: list[int] = []
        if not (sb.prefetch_table_offset and sb.prefetch_table_size):
            return nids
        for i in range(sb.prefetch_table_size // 4):
            off = sb.prefetch_table_offset + 4 * i
            (nid,) = struct.unpack_from("<I", self.data, off)
            if nid == 0:
                break
            nids.append(nid)
        return nids

    # inodes -----------------------------------------------------------------------------

    def _tree(self) -> Node:
        root = self._inode(self.root_nid, b"/")
        if not root.is_dir:
            raise InvalidImage(f"root nid {self.root_nid} is not a directory")
        self.paths[self.root_nid] = b"/"
        stack = [(self.root_nid, self.root_nid, root, b"/")]
        seen_dirs = {self.root_nid}
        while stack:
            nid, parent_nid, node, path = stack.pop()
            children = node.children
            assert children is not None  # only directories are stacked
            for name, child_nid, ftype in self._dirents(nid, node, path):
                if name == b".":
                    if child_nid != nid:
                        raise InvalidImage(f"{path!r}: '.' points at nid {child_nid}")
                    continue
                if name == b"..":
                    if child_nid != parent_nid:
                        raise InvalidImage(f"{path!r}: '..' points at nid {child_nid}")
                    continue
                child_path = (path if path.endswith(b"/") else path + b"/") + name
                child = self._inode(child_nid, child_path)
                if d.DIRENT_TYPES.get(child.kind) != ftype:
                    raise InvalidImage(f"{child_path!r}: dirent type {ftype} != inode type")
                children[name] = child
                self.paths.setdefault(child_nid, child_path)
                if child.is_dir:
                    if child_nid in seen_dirs:
                        raise InvalidImage(
                            f"{child_path!r}: directory nid {child_nid} linked twice"
                        )
                    seen_dirs.add(child_nid)
                    stack.append((child_nid, nid, child, child_path))
        return root

    def _iloc(self, nid: int) -> int:
        return self.meta + 32 * nid

    def _inode(self, nid: int, path: bytes) -> Node:
        cached = self.nodes.get(nid)
        if cached is not None:
            if cached.is_dir:
                raise InvalidImage(f"{path!r}: directory nid {nid} has a second name")
            return cached
        pos = self._iloc(nid)
        if pos + 32 > len(self.data) or pos < self.meta:
            raise InvalidImage(f"{path!r}: nid {nid} is outside the file")
        fmt = struct.unpack_from("<H", self.data, pos)[0]
        layout = (fmt >> 1) & 0x7
        if fmt & ~0xF:
            raise InvalidImage(f"{path!r}: inode format {fmt:#x} is invalid")
        if fmt & 1:
            if pos + 64 > len(self.data):
                raise InvalidImage(f"{path!r}: inode at {pos:#x} runs past the file")
            (_f, icount, mode, _r, size, i_u, _ino, uid, gid, mtime, mtime_nsec, nlink,
             _res) = d.INODE_EXTENDED_S.unpack_from(self.data, pos)  # fmt: skip
            isize = 64
        else:
            (_f, icount, mode, nlink, size, _r, i_u, _ino, uid, gid,
             _r2) = d.INODE_COMPACT_S.unpack_from(self.data, pos)  # fmt: skip
            mtime = mtime_nsec = 0
            isize = 32
        where = f"{path.decode(errors='replace')!r} (nid {nid})"
        if nlink == 0:
            raise InvalidImage(f"{where}: nlink is 0")
        xattr_size = 12 + 4 * (icount - 1) if icount else 0
        body = pos + isize
        if body + xattr_size > len(self.data):
            raise InvalidImage(f"{where}: xattrs run past the file")
        node = Node(mode=mode, uid=uid, gid=gid, mtime=mtime, mtime_nsec=mtime_nsec)
        if stat.S_IFMT(mode) not in d.DIRENT_TYPES:
            raise InvalidImage(f"{where}: mode {mode:#o} has no valid file type")
        node.xattrs = self._xattrs(body, xattr_size, where)
        tail_pos = body + xattr_size
        self.nodes[nid] = node
        if node.is_dir:
            node.children = {}
        elif node.is_reg:
            if layout != d.LAYOUT_CHUNK_BASED:
                raise InvalidImage(f"{where}: regular file with data layout {layout}")
            node.size = size
            node.chunks = self._chunks(pos, tail_pos, size, i_u, where)
        elif node.is_symlink:
            if size == 0:
                raise InvalidImage(f"{where}: empty symlink")
            node.target = self._data(tail_pos, layout, size, i_u, where)
        elif node.kind in (stat.S_IFCHR, stat.S_IFBLK):
            node.rdev = os.makedev(*d.decode_rdev(i_u))
        self._layouts[nid] = (tail_pos, layout, size, i_u)
        return node

    def _xattrs(self, body: int, xattr_size: int, where: str) -> Mapping[bytes, bytes]:
        if not xattr_size:
            return NO_XATTRS
        xattrs: dict[bytes, bytes] = {}
        _res, shared, _r = d.XATTR_IBODY_HEADER.unpack_from(self.data, body)
        if shared:
            raise InvalidImage(f"{where}: shared xattrs are not allowed")
        pos, end = body + 12, body + xattr_size
        while pos < end:
            name_len, index, value_size = d.XATTR_ENTRY.unpack_from(self.data, pos)
            if index not in d.XATTR_PREFIXES:
                raise InvalidImage(f"{where}: xattr name index {index} is unknown")
            stop = pos + 4 + name_len + value_size
            if stop > end:
                raise InvalidImage(f"{where}: xattr entry runs past the xattr area")
            suffix = self.data[pos + 4 : pos + 4 + name_len]
            xattrs[d.XATTR_PREFIXES[index] + suffix] = self.data[pos + 4 + name_len : stop]
            pos = d.round_up(stop - body, 4) + body
        return xattrs

    def _data(self, tail_pos: int, layout: int, size: int, i_u: int, where: str) -> bytes:
        """Bytes of a directory or symlink: full blocks at i_u, tail inline or in a block."""
        block = self.block
        if layout == d.LAYOUT_FLAT_PLAIN:
            start = i_u * block
            if start < self.meta or start + size > len(self.data):
                raise InvalidImage(f"{where}: data block {i_u} is outside the meta area")
            return self.data[start : start + size]
        if layout != d.LAYOUT_FLAT_INLINE:
            raise InvalidImage(f"{where}: data layout {layout} is not flat")
        tail = size % block or block
        full = size - tail
        start = i_u * block
        if full and (start < self.meta or start + full > len(self.data)):
            raise InvalidImage(f"{where}: data block {i_u} is outside the meta area")
        if tail_pos % block + tail > block or tail_pos + tail > len(self.data):
            raise InvalidImage(f"{where}: inline tail crosses a block boundary")
        return self.data[start : start + full] + self.data[tail_pos : tail_pos + tail]

    def _dirents(self, nid: int, node: Node, path: bytes) -> list[tuple[bytes, int, int]]:
        tail_pos, layout, size, i_u = self._layouts[nid]
        where = f"{path.decode(errors='replace')!r} (nid {nid})"
        data = self._data(tail_pos, layout, size, i_u, where)
        block = self.block
        entries: list[tuple[bytes, int, int]] = []
        for start in range(0, len(data), block):
            blk = data[start : start + block]
            if len(blk) < 12:
                raise InvalidImage(f"{where}: dirent block of {len(blk)} bytes")
            first_off = struct.unpack_from("<H", blk, 8)[0]
            if first_off % 12 or first_off == 0 or first_off > len(blk):
                raise InvalidImage(f"{where}: first name offset {first_off} is invalid")
            count = first_off // 12
            for i in range(count):
                e_nid, nameoff, ftype, _ = d.DIRENT.unpack_from(blk, 12 * i)
                if i + 1 < count:
                    end = d.DIRENT.unpack_from(blk, 12 * (i + 1))[1]
                else:
                    nul = blk.find(b"\0", nameoff)
                    end = len(blk) if nul < 0 else nul
                if not first_off <= nameoff < end <= len(blk):
                    raise InvalidImage(f"{where}: dirent {i} name offsets {nameoff}..{end}")
                name = bytes(blk[nameoff:end])
                if entries and name <= entries[-1][0]:
                    raise InvalidImage(f"{where}: dirent {name!r} out of order")
                entries.append((name, e_nid, ftype))
        return entries

    def _chunks(self, pos: int, tail_pos: int, size: int, i_u: int, where: str) -> list[Chunk]:
        if not i_u & d.CHUNK_FORMAT_INDEXES:
            raise Unsupported(f"{where}: block-map chunk format {i_u:#x}")
        count = -(-size // self.sb.chunk_size)
        at = d.round_up(tail_pos - pos, 8) + pos
        if at + 8 * count > len(self.data):
            raise InvalidImage(f"{where}: chunk indexes run past the file")
        chunks = []
        for i in range(count):
            blob_index, ci, blkaddr = d.decode_chunk_index(self.data, at + 8 * i)
            if not 0 <= blob_index < len(self.blobs):
                raise InvalidImage(f"{where}: chunk {i} names device {blob_index + 1}")
            chunk = self.chunks.get((blob_index, ci))
            if chunk is None:
                raise InvalidImage(
                    f"{where}: chunk {i} (blob {blob_index}, index {ci}) not in the chunk table"
                )
            if chunk.uncompressed_offset != blkaddr * self.block:
                raise InvalidImage(f"{where}: chunk {i} block {blkaddr} != chunk table offset")
            expected = min(self.sb.chunk_size, size - i * self.sb.chunk_size)
            if chunk.uncompressed_size != expected:
                raise InvalidImage(
                    f"{where}: chunk {i} has {chunk.uncompressed_size} bytes, not {expected}"
                )
            chunks.append(chunk)
        return chunks
