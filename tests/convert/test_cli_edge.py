"""The CLI's one error edge (``convert.cli._user_errors``), without a subprocess."""

from __future__ import annotations

import pytest
import typer

from convert.cli import _user_errors
from convert.errors import LayerError
from rafs.errors import InvalidImage
from registry.errors import AuthError


@pytest.mark.parametrize(
    "error", [LayerError("img: layer sha256:ab: bad"), InvalidImage("x.boot: cut"),
              AuthError("reg: denied"), FileNotFoundError(2, "No such file", "f")],
)  # fmt: skip
def test_each_package_error_is_one_line_and_status_1(capsys, error: Exception) -> None:
    with pytest.raises(typer.Exit) as info, _user_errors():
        raise error
    assert info.value.exit_code == 1
    assert capsys.readouterr().err == f"rconv: error: {error}\n"


def test_an_interrupt_is_one_line_and_status_130(capsys) -> None:
    with pytest.raises(typer.Exit) as info, _user_errors():
        raise KeyboardInterrupt
    assert info.value.exit_code == 130
    assert capsys.readouterr().err == "rconv: error: interrupted\n"


def test_a_bug_is_not_disguised_as_a_user_error() -> None:
    with pytest.raises(AssertionError), _user_errors():
        raise AssertionError("internal")
