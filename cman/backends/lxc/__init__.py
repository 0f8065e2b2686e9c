"""Raw LXC backend over the ``lxc-*`` tools (``lxc-start``, ``lxc-attach``, ``lxc-info``, ...).

System containers: each boots its image's init, and ``run IMAGE CMD`` makes CMD the
container's job, which the container lives as long as (:mod:`cman.jobs`). There is no
daemon and no image or network object in LXC itself: cman keeps its own image store and
its own network records, and reads every state back from the tools.

- :mod:`.connection`: the LXC path, the locks and their order, probe, the error boundary;
- :mod:`.tools`: the ``lxc-*`` calls, their output parsed, and a container's files;
- :mod:`.config`: the config file cman writes for a container (every value checked);
- :mod:`.containers`: create, start, stop, remove, list, exec, logs (semantics of run);
- :mod:`.jobhost`: the primitives the job runner uses; :mod:`.attach`: ``lxc-attach`` with
  the caller's streams (a pty of cman's own with ``-t``);
- :mod:`.images` over :mod:`.store`: cman's image store of rootfs tarballs;
- :mod:`.networks` over :mod:`.net`: networks as cman's records, a bridge of cman's own,
  veths with addresses cman allocates, no ICC with isolated bridge ports;
- :mod:`.idmap`: unprivileged containers (the id map, the shifted rootfs, AppArmor);
- :mod:`.rootfs`: a container's overlay over its image's rootfs, read and written from the
  host; :mod:`.layerusers`: which containers stand on an image's layer;
- :mod:`.leftovers`: what a killed cman left, found and removed (``system prune``);
- :mod:`.convert`: cman's records as cman models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._sys.lazy import lazy_attributes

if TYPE_CHECKING:
    from .backend import LxcBackend

__all__ = ["LxcBackend"]
__getattr__ = lazy_attributes(__name__, {"LxcBackend": "backend"})  # the class on first use: `.endpoint` stays cheap
