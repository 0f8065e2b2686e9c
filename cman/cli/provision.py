"""``cman provision docker-host|registry-mirror`` and ``cman doctor docker-host``: thin layers over
:mod:`cman.dockerhost` (LXC, LXD) and :mod:`cman.pve` (Proxmox VE)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..backends.base import Backend
from ._common import print_json, printable, progress, session, warn

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
        backend: Annotated[str | None, typer.Option("--backend", "-B", help="lxc, lxd or pve (Proxmox VE).")] = None,
        image: Annotated[str | None, typer.Option("--image", help="lxc/lxd: a Debian image (docker.io is installed "
                                                   "when it lacks it); default: cman's Debian image with Docker, "
                                                   "built with debootstrap from the host's Debian mirror.")] = None,
        insecure_registry: Annotated[list[str] | None, typer.Option("--insecure-registry", help="lxc/lxd: the inner "
                                                                     "Docker's plain-HTTP registry HOST:PORT "
                                                                     "(repeatable).")] = None,
        dns: Annotated[list[str] | None, typer.Option("--dns", help="lxc/lxd: DNS server of the container and of "
                                                       "the inner Docker's containers (repeatable).")] = None,
        icc: Annotated[bool | None, typer.Option("--icc/--no-icc", help="lxc/lxd: the inner Docker's "
                                                  "inter-container traffic.", show_default=False)] = None,
        network: Annotated[str | None, typer.Option("--network", help="lxc/lxd: the cman network to join.")] = None,
        ssh: Annotated[bool, typer.Option("--ssh", help="lxc/lxd: run sshd with your public key for root.")] = False,
        ssh_key: Annotated[Path | None, typer.Option("--ssh-key", help="The public key for --ssh (default: "
                                                      "~/.ssh/id_{ed25519,ecdsa,rsa}.pub).")] = None,
        check_image: Annotated[str, typer.Option("--check-image", help="lxc/lxd: the image the inner Docker runs "
                                                  "to check itself.")] = "busybox",
        profile: Annotated[list[str] | None, typer.Option("--profile", help="lxc/lxd: profiles (default: "
                                                           "docker-host; repeatable, later ones win).")] = None,
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
        pve_only = {"--node": node, "--vmid": vmid, "--ostemplate": ostemplate, "--memory": memory, "--cores": cores,
                    "--nameserver": nameserver, "--fuse-overlayfs": fuse_overlayfs, "--privileged": privileged,
                    "--dry-run": dry_run, "--pve-url": pve_url, "--token-file": token_file,
                    "--password-file": password_file, "--pve-ca": pve_ca, "--node-ssh": node_ssh,
                    "--gw": gw}
        local_only = {"--image": image, "--insecure-registry": insecure_registry, "--dns": dns, "--icc/--no-icc": icc,
                      "--network": network, "--ssh": ssh, "--ssh-key": ssh_key, "--profile": profile}
        given = [k for k, v in (pve_only if chosen in ("lxc", "lxd") else local_only).items() if v not in (None, False, [])]
        if given and chosen in ("lxc", "lxd", "pve"):
            raise UsageError(f"{given[0]} does not go with --backend {chosen}",
                             hint=f"it is an option of --backend {'pve' if chosen != 'pve' else 'lxc or lxd'}")
        if chosen in ("lxc", "lxd"):
            _docker_host_local(ctx, chosen, name, image=image, mirrors=registry_mirror, insecure=insecure_registry,
                               dns=dns, icc=icc, network=network, ssh=ssh, ssh_key=ssh_key, check_image=check_image,
                               profiles=profile, as_json=as_json)
            return
        if chosen != "pve":
            if chosen == "docker":
                raise Unsupported(chosen, "provision docker-host", "Docker cannot nest a Docker host; use lxc, lxd or pve")
            raise UsageError("provision docker-host needs --backend lxc, lxd or pve")
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
                                 notify=progress)
        if as_json:
            print_json(result.to_dict())
            return
        sys.stdout.write(f"CT {result.vmid} on {result.node}: created and started\n")
        if result.steps_to_run:
            sys.stdout.write("Docker inside: run these on the node as root (or rerun with --node-ssh root@NODE):\n")
            sys.stdout.write("".join(f"  {step['display']}\n" for step in result.to_dict()["steps_to_run"]))
        elif result.steps_run:
            sys.stdout.write(f"Docker inside: {', '.join(result.steps_run)}: done\n")

    from .provision_mirror import register_mirror

    register_mirror(provision_app)
    app.add_typer(provision_app, name="provision")

    doctor_app = typer.Typer(help="Check containers for what their job needs; change nothing.", no_args_is_help=True)

    @doctor_app.command("docker-host")
    def doctor_docker_host(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="NAME or BACKEND:NAME of an LXC or LXD container.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Check a container (made by cman or not) for everything Docker inside needs.

        Prints each finding with its fix. Exit 0: healthy; 1: problems found; 3: no such
        container; 5: engine unavailable; 6: not a system container engine.
        """
        from ..dockerhost.provision import doctor

        backend, ref = _system_backend(ctx, name, "doctor docker-host")
        findings = doctor(backend, ref)
        problems = [f for f in findings if f.status == "problem"]
        if as_json:
            print_json({"container": ref, "backend": backend.name, "healthy": not problems,
                        "findings": [f.to_dict() for f in findings]})
        else:
            for f in findings:
                sys.stdout.write(f"{f.status.upper():8} {f.name:14} {printable(f.detail)}\n")
                if f.fix and f.status != "ok":
                    sys.stdout.write(f"{'':8} {'':14} fix: {printable(f.fix)}\n")
        if problems:
            raise typer.Exit(1)

    app.add_typer(doctor_app, name="doctor")


def _system_backend(ctx: typer.Context, ref: str, what: str) -> tuple[Backend, str]:
    """The LXC or LXD backend a NAME or BACKEND:NAME is on (Docker cannot host Docker)."""
    from ..errors import Unsupported
    from ._common import backends_split

    bname, name = backends_split(ref)
    backend = session(ctx).backend(bname)
    if backend.name not in ("lxc", "lxd"):
        raise Unsupported(backend.name, what, "Docker inside is for system containers: use lxc or lxd")
    return backend, name


def _docker_host_local(ctx: typer.Context, chosen: str, name: str, *, image: str | None, mirrors: list[str] | None,
                       insecure: list[str] | None, dns: list[str] | None, icc: bool | None, network: str | None,
                       ssh: bool, ssh_key: Path | None, check_image: str, profiles: list[str] | None,
                       as_json: bool) -> None:
    from ..dockerhost import provision
    from ..dockerhost.spec import HostSpec

    backend = session(ctx).backend(chosen)
    backend.validate_name(name)
    if network is not None:
        from ..network import check_network_name

        check_network_name(network)
    spec = HostSpec(name=name, image=image, registry_mirrors=tuple(mirrors or ()),
                    insecure_registries=tuple(insecure or ()), dns=tuple(dns or ()), icc=icc, network=network,
                    ssh=ssh, ssh_key=ssh_key, check_image=check_image,
                    profiles=tuple(profiles or ("docker-host",)))
    report = provision.provision(backend, spec, progress)
    if as_json:
        print_json({"container": name, "backend": backend.name, "changed": report.changed,
                    "steps": [s.to_dict() for s in report.steps]})
        return
    if report.changed:
        sys.stdout.write(f"{backend.name}:{name}: a docker host; "
                         f"{', '.join(s.name for s in report.steps if s.status == 'repaired')}: done now\n")
    else:
        sys.stdout.write(f"{backend.name}:{name}: a healthy docker host already; nothing changed\n")
    for step in report.steps:
        if step.name == "ssh":
            sys.stdout.write(f"reach it with: {step.detail.rsplit('; ', 1)[-1]}\n")


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
