"""Tests for rafs.overlay: image.md §15.3-§15.6 and §15.8, one test per consequence row.

Trees are written as dicts (``D``/``F``/``S``/``C`` below); a randomized comparison against a
deliberately simple path-dict model of the same rules closes the file.
"""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rafs.errors import InvalidInput
from rafs.model import LayerTree, Node, count_names, lookup, new_root, walk
from rafs.overlay import apply_layer

# --- tree helpers -------------------------------------------------------------------------


def _meta(mode: int, uid: int, gid: int, mtime: int, xattrs: dict | None) -> dict:
    return {"uid": uid, "gid": gid, "mtime": mtime, "xattrs": dict(xattrs or {}), "mode": mode}


def F(tag: int = 1, mode=0o644, uid=0, gid=0, mtime=0, xattrs=None) -> Node:
    """A regular file; ``tag`` is stored as its size so tests can tell files apart."""
    meta = _meta(stat.S_IFREG | mode, uid, gid, mtime, xattrs)
    return Node(size=tag, **meta)


def S(target: bytes, mode=0o777, uid=0, gid=0, mtime=0) -> Node:
    return Node(target=target, **_meta(stat.S_IFLNK | mode, uid, gid, mtime, None))


def C(rdev: int = 0, mode=0o600, uid=0, gid=0, mtime=0) -> Node:
    return Node(rdev=rdev, **_meta(stat.S_IFCHR | mode, uid, gid, mtime, None))


def D(children=None, mode=0o755, uid=0, gid=0, mtime=0, xattrs=None, implicit=False) -> Node:
    kids = {name.encode(): node for name, node in (children or {}).items()}
    return Node(
        children=kids, implicit=implicit, **_meta(stat.S_IFDIR | mode, uid, gid, mtime, xattrs)
    )


def I(children=None) -> Node:  # noqa: E743 - short names keep the tree literals readable
    """An implicit directory as a tar reader synthesises it for a missing parent."""
    return D(children, implicit=True)


def layer(children=None, root: Node | None = None, links=()) -> LayerTree:
    if root is None:
        root = I(children)
    else:
        assert children is None
    return LayerTree(root=root, lower_links=[(a.encode(), b.encode()) for a, b in links])


def stack(*layers: LayerTree, spec: str = "oci") -> Node:
    root = new_root()
    for lt in layers:
        root = apply_layer(root, lt, spec)
    return root


def desc(node: Node) -> tuple:
    kind = {stat.S_IFDIR: "d", stat.S_IFREG: "f", stat.S_IFLNK: "l", stat.S_IFCHR: "c"}
    payload = {"d": None, "f": node.size, "l": node.target, "c": node.rdev}
    k = kind.get(node.kind, "?")
    xattrs = tuple(sorted(node.xattrs.items()))
    return (k, stat.S_IMODE(node.mode), node.uid, node.gid, node.mtime, xattrs, payload.get(k))


def snap(root: Node) -> dict[str, tuple]:
    return {path.decode(): desc(node) for path, node in walk(root)}


def names(root: Node) -> list[str]:
    return [path.decode() for path, _ in walk(root)][1:]


def node(root: Node, path: str) -> Node:
    found = lookup(root, path.encode())
    assert found is not None, path
    return found


DIR755 = ("d", 0o755, 0, 0, 0, (), None)


# --- §15.4 consequences table, OCI spec ---------------------------------------------------


def test_whiteout_of_lower_file_removes_it():
    root = stack(layer({"f": F(1), "g": F(2)}), layer({".wh.f": F(0)}))
    assert names(root) == ["/g"]


def test_whiteout_of_lower_dir_removes_whole_subtree():
    lower = layer({"d": D({"x": D({"y": F(1)}), "z": F(2)}), "keep": F(3)})
    root = stack(lower, layer({".wh.d": F(0)}))
    assert names(root) == ["/keep"]


def test_whiteout_of_missing_name_is_a_noop():
    root = stack(layer({"a": D({"f": F(1)})}), layer({".wh.x": F(0), "a": I({".wh.y": F(0)})}))
    assert names(root) == ["/a", "/a/f"]


@pytest.mark.parametrize("marker_first", [True, False], ids=["marker-first", "marker-after"])
def test_whiteout_and_entry_in_same_layer_new_entry_survives(marker_first):
    lower = layer({"x": D({"old": F(1)}, mode=0o700), "f": F(2)})
    items = [(".wh.x", F(0)), ("x", D({"new": F(3)}, mode=0o711)), (".wh.f", F(0)), ("f", F(4))]
    if not marker_first:
        items = items[1:2] + items[0:1] + items[3:4] + items[2:3]
    root = stack(lower, layer(dict(items)))
    # the lower x is deleted, so the new x keeps only its own children
    assert snap(root) == {
        "/": DIR755,
        "/f": ("f", 0o644, 0, 0, 0, (), 4),
        "/x": ("d", 0o711, 0, 0, 0, (), None),
        "/x/new": ("f", 0o644, 0, 0, 0, (), 3),
    }


def test_whiteout_then_recreate_as_other_type_in_same_layer():
    root = stack(layer({"x": F(1)}), layer({"x": D({"in": F(2)}), ".wh.x": F(0)}))
    assert names(root) == ["/x", "/x/in"]
    assert node(root, "/x").is_dir


@pytest.mark.parametrize("explicit", [True, False])
def test_opaque_with_new_entry_keeps_only_new(explicit):
    lower = layer({"d": D({"old": F(1), "sub": D({"deep": F(2)})}, mode=0o700, uid=3)})
    kids = {".wh..wh..opq": F(0), "new": F(3)}
    d = D(kids, mode=0o750, uid=4) if explicit else I(kids)
    later = layer({"d": I({"later": F(4)})})
    root = stack(lower, layer({"d": d}), later)
    assert names(root) == ["/d", "/d/later", "/d/new"]
    # an implicit opaque dir keeps the lower metadata (§15.5); an explicit one brings its own
    assert desc(node(root, "/d"))[1:3] == ((0o750, 4) if explicit else (0o700, 3))


def test_opaque_in_dir_absent_below_creates_dir():
    root = stack(layer({"a": F(1)}), layer({"d": D({".wh..wh..opq": F(0)}, mode=0o701)}))
    assert snap(root) == {
        "/": DIR755,
        "/a": ("f", 0o644, 0, 0, 0, (), 1),
        "/d": ("d", 0o701, 0, 0, 0, (), None),
    }


def test_lower_dir_replaced_by_upper_file():
    root = stack(layer({"d": D({"x": F(1), "y": D({"z": F(2)})})}), layer({"d": F(3)}))
    assert snap(root) == {"/": DIR755, "/d": ("f", 0o644, 0, 0, 0, (), 3)}
    assert lookup(root, b"/d/x") is None


@pytest.mark.parametrize("explicit", [True, False])
def test_lower_file_replaced_by_upper_dir(explicit):
    upper = D({"x": F(2)}, mode=0o711, uid=1) if explicit else I({"x": F(2)})
    root = stack(layer({"d": F(1, mode=0o600, uid=9, mtime=5)}), layer({"d": upper}))
    want = ("d", 0o711, 1, 0, 0, (), None) if explicit else DIR755
    assert snap(root) == {"/": DIR755, "/d": want, "/d/x": ("f", 0o644, 0, 0, 0, (), 2)}


def test_dir_recreated_after_it_became_a_file():
    root = stack(
        layer({"d": D({"old": F(1)})}),
        layer({"d": F(2)}),
        layer({"d": D({"mine": F(3)}, mode=0o700)}),
    )
    assert snap(root) == {
        "/": DIR755,
        "/d": ("d", 0o700, 0, 0, 0, (), None),
        "/d/mine": ("f", 0o644, 0, 0, 0, (), 3),
    }


def test_lower_symlink_with_upper_child_becomes_real_dir():
    lower = layer({"real": D({"inside": F(1)}), "d": S(b"real")})
    root = stack(lower, layer({"d": I({"x": F(2)})}))
    assert snap(root) == {
        "/": DIR755,
        "/d": DIR755,
        "/d/x": ("f", 0o644, 0, 0, 0, (), 2),
        "/real": DIR755,
        "/real/inside": ("f", 0o644, 0, 0, 0, (), 1),
    }


@pytest.mark.parametrize("spec", ["oci", "overlayfs"])
def test_markers_never_materialise_even_in_bottom_layer(spec):
    if spec == "oci":
        bottom = {".wh.a": F(0), ".wh..wh..opq": F(0), "d": I({".wh.b": F(0), "f": F(1)})}
    else:
        bottom = {"a": C(0), "d": D({"b": C(0), "f": F(1)}, xattrs={b"user.overlay.opaque": b"y"})}
    root = stack(layer(bottom), spec=spec)
    assert names(root) == ["/d", "/d/f"]
    assert node(root, "/d").xattrs == {}


@pytest.mark.parametrize("spec", ["oci", "overlayfs", "none"])
def test_overlay_xattrs_never_reach_result(spec):
    ovl = {
        b"trusted.overlay.opaque": b"y",
        b"user.overlay.opaque": b"y",
        b"trusted.overlay.origin": b"o",
        b"user.keep": b"1",
        b"security.capability": b"c",
    }
    root_meta = D({"d": D({"f": F(1, xattrs=ovl)}, xattrs=ovl)}, xattrs=ovl)
    root = stack(layer(root=root_meta), spec=spec)
    kept = {b"user.keep": b"1", b"security.capability": b"c"}
    for path in ("/", "/d", "/d/f"):
        assert node(root, path).xattrs == kept


# --- whiteout specs ----------------------------------------------------------------------


@pytest.mark.parametrize("key", [b"trusted.overlay.opaque", b"user.overlay.opaque"])
def test_overlayfs_opaque_via_xattr(key):
    lower = layer({"d": D({"old": F(1)}), "e": D({"old": F(2)})})
    upper = layer({"d": D({"new": F(3)}, xattrs={key: b"y", b"user.x": b"1"})})
    root = stack(lower, upper, spec="overlayfs")
    assert names(root) == ["/d", "/d/new", "/e", "/e/old"]
    assert node(root, "/d").xattrs == {b"user.x": b"1"}


def test_overlayfs_opaque_value_other_than_y_is_not_opaque():
    lower = layer({"d": D({"old": F(1)})})
    upper = layer({"d": D({"new": F(2)}, xattrs={b"trusted.overlay.opaque": b"x"})})
    root = stack(lower, upper, spec="overlayfs")
    assert names(root) == ["/d", "/d/new", "/d/old"]
    assert node(root, "/d").xattrs == {}


def test_overlayfs_whiteout_device_removes_lower_only_00():
    lower = layer({"f": F(1), "d": D({"x": F(2)}), "n": F(3), "w": F(4)})
    upper = layer({"f": C(0), "d": C(0), "n": C(os.makedev(1, 3)), ".wh.w": F(0)})
    root = stack(lower, upper, spec="overlayfs")
    # a real device replaces; .wh.* is an ordinary file under this spec
    assert names(root) == ["/.wh.w", "/n", "/w"]
    assert node(root, "/n").rdev == os.makedev(1, 3)


def test_oci_spec_keeps_overlayfs_markers_as_ordinary_entries():
    lower = layer({"f": F(1), "d": D({"old": F(2)})})
    upper = layer({"f": C(0), "d": D({"new": F(3)}, xattrs={b"trusted.overlay.opaque": b"y"})})
    root = stack(lower, upper, spec="oci")
    assert names(root) == ["/d", "/d/new", "/d/old", "/f"]
    assert desc(node(root, "/f")) == ("c", 0o600, 0, 0, 0, (), 0)
    assert node(root, "/d").xattrs == {}


def test_none_spec_keeps_every_marker():
    lower = layer({"f": F(1), "d": D({"old": F(2)})})
    upper = layer({".wh.f": F(7), "d": I({".wh..wh..opq": F(8)}), "g": C(0)})
    root = stack(lower, upper, spec="none")
    assert names(root) == ["/.wh.f", "/d", "/d/.wh..wh..opq", "/d/old", "/f", "/g"]


def test_unknown_spec_rejected():
    with pytest.raises(ValueError, match="whiteout spec"):
        apply_layer(new_root(), layer({}), "aufs")


# --- implicit and root directories (§15.5) ----------------------------------------------


def test_implicit_dir_keeps_lower_metadata():
    xattrs = {b"user.a": b"1"}
    lower = layer({"d": D({"old": F(1)}, mode=0o700, uid=5, gid=6, mtime=99, xattrs=xattrs)})
    root = stack(lower, layer({"d": I({"new": F(2)})}))
    assert desc(node(root, "/d")) == ("d", 0o700, 5, 6, 99, ((b"user.a", b"1"),), None)
    assert names(root) == ["/d", "/d/new", "/d/old"]


def test_explicit_dir_replaces_metadata_and_keeps_children():
    lower = layer({"d": D({"old": F(1)}, mode=0o700, uid=5, xattrs={b"user.a": b"1"})})
    root = stack(lower, layer({"d": D({"new": F(2)}, mode=0o751, uid=7, mtime=3)}))
    assert desc(node(root, "/d")) == ("d", 0o751, 7, 0, 3, (), None)
    assert names(root) == ["/d", "/d/new", "/d/old"]


@pytest.mark.parametrize("below", ["nothing", "file", "symlink"])
def test_implicit_dir_without_lower_dir_is_0755_root(below):
    lower = {
        "nothing": {},
        "file": {"d": F(1, mode=0o600, uid=4, mtime=8)},
        "symlink": {"d": S(b"x")},
    }
    odd = I({"f": F(2)})
    odd.mode, odd.uid, odd.mtime, odd.xattrs = stat.S_IFDIR | 0o700, 3, 4, {b"user.z": b"1"}
    root = stack(layer(lower[below]), layer({"d": odd}))
    assert desc(node(root, "/d")) == DIR755
    assert names(root) == ["/d", "/d/f"]


def test_root_metadata_explicit_replaces_implicit_leaves():
    explicit = D({"a": F(1)}, mode=0o700, uid=1, gid=2, mtime=3, xattrs={b"user.r": b"1"})
    root = stack(layer(root=explicit), layer({"b": F(2)}))
    assert desc(root) == ("d", 0o700, 1, 2, 3, ((b"user.r", b"1"),), None)
    root = apply_layer(root, layer(root=D({}, mode=0o711)))
    assert desc(root) == ("d", 0o711, 0, 0, 0, (), None)
    assert names(root) == ["/a", "/b"]


def test_root_opaque_clears_everything_below():
    root = stack(layer({"a": F(1), "d": D({"x": F(2)})}), layer({".wh..wh..opq": F(0), "n": F(3)}))
    assert names(root) == ["/n"]


# --- hard links (§15.6) ------------------------------------------------------------------


def test_hard_links_within_layer_stay_one_node():
    f = F(1)
    root = stack(layer({"a": f, "d": D({"b": f}), "c": F(2)}))
    assert node(root, "/a") is node(root, "/d/b") is f
    assert count_names(root)[id(f)] == 2


def test_whiteout_of_one_name_of_group_removes_only_that_name():
    f = F(1)
    root = stack(layer({"a": f, "b": f, "c": f}), layer({".wh.b": F(0)}))
    assert names(root) == ["/a", "/c"]
    assert node(root, "/a") is node(root, "/c") is f
    assert count_names(root)[id(f)] == 2


def test_replacing_one_name_of_group_keeps_others_on_old_inode():
    f = F(1)
    root = stack(layer({"a": f, "b": f}), layer({"a": F(2)}))
    assert node(root, "/b") is f and node(root, "/a") is not f
    assert count_names(root)[id(f)] == 1


def test_lower_link_shares_existing_node():
    f = F(1, mode=0o640)
    lower = stack(layer({"usr": D({"bin": D({"tool": f})}, mode=0o700)}))
    root = apply_layer(lower, layer({"x": F(2)}, links=[("usr/sbin/tool2", "/usr/bin/tool")]))
    assert node(root, "/usr/sbin/tool2") is node(root, "/usr/bin/tool") is f
    assert count_names(root)[id(f)] == 2
    assert desc(node(root, "/usr")) == ("d", 0o700, 0, 0, 0, (), None)  # implicit parent
    assert desc(node(root, "/usr/sbin")) == DIR755
    assert count_names(lower)[id(f)] == 1  # the lower tree is unchanged


def test_lower_link_to_non_regular_keeps_type():
    lower = stack(layer({"l": S(b"target"), "c": C(os.makedev(4, 5))}))
    root = apply_layer(lower, layer({}, links=[("l2", "l"), ("c2", "c")]))
    assert node(root, "/l2") is node(root, "/l") and node(root, "/l2").target == b"target"
    assert node(root, "/c2") is node(root, "/c") and node(root, "/c2").rdev == os.makedev(4, 5)


def test_lower_link_resolves_target_as_before_this_layer():
    f = F(1)
    lower = stack(layer({"d": D({"f": f})}))
    upper = layer({".wh.d": F(0), "d": D({"f": F(2)})}, links=[("k", "d/f")])
    root = apply_layer(lower, upper)
    assert node(root, "/k") is f
    assert node(root, "/d/f").size == 2
    assert count_names(root)[id(f)] == 1


def test_lower_link_replaces_layer_entry_at_same_path():
    f = F(1)
    root = apply_layer(stack(layer({"t": f})), layer({"k": F(2)}, links=[("k", "t")]))
    assert node(root, "/k") is f and count_names(root)[id(f)] == 2


@pytest.mark.parametrize(
    ("links", "message"),
    [
        ([("new/link", "missing/file")], r"'/new/link' -> '/missing/file'.*neither"),
        ([("link", "d")], r"'/link' -> '/d'.*directory"),
        ([("f/link", "d/x")], r"'/f/link'.*'/f' is not a directory"),
    ],
)
def test_lower_link_errors_name_both_paths(links, message):
    lower = stack(layer({"d": D({"x": F(1)})}))
    with pytest.raises(InvalidInput, match=message):
        apply_layer(lower, layer({"f": F(2)}, links=links))


# --- ownership and cost ------------------------------------------------------------------


def test_lower_tree_is_not_modified_and_untouched_subtrees_are_shared():
    lower = stack(
        layer(
            {
                "big": D({f"f{i}": F(i) for i in range(50)}),
                "d": D({"x": F(1), "y": F(2)}, mode=0o700, uid=1),
                "w": D({"z": F(3)}),
            }
        )
    )
    before = snap(lower)
    upper = layer(
        {"d": D({"x": F(9)}, mode=0o711, xattrs={b"trusted.overlay.opaque": b"y"}), "w": C(0)}
    )
    root = apply_layer(lower, upper, "overlayfs")
    assert snap(lower) == before
    assert node(root, "/big") is node(lower, "/big")
    assert node(root, "/d/x").size == 9 and lookup(root, b"/d/y") is None
    assert names(root)[-1] == "/d/x" and lookup(root, b"/w") is None


def test_large_tree_with_small_layer():
    n_dirs, per_dir = 100, 1000
    bottom = {f"d{i:03}": D({f"f{j:04}": F(j) for j in range(per_dir)}) for i in range(n_dirs)}
    lower = stack(layer(bottom))
    upper = {f"d{i:03}": I({".wh.f0000": F(0), "new": F(7)}) for i in range(0, n_dirs, 10)}
    root = apply_layer(lower, layer(upper))
    assert len(count_names(root)) == 1 + n_dirs + n_dirs * per_dir  # 10 removed, 10 added
    assert lookup(root, b"/d010/f0000") is None and lookup(root, b"/d011/f0000") is not None
    assert node(root, "/d011") is node(lower, "/d011")


# --- randomized comparison with a path-dict reference model -------------------------------
#
# The reference keeps the whole image as {path tuple: record} and applies a layer the way the
# spec words it for containerd: first delete what the markers hide from the lower state, then
# add the layer's entries parent-first, replacing (with its subtree) whatever was at a path
# unless a directory meets a directory. Hard-link identity is a token per inode.

NAMES = ["a", "b", "c"]
OPAQUE_KEYS = ("trusted.overlay.opaque", "user.overlay.opaque")
DEFAULT_DIR = {"kind": "d", "perm": 0o755, "uid": 0, "gid": 0, "mtime": 0, "xattrs": ()}

file_xattrs = st.sampled_from([(), (), (("user.k", "v"),), (("trusted.overlay.origin", "o"),)])
dir_xattrs = st.sampled_from(
    [(), (), (), (("user.k", "v"),), (("trusted.overlay.opaque", "y"),)]
    + [(("user.overlay.opaque", "y"), ("user.k", "w"))]
)


def meta(xattrs):
    return st.fixed_dictionaries(
        {
            "perm": st.sampled_from([0o755, 0o700, 0o640]),
            "uid": st.sampled_from([0, 1]),
            "gid": st.just(0),
            "mtime": st.sampled_from([0, 7]),
            "xattrs": xattrs,
        }
    )


@st.composite
def dir_entries(draw, depth: int) -> dict:
    """One layer directory's children as {name: record}, markers included."""
    children = {}
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3)):
        kinds = ["f", "f", "l", "c", "d", "i"] if depth < 2 else ["f", "f", "l", "c"]
        kind = draw(st.sampled_from(kinds))
        if kind in ("d", "i"):
            rec = {"kind": "d", "implicit": kind == "i", **DEFAULT_DIR}
            if kind == "d":
                rec.update(draw(meta(dir_xattrs)))
            rec["children"] = draw(dir_entries(depth + 1))
        else:
            rec = {"kind": kind, **draw(meta(file_xattrs))}
            rec["payload"] = {"f": None, "l": b"t", "c": draw(st.sampled_from([0, 0x103]))}[kind]
        children[name] = rec
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=2)):
        children[".wh." + name] = {**DEFAULT_DIR, "kind": "f", "perm": 0o644, "payload": None}
    if draw(st.integers(0, 4)) == 0:
        children[".wh..wh..opq"] = {**DEFAULT_DIR, "kind": "f", "perm": 0o644, "payload": None}
    return children


def flatten(children: dict, prefix: tuple = ()) -> dict[tuple, dict]:
    out = {}
    for name, rec in children.items():
        path = prefix + (name,)
        out[path] = rec
        if rec["kind"] == "d":
            out.update(flatten(rec["children"], path))
    return out


def add_layer_links(draw, flat: dict, layer_no: int) -> None:
    """Give every non-dir a token and payload tag; turn a few files into in-layer hard links."""
    for n, (path, rec) in enumerate(sorted(flat.items())):
        if rec["kind"] != "d":
            rec["token"] = (layer_no, path)
            if rec["kind"] == "f":
                rec["payload"] = layer_no * 1000 + n
    files = [p for p, r in sorted(flat.items()) if r["kind"] == "f" and p[-1] in NAMES]
    if len(files) >= 2:
        order = draw(st.permutations(files))
        for dst in order[1 : 1 + draw(st.integers(0, 2))]:
            flat[dst].clear()
            flat[dst].update({"link": order[0]})


def strip(rec: dict) -> dict:
    out = {k: v for k, v in rec.items() if k not in ("children", "implicit", "link")}
    out["xattrs"] = tuple(sorted(x for x in rec["xattrs"] if ".overlay." not in x[0]))
    return out


def ref_apply(state: dict, root_rec: dict, flat: dict, lower_links: list, spec: str) -> dict:
    flat = dict(flat)
    for path, rec in list(flat.items()):
        if "link" in rec:
            flat[path] = flat[rec["link"]]
    for link, target in lower_links:
        for i in range(1, len(link)):
            flat.setdefault(link[:i], {**DEFAULT_DIR, "implicit": True, "children": {}})
        flat[link] = state[target]

    def marker(path, rec):
        if spec == "oci":
            return path[-1].startswith(".wh.")
        return spec == "overlayfs" and rec["kind"] == "c" and rec["payload"] == 0

    def delete(st_: dict, path: tuple, keep_self: bool = False) -> None:
        for p in [p for p in st_ if p[: len(path)] == path and (p != path or not keep_self)]:
            del st_[p]

    new = dict(state)
    for path, rec in [((), root_rec)] + sorted(flat.items()):
        if path and marker(path, rec):
            if spec == "oci" and path[-1] == ".wh..wh..opq":
                delete(new, path[:-1], keep_self=True)
            elif spec == "oci":
                delete(new, path[:-1] + (path[-1][4:],))
            else:
                delete(new, path)
        elif spec == "overlayfs" and rec["kind"] == "d":
            if any((k, "y") in rec["xattrs"] for k in OPAQUE_KEYS):
                delete(new, path, keep_self=True)
    for path, rec in [((), root_rec)] + sorted(flat.items()):
        if path and marker(path, rec):
            continue
        old = new.get(path)
        if rec["kind"] == "d" and old is not None and old["kind"] == "d":
            if not rec["implicit"]:
                new[path] = strip(rec)
            continue
        delete(new, path)
        new[path] = strip(DEFAULT_DIR if rec.get("implicit") else rec)
    return new


def to_layer(root_rec: dict, flat: dict, lower_links: list) -> LayerTree:
    def mk(rec: dict) -> Node:
        mode = {"d": stat.S_IFDIR, "f": stat.S_IFREG, "l": stat.S_IFLNK, "c": stat.S_IFCHR}
        n = Node(
            mode=mode[rec["kind"]] | rec["perm"],
            uid=rec["uid"],
            gid=rec["gid"],
            mtime=rec["mtime"],
            xattrs={k.encode(): v.encode() for k, v in rec["xattrs"]},
            implicit=rec.get("implicit", False),
        )
        if rec["kind"] == "d":
            n.children = {}
        elif rec["kind"] == "f":
            n.size = rec["payload"]
        elif rec["kind"] == "l":
            n.target = rec["payload"]
        else:
            n.rdev = rec["payload"]
        return n

    nodes = {(): mk(root_rec)}
    for path, rec in sorted(flat.items()):
        if "link" not in rec:
            nodes[path] = mk(rec)
    for path, rec in sorted(flat.items()):
        if "link" in rec:
            nodes[path] = nodes[rec["link"]]
        nodes[path[:-1]].children[path[-1].encode()] = nodes[path]
    links = [("/".join(a).encode(), "/".join(b).encode()) for a, b in lower_links]
    return LayerTree(root=nodes[()], lower_links=links)


def impl_view(root: Node) -> tuple[dict, set]:
    view, groups = {}, {}
    for path, n in walk(root):
        parts = tuple(p.decode() for p in path.split(b"/") if p)
        k, perm, uid, gid, mtime, xattrs, payload = desc(n)
        xattrs = tuple((a.decode(), b.decode()) for a, b in xattrs)
        view[parts] = (k, perm, uid, gid, mtime, xattrs, payload)
        if k != "d":
            groups.setdefault(id(n), set()).add(parts)
    return view, {frozenset(g) for g in groups.values()}


def ref_view(state: dict) -> tuple[dict, set]:
    view, groups = {}, {}
    for path, r in state.items():
        payload = None if r["kind"] == "d" else r["payload"]
        view[path] = (r["kind"], r["perm"], r["uid"], r["gid"], r["mtime"], r["xattrs"], payload)
        if r["kind"] != "d":
            groups.setdefault(r["token"], set()).add(path)
    return view, {frozenset(g) for g in groups.values()}


@pytest.mark.parametrize("spec", ["oci", "overlayfs", "none"])
@settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_layer_sequences_match_reference(spec, data):
    root = new_root()
    state = {(): dict(DEFAULT_DIR)}
    for layer_no in range(4):
        flat = flatten(data.draw(dir_entries(0)))
        add_layer_links(data.draw, flat, layer_no)
        if data.draw(st.booleans()):
            root_rec = {
                "kind": "d",
                "implicit": False,
                **DEFAULT_DIR,
                **data.draw(meta(dir_xattrs)),
            }
        else:
            root_rec = {"kind": "d", "implicit": True, **DEFAULT_DIR}
        lower_links = []
        targets = sorted(p for p, r in state.items() if r["kind"] != "d")
        if targets and data.draw(st.booleans()):
            parents = [()] + [p for p, r in flat.items() if r.get("kind") == "d"] + [("z",)]
            parent = data.draw(st.sampled_from(sorted(parents)))
            lower_links.append((parent + (f"l{layer_no}",), data.draw(st.sampled_from(targets))))

        lower_before = impl_view(root)
        lt = to_layer(root_rec, flat, lower_links)
        new = apply_layer(root, lt, spec)
        state = ref_apply(state, root_rec, flat, lower_links, spec)
        assert impl_view(root) == lower_before  # the lower tree is left alone
        root = new
        assert impl_view(root) == ref_view(state)
