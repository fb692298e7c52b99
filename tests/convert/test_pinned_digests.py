"""Output bytes are a contract: the sample image converts to these digests, whatever the run.

A change that moves one of them changes every user's converted images: say so and why in the
issue note, then update the pin. Also moved by a zstd, zlib or isal upgrade that compresses
differently (the bootstrap diff_id, uncompressed, is not). The manifest digest is not pinned:
its annotations carry the source reference, here a temporary path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli import rconv

PINNED = {
    "6": {
        "layers": [
            "sha256:3423c1fe03a67651cba734133d3e59cb6224325bd2e1ba8b4345360a52b953b1",
            "sha256:5bac05c2ef0c0601d7aa08ee8d98988b9e0a74a8b52ce306ad58aac25cd8f77b",
            "sha256:21898133d30d53593a30902f855b7f8b3a4a4608952a96df9b7d5cafc9cdba9e",
            "sha256:6875ec664d6d8e7e6e9599a9ad3731263b6e274891a9aa72bb809077c378ce8c",
        ],
        "config": "sha256:1823a7b00c1b064628ba87f1668bbc00179a4ccdc851a42a20ba8753b658fa9d",
        "bootstrap_diff_id": (
            "sha256:ae7a1d342b409d1cec5a018e6ee6ad0ce9b452c2772dead7d09ab745dfde4a45"
        ),
    },
    "5": {
        "layers": [
            "sha256:9e89daaeebc050f9027977de098b955fd9d7246906d46321d5a7588aa604363a",
            "sha256:125ee69d6d872e01e937e0d1e34088efcc4e8e5209e482901c372b7e92b772d4",
            "sha256:8746f21419292a6e83ca32af9cc8673230f876231e04d9330a3991a1dd65cb78",
            "sha256:0d76ce0ec4cfc18d8a231b3272a85085283d3394e198b0433169327c28304473",
        ],
        "config": "sha256:30c79ef23f75d29018bf414e3746b7cb1869687ae6a28db2caedb87e13b90451",
        "bootstrap_diff_id": (
            "sha256:cc5d6a83453e8f5a7e4d17dfe6863c2101d59efe80068b3ae1c72e4b1a343658"
        ),
    },
}

pytestmark = pytest.mark.integration  # the CLI in a subprocess


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


@pytest.mark.parametrize("fs_version", ["6", "5"])
def test_sample_converts_to_the_pinned_digests(sample_layout: Path, tmp_path: Path, fs_version):
    out = tmp_path / "nydus"
    rconv("convert", "--source", f"oci:{sample_layout}:1", "--target", f"oci:{out}:n",
          "--fs-version", fs_version)  # fmt: skip
    top = json.loads((out / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads(_blob(out, top))
    config = json.loads(_blob(out, manifest["config"]["digest"]))
    assert {
        "layers": [layer["digest"] for layer in manifest["layers"]],
        "config": manifest["config"]["digest"],
        "bootstrap_diff_id": config["rootfs"]["diff_ids"][-1],
    } == PINNED[fs_version]
