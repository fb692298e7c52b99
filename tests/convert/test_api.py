"""docs/api.md's complete example runs as written, and the API facade forwards to the
library the command line uses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from convert import api
from tests.cli import REPO


def example() -> str:
    text = (REPO / "docs" / "api.md").read_text()
    section = text.split("## A complete example", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.integration  # builds and converts the sample image
def test_the_documented_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    subprocess.run([sys.executable, str(REPO / "testdata/make_sample.py"), "--oci",
                    str(tmp_path / "sample-layout")], check=True, capture_output=True)  # fmt: skip
    monkeypatch.chdir(tmp_path)
    exec(compile(example(), "docs/api.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("converted sha256:")
    assert out[1].startswith("refused: ") and "no-such-layout" in out[1]
    assert out[2] == "refused: chunk size 0xbb8 is not a power of two in 4K…16M"
    assert (tmp_path / "sample-nydus" / "index.json").exists()


def test_the_api_names_its_options_and_errors() -> None:
    wanted = {"convert", "check", "build", "inspect", "ConvertOptions", "RafsOptions",
              "ConvertError", "RafsError", "RegistryError"}  # fmt: skip
    assert set(api.__all__) >= wanted
    for name in api.__all__:
        assert getattr(api, name).__doc__, name
