"""``cman provision registry-mirror``: a thin layer over :mod:`cman.dockerhost.mirror` (LXC, LXD)."""

from __future__ import annotations

import sys
from typing import Annotated
from urllib.parse import urlsplit

import typer

from ._common import print_json, progress, session

DOCKER_HUB = ("registry-1.docker.io", "index.docker.io", "docker.io", "registry.hub.docker.com")
"""Upstreams for which a docker host's ``--registry-mirror`` means what it says: dockerd sends
only Docker Hub pulls to its mirrors."""


def register_mirror(provision_app: typer.Typer) -> None:
    """Add ``registry-mirror`` to the ``provision`` group."""

    @provision_app.command("registry-mirror")
    def registry_mirror(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="The container's name and hostname (a DNS label).")],
        backend: Annotated[str | None, typer.Option("--backend", "-B", help="lxc or lxd.")] = None,
        upstream: Annotated[str | None, typer.Option("--upstream", help="http(s)://HOST[:PORT] of the registry to "
                                                     "cache (e.g. https://registry-1.docker.io); without it, a "
                                                     "plain registry to push to.")] = None,
        port: Annotated[int, typer.Option("--port", help="The registry's TCP port in the container.")] = 5000,
        network: Annotated[str | None, typer.Option("--network", help="The cman network to join (required: it "
                                                    "gives the mirror its address).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Run a Docker registry (Debian's docker-registry) in its own system container.

        With --upstream it is a pull-through cache of that registry; without, a registry to
        push to. It has no authentication and speaks plain HTTP: keep it on a private cman
        network. Prints the address for docker hosts (--registry-mirror, --insecure-registry)
        and $CMAN_REGISTRY_MIRROR. A rerun on a healthy mirror changes nothing.
        """
        from ..dockerhost.mirror import MirrorSpec, provision_mirror
        from ..errors import Unsupported, UsageError

        spec = MirrorSpec(name=name, upstream=upstream, port=port, network=network)  # exit 2 before any engine
        chosen = backend or session(ctx).explicit_backend()
        if chosen == "docker":
            raise Unsupported(chosen, "provision registry-mirror", "the registry runs in a system container: use "
                              "lxc or lxd")
        if chosen not in ("lxc", "lxd"):
            raise UsageError("provision registry-mirror needs --backend lxc or lxd")
        engine = session(ctx).backend(chosen)
        result = provision_mirror(engine, spec, progress)
        docker_host_args = ["--registry-mirror", result.address, "--insecure-registry", result.host_port]
        if as_json:
            print_json({"container": name, "backend": engine.name, "changed": result.report.changed,
                        "upstream": spec.upstream, "address": result.address, "host_port": result.host_port,
                        "docker_host_args": docker_host_args, "steps": [s.to_dict() for s in result.report.steps]})
            return
        what = f"a pull-through cache of {spec.upstream}" if spec.upstream else "a registry"
        if result.report.changed:
            done = ", ".join(s.name for s in result.report.steps if s.status == "repaired")
            sys.stdout.write(f"{engine.name}:{name}: {what} at {result.address}; {done}: done now\n")
        else:
            sys.stdout.write(f"{engine.name}:{name}: {what} at {result.address} already; nothing changed\n")
        sys.stdout.write(f"docker hosts: cman provision docker-host NAME {' '.join(docker_host_args)}\n"
                         f"cman itself: CMAN_REGISTRY_MIRROR={result.address}\n")
        if spec.upstream and (urlsplit(spec.upstream).hostname or "").lower() not in DOCKER_HUB:
            progress(f"note: dockerd sends only Docker Hub pulls to a registry mirror; pull the images of "
                      f"{spec.upstream} as {result.host_port}/REPOSITORY:TAG")
