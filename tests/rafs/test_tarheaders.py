"""rafs.tarheaders: the tar header iterator and its data readers (image.md §15.2).

The tree built from the entries is tested through ``read_layer`` in test_tarstream.py; these
tests pin what the iterator itself promises: the fields of each entry, the skipping of data
never opened, the dense view of sparse files and the size budget.
"""

from __future__ import annotations

import io

import pytest

from rafs.errors import InvalidInput
from rafs.tarheaders import (
    DIRTYPE,
    GNUTYPE_SPARSE,
    REGTYPE,
    SYMTYPE,
    Budget,
    TarEntry,
    TarReader,
)
from tests.tarmaker import END, entry, header, long_name, octal, pad, pax


def entries(data: bytes, budget: Budget | None = None) -> tuple[TarReader, list[TarEntry]]:
    reader = TarReader(io.BytesIO(data), budget)
    return reader, list(reader)


def old_gnu_sparse(name: bytes, real_size: int, segments: list[tuple[int, bytes]]) -> bytes:
    """A GNU ``S`` entry with its map in the header (up to 4 segments)."""
    fields = {
        386 + 24 * i: octal(offset, 12) + octal(len(data), 12)
        for i, (offset, data) in enumerate(segments)
    }
    fields[483] = octal(real_size, 12)
    stored = b"".join(data for _, data in segments)
    return header(name, b"S", size=len(stored), gnu=True, fields=fields) + pad(stored)


def test_fields_with_extension_headers_applied():
    tar = (
        pax([(b"path", b"pax/name"), (b"mtime", b"1700000000.25"), (b"uid", b"3000000")])
        + entry(b"short", b"abc", mode=0o4755, gid=7)
        + long_name(b"gnu/" + b"n" * 120)
        + entry(b"ignored", flag=b"2", link=b"target")
        + entry(b"v7dir/", flag=b"\0")
        + END
    )
    _, (reg, sym, v7dir) = entries(tar)
    assert reg.name == b"pax/name" and reg.type == REGTYPE and reg.size == 3
    assert (reg.mode, reg.uid, reg.gid) == (0o4755, 3000000, 7)
    assert (reg.mtime, reg.mtime_nsec) == (1700000000, 250000000)
    assert reg.xattrs is None and reg.sparse is None
    assert sym.name == b"gnu/" + b"n" * 120 and sym.type == SYMTYPE and sym.linkname == b"target"
    assert v7dir.type == DIRTYPE  # a pre-POSIX regular file named "…/"


def test_xattrs_come_unfiltered_in_stream_order():
    records = [(b"SCHILY.xattr.user.b", b"1"), (b"SCHILY.xattr.system.x", b"\0\n")]
    _, (e,) = entries(pax(records) + entry(b"f") + END)
    assert list(e.xattrs.items()) == [(b"user.b", b"1"), (b"system.x", b"\0\n")]


def test_device_numbers_are_decoded_on_demand():
    _, (dev,) = entries(entry(b"null", flag=b"3", major=1, minor=3) + END)
    assert dev.device() == (1, 3)
    bad = entry(b"bad", flag=b"4", fields={329: b"12x\0"})
    _, (dev,) = entries(bad + END)  # iterating does not look at the field
    with pytest.raises(InvalidInput, match="bad devmajor field"):
        dev.device()


def test_data_never_opened_is_skipped():
    sparse = old_gnu_sparse(b"s", 100, [(10, b"xy")])
    tar = entry(b"a", b"A" * 700) + sparse + entry(b"b", b"B") + END
    reader, seen = entries(tar)
    assert [e.name for e in seen] == [b"a", b"s", b"b"]
    reader = TarReader(io.BytesIO(tar))
    got = {}
    for e in reader:
        if e.name != b"a":
            data = reader.data(e)
            got[e.name] = data.read(data.size)
    assert got == {b"s": bytes(10) + b"xy" + bytes(88), b"b": b"B"}


def test_data_left_unread_is_skipped():
    tar = entry(b"a", b"A" * 1500) + entry(b"b", b"B") + END
    reader = TarReader(io.BytesIO(tar))
    out = []
    for e in reader:
        data = reader.data(e)
        out.append(data.read(2))
    assert out == [b"AA", b"B"]


def test_data_only_for_the_entry_just_yielded_and_once():
    tar = entry(b"a", b"A") + entry(b"b", b"B") + END
    reader = TarReader(io.BytesIO(tar))
    it = iter(reader)
    first = next(it)
    reader.data(first)
    with pytest.raises(ValueError):
        reader.data(first)
    next(it)
    with pytest.raises(ValueError):
        reader.data(first)


def test_sparse_data_reads_dense():
    tar = old_gnu_sparse(b"s", 8, [(2, b"ab"), (6, b"c")]) + END
    reader = TarReader(io.BytesIO(tar))
    for e in reader:
        assert e.type == GNUTYPE_SPARSE
        data = reader.data(e)
        assert data.size == 8
        assert [data.read(3), data.read(3), data.read(3)] == [b"\0\0a", b"b\0\0", b"c\0"]


def test_truncated_data_is_an_error():
    tar = header(b"a", size=1000) + b"x" * 600
    with pytest.raises(InvalidInput, match="truncated tar: data of 'a' cut short"):
        entries(tar)


def test_budget_counts_sparse_files_expanded():
    tar = entry(b"a", b"A" * 10) + old_gnu_sparse(b"s", 1000, [(0, b"x")]) + END
    reader = TarReader(io.BytesIO(tar), Budget(500))
    it = iter(reader)
    reader.data(next(it))
    assert reader.budget.left == 490
    with pytest.raises(InvalidInput, match=r"'s' takes .* limit \(a sparse file, counted"):
        reader.data(next(it))


@pytest.mark.parametrize("limit", [None, -1])
def test_budget_without_a_limit(limit):
    budget = Budget(limit)
    budget.take(1 << 60, b"huge")
    assert budget.left is None


def test_budget_message():
    budget = Budget(5)
    budget.take(5, b"a")
    with pytest.raises(InvalidInput) as err:
        budget.take(1, b"b")
    assert str(err.value) == "tar entry 'b' takes the layer's files beyond the configured limit"
