#!/usr/bin/env bash
# The main job end to end on this machine: start a local registry (Debian's docker-registry,
# what registry:2 runs), push the sample image from testdata/ (3 layers: whiteouts, an opaque
# dir, hard links, symlinks, xattrs, devices), convert it to Nydus with rconv, then verify the
# result with tools rconv did not write: erofs-utils extracts the pulled bootstrap + blobs and
# the tree is compared path by path with the source image unpacked by umoci.
# Runs inside the project venv that scripts/setup.sh makes (rconv, python3 and the test
# helpers it imports come from there).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "demo.sh: no .venv here; run first: bash scripts/setup.sh" >&2
  exit 1
fi
# shellcheck source=/dev/null
source .venv/bin/activate
work=$(mktemp -d "${TMPDIR:-/tmp}/rconv-demo.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
log: {level: error}
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done

source_ref="127.0.0.1:$port/sample:1"
python3 testdata/make_sample.py --oci "$work/layout" >/dev/null
rconv copy "oci:$work/layout:1" "$source_ref"
rconv convert --source "$source_ref" --target-suffix -nydus --output-json "$work/report.json" --check
python3 - "$source_ref" "$source_ref-nydus" "$work/verify" <<'PY'
import sys
from pathlib import Path
from registry.medium import default_client
from tests.erofs import fsck_extract
from tests.integration.nydus import pull_nydus, umoci_rootfs, views_of
from tests.treeutil import diff_signatures, fs_signature

source, target, work = sys.argv[1], sys.argv[2], Path(sys.argv[3])
client = default_client()
pulled = pull_nydus(target, client, work / "pull")
fsck_extract(pulled.boot, views_of(pulled, work / "views"), work / "erofs")
ours = fs_signature(work / "erofs", xattrs=False)
reference = fs_signature(umoci_rootfs(source, client, work / "umoci"), xattrs=False)
# erofs-utils 1.5 restores no hard links, setuid bits, owners or times: the kernel-mount
# tests check those; here every path's type, size, content, symlink target and rdev.
diffs = diff_signatures(reference, ours, ("links", "mode", "mtime", "uid", "gid", "xattrs"))
print("\n".join(diffs) or f"verified: {len(ours)} paths of {target} equal the source image")
sys.exit(1 if diffs else 0)
PY
