"""One image on several engines: ``image import --backend all``, ``image copy`` and
``image bootstrap``, verbs made of several backends' calls.

Each target engine gets its own :class:`Outcome`; one engine's failure does not stop the
others, and an engine that does not answer is reported as skipped (with its probe's reason)
while the others proceed. :attr:`Report.exit_code` is 0 when every engine tried succeeded,
else the code of the first failure (NoEngine's 5 when no engine could be tried at all).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import backends, bootstrap
from ._sys.proc import mark
from .backends.base import Backend, Feature
from .errors import CmanError, Conflict, EngineUnavailable, ExitCode, InvalidValue, NoEngine, NotFound, UsageError
from .models import Image, ImageConfig, PruneResult

ALL = "all"
COPY_DIR_ENV = "CMAN_COPY_TMP"


@dataclass(frozen=True)
class Outcome:
    """What one engine did: the image it made, or the error it gave."""

    backend: str
    image: Image | None = None
    error: CmanError | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "ok": self.error is None,
            "image": self.image.to_dict() if self.image else None,
            "error": str(self.error) if self.error else None,
            "exit_code": int(self.error.exit_code) if self.error else 0,
        }


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[EngineUnavailable] = field(default_factory=list)
    """Engines of ``all`` that did not answer: not tried."""
    not_kept: list[str] = field(default_factory=list)
    """``image copy``: parts of the source image's config a target could not hold. Empty since
    every engine holds the whole config; kept for the CLI's warning and the JSON shape."""

    @property
    def exit_code(self) -> int:
        failed = [o.error for o in self.outcomes if o.error is not None]
        if failed:
            return int(failed[0].exit_code)
        return 0 if self.outcomes else int(ExitCode.UNAVAILABLE)

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [o.to_dict() for o in self.outcomes],
            "skipped": [{"backend": e.backend, "error": str(e)} for e in self.skipped],
            "not_kept": self.not_kept,
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class Targets:
    names: tuple[str, ...]
    skipped: tuple[EngineUnavailable, ...] = ()


def parse_targets(option: str, *, field_name: str = "--backend", exclude: str | None = None) -> Targets:
    """``all`` (every engine; those that do not answer are skipped, with why) or
    ``B[,B...]`` (each must be a backend's name). Bad input is exit 2, before any engine call."""
    if option == ALL:
        reachable = set(backends.reachable_names())
        names = [n for n in backends.names() if n in reachable and n != exclude]
        skipped = [_why_not(n) for n in backends.names() if n not in reachable and n != exclude]
        if not names:
            raise NoEngine()
        return Targets(tuple(names), tuple(skipped))
    parts = [p.strip() for p in option.split(",")]
    if not option or any(not p for p in parts):
        raise InvalidValue(field_name, option, f"write {ALL} or B[,B...] with B one of {', '.join(backends.names())}")
    names = list(dict.fromkeys(backends.checked(p, field_name) for p in parts))
    if exclude is not None and exclude in names:
        raise UsageError(f"{field_name} names the source engine {exclude}", hint="an image is copied to other engines")
    return Targets(tuple(names))


def _why_not(name: str) -> EngineUnavailable:
    status = backends.backend_class(name).probe()
    return EngineUnavailable(name, status.problem or "not reachable", status.fix or "see `cman engine status`")


def import_into(tarball: Path, name: str, targets: Targets,
                load: Callable[[str], Backend] = backends.load, *, config: ImageConfig | None = None) -> Report:
    """Import one rootfs tarball as ``name`` into each target engine (with ``config``, see
    :meth:`Backend.image_import`)."""
    if not Path(tarball).is_file():
        raise InvalidValue("TARBALL", str(tarball), "no such file")
    report = Report(skipped=list(targets.skipped))
    for bname in targets.names:
        try:
            backend = load(bname)
            backend.require(Feature.IMAGE_IMPORT)
            report.outcomes.append(Outcome(bname, image=backend.image_import(Path(tarball), name, config=config)))
        except CmanError as err:
            report.outcomes.append(Outcome(bname, error=err))
    return report


def _scratch(what: str) -> Path:
    """A private folder for a tarball in transit, named after this process (PID-STARTTIME)."""
    base = Path(os.environ.get(COPY_DIR_ENV) or tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix=f"cman-{what}-{mark().replace(':', '-')}-", dir=base))


def copy(image: str, source: str, targets: Targets, *, name: str | None = None,
         load: Callable[[str], Backend] = backends.load) -> Report:
    """Export ``image``'s root filesystem from ``source`` and import it into each target as
    ``name`` (default: the same name), with the source image's config (Entrypoint, Cmd, Env,
    WorkingDir, User: ``image inspect``'s ``extra["config"]``), which every engine holds.
    An image without one (an LXD or LXC import) gets each target's import defaults."""
    backends.checked(source, "--from")
    if source in targets.names:
        raise UsageError(f"--to names the source engine {source}", hint="an image is copied to other engines")
    src = load(source)
    src.require(Feature.IMAGE_EXPORT)
    info = src.image_inspect(image)  # ImageNotFound before anything is written
    from .oci import imageconfig

    config = imageconfig.of_image(info)
    work = _scratch("copy")
    try:
        tarball = src.image_export(image, work / "rootfs.tar")
        return import_into(tarball, name or image, targets, load, config=config)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bootstrap_image(text: str, targets: Targets, *, name: str | None = None, no_cache: bool = False,
                    progress: Callable[[str], None] = lambda _: None,
                    load: Callable[[str], Backend] = backends.load) -> tuple[bootstrap.Built, Report]:
    """Build (or take from the cache) a Debian rootfs with debootstrap and import it."""
    target = bootstrap.parse_target(text)
    built = bootstrap.build(target, no_cache=no_cache, progress=progress)
    return built, import_into(built.tarball, name or target.name, targets, load)


def target_names(option: str | None, default: Sequence[str]) -> Targets:
    """The engines a command acts on: ``option`` when given, else ``default``."""
    return parse_targets(option) if option else Targets(tuple(default))


def prune(backend: Backend, *, every: bool = False) -> PruneResult:
    """``image prune``: the engine's prune (images without a name that no container uses);
    with ``every`` (``--all``) also named images that no container uses.

    ``--all`` removes each remaining image whole (by its only name, or its ID), through the
    engine's ``image_remove`` without force, which refuses (InUse) an image a container uses:
    such an image is kept. An image the engine will not remove whole (Docker's image with
    several names) is kept too. The space freed is the engine's figure plus the sizes listed.

    On an engine that pulls through this host's OCI layout (LXD, LXC), the layout is pruned
    too (:func:`_prune_layout`), listed as ``oci-layout TAG`` with the bytes it freed.
    """
    base = backend.image_prune()
    removed, freed = list(base.removed), base.reclaimed_bytes or 0
    if every:
        for image in backend.images():
            ref = image.tags[0] if len(image.tags) == 1 else image.id
            try:
                backend.image_remove(ref)
            except (Conflict, NotFound):
                continue  # in use, several names, or gone meanwhile
            removed.append(ref)
            freed += image.size or 0
    dropped, layout_freed = _prune_layout(backend)
    if not every and not dropped and not layout_freed:
        return base
    return PruneResult(removed=(*removed, *dropped), reclaimed_bytes=freed + layout_freed)


def _prune_layout(backend: Backend) -> tuple[list[str], int]:
    """Drop the layout's tags whose image is on no engine of this host (only tags whose every
    pulling store was asked: an image in a store that is down, or in another LXC store, is
    not known to be gone), and the blobs no tag reaches. Skipped while the layout is in use."""
    if not backend.system_containers or not backend.locality().local:
        return [], 0
    from .oci import layout

    if not (layout.layout_dir() / "index.json").is_file():
        return [], 0
    live, asked = _live_layout_tags(backend)
    done = layout.housekeep(live, asked, backend.name)
    return [f"oci-layout {key}" for key in done.dropped], done.freed


def _live_layout_tags(pruned: Backend) -> tuple[set[str], set[str]]:
    """The layout tags (:func:`cman.oci.layout.tag_key`) of every image name on the engines
    that pull through the layout, and the stores asked (``Backend.layout_user``). An engine
    that is down or fails is not asked: the tags it pulled are kept."""
    from .oci import layout
    from .oci.refs import parse

    live: set[str] = set()
    asked: set[str] = set()
    for name in backends.names():
        cls = backends.backend_class(name)
        if not cls.system_containers:
            continue
        engine = pruned if name == pruned.name else None
        try:
            if engine is None:
                if not cls.probe().reachable:
                    continue
                engine = backends.load(name)
            images, user = engine.images(), engine.layout_user()
        except CmanError:
            continue
        finally:
            if engine is not None and engine is not pruned:
                engine.close()
        if user is not None:
            asked.add(user)
        for image in images:
            for tag in image.tags:
                try:
                    live.add(layout.tag_key(parse(tag)))
                except CmanError:
                    continue  # not a reference (an LXD alias with other rules): no tag of it
    return live, asked
