"""The one exception hierarchy of the ``rafs`` package.

"Invalid" (the input is corrupt or hostile) is kept apart from "unsupported" (valid, but a
feature rconv does not handle), as dissect does. Messages are one line and name what is at
fault; callers add the file, image or layer they were reading.
"""


class RafsError(Exception):
    """Base of every error raised by rafs."""


class InvalidInput(RafsError):
    """A layer tar, directory or data stream that cannot be turned into a tree."""


class InvalidImage(RafsError):
    """A bootstrap or blob whose bytes break the RAFS format rules."""


class Unsupported(RafsError):
    """Valid input using a feature rconv does not implement."""
