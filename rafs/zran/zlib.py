"""The few inflate calls gzip random access needs, bound with ctypes to zlib-ng.

Spec: ../shared/spec/blob.md §12 (ZRan). Python's ``zlib`` module cannot stop at deflate block
boundaries (``Z_BLOCK``), report the pending bit count of the input (``data_type``) or prime
the bit buffer (``inflatePrime``); the index and the reader need all three. zlib-ng keeps
zlib's inflate API and semantics under a ``zng_`` prefix (see ``_load`` for why zlib-ng).
"""

from __future__ import annotations

import ctypes

from rafs.errors import InvalidImage, InvalidInput

Z_OK = 0
Z_STREAM_END = 1
Z_NEED_DICT = 2
Z_BUF_ERROR = -5
Z_NO_FLUSH = 0
Z_BLOCK = 5

GZIP_WBITS = 31  # gzip wrapper only
RAW_WBITS = -15  # raw deflate, 32 KiB window
WINDOW = 1 << 15

# data_type bits after inflate (zlib.h): pending bits in the low 3, end of block / header 128.
DT_BITS = 0x7
DT_BLOCK_END = 0x80


class _ZStream(ctypes.Structure):
    """zlib-ng's ``zng_stream`` (native API): zlib's ``z_stream`` with a 32-bit ``adler``."""

    _fields_ = [
        ("next_in", ctypes.c_void_p),
        ("avail_in", ctypes.c_uint32),
        ("total_in", ctypes.c_size_t),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint32),
        ("total_out", ctypes.c_size_t),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_uint32),
        ("reserved", ctypes.c_ulong),
    ]


def _load() -> ctypes.CDLL:
    # zlib-ng's own build inside the ``zlib-ng`` package (python-zlib-ng), whose extension
    # exports the native ``zng_*`` API: it inflates about twice as fast as the system's zlib
    # 1.2, and being pinned with rconv it makes the index the same on every machine.
    from zlib_ng import zlib_ng

    lib = ctypes.CDLL(zlib_ng.__file__)
    ptr = ctypes.POINTER(_ZStream)
    lib.zng_inflateInit2.argtypes = [ptr, ctypes.c_int]
    lib.zng_inflate.argtypes = [ptr, ctypes.c_int]
    lib.zng_inflateReset.argtypes = [ptr]
    lib.zng_inflateReset2.argtypes = [ptr, ctypes.c_int]
    lib.zng_inflatePrime.argtypes = [ptr, ctypes.c_int, ctypes.c_int]
    lib.zng_inflateSetDictionary.argtypes = [ptr, ctypes.c_char_p, ctypes.c_uint32]
    lib.zng_inflateEnd.argtypes = [ptr]
    return lib


_lib = _load()


class Inflater:
    """One zlib inflate stream; input and output are caller-owned ctypes buffers."""

    def __init__(self, wbits: int) -> None:
        self.z = _ZStream()
        self._ref = ctypes.byref(self.z)
        self._open = True
        ret = _lib.zng_inflateInit2(self._ref, wbits)
        if ret != Z_OK:
            raise MemoryError(f"inflateInit2 failed ({ret})")

    def close(self) -> None:
        if self._open:
            _lib.zng_inflateEnd(self._ref)
            self._open = False

    def __del__(self) -> None:
        self.close()

    def inflate(self, flush: int) -> int:
        return _lib.zng_inflate(self._ref, flush)

    def reset(self, wbits: int | None = None) -> None:
        if wbits is None:
            ret = _lib.zng_inflateReset(self._ref)
        else:
            ret = _lib.zng_inflateReset2(self._ref, wbits)
        if ret != Z_OK:
            raise MemoryError(f"inflateReset failed ({ret})")

    def prime(self, bits: int, byte: int) -> None:
        """Feed the ``bits`` high bits of ``byte``: the part of the byte a block started in
        that belongs to that block (a checkpoint is rarely byte aligned)."""
        if _lib.zng_inflatePrime(self._ref, bits, byte >> (8 - bits)) != Z_OK:
            raise InvalidImage(f"cannot prime inflate with {bits} bits")

    def set_dictionary(self, window: bytes) -> None:
        if _lib.zng_inflateSetDictionary(self._ref, window, len(window)) != Z_OK:
            raise InvalidImage(f"cannot set an inflate window of {len(window)} bytes")

    @property
    def message(self) -> str:
        msg = self.z.msg
        return msg.decode(errors="replace") if msg else "corrupt deflate data"


def error(what: str, ret: int, inflater: Inflater, invalid: type[Exception] = InvalidInput):
    return invalid(f"{what}: {inflater.message} (zlib {ret})")
