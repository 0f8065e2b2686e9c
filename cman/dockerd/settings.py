"""What ``cman engine configure docker`` writes: daemon.json, validated, merged, diffed.

Six keys of ``/etc/docker/daemon.json`` are managed (``bridge``, ``bip``, ``dns``,
``icc``, ``registry-mirrors``, ``insecure-registries``); every other key is kept as it is. Everything is
validated before the file is touched, and the file is replaced atomically, so a
crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._sys.files import atomic_write
from ..errors import InvalidValue, UsageError

DEFAULT_PATH = Path("/etc/docker/daemon.json")
KEYS = ("bridge", "bip", "dns", "icc", "registry-mirrors", "insecure-registries")
"""The daemon.json keys cman manages; every other key is kept as it is."""


# -- what to change -------------------------------------------------------------------------------


def check_bip(text: str) -> str:
    """``bip`` is the bridge's own address with a prefix (172.18.0.1/16), not a network."""
    import ipaddress

    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidValue("--bip", text, "use ADDRESS/PREFIX, the bridge's own address, e.g. 172.18.0.1/16") from None
    if iface.version != 4 or "/" not in text:
        raise InvalidValue("--bip", text, "use an IPv4 ADDRESS/PREFIX such as 172.18.0.1/16")
    net = iface.network
    if not 8 <= net.prefixlen <= 30:
        raise InvalidValue("--bip", text, "the prefix must be between /8 and /30")
    if iface.ip in (net.network_address, net.broadcast_address):
        raise InvalidValue("--bip", text, f"is the network or broadcast address of {net}; use a host address such as "
                                          f"{next(net.hosts())}/{net.prefixlen}")
    if net.is_loopback or net.is_link_local or net.is_multicast or net.is_reserved:
        raise InvalidValue("--bip", text, "is not a usable private range")
    return str(iface)


def check_mirror(text: str, field: str = "--registry-mirror") -> str:
    """dockerd's own rules for a registry mirror: http(s)://host[:port][/], nothing else (``field``
    names the option in errors)."""
    if not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        # urlsplit drops tabs and newlines before parsing: check the text itself first
        raise InvalidValue(field, text, "a URL is printable ASCII without spaces")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise InvalidValue(field, text, str(err)) from None
    del port
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidValue(field, text, "use http://HOST[:PORT] or https://HOST[:PORT]")
    if parts.username or parts.password:
        raise InvalidValue(field, text, "credentials do not belong in the URL" + (" (use docker login)" if field == "--registry-mirror" else ""))
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidValue(field, text, "dockerd accepts no path, query or fragment in a mirror URL")
    return text.rstrip("/") + "/"


def check_insecure_registry(text: str) -> str:
    """dockerd's ``insecure-registries`` entries: HOST[:PORT] (no scheme, no path) or a CIDR."""
    import ipaddress
    import re

    from ..oci.refs import DOMAIN, port_ok

    if "/" in text:
        try:
            return str(ipaddress.ip_network(text, strict=True))
        except ValueError:
            raise InvalidValue("--insecure-registry", text, "use HOST[:PORT] or a network such as 10.0.0.0/8") from None
    if not re.fullmatch(DOMAIN, text) or not port_ok(text) or len(text) > 255:
        raise InvalidValue("--insecure-registry", text, "use HOST[:PORT] (no scheme), e.g. 10.0.3.5:5000")
    return text


@dataclass(frozen=True)
class DaemonSettings:
    """What to set; None leaves a key as it is. Valid by construction (UsageError naming the option)."""

    bridge: str | None = None
    bip: str | None = None
    dns: tuple[str, ...] | None = None
    icc: bool | None = None
    registry_mirrors: tuple[str, ...] | None = None
    insecure_registries: tuple[str, ...] | None = None
    unset: tuple[str, ...] = ()
    """Managed keys to remove from the file (back to dockerd's default)."""

    def __post_init__(self) -> None:
        from ..network import check_dns_servers, check_ifname

        if self.bridge is not None and self.bridge != "none":
            check_ifname(self.bridge, "--bridge")
        if self.bip is not None:
            object.__setattr__(self, "bip", check_bip(self.bip))
        if self.bridge is not None and self.bip is not None:
            raise InvalidValue("--bip", self.bip, "dockerd does not accept --bridge and --bip together")
        if self.dns is not None:
            object.__setattr__(self, "dns", check_dns_servers(self.dns))
        if self.registry_mirrors is not None:
            mirrors = tuple(check_mirror(m) for m in self.registry_mirrors)
            if len(set(mirrors)) != len(mirrors):
                raise InvalidValue("--registry-mirror", " ".join(mirrors), "a mirror is given twice")
            object.__setattr__(self, "registry_mirrors", mirrors)
        if self.insecure_registries is not None:
            insecure = tuple(dict.fromkeys(check_insecure_registry(r) for r in self.insecure_registries))
            object.__setattr__(self, "insecure_registries", insecure)
        for key in self.unset:
            if key not in KEYS:
                raise InvalidValue("--unset", key, f"cman manages only {', '.join(KEYS)}")
            if self.values().get(key) is not None:
                raise InvalidValue("--unset", key, "is also being set")

    def values(self) -> dict[str, Any]:
        """daemon.json key -> new value, for the keys being set."""
        out: dict[str, Any] = {
            "bridge": self.bridge,
            "bip": self.bip,
            "dns": list(self.dns) if self.dns is not None else None,
            "icc": self.icc,
            "registry-mirrors": list(self.registry_mirrors) if self.registry_mirrors is not None else None,
            "insecure-registries": list(self.insecure_registries) if self.insecure_registries is not None else None,
        }
        return {k: v for k, v in out.items() if v is not None}


# -- the file -------------------------------------------------------------------------------------


def read_config(path: Path) -> tuple[str | None, dict[str, Any]]:
    """The file's text (None when absent) and its JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, {}
    except UnicodeDecodeError as err:
        raise UsageError(f"{path} is not UTF-8 text (byte {err.start})",
                         hint="fix it by hand first: dockerd reads daemon.json as UTF-8 JSON") from err
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from err
    if not text.strip():
        return text, {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON (line {err.lineno}: {err.msg})",
                         hint="fix it by hand first: cman keeps keys it does not manage and will not guess") from err
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object")
    return text, data


def merge(current: Mapping[str, Any], settings: DaemonSettings) -> dict[str, Any]:
    """``current`` with the settings applied; other keys and their order kept, new keys at the end."""
    out = {k: v for k, v in current.items() if k not in settings.unset}
    out.update(settings.values())
    if "bridge" in out and "bip" in out:
        kept = "bip" if "bridge" in settings.values() else "bridge"
        raise InvalidValue(
            f"--{'bridge' if kept == 'bip' else 'bip'}", out["bridge" if kept == "bip" else "bip"],
            f"the file already sets {kept!r} and dockerd does not accept bridge and bip together: add --unset {kept}",
        )
    return out


def render(config: Mapping[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"


def unified_diff(old: str | None, new: str, path: Path) -> str:
    return "".join(difflib.unified_diff(
        (old or "").splitlines(keepends=True), new.splitlines(keepends=True),
        fromfile=f"{path} (before)" if old is not None else "/dev/null", tofile=str(path),
    ))


def write_config(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (creating its folder), keeping the file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


def restore(path: Path, text: str | None) -> None:
    """Put back what :func:`read_config` read (remove the file when there was none)."""
    if text is None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        write_config(path, text)


def check_bip_free(bip: str, *, own_bridge: str = "docker0") -> None:
    """The range of ``bip`` must not overlap a route or address of the host (docker0's own excepted)."""
    import ipaddress

    from ..network import read_host

    net = ipaddress.IPv4Interface(bip).network
    hits = [r for r in read_host().overlaps(net) if r.dev != own_bridge]
    if hits:
        where = f"{hits[0].source} {hits[0].net}" + (f" on {hits[0].dev}" if hits[0].dev else "")
        raise InvalidValue("--bip", bip, f"overlaps the host's {where}")


@dataclass(frozen=True)
class Plan:
    path: Path
    old_text: str | None
    new_text: str
    config: dict[str, Any]

    @property
    def changed(self) -> bool:
        if self.old_text is None:
            return bool(self.config)
        return self.old_text != self.new_text

    @property
    def diff(self) -> str:
        return unified_diff(self.old_text, self.new_text, self.path) if self.changed else ""


def plan(path: Path, settings: DaemonSettings) -> Plan:
    """Read, merge, render; nothing written. A file whose keys already hold the values is unchanged."""
    old_text, current = read_config(path)
    merged = merge(current, settings)
    if merged == current and old_text is not None:
        return Plan(path, old_text, old_text, merged)
    return Plan(path, old_text, render(merged), merged)
