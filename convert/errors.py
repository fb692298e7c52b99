"""The one exception hierarchy of the ``convert`` package (``convert.check`` included).

The command line turns these, like ``RafsError`` and ``RegistryError``, into one
``rconv: error: …`` line; messages name the image, layer, file or path at fault.
"""


class ConvertError(Exception):
    """Base of every error raised by convert."""


class LayerError(ConvertError):
    """A source layer could not be converted; the message names image, layer digest and cause."""


class ImageError(ConvertError):
    """A source, target or chunk dictionary that cannot be used as asked (no manifest for the
    platform, not a Nydus image, a dictionary blob missing from the target repository)."""
