"""Container verbs, docker-style at the top level: run, create, ps, start, stop, ..."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import CmanError, ExitCode, Interrupted
from ..models import NO_NETWORK, ContainerSpec
from ..validate import parse_cpus, parse_env, parse_labels, parse_size
from ._common import only_command as _only
from ._common import print_json, say_error, session, terminal_stdio, warn
from .images import pull_progress_printer
from .ps import ps as list_containers

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..profiles import Profile

# Options after IMAGE belong to the container's command, as with `docker run`.
PASSTHROUGH = {"allow_interspersed_args": False}

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
NetworkOpt = Annotated[str | None, typer.Option("--network", help="Join this network (see `cman network`).")]
IpOpt = Annotated[str | None, typer.Option("--ip", help="IPv4 address on --network (default: the first free one: Docker picks it, cman does on LXD and LXC).")]
DnsOpt = Annotated[list[str] | None, typer.Option("--dns", help="DNS server (repeatable; default: the network's).")]
DnsSearchOpt = Annotated[
    list[str] | None, typer.Option("--dns-search", help="DNS search domain (repeatable; default: the network's).")
]
Names = Annotated[list[str], typer.Argument(help="NAME or BACKEND:NAME.", show_default=False)]
ProfileOpt = Annotated[list[str] | None, typer.Option(
    "--profile", help="Settings from this profile (repeatable: later ones win; flags win over all; see `cman profile ls`).")]
TargetOpt = Annotated[str | None, typer.Option(
    "--target", help="The cluster member to put the container on (LXD clusters; @GROUP for a cluster group).")]
PrivilegedOpt = Annotated[bool, typer.Option(
    "--privileged", help="Run without the engine's confinement (user namespace, AppArmor, capabilities); cman says so on stderr.")]

PRIVILEGED_MEANS = {
    "docker": "all capabilities and host devices, no seccomp or AppArmor confinement",
    "lxd": "no user namespace (root inside is root on the host; LXD's security.privileged)",
    "lxc": "no user namespace (root inside is root on the host) and no AppArmor profile",
}
"""What --privileged gives up on each engine, said on stderr whenever it is used."""


def _say_privileged(backend: str) -> None:
    means = PRIVILEGED_MEANS.get(backend, "without the engine's default confinement")
    warn(f"the container runs privileged on {backend}: {means}")


def _run_exit(err: CmanError) -> typer.Exit:
    """run/exec report cman's own failures as 125 (126/127 kept), like `docker run`."""
    say_error(err)
    code = err.exit_code
    if code not in (ExitCode.CANNOT_INVOKE, ExitCode.COMMAND_NOT_FOUND, ExitCode.INTERRUPTED):
        code = ExitCode.RUN_FAILED
    return typer.Exit(int(code))


def _spec(
    image: str,
    command: list[str] | None,
    name: str | None,
    env: list[str] | None,
    label: list[str] | None,
    cpus: str | None,
    memory: str | None,
    interactive: bool,
    tty: bool,
    network: str | None = None,
    ip: str | None = None,
    dns: list[str] | None = None,
    dns_search: list[str] | None = None,
    privileged: bool = False,
    profile: Profile | None = None,
    target: str | None = None,
) -> ContainerSpec:
    """The spec from the merged profiles, then the flags over them (README "Profiles": flags win;
    ``-e``/``--label`` merge by key, ``--dns``/``--dns-search``/``--network`` replace)."""
    if network is not None or ip is not None or dns or dns_search:
        from ..errors import InvalidValue
        from ..network import check_dns_servers, check_network_name, check_search_domains, parse_host_address

        if network is not None:
            check_network_name(network)
        if ip is not None:
            if network is None and (profile is None or profile.network is None):
                raise InvalidValue("--ip", ip, "needs --network (or a profile's network)")
            ip = str(parse_host_address(ip, None, "--ip"))
        dns = list(check_dns_servers(dns or ()))
        dns_search = list(check_search_domains(dns_search or ()))
    from dataclasses import replace

    from ..lifecycle import spec_with_profile

    return replace(spec_with_profile(
        profile, image=image, name=name, command=tuple(command or ()), env=parse_env(env or []),
        labels=parse_labels(label or []), tty=tty, interactive=interactive,
        cpus=parse_cpus(cpus) if cpus is not None else None, memory=parse_size(memory) if memory is not None else None,
        network=network, ip=ip, dns=tuple(dns or ()), dns_search=tuple(dns_search or ()), privileged=privileged),
        target=target)


def _profile(names: list[str] | None) -> Profile | None:
    """``--profile A --profile B`` loaded and merged (None without any)."""
    if not names:
        return None
    from .. import profiles

    return profiles.load_many(names)


def _prepare(ctx: typer.Context, spec: ContainerSpec, profile: Profile | None, network_flag: str | None) -> Backend:
    """Everything between a spec and ``lifecycle.run``/``create``: the backend, the checks that need
    no engine call, the privileged notice, and a profile's network made when missing."""
    from .. import lifecycle

    s = session(ctx)
    s.check_image(spec.image)
    backend = s.backend()
    lifecycle.check_spec(backend, spec)
    if spec.privileged:
        _say_privileged(backend.name)
    if profile is not None and network_flag is None and profile.network not in (None, NO_NETWORK):
        from .network import _others

        assert profile.network is not None
        net, created = lifecycle.ensure_network(backend, profile.network, icc=profile.icc,
                                                others=_others(s, backend))
        if created:
            warn(f"created network {net.ref} (icc {'on' if net.icc else 'off'}) for profile {profile.name}")
    return backend


def register(app: typer.Typer, only: str | None = None) -> None:
    """Define the commands; add to ``app`` only ``only`` when given."""
    command = _only(app, only)
    @command("run", context_settings=PASSTHROUGH)
    def run(
        ctx: typer.Context,
        image: Annotated[str, typer.Argument(help="Image to run (pulled when missing).")],
        command: Annotated[list[str] | None, typer.Argument(help="Command and its arguments.")] = None,
        interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Keep stdin open.")] = False,
        tty: Annotated[bool, typer.Option("--tty", "-t", help="Allocate a pseudo-terminal.")] = False,
        rm: Annotated[bool, typer.Option("--rm", help="Remove the container when it exits, fails or is interrupted.")] = False,
        detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background and print the ID.")] = False,
        name: Annotated[str | None, typer.Option("--name", help="Container name.")] = None,
        env: Annotated[list[str] | None, typer.Option("--env", "-e", help="Environment K=V (repeatable).")] = None,
        label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Label K=V (repeatable).")] = None,
        cpus: Annotated[str | None, typer.Option("--cpus", help="CPU limit, e.g. 0.5.")] = None,
        memory: Annotated[str | None, typer.Option("--memory", "-m", help="Memory limit, e.g. 512m.")] = None,
        network: NetworkOpt = None,
        ip: IpOpt = None,
        dns: DnsOpt = None,
        dns_search: DnsSearchOpt = None,
        privileged: PrivilegedOpt = False,
        profile: ProfileOpt = None,
        target: TargetOpt = None,
    ) -> None:
        """Create and start a container; the command's exit code becomes cman's."""
        from .. import lifecycle

        try:
            merged = _profile(profile)
            spec = _spec(image, command, name, env, label, cpus, memory, interactive, tty,
                         network, ip, dns, dns_search, privileged, merged, target)
            backend = _prepare(ctx, spec, merged, network)
            outcome = lifecycle.run(
                backend,
                spec,
                terminal_stdio(interactive=interactive, tty=tty),
                remove=rm,
                detach=detach,
                on_progress=pull_progress_printer(),
            )
        except Interrupted as err:
            say_error(err)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from err
        except CmanError as err:
            raise _run_exit(err) from err
        for message in outcome.warnings:
            warn(message)
        if detach:
            sys.stdout.write(outcome.container.id + "\n")
            return
        raise typer.Exit(outcome.exit_code or 0)

    @command("create", context_settings=PASSTHROUGH)
    def create(
        ctx: typer.Context,
        image: Annotated[str, typer.Argument(help="Image (pulled when missing).")],
        command: Annotated[list[str] | None, typer.Argument(help="Command and its arguments.")] = None,
        interactive: Annotated[bool, typer.Option("--interactive", "-i")] = False,
        tty: Annotated[bool, typer.Option("--tty", "-t")] = False,
        name: Annotated[str | None, typer.Option("--name")] = None,
        env: Annotated[list[str] | None, typer.Option("--env", "-e")] = None,
        label: Annotated[list[str] | None, typer.Option("--label", "-l")] = None,
        cpus: Annotated[str | None, typer.Option("--cpus")] = None,
        memory: Annotated[str | None, typer.Option("--memory", "-m")] = None,
        network: NetworkOpt = None,
        ip: IpOpt = None,
        dns: DnsOpt = None,
        dns_search: DnsSearchOpt = None,
        privileged: PrivilegedOpt = False,
        profile: ProfileOpt = None,
        target: TargetOpt = None,
    ) -> None:
        """Create a container without starting it; print its ID."""
        from .. import lifecycle

        merged = _profile(profile)
        spec = _spec(image, command, name, env, label, cpus, memory, interactive, tty, network, ip, dns, dns_search,
                     privileged, merged, target)
        backend = _prepare(ctx, spec, merged, network)
        sys.stdout.write(lifecycle.create(backend, spec, on_progress=pull_progress_printer()).id + "\n")

    @command("ps")
    def ps(
        ctx: typer.Context,
        all_: Annotated[bool, typer.Option("--all", "-a", help="Show stopped containers too.")] = False,
        as_json: Json = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only names, as BACKEND:NAME.")] = False,
    ) -> None:
        """List containers on every reachable backend (or the chosen one); with --context all, in
        every context at once (exit 0 when at least one answered)."""
        list_containers(session(ctx), all_=all_, as_json=as_json, quiet=quiet)

    @command("start")
    def start(ctx: typer.Context, names: Names) -> None:
        """Start stopped containers."""
        _each(ctx, names, lambda b, n: b.start(n))

    @command("stop")
    def stop(
        ctx: typer.Context,
        names: Names,
        time: Annotated[float, typer.Option("--time", "-t", help="Seconds to wait before killing.")] = 10,
    ) -> None:
        """Stop containers: SIGTERM (or the engine's clean shutdown), then kill after --time."""
        _each(ctx, names, lambda b, n: b.stop(n, timeout=time))

    @command("restart")
    def restart(
        ctx: typer.Context,
        names: Names,
        time: Annotated[float, typer.Option("--time", "-t", help="Seconds to wait before killing.")] = 10,
    ) -> None:
        """Restart containers."""
        _each(ctx, names, lambda b, n: b.restart(n, timeout=time))

    @command("rm")
    def rm(
        ctx: typer.Context,
        names: Names,
        force: Annotated[bool, typer.Option("--force", "-f", help="Kill running containers first.")] = False,
    ) -> None:
        """Remove containers."""
        _each(ctx, names, lambda b, n: b.remove(n, force=force))

    @command("exec", context_settings=PASSTHROUGH)
    def exec_(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="NAME or BACKEND:NAME.")],
        command: Annotated[list[str], typer.Argument(help="Command and its arguments.")],
        interactive: Annotated[bool, typer.Option("--interactive", "-i", help="Keep stdin open.")] = False,
        tty: Annotated[bool, typer.Option("--tty", "-t", help="Allocate a pseudo-terminal.")] = False,
        env: Annotated[list[str] | None, typer.Option("--env", "-e", help="Environment K=V.")] = None,
    ) -> None:
        """Run a command in a running container; its exit code becomes cman's."""
        from .. import lifecycle

        s = session(ctx)
        try:
            environment = parse_env(env or [])
            backend, ref = s.resolve(name)
            with lifecycle.interruptible():
                code = backend.exec(ref, command, terminal_stdio(interactive=interactive, tty=tty), env=environment)
        except Interrupted as err:
            say_error(err)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from err
        except CmanError as err:
            raise _run_exit(err) from err
        raise typer.Exit(code)

    @command("logs")
    def logs(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="NAME or BACKEND:NAME.")],
        follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new output.")] = False,
    ) -> None:
        """Print a container's output (stdout to stdout, stderr to stderr)."""
        backend, ref = session(ctx).resolve(name)
        out, err = sys.stdout.buffer, sys.stderr.buffer
        try:
            for chunk in backend.logs(ref, follow=follow):
                stream = err if chunk.stream == "stderr" else out
                stream.write(chunk.data)
                stream.flush()
        except KeyboardInterrupt:
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    @command("inspect")
    def inspect(ctx: typer.Context, names: Names, as_json: Json = False) -> None:
        """Show containers' details."""
        s = session(ctx)
        found = []
        for ref in names:
            backend, name = s.resolve(ref)
            found.append(backend.inspect(name))
        if as_json:
            print_json([c.to_dict() for c in found])
            return
        for c in found:
            data = c.to_dict()
            for key in ("backend", "name", "id", "image", "state", "status", "managed", "created", "pid", "exit_code"):
                sys.stdout.write(f"{key + ':':<12}{data.get(key)}\n")
            sys.stdout.write(f"{'command:':<12}{' '.join(c.command)}\n")
            for k, v in c.labels.items():
                sys.stdout.write(f"{'label:':<12}{k}={v}\n")
            for net, addr in c.addresses.items():
                sys.stdout.write(f"{'address:':<12}{addr} ({net})\n")

    def _each(ctx: typer.Context, names: list[str], action: object) -> None:
        """Apply an action to each container; go on after a failure, exit with the first error's code."""
        s = session(ctx)
        first: CmanError | None = None
        for ref in names:
            try:
                backend, name = s.resolve(ref)
                action(backend, name)  # type: ignore[operator]
                sys.stdout.write(ref + "\n")
            except CmanError as err:
                if len(names) == 1:
                    raise
                say_error(err)
                first = first or err
        if first is not None:
            raise typer.Exit(int(first.exit_code))

