"""rafs.layerstate: records that do not describe a tree are refused, never walked."""

from __future__ import annotations

import base64
import gzip
import json
import stat
from collections.abc import Callable

import pytest

from rafs import layerstate
from rafs.errors import InvalidImage
from rafs.model import BlobInfo, Chunk, LayerTree, Node, new_dir, new_root


def _record(damage: Callable[[dict], None]) -> bytes:
    """A record of root/d/f (one chunk), its JSON body changed by ``damage``."""
    blob = BlobInfo(blob_id="a" * 64)
    chunk = Chunk(blob, 0, bytes(32), 0, 10, 0, 4096, True, 5)
    root = new_root()
    sub = root.children[b"d"] = new_dir()
    sub.children[b"f"] = Node(stat.S_IFREG | 0o644, size=4096, chunks=(chunk,))
    raw = layerstate.encode(blob, [chunk], layerstate.snapshot(LayerTree(root, []), blob))
    body = json.loads(gzip.decompress(raw))
    damage(body)
    return gzip.compress(json.dumps(body).encode(), mtime=0)


def _dirs(body: dict) -> list[int]:
    return [i for i, entry in enumerate(body["nodes"]) if entry[10] is not None]


def _sub(body: dict) -> int:
    return next(i for i in _dirs(body) if i != body["root"])


def _list(body: dict, parent: int, child: int) -> None:
    body["nodes"][parent][10].append([base64.b64encode(b"x").decode(), child])


def test_an_undamaged_record_decodes() -> None:
    state = layerstate.decode(_record(lambda body: None), lambda *a: None)  # type: ignore[arg-type, return-value]
    assert list(state.tree.root.children) == [b"d"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: _list(b, _sub(b), _sub(b)), id="a directory listing itself"),
        pytest.param(lambda b: _list(b, _sub(b), b["root"]), id="the root listed below itself"),
        pytest.param(lambda b: _list(b, b["root"], _sub(b)), id="a directory listed twice"),
        pytest.param(lambda b: _list(b, _sub(b), -1), id="a negative child index"),
        pytest.param(lambda b: _list(b, _sub(b), len(b["nodes"])), id="a child index past the end"),
        pytest.param(lambda b: b.update(root=-1), id="a negative root"),
        pytest.param(
            lambda b: next(e for e in b["nodes"] if e[7])[7][0].__setitem__(1, -1),
            id="a negative chunk index",
        ),
        pytest.param(
            lambda b: b.update(root=next(i for i, e in enumerate(b["nodes"]) if e[10] is None)),
            id="a file as the root",
        ),
    ],
)
def test_a_record_that_is_not_a_tree_is_refused(damage: Callable[[dict], None]) -> None:
    with pytest.raises(InvalidImage):
        layerstate.decode(_record(damage), lambda *a: None)  # type: ignore[arg-type, return-value]
