"""Image references with Docker's grammar and normalisation, parsed once for every engine.

``REPO``, ``REPO:TAG``, ``REGISTRY[:PORT]/REPO:TAG`` and ``...@sha256:DIGEST``, as
distribution/reference (what the Docker daemon accepts) spells them, without IPv6 hosts.
A first component with a '.' or ':', or ``localhost``, is a registry; otherwise the
registry is ``docker.io``, and a one-component Docker Hub name gets ``library/``. A bad
reference is :class:`InvalidName` (exit 2), before any engine call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidName

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_RE = re.compile(rf"(?:{DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?")
IMAGE_MAX = 255
IMAGE_HINT = "use [REGISTRY/]NAME[:TAG][@DIGEST] with a lowercase name, e.g. 127.0.0.1:5000/cman/busybox:latest"
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference."""

    registry: str
    repository: str
    tag: str | None
    """None only when a digest names the image and no tag was given."""
    digest: str | None = None
    explicit_registry: bool = True
    """False when the registry was implied (``debian`` is ``docker.io/library/debian``)."""

    @property
    def name(self) -> str:
        """``REGISTRY/REPO``."""
        return f"{self.registry}/{self.repository}"

    @property
    def canonical(self) -> str:
        """``REGISTRY/REPO:TAG[@DIGEST]``: the one spelling an image is stored under."""
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    @property
    def remote(self) -> str:
        """What a registry client asks for: the digest when there is one, else the tag."""
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag or DEFAULT_TAG}"

    def on(self, registry: str) -> Reference:
        """The same repository, tag and digest on another registry (a mirror)."""
        return Reference(registry, self.repository, self.tag, self.digest)


def is_registry(component: str) -> bool:
    """Docker's rule: a first path component with '.' or ':', or ``localhost``, is a registry."""
    return "." in component or ":" in component or component == "localhost"


def names_registry(ref: str) -> bool:
    """Does ``ref``'s first path component name a registry (``127.0.0.1:5000/x``, ``quay.io/x``)?"""
    first, slash, _ = ref.partition("/")
    return bool(slash) and is_registry(first)


def registry_image(ref: str, *, is_local: Callable[[], bool], mirrored: Callable[[], bool]) -> Reference | None:
    """The registry image a system container engine's ``ref`` names, or None: one precedence
    for LXD and LXC (README, "One image on every engine"). A name whose first component is a
    registry is one; otherwise a local image of that name wins; otherwise a Docker Hub short
    name (no '/') is one while a mirror is configured. The two callables are asked only when
    needed (a store lookup, the config file)."""
    if names_registry(ref):
        return parse(ref)
    if "/" in ref or is_local() or not mirrored():
        return None
    return parse(ref)


def check_image(ref: str) -> str:
    """Raise InvalidName unless ``ref`` is an image reference the Docker daemon would take."""
    parse(ref)
    return ref


def parse(ref: str) -> Reference:
    """``ref`` as a :class:`Reference`; InvalidName when it breaks the grammar."""
    if not isinstance(ref, str) or len(ref) > IMAGE_MAX or not IMAGE_RE.fullmatch(ref):
        raise InvalidName(f"invalid image reference {ref!r}", hint=IMAGE_HINT)
    rest, _, digest = ref.partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and is_registry(first):
        if not re.fullmatch(DOMAIN, first) or not port_ok(first):
            raise InvalidName(f"invalid registry {first!r} in image reference {ref!r}", hint=IMAGE_HINT)
        registry, path, explicit = first, remainder, True
    else:
        registry, path, explicit = DEFAULT_REGISTRY, rest, False
    repository, colon, tag = _split_tag(path)
    if any(c.isupper() for c in repository):
        raise InvalidName(f"invalid image reference {ref!r}: the repository must be lowercase", hint=IMAGE_HINT)
    if digest and not _SHA256.fullmatch(digest):
        raise InvalidName(f"invalid digest {digest!r} in image reference {ref!r}",
                          hint="a digest is sha256: and 64 lowercase hex digits")
    if registry in (DEFAULT_REGISTRY, "index.docker.io") and "/" not in repository:
        repository = f"library/{repository}"
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if len(f"{registry}/{repository}") > IMAGE_MAX:
        raise InvalidName(f"invalid image reference {ref!r}: the name is too long", hint=IMAGE_HINT)
    return Reference(registry, repository, tag if colon else (None if digest else DEFAULT_TAG),
                     digest or None, explicit)


def _split_tag(path: str) -> tuple[str, str, str]:
    repository, colon, tag = path.rpartition(":")
    if not colon:
        return path, "", ""
    return repository, colon, tag


def port_ok(domain: str) -> bool:
    """Is the port of ``HOST[:PORT]`` (when there is one) in 1-65535?"""
    _, colon, port = domain.rpartition(":")
    return not colon or 0 < int(port) <= 65535
