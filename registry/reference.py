"""Image references with Docker's semantics (distribution/reference grammar, normalised).

``alpine`` means ``docker.io/library/alpine:latest``; the first path component is a registry
host only if it contains ``.`` or ``:`` or is ``localhost`` (and is lowercase); ``index.docker.io``
is folded into ``docker.io``; a reference may carry a tag, a digest, or both (the digest wins
when fetching). Parsing is strict and each failure names what is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .digest import check_digest
from .errors import InvalidReference

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
# Where the Docker Hub API actually lives, and the key docker login writes for it.
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_COMPONENT = re.compile(rf"^{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*$")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_NAME_MAX = 255


@dataclass(frozen=True)
class Reference:
    """A normalised reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest if any, else the tag (default latest)."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def api_host(self) -> str:
        """Host (and port) to send HTTP requests to."""
        return DOCKER_HUB_API if self.registry == DEFAULT_REGISTRY else self.registry

    def with_tag(self, tag: str) -> Reference:
        if not _TAG.match(tag):
            raise InvalidReference(f"invalid tag {tag!r}")
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, None, check_digest(digest))

    def familiar(self) -> str:
        """The short form Docker prints (``alpine:3.19``, ``user/app``, ``host:5000/x``)."""
        name = self.repository
        if self.registry == DEFAULT_REGISTRY:
            name = name.removeprefix("library/")
        else:
            name = self.name
        return name + self._suffix()

    def _suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    def __str__(self) -> str:
        return self.name + self._suffix()


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    # Docker's rule: a host has a dot or a port, is "localhost", or has an uppercase letter
    # (which a repository path may not have).
    is_host = any(c in first for c in ".:") or first == "localhost" or first.lower() != first
    if not sep or not is_host:
        return DEFAULT_REGISTRY, name
    return first, rest


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse ``text`` with Docker's rules; ``default_tag`` adds ``latest`` if no tag/digest."""
    if not isinstance(text, str) or not text:
        raise InvalidReference("empty image reference")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReference(f"invalid reference {text!r}: contains whitespace")
    rest, digest = text, None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        try:
            check_digest(digest)
        except InvalidReference as e:
            raise InvalidReference(f"invalid reference {text!r}: {e}") from None
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidReference(
                f"invalid reference {text!r}: bad tag {tag!r} "
                "(letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')"
            )
    registry, path = _split_domain(rest)
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if not _DOMAIN.match(registry):
        raise InvalidReference(f"invalid reference {text!r}: bad registry host {registry!r}")
    if not path:
        raise InvalidReference(f"invalid reference {text!r}: no repository name")
    if path.lower() != path:
        raise InvalidReference(f"invalid reference {text!r}: repository name must be lowercase")
    for comp in path.split("/"):
        if not _COMPONENT.match(comp):
            raise InvalidReference(
                f"invalid reference {text!r}: bad path component {comp!r} "
                "(lowercase letters and digits, separated by '.', '_', '__' or '-')"
            )
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = "library/" + path
    if len(registry) + 1 + len(path) > _NAME_MAX:
        raise InvalidReference(f"invalid reference {text!r}: name longer than {_NAME_MAX}")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(registry, path, tag, digest)
