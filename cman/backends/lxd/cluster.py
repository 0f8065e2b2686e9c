"""LXD clusters: whether the daemon is a cluster member, its members, and ``--target``.

A clustered LXD answers for the whole cluster from any member: every instance call is
forwarded to the member that holds the instance, so the rest of the backend needs no
change. Only creation chooses a member (``POST /1.0/instances?target=MEMBER``, or
``@GROUP`` for a cluster group); each instance's ``location`` says where it is
(:func:`.convert._location`).

The class declares ``Feature.CLUSTER``; whether the daemon is a member is asked only by
``require(Feature.CLUSTER)`` (``--target``, ``engine status``), once per backend instance,
never by :meth:`features`: that stays configuration only, so ``stats`` asks nothing more.
The local socket is asked with the stdlib (``engine status`` imports no pylxd).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from ..._sys import unixhttp as _http
from ...errors import InvalidValue, NotFound, Unsupported
from ..base import Feature
from .connection import LxdConnection, _boundary, _unavailable
from .convert import _member_from_raw

if TYPE_CHECKING:
    from ...models import ClusterMember

TARGET_RE = re.compile(r"@?[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
TARGET_RULES = "a cluster member's name (letters, digits, '.', '_' and '-'), or @GROUP for a cluster group"


def check_target(target: str) -> str:
    """``--target``: a member name or ``@GROUP``, refused before any engine call (exit 2)."""
    if not TARGET_RE.fullmatch(target):
        raise InvalidValue("--target", target, TARGET_RULES)
    return target


def _status(err: BaseException) -> int | None:
    """The HTTP status of a failed request, from the stdlib's error or pylxd's."""
    if isinstance(err, _http.HTTPStatusError):
        return err.status
    status = getattr(getattr(err, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


class LxdCluster(LxdConnection):
    """The cluster's side of the backend: membership, members, and placement checks."""

    _clustered: bool | None = None

    def _get(self, *parts: str) -> Any:
        """GET /1.0/PARTS... (recursion=1): the metadata, over the stdlib for the local socket."""
        socket = self._socket
        if socket is None:
            node = self.client.api
            for part in parts:
                node = node[part]
            return node.get(params={"recursion": "1"}).json()["metadata"]
        try:
            return _http.get_json(socket, "/".join(("/1.0", *parts)), {"recursion": "1"}, timeout=30)["metadata"]
        except (FileNotFoundError, PermissionError, ConnectionError) as err:
            raise _unavailable(err) from err

    def clustered(self) -> bool:
        """Is the daemon a cluster member? Asked once."""
        if self._clustered is None:
            with _boundary(action="ask whether the daemon is clustered"):
                info = self.client.host_info if self._socket is None else self._get()
            self._clustered = bool((info.get("environment") or {}).get("server_clustered"))
        return self._clustered

    def require(self, feature: Feature, why: str | None = None) -> None:
        super().require(feature, why)
        if feature == Feature.CLUSTER and not self.clustered():
            raise Unsupported(self.name, str(feature),
                              why or f"the LXD daemon at {self.locality().endpoint} is not a cluster member")

    def cluster_members(self) -> list[ClusterMember]:
        self.require(Feature.CLUSTER)
        with _boundary(action="list cluster members"):
            raw = self._get("cluster", "members")
        return sorted((_member_from_raw(m) for m in raw), key=lambda m: m.name)

    def _placement(self, target: str | None) -> dict[str, Any]:
        """The create request's arguments for ``--target``: none without it; with it, once the
        member (or ``@GROUP``) is known to exist, so a typo is a clear "not found" before
        anything is made."""
        if target is None:
            return {}
        check_target(target)
        self.require(Feature.CLUSTER)
        group = target.startswith("@")
        what = "cluster group" if group else "cluster member"
        with _boundary(action=f"find {what} {target}"):
            try:
                self._get("cluster", "groups" if group else "members", target.lstrip("@"))
            except Exception as err:
                if _status(err) == 404:
                    raise NotFound(f"no such {what}: {target} on lxd",
                                   hint="see `cman --backend lxd engine status` for the members") from err
                raise
        return {"params": {"target": target}}
