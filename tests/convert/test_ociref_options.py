"""`--oci-ref` refuses the options it cannot honour before any work (image.md §11)."""

from __future__ import annotations

import pytest

from convert.errors import ImageError
from convert.ociref import check_options
from convert.options import ConvertOptions
from rafs.options import RafsOptions


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rafs": RafsOptions(fs_version=5)}, "needs RAFS v6"),
        ({"chunk_dict": "bootstrap:/x"}, "chunk dictionary"),
        ({"target": "oci:/tmp/layout"}, "registry target"),
    ],
)
def test_refused_combinations(changes: dict, message: str) -> None:
    base = {"source": "reg.example/app:1", "target": "reg.example/app:z", "oci_ref": True}
    with pytest.raises(ImageError, match=message):
        check_options(ConvertOptions(**{**base, **changes}))


def test_plain_registry_conversion_and_the_build_cache_are_accepted() -> None:
    check_options(ConvertOptions("reg.example/app:1", "reg.example/app:z", oci_ref=True))
    check_options(ConvertOptions("reg.example/app:1", "reg.example/app:z", oci_ref=True,
                                 build_cache="reg.example/app:cache"))  # fmt: skip
