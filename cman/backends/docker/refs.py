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

from ...validate import check_name
from .api import ApiError

REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
REF_MAX = 255
CONTAINER_RULES = "a container is its name or ID: letters, digits, '_', '.', '-', starting with a letter or digit"
NETWORK_RULES = "a network is its name or ID: letters, digits, '_', '.', '-', starting with a letter or digit"

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
    from ...oci import refs as _oci_refs  # the grammar has one home, shared with LXD and LXC; not needed by `ps`

    return _oci_refs.check_image(ref)


def image(ref: str) -> str:
    """``ref`` (an image reference or ID) for ``/images/{name}/...``, whose route takes the
    reference with its '/' (``{name:.*}``); the grammar leaves no '..' segment."""
    return quote(check_image(ref), safe="/:@")


def engine_id(value: object) -> str:
    """An ID the daemon sent back (exec, network), checked before it goes into a path."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise ApiError(200, f"the daemon answered with an invalid ID {str(value)[:80]!r}")
    return value
