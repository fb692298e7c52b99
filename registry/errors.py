"""The one exception hierarchy of the ``registry`` package.

``RegistryError`` is the base the CLI catches. It carries what the retry logic and the user
need from a failed registry exchange: the HTTP status, the distribution error codes of the
response body (``MANIFEST_UNKNOWN``, ``DENIED``…) and ``temporary``, the single answer the
retry loop reads. As in ``rafs/errors.py``, "invalid" input is kept apart from "unsupported"
(valid, but not handled). Messages never contain credentials or tokens.
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every error raised by ``registry``; also the typed transport error."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        codes: tuple[str, ...] = (),
        temporary: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.codes = codes
        self.temporary = temporary


class InvalidReference(RegistryError):
    """An image reference or medium spec that does not parse."""


class InvalidManifest(RegistryError):
    """A manifest, index, config or layout file whose content breaks the OCI rules."""


class InvalidArchive(InvalidManifest):
    """A docker-archive or oci-archive file that is not a whole uncompressed tar (cut short,
    compressed, a corrupt header)."""


class DigestMismatch(RegistryError):
    """Downloaded or read bytes whose digest or size is not the announced one."""


class Unsupported(RegistryError):
    """Valid content rconv does not handle (schema 1, foreign layers, unknown media types)."""


class NotFound(RegistryError):
    """A manifest, blob or tag that the medium does not hold."""


class AuthError(RegistryError):
    """Authentication failed or was refused (401/403, token endpoint errors)."""
