"""What may go into an Engine API path: container, network and image references, and IDs.

Every name or reference is checked before it becomes part of a URL, and quoted strictly.
Why: Go's HTTP server answers a path with ``..`` segments by a redirect to the cleaned
path, so ``cman network inspect ../containers/x`` used to reach another endpoint (or
read the redirect's empty body as a record). A bad reference is :class:`InvalidName`
(exit 2) before any request; an ID that the daemon itself sent back and that is not an
ID is an :class:`ApiError` (the answer is not what was asked for).
"""

from __future__ import annotations

import re
from urllib.parse import quote

from ...errors import InvalidName
from ...validate import check_name
from .api import ApiError

REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
REF_MAX = 255
CONTAINER_RULES = "a container is its name or ID: letters, digits, '_', '.', '-', starting with a letter or digit"
NETWORK_RULES = "a network is its name or ID: letters, digits, '_', '.', '-', starting with a letter or digit"

# distribution/reference's grammar (what the Docker daemon accepts), without IPv6 hosts.
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_RE = re.compile(rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?")
IMAGE_MAX = 255
IMAGE_HINT = "use [REGISTRY/]NAME[:TAG][@DIGEST] with a lowercase name, e.g. 127.0.0.1:5000/cman/busybox:latest"

ID_RE = re.compile(r"[0-9a-f]{12,64}")


def container(ref: str) -> str:
    """``ref`` (a container name or ID) as one path segment; InvalidName otherwise."""
    check_name(ref, REF_RE, REF_MAX, CONTAINER_RULES, what="container reference")
    return quote(ref, safe="")


def network(ref: str) -> str:
    """``ref`` (a network name or ID) as one path segment; InvalidName otherwise."""
    check_name(ref, REF_RE, REF_MAX, NETWORK_RULES, what="network reference")
    return quote(ref, safe="")


def check_image(ref: str) -> str:
    """Raise InvalidName unless ``ref`` is an image reference the daemon would take."""
    if len(ref) > IMAGE_MAX or not IMAGE_RE.fullmatch(ref):
        raise InvalidName(f"invalid image reference {ref!r}", hint=IMAGE_HINT)
    first, slash, _ = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost") and not re.fullmatch(_DOMAIN, first):
        raise InvalidName(f"invalid registry {first!r} in image reference {ref!r}", hint=IMAGE_HINT)
    return ref


def image(ref: str) -> str:
    """``ref`` (an image reference or ID) for ``/images/{name}/...``, whose route takes the
    reference with its '/' (``{name:.*}``); the grammar leaves no '..' segment."""
    return quote(check_image(ref), safe="/:@")


def engine_id(value: object) -> str:
    """An ID the daemon sent back (exec, network), checked before it goes into a path."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise ApiError(200, f"the daemon answered with an invalid ID {str(value)[:80]!r}")
    return value
