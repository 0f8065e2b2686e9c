"""``cman engine configure docker``: daemon.json settings, validated, diffed, written atomically."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def register(engine_app: typer.Typer) -> None:
    """Add ``configure docker`` under ``engine``."""
    configure_app = typer.Typer(help="Engine daemon settings.", no_args_is_help=True)

    @configure_app.command("docker")
    def docker(
        bridge: Annotated[str | None, typer.Option("--bridge", help="Existing bridge for the default network ('none': no default bridge).")] = None,
        bip: Annotated[str | None, typer.Option("--bip", help="docker0's address and prefix, e.g. 172.18.0.1/16.")] = None,
        dns: Annotated[list[str] | None, typer.Option("--dns", help="Default DNS server for containers (repeatable; replaces the list).")] = None,
        icc: Annotated[bool | None, typer.Option("--icc/--no-icc", help="Inter-container traffic on the default bridge.", show_default=False)] = None,
        registry_mirror: Annotated[list[str] | None, typer.Option("--registry-mirror", help="Registry mirror URL (repeatable; replaces the list).")] = None,
        insecure_registry: Annotated[list[str] | None, typer.Option("--insecure-registry", help="Plain-HTTP registry HOST:PORT or CIDR (repeatable; replaces the list).")] = None,
        unset: Annotated[list[str] | None, typer.Option("--unset", help="Remove a managed key (bridge, bip, dns, icc, registry-mirrors, insecure-registries).")] = None,
        apply: Annotated[bool, typer.Option("--apply", help="Restart dockerd so it reads the file, and check it comes back.")] = False,
        config: Annotated[Path, typer.Option("--config", help="The daemon.json to edit.")] = Path("/etc/docker/daemon.json"),
    ) -> None:
        """Set Docker daemon settings in daemon.json, keeping every other key.

        Prints the change as a unified diff. Without --apply the daemon keeps its
        settings until it restarts; with --apply cman restarts it (systemctl, or
        SIGTERM and the same command line without systemd) and restores the old
        file if the daemon does not come back.
        """
        from ..dockerd import DaemonSettings, configure

        settings = DaemonSettings(
            bridge=bridge,
            bip=bip,
            dns=tuple(dns) if dns else None,
            icc=icc,
            registry_mirrors=tuple(registry_mirror) if registry_mirror else None,
            insecure_registries=tuple(insecure_registry) if insecure_registry else None,
            unset=tuple(unset or ()),
        )

        def say(message: str) -> None:
            sys.stdout.write(f"{message}\n")
            sys.stdout.flush()

        outcome = configure(config, settings, apply=apply, notify=say)
        if outcome.plan.changed:
            sys.stdout.write(outcome.plan.diff)
        else:
            say(f"{config}: no change")
        for note in outcome.notes:
            say(note)
        if outcome.written and not apply:
            say("not applied: dockerd reads the file when it starts (use --apply to restart it now)")

    engine_app.add_typer(configure_app, name="configure")
