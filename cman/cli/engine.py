"""``cman engine``: is each engine usable, and what can each backend do."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import backends
from ..backends.base import Feature
from ..errors import CmanError, ExitCode, Unsupported
from ..models import ClusterMember, EngineStatus
from ._common import print_json, print_table, session, warn


def _features(name: str) -> frozenset[Feature]:
    """What the backend can do where it is configured; its class's list if it cannot be set up here."""
    try:
        backend = backends.load(name)
    except CmanError:
        return backends.backend_class(name).capabilities
    try:
        return backend.features()
    finally:
        backend.close()


def _members(status: EngineStatus) -> list[ClusterMember] | None:
    """The cluster members of a reachable engine that is clustered; None for one that is not.
    A failure to list them is a warning, not a failed status."""
    if not status.reachable or Feature.CLUSTER not in backends.backend_class(status.backend).capabilities:
        return None
    try:
        backend = backends.load(status.backend)
    except CmanError:
        return None
    try:
        return backend.cluster_members()
    except Unsupported:
        return None  # not a cluster member
    except CmanError as err:
        warn(f"{status.backend}: cannot list the cluster members: {err}")
        return None
    finally:
        backend.close()


def _jsonable_members(found: list[ClusterMember] | None) -> list[dict[str, object]] | None:
    return None if found is None else [m.to_dict() for m in found]


def register(app: typer.Typer, only: str | None = None) -> None:
    """Define the commands; add to ``app`` only ``only`` when given."""
    engine_app = typer.Typer(help="Engines: status and features.", no_args_is_help=True)
    @engine_app.command("status")
    def status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """For each backend: installed, running, reachable, and the exact fix when not.

        Exits 0 when every backend shown is reachable, 5 otherwise.
        """
        explicit = session(ctx).explicit_backend()
        names = [explicit] if explicit else backends.names()
        results = [backends.backend_class(n).probe() for n in names]
        members = {r.backend: _members(r) for r in results}
        if as_json:
            print_json([{**r.to_dict(), "cluster_members": _jsonable_members(members[r.backend])} for r in results])
        else:
            yn = {True: "yes", False: "no"}
            print_table(
                ["BACKEND", "INSTALLED", "RUNNING", "REACHABLE", "VERSION", "ENDPOINT"],
                [[r.backend, yn[r.installed], yn[r.running], yn[r.reachable], r.version or "-", r.endpoint or "-"] for r in results],
            )
            for r in results:
                if not r.reachable:
                    typer.echo(f"{r.backend}: {r.problem}\n  fix: {r.fix}")
            for bname, found in members.items():
                if found is not None:
                    typer.echo(f"\n{bname} cluster members:")
                    print_table(["MEMBER", "STATUS", "URL", "ROLES", "MESSAGE"],
                                [[m.name, m.status, m.url, ",".join(m.roles) or "-", m.message] for m in found])
        if not all(r.reachable for r in results):
            raise typer.Exit(int(ExitCode.UNAVAILABLE))

    @engine_app.command("features")
    def features(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
        """The backend x feature support matrix, for each engine where it is configured.

        A remote engine (DOCKER_HOST, CMAN_LXD_ENDPOINT elsewhere) lacks what needs this host.
        """
        found = {n: _features(n) for n in backends.names()}
        if as_json:
            print_json({n: sorted(str(f) for f in fs) for n, fs in found.items()})
            return
        print_table(
            ["FEATURE", *found],
            [[str(f), *("yes" if f in fs else "no" for fs in found.values())] for f in Feature],
        )

    from .engine_configure import register as register_configure

    register_configure(engine_app)

    if only in (None, "engine"):
        app.add_typer(engine_app, name="engine")
