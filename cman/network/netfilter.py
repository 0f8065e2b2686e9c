"""Host-side enforcement of cman networks, shared by every backend.

Two tools here, both through the one subprocess gateway (:mod:`cman._sys.proc`):

- **Forwarding rules in DOCKER-USER.** Docker sets the FORWARD policy to DROP, and
  with ``br_netfilter`` loaded that also drops traffic *between ports of any other
  bridge* (LXD, LXC). :func:`ensure_bridge_rules` inserts ``-i BR -o BR -j ACCEPT``
  (or ``DROP`` for a no-ICC network) into DOCKER-USER, idempotently, tagged with
  the comment ``cman:<network>`` so :func:`list_rules` and :func:`remove_rules` find
  exactly cman's rules. The chain is created when missing: Docker keeps an existing
  DOCKER-USER when it starts later, so the rule is in place before it is needed.
  Docker's own networks need no rule (Docker writes theirs itself), and must not
  get one: an ACCEPT in DOCKER-USER would override Docker's ICC DROP.
- **Bridge port isolation** (layer 2 no-ICC) is :mod:`.isolation`.
- **Bridges** for backends that make their own (LXC): :func:`create_bridge`,
  :func:`delete_link`, :func:`link_exists`.

Rules and isolation hold until the interface goes: a veth re-created by the engine
(a container restarted outside cman) comes back without isolation.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._sys import proc as _proc
from ..errors import EngineUnavailable

CHAIN = "DOCKER-USER"
TAG_PREFIX = "cman:"
_WAIT = ("-w", "10")
"""Wait up to 10 s for the xtables lock (dockerd takes it too)."""


def tag(network: str) -> str:
    """The comment that marks a rule as installed by cman for ``network``."""
    return f"{TAG_PREFIX}{network}"


def need_tool(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise EngineUnavailable("host", f"`{tool}` is not installed", f"apt-get install {package}")
    return tool


def run_tool(argv: Sequence[str], *, check: bool = True) -> _proc.Completed:
    return _proc.run(argv, timeout=30, check=check, backend="host")


# -- iptables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One rule of :data:`CHAIN`, as ``iptables -S`` prints it after ``-A CHAIN``."""

    args: tuple[str, ...]

    @property
    def comment(self) -> str | None:
        for i, arg in enumerate(self.args[:-1]):
            if arg == "--comment":
                return self.args[i + 1]
        return None

    @property
    def network(self) -> str | None:
        """The cman network this rule was installed for (from its ``cman:NETWORK`` tag), if any."""
        comment = self.comment
        if comment is None or not comment.startswith(TAG_PREFIX) or len(comment) == len(TAG_PREFIX):
            return None
        return comment[len(TAG_PREFIX):]

    def option(self, name: str) -> str | None:
        for i, arg in enumerate(self.args[:-1]):
            if arg == name:
                return self.args[i + 1]
        return None

    def __str__(self) -> str:
        return shlex.join(["-A", CHAIN, *self.args])


def bridge_rule(network: str, bridge: str, *, icc: bool = True) -> Rule:
    """The forwarding rule for traffic between ports of ``bridge``: ACCEPT, or DROP without ICC."""
    return Rule(("-i", bridge, "-o", bridge, "-m", "comment", "--comment", tag(network),
                 "-j", "ACCEPT" if icc else "DROP"))


def parse_rules(text: str) -> list[Rule]:
    """``iptables -S CHAIN`` output -> the chain's rules (``-N``/``-P`` lines skipped)."""
    out: list[Rule] = []
    for line in text.splitlines():
        parts = shlex.split(line)
        if len(parts) >= 2 and parts[0] == "-A" and parts[1] == CHAIN:
            out.append(Rule(tuple(parts[2:])))
    return out


def _chain_rules() -> list[Rule] | None:
    """The chain's rules, or None when iptables or the chain is missing."""
    if shutil.which("iptables") is None:
        return None
    proc = run_tool(["iptables", *_WAIT, "-S", CHAIN], check=False)
    if proc.returncode != 0:
        return None
    return parse_rules(proc.stdout)


def tagged_rules() -> list[Rule]:
    """Every rule of the chain that cman installed (tagged ``cman:NETWORK``), for any network."""
    return [r for r in _chain_rules() or [] if r.network is not None]


def list_rules(network: str, bridge: str | None = None) -> list[Rule]:
    """cman's rules for ``network`` (optionally only those on ``bridge``)."""
    return [
        r for r in _chain_rules() or []
        if r.comment == tag(network) and (bridge is None or r.option("-i") == bridge)
    ]


def ensure_bridge_rules(network: str, bridge: str, *, icc: bool = True) -> list[Rule]:
    """Make sure the forwarding rule for ``bridge`` is in DOCKER-USER; returns cman's rules for it.

    Idempotent: an identical rule is not added twice. A rule of the other verdict
    left from an earlier spec of the same network is removed. Call it under
    :func:`cman.network.host.host_lock` (``create_network`` does).
    """
    need_tool("iptables", "iptables")
    want = bridge_rule(network, bridge, icc=icc)
    if run_tool(["iptables", *_WAIT, "-n", "-L", CHAIN], check=False).returncode != 0:
        run_tool(["iptables", *_WAIT, "-N", CHAIN])
    for old in list_rules(network, bridge):
        if old != want:
            run_tool(["iptables", *_WAIT, "-D", CHAIN, *old.args])
    if run_tool(["iptables", *_WAIT, "-C", CHAIN, *want.args], check=False).returncode != 0:
        run_tool(["iptables", *_WAIT, "-I", CHAIN, "1", *want.args])
    return list_rules(network, bridge)


def remove_rules(network: str, bridge: str | None = None) -> list[Rule]:
    """Delete every rule tagged for ``network`` (on ``bridge`` when given); returns what went."""
    return [rule for rule in list_rules(network, bridge) if delete_rule(rule)]


def delete_rule(rule: Rule) -> bool:
    """Delete one rule of the chain; False when it was not there (any more)."""
    return run_tool(["iptables", *_WAIT, "-D", CHAIN, *rule.args], check=False).returncode == 0


# -- links and bridges ----------------------------------------------------------------------------


def link_exists(name: str) -> bool:
    """Is there a host interface called ``name``? (/sys/class/net, no subprocess)."""
    if not name or "/" in name or name in (".", ".."):
        return False
    return Path("/sys/class/net", name).exists()


def create_bridge(name: str, gateway: str, prefixlen: int) -> None:
    """Create bridge ``name`` with ``gateway/prefixlen`` and bring it up (idempotent)."""
    need_tool("ip", "iproute2")
    if not link_exists(name):
        run_tool(["ip", "link", "add", "name", name, "type", "bridge"])
    address = f"{gateway}/{prefixlen}"
    have = run_tool(["ip", "-j", "-4", "addr", "show", "dev", name]).stdout
    present = any(
        f"{a.get('local')}/{a.get('prefixlen')}" == address
        for link in json.loads(have or "[]") for a in link.get("addr_info") or []
    )
    if not present:
        run_tool(["ip", "addr", "add", address, "dev", name])
    run_tool(["ip", "link", "set", "dev", name, "up"])


def delete_link(name: str) -> bool:
    """Delete interface ``name`` (a bridge, or a veth with its peer) when it exists; True when it was there.

    A link that vanishes between the check and the delete (a stopping container's veth) is not an error.
    """
    if not link_exists(name):
        return False
    proc = run_tool(["ip", "link", "delete", "dev", name], check=False)
    if proc.returncode != 0 and link_exists(name):
        raise _proc.ProcError(proc.argv, proc.returncode, proc.stdout, proc.stderr)
    return True
