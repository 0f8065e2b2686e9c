"""cman's own config file: registry mirrors, insecure registries, and registries to search.

Read from ``$XDG_CONFIG_HOME/cman/config.toml`` (default ``~/.config``), then
``/etc/cman/config.toml``; the first file that exists wins, key by key the user's file
first. ``$CMAN_REGISTRY_MIRROR`` (comma-separated URLs) replaces ``registry_mirrors``.

    registry_mirrors = ["http://127.0.0.1:5000"]   # docker.io pulls on LXD and LXC
    insecure_registries = ["10.0.0.5:5000"]        # plain HTTP (127.0.0.1, localhost: always)
    search_registries = ["https://reg.example"]    # also listed by `cman search`

The mirrors apply to docker.io pulls on every engine, Docker included: cman pulls
``MIRROR/library/NAME:TAG`` through the daemon and tags it ``NAME:TAG``. Without a mirror
here, Docker's own daemon-level ``registry-mirrors`` (``cman engine configure docker``)
apply; this file never changes the daemon. Credentials are never stored here: cman hands the
``auth.json`` the user already has to skopeo by path (:func:`auth_file`).
A bad file is :class:`InvalidValue` (exit 2), one line naming the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InvalidValue

ENV_MIRROR = "CMAN_REGISTRY_MIRROR"
SYSTEM_FILE = Path("/etc/cman/config.toml")
KEYS = ("registry_mirrors", "insecure_registries", "search_registries")
IMPLICITLY_INSECURE = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Mirror:
    url: str
    host: str
    """``HOST[:PORT]``: the registry part of a reference on this mirror."""
    insecure: bool
    """Plain HTTP (``http://``)."""


@dataclass(frozen=True)
class Config:
    registry_mirrors: tuple[Mirror, ...] = ()
    insecure_registries: tuple[str, ...] = ()
    search_registries: tuple[Mirror, ...] = ()
    """More registries ``cman search`` lists (mirrors and insecure registries are listed too)."""
    sources: tuple[str, ...] = ()
    """The files read (for messages)."""

    def insecure(self, registry: str) -> bool:
        """Reached over plain HTTP: declared, a http:// mirror, or loopback (as Docker does)."""
        host = registry.rpartition(":")[0] if registry.count(":") == 1 else registry
        return (host in IMPLICITLY_INSECURE or registry in self.insecure_registries
                or any(m.host == registry and m.insecure for m in self.registry_mirrors))


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """cman's own folder of the user's configuration: ``$XDG_CONFIG_HOME/cman`` (default ``~/.config/cman``)."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "cman"


def user_file(env: Mapping[str, str] | None = None) -> Path:
    return config_dir(env) / "config.toml"


def check_not_writable_by_others(path: Path, what: str) -> None:
    """Refuse (exit 2) a file or folder that another user could change: one that says which
    engine cman talks to and with which key must be the user's alone."""
    import stat

    try:
        info = path.stat()
    except FileNotFoundError:
        return
    except OSError as err:
        raise InvalidValue(what, str(path), f"cannot read it ({err.strerror})") from None
    if info.st_mode & 0o022:
        raise InvalidValue(what, str(path), f"group or others may write it (mode {stat.S_IMODE(info.st_mode):04o}): "
                           f"run chmod go-w {path}")
    if info.st_uid not in (os.getuid(), 0):
        raise InvalidValue(what, str(path), f"it belongs to another user (uid {info.st_uid})")


def parse_mirror(url: str, where: str, what: str = "registry mirror") -> Mirror:
    from .oci.refs import DOMAIN  # not at import: `ps` reads config_dir() only

    m = re.fullmatch(rf"(https?)://({DOMAIN})/?", url.strip())  # re caches the compiled pattern
    if not m:
        raise InvalidValue(f"{what} ({where})", url,
                           "write http(s)://HOST[:PORT], e.g. http://127.0.0.1:5000 (no path)")
    port = m.group(2).rpartition(":")[2] if ":" in m.group(2) else "1"
    if not 0 < int(port) <= 65535:
        raise InvalidValue(f"{what} ({where})", url, "port out of range")
    return Mirror(url=f"{m.group(1)}://{m.group(2)}", host=m.group(2), insecure=m.group(1) == "http")


def parse(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check one file's table; returns the keys it sets (already checked)."""
    from .oci.refs import DOMAIN

    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise InvalidValue(f"key in {where}", unknown[0], f"known keys: {', '.join(KEYS)}")
    out: dict[str, Any] = {}
    for key in KEYS:
        if key not in data:
            continue
        value = data[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidValue(f"{key} in {where}", value, "must be a list of strings")
        if key in ("registry_mirrors", "search_registries"):
            what = "registry mirror" if key == "registry_mirrors" else "search registry"
            out[key] = tuple(parse_mirror(v, where, what) for v in value)
        else:
            for v in value:
                if not re.fullmatch(DOMAIN, v):
                    raise InvalidValue(f"{key} in {where}", v, "write HOST[:PORT]")
            out[key] = tuple(value)
    return out


def _read(path: Path) -> dict[str, Any] | None:
    import tomllib

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise InvalidValue("config file", str(path), f"cannot read it ({err.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InvalidValue("config file", str(path), f"not valid TOML ({err})") from None
    return parse(data, str(path))


def load(env: Mapping[str, str] | None = None, *, system_file: Path = SYSTEM_FILE) -> Config:
    """The user's file over the system's, then the environment."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    sources: list[str] = []
    for path in (system_file, user_file(env)):
        found = _read(path)
        if found is not None:
            merged.update(found)
            sources.append(str(path))
    if env.get(ENV_MIRROR) is not None:
        urls = [u for u in env[ENV_MIRROR].split(",") if u.strip()]
        merged["registry_mirrors"] = tuple(parse_mirror(u, f"${ENV_MIRROR}") for u in urls)
    return Config(sources=tuple(sources), **merged)


def auth_file(env: Mapping[str, str] | None = None) -> Path | None:
    """The credentials file the user already has, for skopeo's ``--src-authfile``:
    ``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``, ``~/.docker/config.json``."""
    env = os.environ if env is None else env
    candidates = [env.get("REGISTRY_AUTH_FILE") or ""]
    if env.get("XDG_RUNTIME_DIR"):
        candidates.append(str(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"))
    candidates.append(str(Path(env.get("HOME") or Path.home()) / ".docker" / "config.json"))
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


def credentials(registry: str, env: Mapping[str, str] | None = None) -> str | None:
    """The base64 ``user:password`` the auth file (:func:`auth_file`) keeps for ``registry``
    (``HOST[:PORT]``; Docker Hub under its legacy key too), or None. For a request header only:
    never printed, never on a command line. An unreadable file is no credentials."""
    import json

    path = auth_file(env)
    if path is None:
        return None
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    keys = [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/", f"https://{registry}/v2/"]
    if registry in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        keys += ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("auth"), str) and entry["auth"]:
            return str(entry["auth"])
    return None
