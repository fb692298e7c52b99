"""The exception base of ``convert.check``, under ``convert.errors.ConvertError``.

A check that *runs* and finds differences returns a report; these errors mean the check
could not run at all (an unreadable source layer, a target that is not a Nydus image).
"""

from convert.errors import ConvertError


class CheckError(ConvertError):
    """Base of every error raised by convert.check."""


class SourceError(CheckError):
    """A source layer that the reference model cannot apply (the message names the layer)."""
