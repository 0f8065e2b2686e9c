"""Image verbs: ``cman pull``, ``cman images`` and the ``cman image`` sub-app."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InvalidValue
from ..models import Image, PullProgress
from ._common import human_size, print_json, print_table, printable, say_error, session, warn
from ._common import only_command as _only

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Targets = Annotated[str | None, typer.Option("--backend", "-B", help="B, B,B or all (every reachable engine).")]


def _session_all(ctx: typer.Context) -> str | None:
    """The global ``--backend all`` (or ``B,B``): several engines; None for one engine."""
    option = session(ctx).backend_option
    return option if option and (option == "all" or "," in option) else None


def _progress(line: str) -> None:
    sys.stderr.write(f"cman: {printable(line)}\n")
    sys.stderr.flush()


def _finish(report: Any, name: str, as_json: bool) -> None:
    """Per-engine lines of an :class:`~cman.imagesync.Report`: made images on stdout, failures
    and skipped engines on stderr; exit with the report's code."""
    if as_json:
        print_json(report.to_dict())
    for outcome in report.outcomes:
        if outcome.error is not None:
            say_error(f"{outcome.backend}: {outcome.error}")
        elif not as_json:
            sys.stdout.write(f"{outcome.backend}:{name} {outcome.image.id}\n")
    for err in report.skipped:
        say_error(f"{err} (skipped)")
    if report.not_kept:
        warn(f"not kept on the targets (a rootfs import carries no image config): {', '.join(report.not_kept)}")
    if report.exit_code:
        raise typer.Exit(report.exit_code)


class _PlainProgress:
    """Not a terminal: one line per layer status change, no byte-level noise."""

    def __init__(self) -> None:
        self.last: dict[str | None, str] = {}

    def __call__(self, event: PullProgress) -> None:
        if self.last.get(event.layer) == event.status:
            return
        self.last[event.layer] = event.status
        prefix = f"{event.layer}: " if event.layer else ""
        sys.stderr.write(f"{prefix}{event.status}\n")
        sys.stderr.flush()


class _BarProgress:
    """A terminal: a rich progress bar per layer."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def __call__(self, event: PullProgress) -> None:
        if not event.layer:
            self.progress.console.print(event.status)
            return
        task = self.tasks.get(event.layer)
        label = f"{event.layer[:12]}: {event.status}"
        if task is None:
            task = self.tasks[event.layer] = self.progress.add_task(label, total=event.total)
        done = event.status.lower() in ("pull complete", "already exists", "download complete")
        self.progress.update(
            task,
            description=label,
            completed=event.current if event.current is not None else (event.total if done else None),
            total=event.total if event.total else None,
        )
        if done:
            t = self.progress.tasks[task]
            self.progress.update(task, total=t.total or 1, completed=t.total or 1)

    def close(self) -> None:
        self.progress.stop()


def pull_progress_printer() -> Callable[[PullProgress], None]:
    if sys.stderr.isatty():
        return _LazyBar()
    return _PlainProgress()


class _LazyBar:
    """Creates the rich bar only when a pull actually happens (rich costs import time)."""

    def __init__(self) -> None:
        self.bar: _BarProgress | None = None

    def __call__(self, event: PullProgress) -> None:
        if self.bar is None:
            self.bar = _BarProgress()
        self.bar(event)

    def __del__(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _print_images(items: list[Image], as_json: bool, contexts: list[str] | None = None) -> None:
    """With ``contexts`` (``--context all``: each image's context), a CONTEXT column and key first."""
    where = contexts or [""] * len(items)
    if as_json:
        print_json([{**({"context": c} if contexts else {}), **i.to_dict()} for c, i in zip(where, items, strict=True)])
        return
    rows = []
    for c, i in zip(where, items, strict=True):
        for tag in i.tags or ("<none>",):
            rows.append([*([c] if contexts else []), i.backend, tag, i.id.removeprefix("sha256:")[:12],
                         i.created and i.created.strftime("%Y-%m-%d %H:%M"), human_size(i.size)])
    print_table([*(["CONTEXT"] if contexts else []), "BACKEND", "IMAGE", "ID", "CREATED", "SIZE"], rows)


def register(app: typer.Typer, only: str | None = None) -> None:
    """Define the commands; add to ``app`` only ``only`` when given."""
    command = _only(app, only)
    image_app = typer.Typer(help="Manage images.", no_args_is_help=True)
    @command("pull")
    def pull(ctx: typer.Context, image: Annotated[str, typer.Argument(help="Image reference.")]) -> None:
        """Fetch an image, with a progress bar per layer on a terminal."""
        session(ctx).check_image(image)
        backend = session(ctx).backend()
        printer = pull_progress_printer()
        for event in backend.pull(image):
            printer(event)
        if isinstance(printer, _LazyBar) and printer.bar:
            printer.bar.close()
            printer.bar = None
        sys.stdout.write(f"{backend.name}:{image}\n")

    @command("images")
    def images(ctx: typer.Context, as_json: Json = False) -> None:
        """List images (same as `cman image ls`)."""
        _ls(ctx, as_json)

    def _ls(ctx: typer.Context, as_json: bool) -> None:
        s = session(ctx)
        if s.all_contexts:  # every context at once; exit 0 when at least one answered
            found = [(where, i) for where, listed in s.each_context(lambda b: b.images()) for i in listed]
            _print_images([i for _, i in found], as_json, [where for where, _ in found])
            return
        items: list[Image] = []
        for bname in s.listing_backends():
            items.extend(s.backend(bname).images())
        _print_images(items, as_json)

    @image_app.command("ls")
    def image_ls(ctx: typer.Context, as_json: Json = False) -> None:
        """List images."""
        _ls(ctx, as_json)

    @image_app.command("inspect")
    def image_inspect(ctx: typer.Context, image: str, as_json: Json = False) -> None:
        """Show an image's details."""
        img = session(ctx).backend().image_inspect(image)
        if as_json:
            print_json(img.to_dict())
            return
        for key, value in img.to_dict().items():
            if key != "extra":
                sys.stdout.write(f"{key + ':':<14}{value}\n")

    @image_app.command("history")
    def image_history(ctx: typer.Context, image: str, as_json: Json = False) -> None:
        """Show an image's layers."""
        layers = session(ctx).backend().image_history(image)
        if as_json:
            print_json([layer.to_dict() for layer in layers])
            return
        print_table(
            ["ID", "CREATED", "CREATED BY", "SIZE"],
            [[layer.id.removeprefix("sha256:")[:12], layer.created, layer.created_by[:60], human_size(layer.size)] for layer in layers],
        )

    @image_app.command("rm")
    def image_rm(
        ctx: typer.Context,
        images: list[str],
        force: Annotated[bool, typer.Option("--force", "-f", help="Remove even if containers use it.")] = False,
    ) -> None:
        """Remove images (refused while a container uses one, unless --force)."""
        backend = session(ctx).backend()
        for image in images:
            backend.image_remove(image, force=force)
            sys.stdout.write(f"{image}\n")

    @image_app.command("prune")
    def image_prune(
        ctx: typer.Context,
        every: Annotated[bool, typer.Option("--all", "-a", help="Also named images that no container uses.")] = False,
        as_json: Json = False,
    ) -> None:
        """Remove unnamed images (with --all: every image) that no container uses; prints what
        was removed and the space freed."""
        from .. import imagesync

        result = imagesync.prune(session(ctx).backend(), every=every)
        if as_json:
            print_json(result.to_dict())
            return
        for item in result.removed:
            sys.stdout.write(f"deleted: {item}\n")
        sys.stdout.write(f"reclaimed: {human_size(result.reclaimed_bytes)}\n")

    @image_app.command("import")
    def image_import(
        ctx: typer.Context,
        tarball: Annotated[Path, typer.Argument(help="A rootfs tarball (.tar, .tar.gz, .tar.xz).")],
        name: Annotated[str, typer.Argument(help="Image name to give it.")],
        backend: Targets = None,
        as_json: Json = False,
    ) -> None:
        """Make an image from a rootfs tarball: the offline path. With --backend all (or B,B),
        on each engine: one line per engine; exit 0 when all succeeded, else the first failure's code."""
        from .. import imagesync

        if not tarball.is_file():
            raise InvalidValue("TARBALL", str(tarball), "no such file")
        option = backend or _session_all(ctx)
        if option is None:
            img = session(ctx).backend().image_import(tarball, name)
            if as_json:
                print_json(img.to_dict())
                return
            sys.stdout.write(f"{img.backend}:{name} {img.id}\n")
            return
        _finish(imagesync.import_into(tarball, name, imagesync.parse_targets(option)), name, as_json)

    @image_app.command("bootstrap")
    def image_bootstrap(
        ctx: typer.Context,
        image: Annotated[str, typer.Argument(help="debian:RELEASE, a release debootstrap on this host can build.")],
        name: Annotated[str | None, typer.Option("--name", help="Image name (default: IMAGE).")] = None,
        backend: Targets = None,
        no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild the cached rootfs.")] = False,
        as_json: Json = False,
    ) -> None:
        """Build a Debian image with debootstrap from the host's Debian mirror, and import it."""
        from .. import bootstrap, imagesync

        target = bootstrap.parse_target(image)  # exit 2 before any engine call or build
        option = backend or _session_all(ctx)
        targets = imagesync.parse_targets(option) if option else imagesync.Targets((session(ctx).backend().name,))
        built, report = imagesync.bootstrap_image(image, targets, name=name, no_cache=no_cache, progress=_progress)
        how = "from the cache" if built.cached else f"built in {built.seconds:.1f} s from {built.mirror}"
        _progress(f"{built.tarball}: {how}")
        _finish(report, name or target.name, as_json)

    @image_app.command("copy")
    def image_copy(
        image: Annotated[str, typer.Argument(help="The image on the source engine.")],
        source: Annotated[str, typer.Option("--from", help="The engine that has the image.")],
        to: Annotated[str, typer.Option("--to", help="B[,B...] or all: the engines to copy it to.")],
        name: Annotated[str | None, typer.Option("--name", help="Image name on the targets (default: IMAGE).")] = None,
        as_json: Json = False,
    ) -> None:
        """Make the same root filesystem an image on other engines; exit as import --backend all."""
        from .. import backends, imagesync

        backends.checked(source, "--from")
        targets = imagesync.parse_targets(to, field_name="--to", exclude=source)
        _finish(imagesync.copy(image, source, targets, name=name), name or image, as_json)

    if only in (None, "image"):
        app.add_typer(image_app, name="image")
