"""``cman provision docker-host NAME --backend pve``: a thin layer over :mod:`cman.pve`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ._common import print_json, printable, session, warn

TASK_TIMEOUT = 300.0


def register(app: typer.Typer, only: str | None = None) -> None:
    """Add the ``provision`` group to ``app`` (when ``only`` is None or "provision")."""
    if only not in (None, "provision"):
        return
    provision_app = typer.Typer(help="Make containers that do one job, checked.", no_args_is_help=True)

    @provision_app.command("docker-host")
    def docker_host(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="The container's hostname (a DNS name).")],
        backend: Annotated[str | None, typer.Option("--backend", "-B", help="pve (Proxmox VE).")] = None,
        node: Annotated[str | None, typer.Option("--node", help="PVE node name.")] = None,
        vmid: Annotated[int | None, typer.Option("--vmid", help="100-999999999; default: GET /cluster/nextid.")] = None,
        ostemplate: Annotated[str | None, typer.Option("--ostemplate", help="Template volume ID, e.g. "
                                                        "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst.")] = None,
        bridge: Annotated[str, typer.Option("--bridge", help="Bridge of net0.")] = "vmbr0",
        storage: Annotated[str, typer.Option("--storage", help="Root disk as STORAGE:SIZE_IN_GiB.")] = "local-lvm:8",
        memory: Annotated[int | None, typer.Option("--memory", help="MiB (PVE's default: 512).")] = None,
        cores: Annotated[int | None, typer.Option("--cores", help="CPU cores.")] = None,
        ip: Annotated[str, typer.Option("--ip", help="dhcp or ADDRESS/PREFIX.")] = "dhcp",
        gw: Annotated[str | None, typer.Option("--gw", help="IPv4 gateway (with a static --ip).")] = None,
        nameserver: Annotated[list[str] | None, typer.Option("--nameserver", help="DNS server (repeatable).")] = None,
        fuse_overlayfs: Annotated[bool, typer.Option("--fuse-overlayfs", help="fuse=1 and Docker on fuse-overlayfs "
                                                      "(ZFS older than 2.2).")] = False,
        privileged: Annotated[bool, typer.Option("--privileged", help="A privileged container (unprivileged is "
                                                  "the default).")] = False,
        registry_mirror: Annotated[list[str] | None, typer.Option("--registry-mirror", help="The inner Docker's "
                                                                   "registry mirror (repeatable).")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the .conf, the pct create line and the "
                                               "steps; send nothing.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        pve_url: Annotated[str | None, typer.Option("--pve-url", help="https://HOST:8006: apply through the API.")] = None,
        token_file: Annotated[Path | None, typer.Option("--token-file", help="File (mode 0600) holding "
                                                         "USER@REALM!TOKENID=SECRET; else $CMAN_PVE_TOKEN.")] = None,
        password_file: Annotated[Path | None, typer.Option("--password-file", help="File (mode 0600) holding the "
                                                            "password of --pve-user; else $CMAN_PVE_PASSWORD.")] = None,
        pve_user: Annotated[str, typer.Option("--pve-user", help="User of a password login.")] = "root@pam",
        pve_ca: Annotated[Path | None, typer.Option("--pve-ca", help="CA file to verify PVE's certificate "
                                                     "(/etc/pve/pve-root-ca.pem); default: the system's CAs.")] = None,
        node_ssh: Annotated[str | None, typer.Option("--node-ssh", help="root@HOST: run pct set/exec on the node "
                                                      "over SSH; else they are printed.")] = None,
        task_timeout: Annotated[float, typer.Option("--task-timeout", help="Seconds to wait for each PVE task.")
                                ] = TASK_TIMEOUT,
        poll_interval: Annotated[float, typer.Option("--poll-interval", help="Seconds between task polls.")] = 1.0,
    ) -> None:
        """Create an LXC container that hosts Docker (Proxmox VE: nesting=1,keyctl=1, unprivileged).

        --dry-run prints /etc/pve/lxc/ID.conf, the equivalent `pct create` and the in-container
        steps. With --pve-url it creates and starts the container through the PVE API, then runs
        the Docker steps with `pct exec` over --node-ssh, or prints them.
        """
        from ..errors import InvalidValue, Unsupported, UsageError

        chosen = backend or session(ctx).backend_option
        if chosen != "pve":
            if chosen in ("lxc", "lxd", "docker"):
                raise Unsupported(chosen, "provision docker-host", "only --backend pve is built so far")
            raise UsageError("provision docker-host needs --backend pve")
        if not node or not ostemplate:
            raise UsageError(f"--backend pve needs {'--node' if not node else '--ostemplate'}")
        if task_timeout <= 0 or poll_interval <= 0:
            raise InvalidValue("--task-timeout" if task_timeout <= 0 else "--poll-interval",
                               min(task_timeout, poll_interval), "must be greater than zero")
        if not dry_run and not pve_url:
            raise UsageError("give --dry-run, or --pve-url https://HOST:8006 to apply")
        from ..pve import auth, provision
        from ..pve.plan import DockerHostSpec

        spec = DockerHostSpec(name=name, node=node, ostemplate=ostemplate, vmid=vmid, bridge=bridge, storage=storage,
                              memory=memory, cores=cores, ip=ip, gw=gw, nameservers=tuple(nameserver or ()),
                              fuse_overlayfs=fuse_overlayfs, privileged=privileged,
                              registry_mirrors=tuple(registry_mirror or ()))
        if privileged:
            warn("--privileged: the container's root is the node's root")
        if dry_run:
            _print_dry_run(provision.dry_run(spec), as_json)
            return
        assert pve_url is not None
        creds = auth.resolve(token_file=token_file, password_file=password_file, user=pve_user)
        result = provision.apply(spec, url=pve_url, creds=creds, verify=auth.check_ca(pve_ca), node_ssh=node_ssh,
                                 timeout=task_timeout, poll=poll_interval,
                                 notify=_progress)
        if as_json:
            print_json(result.to_dict())
            return
        sys.stdout.write(f"CT {result.vmid} on {result.node}: created and started\n")
        if result.steps_to_run:
            sys.stdout.write("Docker inside: run these on the node as root (or rerun with --node-ssh root@NODE):\n")
            sys.stdout.write("".join(f"  {step['display']}\n" for step in result.to_dict()["steps_to_run"]))
        elif result.steps_run:
            sys.stdout.write(f"Docker inside: {', '.join(result.steps_run)}: done\n")

    app.add_typer(provision_app, name="provision")


def _progress(message: str) -> None:
    sys.stderr.write(f"cman: {printable(message)}\n")


def _print_dry_run(result: object, as_json: bool) -> None:
    from ..pve.plan import NEXTID, display
    from ..pve.provision import DryRun

    assert isinstance(result, DryRun)
    if as_json:
        print_json(result.to_dict())
        return
    if result.vmid is None:
        sys.stderr.write(f"cman: no --vmid: {NEXTID} stands for the vmid PVE allocates (GET /cluster/nextid) "
                         "when applying\n")
    out = [f"# {result.conf_path}\n", result.conf, "\n# the same with pct, on the node as root\n",
           display(result.pct_create) + "\n", "\n# then Docker inside, on the node as root\n"]
    out += [display(list(step.argv)) + "\n" for step in result.steps]
    sys.stdout.write("".join(out))
