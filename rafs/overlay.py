"""Applying one layer onto the tree of the layers below it (whiteouts, opaque dirs, merge).

``apply_layer(lower, layer, spec)`` is one step of the parent-bootstrap build: it returns the
overlay of ``layer`` on ``lower`` as the root filesystem containerd's overlayfs snapshotter
would show it. Specs: ../shared/spec/image.md §15.1, §15.3-§15.6, §15.8 (Q1, Q2), §15.9;
rafs-v5.md §14; NOTES.md items 7 and 9.

Whiteout specs (image.md §15.3 names the markers of each spec, and only those are markers):

* ``"oci"``: an entry named ``.wh.<name>`` removes lower ``<name>``; ``.wh..wh..opq`` in D hides
  every lower child of D. Markers are recognised by name, whatever their type. overlayfs
  markers are *not* whiteouts here: a 0/0 character device is an ordinary device node (it
  replaces a lower entry of the same name like any other file), and an opaque xattr is
  stripped without making the directory opaque.
* ``"overlayfs"``: a 0/0 character device ``<name>`` removes lower ``<name>``; a directory with
  ``trusted.overlay.opaque`` or ``user.overlay.opaque`` equal to ``y`` hides its lower children.
  ``.wh.*`` files are ordinary files.
* ``"none"``: nothing is a marker; ``.wh.*`` files and 0/0 devices stay as entries.

Under every spec, xattrs named ``trusted.overlay.*`` or ``user.overlay.*`` are removed from
the nodes a layer brings (§15.2 item 5, §15.4 table): the image is mounted as an overlayfs
lower layer, where the kernel would interpret them against the wrong filesystem.

Rules (§15.4): whiteouts act on the lower tree only, never on entries of the same layer,
whatever their order in the tar (NOTES.md 9). A layer directory over a lower directory keeps
the lower children and takes the layer's metadata, unless it is ``implicit`` (synthesised for a
missing parent): then the lower metadata stays (§15.5, NOTES.md 7); an implicit directory over
nothing or over a non-directory becomes 0755 root:root, mtime 0, no xattrs. The root follows the
same rule. Anything else replaces the lower entry and its subtree; so a lower symlink ``d`` with
an upper ``d/x`` becomes a real directory (paths are never resolved through lower symlinks).
Applying the bottom layer onto ``new_root()`` removes its markers too (§15.8 Q1).

Hard links (§15.6): a layer's link groups are one Node object and stay so. Each
``layer.lower_links`` entry ``(link, target)`` is resolved in ``lower`` as it was *before* this
layer: nothing the same layer does (whiteouts, opaque dirs, a new entry at the target path)
changes which inode the link joins, so the result never depends on tar order. The link name
then refers to that very Node (one inode, shared chunks) and is placed as if it were the last
entry of the layer (it replaces a layer entry at the same path; missing parents are implicit;
the marker rules see it like any other entry of the layer).
A missing or directory target is ``InvalidInput`` naming both paths.

Ownership: ``lower`` is never modified. The result shares every untouched subtree and every
non-directory node with ``lower``, so both must be treated as immutable afterwards (copy
before editing). ``layer`` is consumed: its nodes become the result's nodes and are modified
in place, so the LayerTree must not be used again. Cost: linear in the layer's entries plus the
child counts of the lower directories the layer touches; the rest of ``lower`` is not visited.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from stat import S_IFDIR

from rafs.errors import InvalidInput
from rafs.model import FILE_TYPE_MASK, LayerTree, Node, lookup, new_dir, split_path

WHITEOUT_SPECS = ("oci", "overlayfs", "none")

OCI_WHITEOUT_PREFIX = b".wh."
OCI_OPAQUE = b".wh..wh..opq"
OVERLAY_OPAQUE_XATTRS = (b"trusted.overlay.opaque", b"user.overlay.opaque")
_OVERLAY_XATTR_PREFIXES = (b"trusted.overlay.", b"user.overlay.")


def apply_layer(lower: Node, layer: LayerTree, whiteout_spec: str = "oci") -> Node:
    """Return the tree of ``layer`` applied onto ``lower`` (see the module docstring)."""
    if whiteout_spec not in WHITEOUT_SPECS:
        raise ValueError(
            f"unknown whiteout spec {whiteout_spec!r}, expected one of {WHITEOUT_SPECS}"
        )
    if not lower.is_dir:
        raise InvalidInput("the lower tree's root is not a directory")
    if not layer.root.is_dir:
        raise InvalidInput("the layer's root is not a directory")
    borrowed = _attach_lower_links(lower, layer)
    # Each pair is independent: the result node of a layer directory is that directory itself,
    # so an explicit stack (no recursion limit on deep trees) in any order gives the same tree.
    stack: list[tuple[Node | None, Node]] = [(lower, layer.root)]
    while stack:
        below, upper = stack.pop()
        _merge_dir(below, upper, whiteout_spec, borrowed, stack)
    return layer.root


def is_overlay_xattr(name: bytes) -> bool:
    """True for the overlayfs-private xattrs that never reach a converted image."""
    return name.startswith(_OVERLAY_XATTR_PREFIXES)


def _merge_dir(
    below: Node | None,
    upper: Node,
    spec: str,
    borrowed: set[int],
    stack: list[tuple[Node | None, Node]],
) -> None:
    """Turn layer directory ``upper`` into the merged directory over ``below``."""
    lower_dir = below if below is not None and below.is_dir else None

    # Round 1: collect the markers; they act on the lower children only.
    opaque = spec == "overlayfs" and any(
        upper.xattrs.get(key) == b"y" for key in OVERLAY_OPAQUE_XATTRS
    )
    removed: list[bytes] = []
    own = upper.children or {}
    entries: Iterable[tuple[bytes, Node]] = own.items()
    if spec == "oci":
        if any(name.startswith(OCI_WHITEOUT_PREFIX) for name in own):
            entries = []
            for name, child in own.items():
                if not name.startswith(OCI_WHITEOUT_PREFIX):
                    entries.append((name, child))
                elif name == OCI_OPAQUE:
                    opaque = True
                else:
                    removed.append(name[len(OCI_WHITEOUT_PREFIX) :])
    elif spec == "overlayfs":
        entries = []
        for name, child in own.items():
            if child.is_whiteout_device:
                removed.append(name)
            else:
                entries.append((name, child))

    if upper.implicit:
        if lower_dir is not None:
            upper.copy_meta_from(lower_dir)
        else:
            _reset_implicit(upper)
    _strip_overlay_xattrs(upper)

    children: dict[bytes, Node] = {}
    if lower_dir is not None and not opaque:
        children = dict(lower_dir.children or {})
        for name in removed:
            children.pop(name, None)

    # Round 2: the layer's own entries win over whatever is left below. (The tests of
    # ``Node.is_dir`` and ``_strip_overlay_xattrs`` are inlined: this runs once per entry of
    # every layer.)
    for name, child in entries:
        if child.mode & FILE_TYPE_MASK == S_IFDIR:
            under = children.get(name)
            stack.append((under if under is not None and under.is_dir else None, child))
        elif child.xattrs and id(child) not in borrowed:
            _strip_overlay_xattrs(child)
        children[name] = child
    upper.children = children


def _reset_implicit(node: Node) -> None:
    node.mode = stat.S_IFDIR | 0o755
    node.uid = node.gid = 0
    node.mtime = node.mtime_nsec = 0
    node.xattrs = {}


def _strip_overlay_xattrs(node: Node) -> None:
    if any(is_overlay_xattr(key) for key in node.xattrs):
        node.xattrs = {k: v for k, v in node.xattrs.items() if not is_overlay_xattr(k)}


def _attach_lower_links(lower: Node, layer: LayerTree) -> set[int]:
    """Put each lower-link target node into the layer tree; return the ids of those nodes."""
    resolved: list[tuple[list[bytes], Node]] = []
    for link, target in layer.lower_links:
        names = f"hard link {_show(link)} -> {_show(target)}"
        node = lookup(lower, target)
        if node is None:
            raise InvalidInput(f"{names}: target found neither in this layer nor below it")
        if node.is_dir:
            raise InvalidInput(f"{names}: target is a directory")
        parts = split_path(link)
        if not parts:
            raise InvalidInput(f"{names}: a hard link cannot replace the root")
        resolved.append((parts, node))

    borrowed: set[int] = set()
    for parts, node in resolved:
        parent = layer.root
        for i, part in enumerate(parts[:-1]):
            if parent.children is None:
                parent.children = {}
            nxt = parent.children.get(part)
            if nxt is None:
                nxt = parent.children[part] = new_dir(implicit=True)
            elif not nxt.is_dir:
                where = _show(b"/".join(parts[: i + 1]))
                raise InvalidInput(
                    f"hard link {_show(b'/'.join(parts))}: parent {where} is not a directory"
                )
            parent = nxt
        if parent.children is None:
            parent.children = {}
        parent.children[parts[-1]] = node
        borrowed.add(id(node))
    return borrowed


def _show(path: bytes) -> str:
    return repr("/" + path.decode(errors="replace").lstrip("/"))
