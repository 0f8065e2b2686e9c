"""Docker ``image_export``: an image's root filesystem as one tarball.

Docker exports containers, not images, so a container is created from the image (never
started: no command runs) and ``GET /containers/ID/export`` streams its flattened filesystem
(plain tar, members relative to /). The container is removed afterwards, also on failure;
it carries cman's run mark, so ``cman system prune`` removes it if cman is killed meanwhile.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ...errors import CmanError
from ...models import MANAGED_LABEL, RUN_LABEL
from . import refs
from .connection import DockerConnection, boundary

CHUNK = 1 << 20


class DockerExport(DockerConnection):
    def image_export(self, ref: str, dest: Path) -> Path:
        from ..._sys.proc import mark  # subprocess: not for the verbs that never export

        refs.check_image(ref)
        image_id = self.image_inspect(ref).id  # ImageNotFound before anything is made
        made = self._call("POST", "/containers/create", body={
            "Image": image_id, "Cmd": ["/bin/true"], "Entrypoint": [],
            "Labels": {MANAGED_LABEL: "true", RUN_LABEL: mark()},
        }, image=ref, action="create the export container", kind=dict)
        cid = str(made["Id"])
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        try:
            with boundary(image=ref, action="export"), self.api.stream(
                "GET", f"/containers/{refs.container(cid)}/export", timeout=None,
            ) as body, open(tmp, "wb") as out:
                while chunk := body.read(CHUNK):
                    out.write(chunk)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
            with contextlib.suppress(CmanError):
                self._call("DELETE", f"/containers/{refs.container(cid)}", params={"force": True},
                           action="remove the export container")
        return dest
