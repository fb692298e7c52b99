#!/usr/bin/env bash
# End-to-end run of the RAFS core on the sample image in testdata/: build the three layers
# as a layered RAFS v6 image (each on its parent bootstrap, chunks deduplicated across
# layers), inspect it, export the blob views, and let erofs-utils (an EROFS reader rconv did
# not write) extract the filesystem and compare it with rconv's own unpack.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/rconv-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 testdata/make_sample.py "$work/layers"
parent=()
for n in 1 2 3; do
  rconv build "$work/layers/layer$n.tar.gz" --bootstrap "$work/layer$n.boot" \
    --blob-dir "$work/blobs" "${parent[@]}"
  parent=(--parent-bootstrap "$work/layer$n.boot")
done
boot="$work/layer3.boot"
rconv inspect "$boot" | head -n 12
mapfile -t devices < <(rconv blob-view "$boot" --blob-dir "$work/blobs" --output-dir "$work/views" | sed 's/^device [0-9]*: //')
fsck.erofs $(printf -- '--device=%s ' "${devices[@]}") --extract="$work/erofs" "$boot"
rconv unpack "$boot" --blob-dir "$work/blobs" --output "$work/unpacked.tar"
mkdir "$work/rconv" && tar -xf "$work/unpacked.tar" -C "$work/rconv"
diff -r --no-dereference "$work/erofs" "$work/rconv"
echo "demo OK: $(find "$work/erofs" | wc -l) paths identical through erofs-utils and rconv;" \
  "blobs: $(du -cb "$work"/blobs/* | tail -1 | cut -f1) bytes stored for" \
  "$(du -cb "$work"/layers/* | tail -1 | cut -f1) bytes of gzip layers"
