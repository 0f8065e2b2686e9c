"""Docker ``image_import``: a rootfs tarball as an image, with the config it should have.

``POST /images/create?fromSrc=-`` takes the tarball and ``changes``: Dockerfile lines the
daemon parses as one Dockerfile (each value of the query parameter is a line; cman sends
them joined with newlines, which the daemon joins the same way). So every value is written
so the parser gives it back exactly, checked on Docker 20.10 (API 1.41) by a round trip
through ``image inspect``:

- ENTRYPOINT and CMD in JSON (exec) form: no shell, no variable expansion;
- ENV, WORKDIR and USER values as JSON strings with ``$`` escaped: inside double quotes the
  parser unescapes ``\\"``, ``\\\\`` and ``\\$`` and expands nothing else.

A value with a control character (a newline would start a new instruction) is refused
(InvalidValue, exit 2) before the daemon is called, as is an env key that is not one word.

Without a config an import gets ``CMD ["/bin/sh"]`` (:data:`~.images.DEFAULT_CMD`), so
``cman run -it IMAGE`` gives a shell. This mixin comes before :class:`~.images.DockerImages`
in the backend's bases, so its ``image_import`` is the backend's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import EngineError, InvalidValue
from .connection import boundary
from .images import DEFAULT_CMD, IMAGE_ID_RE, DockerImages, progress_error, progress_event, repo_and_tag

if TYPE_CHECKING:
    from ...models import Image, ImageConfig

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ENV_KEY = re.compile(r"[^\s=\"'$\\\x00-\x1f\x7f-][^\s=\"'$\\\x00-\x1f\x7f]*")


def _text(what: str, value: str) -> str:
    if _CONTROL.search(value):
        raise InvalidValue("image config", f"{what}={value!r}", "contains a newline or another control character")
    return value


def _quoted(what: str, value: str) -> str:
    """A Dockerfile word that the parser turns back into ``value``."""
    return json.dumps(_text(what, value), ensure_ascii=False).replace("$", "\\$")


def changes(config: ImageConfig | None) -> str:
    """The Dockerfile lines that give an imported image ``config`` (see the module's docstring)."""
    if config is None:
        return f"CMD {json.dumps(list(DEFAULT_CMD))}"
    lines = []
    for word, argv in (("ENTRYPOINT", config.entrypoint), ("CMD", config.cmd)):
        if argv:
            lines.append(f"{word} {json.dumps([_text(word, a) for a in argv])}")
    for entry in config.env:
        key, eq, value = entry.partition("=")
        if not eq or not _ENV_KEY.fullmatch(key):
            raise InvalidValue("image config", f"Env={entry!r}", "not KEY=VALUE with KEY one word")
        lines.append(f"ENV {key}={_quoted('Env', value)}")
    for word, value in (("WORKDIR", config.workdir), ("USER", config.user)):
        if value.startswith("-"):
            raise InvalidValue("image config", f"{word}={value!r}", "must not start with '-'")
        if value:
            lines.append(f"{word} {_quoted(word, value)}")
    return "\n".join(lines)


class DockerImports(DockerImages):
    def image_import(self, tarball: Path, name: str, *, config: ImageConfig | None = None) -> Image:
        self.validate_image_name(name)
        repo, tag = repo_and_tag(name)
        lines = changes(config)  # bad values: exit 2 before the daemon is called
        with boundary(image=name, action="import"), open(tarball, "rb") as data, self.api.stream(
            "POST", "/images/create",
            params={"fromSrc": "-", "repo": repo, "tag": tag, "changes": lines or None},
            data=data, content_type="application/x-tar",
        ) as body:
            made = None
            for line in body.read().splitlines():
                event = progress_event(line, f"import {name}") if line.strip() else {}
                if (text := progress_error(event)) is not None:
                    raise EngineError(f"docker import {name}: {text}")
                status = str(event.get("status") or "")
                if IMAGE_ID_RE.fullmatch(status):
                    made = status
        # By the ID the daemon reports: the name may already be on another import's image
        # (parallel imports under one name).
        return self.image_inspect(made or f"{repo}:{tag}")
