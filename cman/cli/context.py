"""``cman context create|ls|rm|use|inspect``: named engine endpoints (:mod:`cman.contexts`)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from ..errors import CmanError, UsageError
from ._common import print_json, print_table, printable

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Name = Annotated[str, typer.Argument(help="Context name.", show_default=False)]


def _engine(docker: str | None, lxd: str | None, lxc: bool) -> tuple[str, str | None]:
    """Exactly one engine flag -> (backend, URL)."""
    given = [(b, u) for b, u, on in (("docker", docker, docker is not None), ("lxd", lxd, lxd is not None),
                                     ("lxc", None, lxc)) if on]
    if len(given) != 1:
        what = "no engine" if not given else " and ".join(f"--{b}" for b, _ in given)
        raise UsageError(f"a context has exactly one engine, got {what}",
                         hint="give one of --docker URL, --lxd URL or --lxc")
    return given[0]


def register(app: typer.Typer, only: str | None = None) -> None:
    """Add the ``context`` sub-app to ``app`` (when ``only`` is None or "context")."""
    if only not in (None, "context"):
        return
    context_app = typer.Typer(help="Contexts: named engine endpoints (other hosts), as docker contexts.",
                              no_args_is_help=True)
    app.add_typer(context_app, name="context")

    @context_app.command("create")
    def create(
        name: Name,
        docker: Annotated[str | None, typer.Option(
            "--docker", metavar="URL", help="A Docker daemon: unix:///PATH, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT].")] = None,
        lxd: Annotated[str | None, typer.Option(
            "--lxd", metavar="URL", help="An LXD daemon: https://HOST[:8443] (with --cert/--key) or unix:///LXD_DIR/unix.socket.")] = None,
        lxc: Annotated[bool, typer.Option("--lxc", help="Raw LXC on this host (with --lxcpath).")] = False,
        cert: Annotated[str | None, typer.Option("--cert", metavar="FILE", help="LXD: client certificate the server trusts.")] = None,
        key: Annotated[str | None, typer.Option("--key", metavar="FILE", help="LXD: the client certificate's key.")] = None,
        verify: Annotated[str | None, typer.Option(
            "--verify", metavar="FILE|false", help="LXD: the server's certificate (pinned), false, or true for the system CAs.")] = None,
        lxcpath: Annotated[str | None, typer.Option("--lxcpath", metavar="PATH", help="LXC: containers' directory (default /var/lib/lxc).")] = None,
    ) -> None:
        """Store a context: one engine and where it is. Files are kept 0600 in $XDG_CONFIG_HOME/cman/contexts."""
        from .. import contexts

        backend, url = _engine(docker, lxd, lxc)
        options = {k: v for k, v in (("cert", cert), ("key", key), ("verify", verify), ("lxcpath", lxcpath))
                   if v is not None}
        made = contexts.create(name, backend, url, options)
        sys.stdout.write(f"{made.name}\n")

    @context_app.command("ls")
    def ls(as_json: Json = False) -> None:
        """List contexts; the current one is marked '*' (default: none, the environment's engines)."""
        from .. import contexts

        chosen, _ = contexts.selected(None)
        items: list[dict[str, Any]] = [{"name": contexts.DEFAULT, "backend": None, "endpoint": None}]
        for n in contexts.names():
            try:
                items.append(contexts.load(n).to_dict())
            except CmanError as err:  # listed with what is wrong, so it can be fixed or removed
                items.append({"name": n, "backend": None, "endpoint": None, "error": str(err)})
        for item in items:
            item["current"] = item["name"] == (chosen or contexts.DEFAULT)
        if as_json:
            print_json(items)
            return
        print_table(["NAME", "BACKEND", "ENDPOINT"], [
            [item["name"] + (" *" if item["current"] else ""), item["backend"] or ("?" if "error" in item else "auto"),
             printable(item["endpoint"] or (f"error: {item['error']}" if "error" in item
                                            else "(environment, local engines)"))] for item in items])

    @context_app.command("inspect")
    def inspect(name: Name, as_json: Json = False) -> None:
        """Show a context: its backend, endpoint, options and the settings it gives the backend."""
        from .. import contexts

        found = contexts.load(name)
        data = {**found.to_dict(), "file": str(contexts.store_dir() / f"{found.name}.json"),
                "current": contexts.selected(None)[0] == found.name}
        if as_json:
            print_json(data)
            return
        for key in ("name", "backend", "endpoint", "file", "current"):
            sys.stdout.write(f"{key + ':':<10}{printable(str(data[key]).lower() if key == 'current' else str(data[key]))}\n")
        for k, v in found.options.items():
            sys.stdout.write(f"{k + ':':<10}{printable(v)}\n")
        for k, v in found.settings.items():
            sys.stdout.write(f"{'setting:':<10}{k}={printable(v)}\n")

    @context_app.command("use")
    def use(name: Annotated[str, typer.Argument(help="Context name, or default for none.", show_default=False)]) -> None:
        """Make a context the current one (``default``: none). --context and $CMAN_CONTEXT still win."""
        from .. import contexts

        contexts.use(name)
        sys.stdout.write(f"{name}\n")

    @context_app.command("rm")
    def rm(names: Annotated[list[str], typer.Argument(help="Context names.", show_default=False)]) -> None:
        """Remove contexts (the current one too: then there is none)."""
        from .. import contexts

        for name in names:
            contexts.remove(name)
            sys.stdout.write(f"{name}\n")
