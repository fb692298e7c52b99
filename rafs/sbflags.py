"""RAFS superblock flags, shared by v5 (``s_flags``) and v6 (extended superblock ``s_flags``).

Spec: ../shared/spec/rafs-v5.md §4 and rafs-v6.md §4 (the same bits in both versions).
"""

COMPRESSION_NONE = 0x1
COMPRESSION_LZ4 = 0x2
HASH_BLAKE3 = 0x4
HASH_SHA256 = 0x8
EXPLICIT_UID_GID = 0x10
HAS_XATTR = 0x20
COMPRESSION_GZIP = 0x40
COMPRESSION_ZSTD = 0x80
INLINED_CHUNK_DIGEST = 0x100  # v6 only
TARFS_MODE = 0x200  # v6 only
ENCRYPTION_NONE = 0x0100_0000
ENCRYPTION_AES_128_XTS = 0x0200_0000
PRESERVED_COMPAT = 0xFC00_0000  # PRESERVED_COMPAT_5 … _0: known to the parser, never set

# Every bit nydusd knows; any other bit makes it reject the bootstrap.
KNOWN = 0x3FF | ENCRYPTION_NONE | ENCRYPTION_AES_128_XTS | PRESERVED_COMPAT

COMPRESSOR_FLAGS = {
    "none": COMPRESSION_NONE,
    "lz4_block": COMPRESSION_LZ4,
    "gzip": COMPRESSION_GZIP,
    "zstd": COMPRESSION_ZSTD,
}
DIGESTER_FLAGS = {"blake3": HASH_BLAKE3, "sha256": HASH_SHA256}
