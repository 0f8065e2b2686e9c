"""What a killed cman leaves half-made on Docker, for ``cman system prune``.

- A container in state ``created`` whose ``cman.run`` label (``PID:STARTTIME`` of the cman
  process that ran ``run``) names a process that is gone: that ``run`` was killed between
  create and start, and nobody will start it. A live process is still working on it.
- nftables rules of no-ICC networks (:mod:`.l2`) whose network is gone: a ``network rm``
  killed between the daemon's delete and the rules' removal.

Only for a daemon on this host: the PIDs in the labels are this host's processes (a
remote daemon may hold containers of cman processes on other hosts).
"""

from __future__ import annotations

import contextlib

from ...errors import ContainerNotFound
from ...models import MANAGED_LABEL, RUN_LABEL
from .connection import DockerConnection
from .convert import container_name


class DockerLeftovers(DockerConnection):
    def prune_leftovers(self, *, dry_run: bool = False) -> list[str]:
        if not self.locality().local:
            return []
        from ..._sys.proc import mark_alive  # subprocess: only `system prune` needs it

        lines = []
        found = self._call("GET", "/containers/json", action="list containers", kind=list, params={
            "all": True, "filters": {"label": [f"{MANAGED_LABEL}=true"], "status": ["created"]}})
        for raw in found:
            label = (raw.get("Labels") or {}).get(RUN_LABEL)
            if not label or mark_alive(str(label)) is not False:
                continue  # no mark, not a mark (not ours to judge), or its run is alive
            if not dry_run:
                with contextlib.suppress(ContainerNotFound):  # removed meanwhile: as good
                    self.remove(str(raw.get("Id")), force=True)
            lines.append(f"container {container_name(raw)}: created by a run that was killed before it started")
        return lines + self._prune_l2(dry_run)

    def _prune_l2(self, dry_run: bool) -> list[str]:
        import shutil

        if shutil.which("nft") is None:
            return []
        from ...network.host import host_lock
        from . import l2

        lines = []
        with host_lock():  # a network rm removes its rules under this lock
            tagged = {r.network for r in l2.listed()}
            if not tagged:
                return []
            networks = self._call("GET", "/networks", action="list networks", kind=list)
            names = {str(n.get("Name")) for n in networks}
            for network in sorted(tagged - names):
                if not dry_run:
                    l2.remove(network)
                lines.append(f"nft-rules cman:{network}: their network is gone (table {l2.FAMILY} {l2.TABLE})")
        return lines
