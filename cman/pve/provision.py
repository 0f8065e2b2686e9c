"""``provision docker-host --backend pve``: the dry run, and the apply through the PVE API.

Apply: validate everything, decide who sets the features, allocate a vmid (``/cluster/nextid``)
unless given, create (a task, waited for), set the features a token may not set on the node
(``pct set`` over SSH), start (a task), then the in-container Docker steps with ``pct exec``
over SSH, or print them when no ``--node-ssh`` is given.

PVE lets only ``root@pam`` with a password login set features other than ``nesting`` (and
any feature on a privileged container): pve-container's ``check_ct_modify_config_perm``.
With an API token cman therefore refuses up front, before any request, unless
``--node-ssh`` lets it run the ``pct set`` line on the node itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CmanError, ExitCode
from . import plan
from .auth import Credentials
from .plan import DockerHostSpec, Step


class NeedsRootLogin(CmanError):
    """An API token cannot set these features; exit 6 with both ways out."""

    exit_code = ExitCode.UNSUPPORTED


@dataclass(frozen=True)
class DryRun:
    vmid: int | None
    node: str
    conf_path: str
    conf: str
    pct_create: list[str]
    steps: list[Step]

    def to_dict(self) -> dict[str, Any]:
        return {
            "vmid": self.vmid, "node": self.node, "conf_path": self.conf_path, "conf": self.conf,
            "pct_create": self.pct_create, "pct_create_display": plan.display(self.pct_create),
            "vmid_note": None if self.vmid else f"{plan.NEXTID} stands for the vmid GET /cluster/nextid allocates",
            "steps": [{"name": s.name, "argv": list(s.argv), "display": plan.display(list(s.argv))} for s in self.steps],
        }


def dry_run(spec: DockerHostSpec) -> DryRun:
    """What apply would ask for, validated; no request, no credentials needed."""
    params = plan.create_params(spec, spec.vmid)
    plan.check(spec, params)
    vmid = str(spec.vmid) if spec.vmid else plan.NEXTID
    return DryRun(spec.vmid, spec.node, f"/etc/pve/lxc/{vmid}.conf", plan.conf_text(params),
                  plan.pct_create_argv(params), plan.node_steps(spec, vmid))


def split_features(spec: DockerHostSpec, creds: Credentials
                   ) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...] | None]:
    """(features sent with the create, features to set on the node afterwards or None)."""
    wanted = plan.features(spec)
    if creds.is_root_ticket:
        return wanted, None
    allowed = {"nesting"} if not spec.privileged else set()
    if all(k in allowed for k, _ in wanted):
        return wanted, None
    return tuple((k, v) for k, v in wanted if k in allowed), wanted


def refusal(spec: DockerHostSpec, creds: Credentials, wanted: tuple[tuple[str, str], ...]) -> NeedsRootLogin:
    vmid = str(spec.vmid) if spec.vmid else "ID"
    extra = ", ".join(f"{k}={v}" for k, v in wanted if k != "nesting" or spec.privileged)
    which = "any feature on a privileged container" if spec.privileged else "features other than nesting"
    return NeedsRootLogin(
        f"pve: {creds.who} is an API token and cannot set {extra}: PVE lets only root@pam with a password login "
        f"set {which}",
        hint=f"log in as root@pam ($CMAN_PVE_PASSWORD or --password-file), or add --node-ssh root@NODE so cman "
             f"runs `{plan.display(list(plan.features_step(vmid, wanted).argv))}` on the node after creating",
    )


@dataclass(frozen=True)
class Applied:
    vmid: int
    node: str
    created_seconds: float
    started_seconds: float
    features_on_node: bool
    steps_run: tuple[str, ...] = ()
    steps_to_run: tuple[Step, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "vmid": self.vmid, "node": self.node, "created_seconds": round(self.created_seconds, 3),
            "started_seconds": round(self.started_seconds, 3), "features_set_on_node": self.features_on_node,
            "steps_run": list(self.steps_run),
            "steps_to_run": [{"name": s.name, "display": plan.display(list(s.argv))} for s in self.steps_to_run],
        }


def apply(spec: DockerHostSpec, *, url: str, creds: Credentials, verify: str | bool, node_ssh: str | None,
          timeout: float, poll: float = 1.0, notify: Callable[[str], None] = lambda _m: None) -> Applied:
    """Create and start the container through the API; Docker inside over SSH or as printed steps."""
    from . import api, node

    if node_ssh is not None:
        node.check_dest(node_ssh)
    api.check_url(url)
    api_features, node_features = split_features(spec, creds)
    params = plan.create_params(spec, spec.vmid, api_features)
    plan.check(spec, params)
    if node_features is not None and node_ssh is None:
        raise refusal(spec, creds, node_features)

    client = api.PveClient(url, creds, verify=verify)
    vmid = spec.vmid or client.nextid()
    params = plan.create_params(spec, vmid, api_features)
    plan.check(spec, params)
    if not spec.vmid:
        notify(f"pve: vmid {vmid} allocated by /cluster/nextid")
    created = client.wait(spec.node, client.create(spec.node, params), what=f"creating CT {vmid}", timeout=timeout,
                          poll=poll)
    notify(f"pve: CT {vmid} created on {spec.node} ({created.seconds:.1f} s)")
    if node_features is not None and node_ssh is not None:
        node.run(node_ssh, plan.features_step(str(vmid), node_features), notify=notify)
        notify(f"pve: features {plan.features_text(node_features)} set on the node with pct set")
    started = client.wait(spec.node, client.start(spec.node, vmid), what=f"starting CT {vmid}", timeout=timeout,
                          poll=poll)
    notify(f"pve: CT {vmid} started ({started.seconds:.1f} s)")

    steps = plan.node_steps(spec, str(vmid))
    done: list[str] = []
    if node_ssh is not None:
        for step in steps:
            notify(f"pve: step {step.name} ...")
            node.run(node_ssh, step, notify=notify)
            done.append(step.name)
        steps = []
    return Applied(vmid, spec.node, created.seconds, started.seconds, node_features is not None, tuple(done),
                   tuple(steps))
