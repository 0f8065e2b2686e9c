"""``cman network``: create, ls, inspect, rm; the same spec and the same answers on every backend."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from .. import backends
from ..errors import CmanError, UsageError
from ._common import backends_split, print_json, print_table, say_error, session, warn

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..network import Network
    from ._common import Session

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Names = Annotated[list[str], typer.Argument(help="NAME or BACKEND:NAME.", show_default=False)]


def _networking(name: str) -> bool:
    from ..backends.base import Feature

    return Feature.NETWORKS in backends.backend_class(name).capabilities


def _resolve(s: Session, ref: str) -> tuple[Backend, str]:
    """NAME or BACKEND:NAME -> (backend, name); a bare NAME found on several backends is an error."""
    from ..errors import NetworkNotFound

    prefix, name = backends_split(ref)
    if prefix:
        return s.backend(prefix), name
    if s.explicit_backend():
        return s.backend(), name
    candidates = [b for b in s.listing_backends() if _networking(b)]
    if len(candidates) == 1:
        return s.backend(candidates[0]), name
    hits = []
    refused: UsageError | None = None
    for bname in candidates:
        try:
            s.backend(bname).network_inspect(name)
        except UsageError as err:  # the name itself is bad: say so rather than "not found"
            refused = refused or err
            continue
        except CmanError:
            continue
        hits.append(bname)
    if not hits:
        raise refused or NetworkNotFound(name)
    if len(hits) > 1:
        raise UsageError(f"network {name!r} exists on {', '.join(hits)}",
                         hint="write " + " or ".join(f"{b}:{name}" for b in hits))
    return s.backend(hits[0]), name


def _others(s: Session, backend: Backend) -> list[Network]:
    """Networks of the other reachable backends: a new subnet must not overlap them either."""
    out: list[Network] = []
    for bname in backends.names():
        if bname == backend.name or not _networking(bname) or not backends.quick_reachable(bname):
            continue
        try:
            out.extend(s.backend(bname).networks())
        except CmanError as err:
            warn(f"{bname}: cannot list its networks to check for overlaps: {err}")
    return out


def _row(n: Network) -> list[object]:
    return [n.backend, n.name, n.bridge or "-", n.subnet or "-", n.gateway or "-", "on" if n.icc else "off",
            ",".join(n.dns) or "-", len(n.containers), "yes" if n.managed else "no"]


def _describe(n: Network) -> None:
    fields = [
        ("backend", n.backend), ("name", n.name), ("id", n.id), ("managed", n.managed), ("bridge", n.bridge),
        ("subnet", n.subnet), ("gateway", n.gateway), ("icc", "on" if n.icc else "off"),
        ("dns", " ".join(n.dns) or "-"), ("dns-search", " ".join(n.dns_search) or "-"),
        ("created", n.created.isoformat() if n.created else None),
        ("containers", " ".join(n.containers) or "-"),
    ]
    for key, value in fields:
        sys.stdout.write(f"{key + ':':<12}{value}\n")
    for rule in n.extra.get("host_rules") or []:
        sys.stdout.write(f"{'host rule:':<12}iptables {rule}\n")
    for port in n.extra.get("isolated_ports") or []:
        sys.stdout.write(f"{'isolated:':<12}{port}\n")


def register(app: typer.Typer, only: str | None = None) -> None:
    """Define the commands; add to ``app`` only when ``only`` is None or "network"."""
    net_app = typer.Typer(
        help="Networks: a bridge with a subnet, a gateway, DNS settings and optional isolation.",
        no_args_is_help=True,
    )

    @net_app.command("create")
    def create(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="NAME or BACKEND:NAME.")],
        subnet: Annotated[str | None, typer.Option("--subnet", help="IPv4 CIDR (default: a free /24 chosen by cman).")] = None,
        gateway: Annotated[str | None, typer.Option("--gateway", help="Host address on the bridge (default: the first host).")] = None,
        bridge: Annotated[str | None, typer.Option("--bridge", help="Bridge interface name, at most 15 characters.")] = None,
        dns: Annotated[list[str] | None, typer.Option("--dns", help="DNS server for containers (repeatable).")] = None,
        dns_search: Annotated[list[str] | None, typer.Option("--dns-search", help="DNS search domain (repeatable).")] = None,
        icc: Annotated[bool, typer.Option("--icc/--no-icc", help="Let containers talk to each other (default) or isolate them.")] = True,
        as_json: Json = False,
    ) -> None:
        """Create a network; with the same spec again it succeeds without a change.

        The same name with another spec is an error that lists the differences.
        """
        from ..lifecycle import check_static, create_network
        from ..network import NetworkSpec

        prefix, bare = backends_split(name)
        spec = NetworkSpec(name=bare, subnet=subnet, gateway=gateway, bridge=bridge,
                           dns=tuple(dns or ()), dns_search=tuple(dns_search or ()), icc=icc)
        s = session(ctx)
        backend = s.backend(prefix)
        check_static(backend, spec)
        net, created = create_network(backend, spec, others=_others(s, backend))
        if as_json:
            print_json({**net.to_dict(), "created": created})
        elif created:
            sys.stdout.write(f"created {net.ref}: subnet {net.subnet}, gateway {net.gateway}, bridge {net.bridge}, "
                             f"icc {'on' if net.icc else 'off'}\n")
        else:
            sys.stdout.write(f"{net.ref} already exists with this spec: no change\n")

    @net_app.command("ls")
    def ls(
        ctx: typer.Context,
        as_json: Json = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only names, as BACKEND:NAME.")] = False,
    ) -> None:
        """List bridge networks of every reachable backend that has networks (or the chosen one)."""
        s = session(ctx)
        found: list[Network] = []
        explicit = s.explicit_backend()
        for bname in s.listing_backends():
            if not explicit and not _networking(bname):
                continue
            try:
                found.extend(s.backend(bname).networks())
            except CmanError as err:
                if explicit:
                    raise
                warn(f"{bname}: {err}")
        if quiet:
            sys.stdout.write("".join(f"{n.ref}\n" for n in found))
        elif as_json:
            print_json([n.to_dict() for n in found])
        else:
            print_table(["BACKEND", "NAME", "BRIDGE", "SUBNET", "GATEWAY", "ICC", "DNS", "CONTAINERS", "MANAGED"],
                        [_row(n) for n in found])

    @net_app.command("inspect")
    def inspect(ctx: typer.Context, names: Names, as_json: Json = False) -> None:
        """Show networks' details, with the host rules cman installed for them."""
        s = session(ctx)
        found = []
        for ref in names:
            backend, name = _resolve(s, ref)
            found.append(backend.network_inspect(name))
        if as_json:
            print_json([n.to_dict() for n in found])
            return
        for i, n in enumerate(found):
            if i:
                sys.stdout.write("\n")
            _describe(n)

    @net_app.command("rm")
    def rm(
        ctx: typer.Context,
        names: Names,
        force: Annotated[bool, typer.Option("--force", "-f", help="Disconnect attached containers first (they are kept).")] = False,
        as_json: Json = False,
    ) -> None:
        """Remove networks; refused while containers are attached, unless -f."""
        from ..lifecycle import remove_network

        s = session(ctx)
        first: CmanError | None = None
        removed: list[str] = []
        for ref in names:
            try:
                backend, name = _resolve(s, ref)
                remove_network(backend, name, force=force)
                removed.append(f"{backend.name}:{name}")
                if not as_json:
                    sys.stdout.write(ref + "\n")
            except CmanError as err:
                if len(names) == 1:
                    raise
                say_error(err)
                first = first or err
        if as_json:
            print_json({"removed": removed})
        if first is not None:
            raise typer.Exit(int(first.exit_code))

    if only in (None, "network"):
        app.add_typer(net_app, name="network")
