"""The one exception base of ``convert.check``.

A check that *runs* and finds differences returns a report; these errors mean the check
could not run at all (an unreadable source layer, a target that is not a Nydus image).
"""


class CheckError(Exception):
    """Base of every error raised by convert.check."""


class SourceError(CheckError):
    """A source layer that the reference model cannot apply (the message names the layer)."""
