"""What a profile file holds, how it is checked, and how several merge.

A profile is a TOML table of declarative container settings; every key is optional:

    description = "one line for `cman profile ls`"
    network = "cman-isolated"      # joined; created on demand when missing (see cman.lifecycle.ensure_network)
    icc = false                    # the network's inter-container traffic; only beside `network`
    cpus = 1.5                     # or "1.5"
    memory = "512m"                # or a number of bytes
    nesting = true                 # containers inside (Docker in LXC/LXD); Docker: unsupported
    privileged = false             # true drops the engine's confinement; cman says so on stderr
    [dns]
    servers = ["10.0.0.53"]
    search = ["corp.example"]
    [env]                          # K = "V"
    [labels]                       # k = "v"
    [lxd] / [lxc] / [pve]          # raw engine keys from the allowlist (cman.profiles.allow);
                                   # dotted keys (security.nesting = true) and quoted keys both work

Merge (``merge([a, b, ...])``, later wins): scalars (network+icc together, cpus, memory,
nesting, privileged, description) are taken from the last profile that sets them; ``env``,
``labels`` and each engine section merge by key, the last value of a key winning; the ``dns``
server list and the search list are each replaced whole by the last profile that sets them
(resolv.conf takes three servers: concatenating would silently drop some). Command-line flags
are applied after all profiles by the same rules (``-e``/``--label`` by key, ``--dns`` replaces,
``--network`` replaces the network and drops the profile's ``icc``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidProfile, UsageError
from ..models import _Jsonable
from ..network.spec import check_dns_servers, check_network_name, check_search_domains
from ..validate import check_user_labels, parse_cpus, parse_kv, parse_size
from . import allow

SCALARS = ("description", "network", "icc", "cpus", "memory", "nesting", "privileged")
TABLES = ("dns", "env", "labels", *allow.BACKENDS)
KEYS = (*SCALARS, *TABLES)
DNS_KEYS = ("servers", "search")


@dataclass(frozen=True)
class Profile(_Jsonable):
    """One profile, or several merged. ``None`` (and empty mappings) mean "not set"."""

    name: str
    source: str = ""
    """The file it was read from ("a + b" for a merge)."""
    description: str | None = None
    network: str | None = None
    icc: bool | None = None
    dns: tuple[str, ...] | None = None
    dns_search: tuple[str, ...] | None = None
    cpus: float | None = None
    memory: int | None = None
    """Bytes."""
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    nesting: bool | None = None
    privileged: bool | None = None
    engines: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Raw keys per engine (``lxd``, ``lxc``, ``pve``), allowlisted, values as the engine spells them."""

    def extras(self, backend: str) -> dict[str, str]:
        """The raw keys for ``backend`` (empty for an engine the profile says nothing about)."""
        return dict(self.engines.get(backend, {}))


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"security": {"nesting": True}}`` -> ``{"security.nesting": True}``: TOML's dotted keys."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{key}: must be true or false, not {value!r}")
    return value


def _strings(key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{key}: must be a list of strings")
    return value


def _table(key: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{key}: must be a table ([{key}])")
    return value


def _pairs(key: str, value: object) -> list[str]:
    table = _table(key, value)
    for k, v in table.items():
        if not isinstance(v, str):
            raise UsageError(f"{key}.{k}: must be a string, not {v!r}")
    return [f"{k}={v}" for k, v in table.items()]


def _parse_value(key: str, value: object, out: dict[str, Any]) -> None:
    """Check one top-level key into ``out`` (Profile field names); raises UsageError."""
    if key == "description":
        if not isinstance(value, str) or "\n" in value or len(value) > 200:
            raise UsageError("description: must be one line of text (at most 200 characters)")
        out["description"] = value
    elif key == "network":
        if not isinstance(value, str):
            raise UsageError(f"network: must be a string, not {value!r}")
        out["network"] = check_network_name(value)
    elif key in ("icc", "nesting", "privileged"):
        out[key] = _bool(key, value)
    elif key == "cpus":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise UsageError(f"cpus: must be a number, not {value!r}")
        out["cpus"] = parse_cpus(value, "cpus")
    elif key == "memory":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise UsageError(f"memory: must be a size such as \"512m\", not {value!r}")
        out["memory"] = parse_size(str(value), "memory")
    elif key == "dns":
        table = _table("dns", value)
        unknown = sorted(set(table) - set(DNS_KEYS))
        if unknown:
            raise UsageError(f"dns.{unknown[0]}: unknown key (known: {', '.join(DNS_KEYS)})")
        if "servers" in table:
            out["dns"] = check_dns_servers(_strings("dns.servers", table["servers"]), "dns.servers")
        if "search" in table:
            out["dns_search"] = check_search_domains(_strings("dns.search", table["search"]), "dns.search")
    elif key == "env":
        out["env"] = parse_kv_field("env", _pairs("env", value))
    elif key == "labels":
        labels = dict(pair.split("=", 1) for pair in _pairs("labels", value))
        check_user_labels(labels)
        out["labels"] = labels
    else:  # an engine section
        out.setdefault("engines", {})[key] = allow.check_extras(key, _flatten(_table(key, value)))


def parse_kv_field(key: str, pairs: list[str]) -> dict[str, str]:
    """``[env]`` entries: K=V rules of ``-e``, and one line each (LXD and LXC write them into config lines)."""
    env = parse_kv(pairs, key)
    for k, v in env.items():
        if any(c in v for c in "\n\r"):
            raise UsageError(f"{key}.{k}: the value must not contain newlines")
    return env


def parse(name: str, data: Mapping[str, Any], where: str) -> Profile:
    """A profile from a file's table; every error is :class:`InvalidProfile` naming ``where``,
    the key and the reason (exit 2)."""
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise InvalidProfile(where, f"{unknown[0]}: unknown key (known: {', '.join(KEYS)})")
    out: dict[str, Any] = {}
    for key in KEYS:
        if key not in data:
            continue
        try:
            _parse_value(key, data[key], out)
        except InvalidProfile:
            raise
        except UsageError as err:
            raise InvalidProfile(where, err.message, hint=err.hint) from None
    if "icc" in out and "network" not in out:
        raise InvalidProfile(where, "icc: describes the profile's network: set `network` beside it")
    if out.get("network") == "none" and out.get("icc") is not None:
        raise InvalidProfile(where, "icc: network \"none\" has no traffic to allow or isolate")
    return Profile(name=name, source=where, **out)


def merge(profiles: Iterable[Profile]) -> Profile:
    """Several profiles into one, later ones winning (module docstring: the merge rules)."""
    items = list(profiles)
    if not items:
        return Profile(name="")
    acc: dict[str, Any] = {"env": {}, "labels": {}, "engines": {}}
    for p in items:
        for name in ("description", "cpus", "memory", "nesting", "privileged", "dns", "dns_search"):
            value = getattr(p, name)
            if value is not None:
                acc[name] = value
        if p.network is not None:  # the network and its icc go together
            acc["network"], acc["icc"] = p.network, p.icc
        acc["env"].update(p.env)
        acc["labels"].update(p.labels)
        for engine, keys in p.engines.items():
            acc["engines"][engine] = {**acc["engines"].get(engine, {}), **keys}
    return dataclasses.replace(
        Profile(name="+".join(p.name for p in items), source=" + ".join(p.source for p in items)), **acc)
