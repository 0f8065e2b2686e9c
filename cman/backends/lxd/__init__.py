"""LXD backend over ``pylxd``: system containers behind cman's verbs.

The package, by concern (each class adds one concern to the one it builds on):

- :mod:`.endpoint`: where the daemon is (the local socket, or ``CMAN_LXD_ENDPOINT``
  over HTTPS) and the local status, with the stdlib only;
- :mod:`.connection`: :class:`~.connection.LxdConnection`, the pylxd client, the error
  boundary (engine errors -> cman errors, once) and the low-level calls;
- :mod:`.convert`: LXD's records -> cman's models;
- :mod:`.exec` (with :mod:`.ws`, LXD's exec websockets): commands in a container;
- :mod:`.images` (with :mod:`.imagebuild`, references and unified tarballs): images;
- :mod:`.networks` (with :mod:`.net`, the pure network parts): managed bridges and the
  containers on them;
- :mod:`.cluster`: whether the daemon is a cluster member (``Feature.CLUSTER``), its
  members, and ``--target``'s placement checks;
- :mod:`.containers`: containers and their jobs (what ``run IMAGE CMD`` means on LXD),
  and (with :mod:`.leftovers`) what a killed cman left behind.

pylxd (and ``requests``) are imported on first use, never at import time; ``cman ps``
lists local instances with the stdlib (:mod:`cman._sys.unixhttp`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._sys.lazy import lazy_attributes

if TYPE_CHECKING:
    from .backend import LxdBackend

__all__ = ["LxdBackend"]
__getattr__ = lazy_attributes(__name__, {"LxdBackend": "backend"})  # the class on first use: `.endpoint` stays cheap
