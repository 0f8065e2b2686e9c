"""Where profiles are found and how they are read (the package's :func:`load`, :func:`available`)."""


from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import SYSTEM_FILE, user_file
from ..errors import InvalidName, InvalidProfile, ProfileNotFound
from ..models import _Jsonable
from .schema import Profile, merge, parse

SHIPPED_DIR = Path(__file__).resolve().parent
SYSTEM_DIR = SYSTEM_FILE.parent / "profiles"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
NAME_RULES = "1-63 lower-case letters, digits, '_' and '-', starting with a letter or digit"
MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class ProfileInfo(_Jsonable):
    """One entry of ``cman profile ls``."""

    name: str
    origin: str
    """``user``, ``system`` or ``shipped``."""
    path: str
    description: str
    shadows: tuple[str, ...] = ()
    """Files of the same name that this one hides (lower precedence)."""


def folders(env: Mapping[str, str] | None = None, *, system_dir: Path = SYSTEM_DIR,
            shipped_dir: Path = SHIPPED_DIR) -> list[tuple[str, Path]]:
    """(origin, folder) from the highest precedence to the lowest."""
    return [("user", user_file(env).parent / "profiles"), ("system", system_dir), ("shipped", shipped_dir)]


def check_name(name: str) -> str:
    """A profile name is a file name without a path: nothing can reach outside the folders."""
    if not NAME_RE.fullmatch(name):
        raise InvalidName(f"invalid profile name {name!r}", hint=NAME_RULES)
    return name


def _read(name: str, path: Path) -> Profile:
    import tomllib

    try:
        raw = path.read_bytes()[: MAX_BYTES + 1]
    except OSError as err:
        raise InvalidProfile(str(path), f"cannot read it ({err.strerror})") from None
    if len(raw) > MAX_BYTES:
        raise InvalidProfile(str(path), f"larger than {MAX_BYTES // 1024} KiB")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InvalidProfile(str(path), f"not valid TOML ({err})") from None
    return parse(name, data, str(path))


def _hits(name: str, dirs: Sequence[tuple[str, Path]]) -> list[tuple[str, Path]]:
    return [(origin, d / f"{name}.toml") for origin, d in dirs if (d / f"{name}.toml").is_file()]


def load(name: str, env: Mapping[str, str] | None = None, *, system_dir: Path = SYSTEM_DIR,
         shipped_dir: Path = SHIPPED_DIR) -> Profile:
    """The profile ``name`` from the first folder that has it (module docstring: the precedence)."""
    check_name(name)
    dirs = folders(env, system_dir=system_dir, shipped_dir=shipped_dir)
    hits = _hits(name, dirs)
    if not hits:
        raise ProfileNotFound(name, ", ".join(str(d) for _, d in dirs))
    return _read(name, hits[0][1])


def load_many(names: Sequence[str], env: Mapping[str, str] | None = None, *, system_dir: Path = SYSTEM_DIR,
              shipped_dir: Path = SHIPPED_DIR) -> Profile:
    """``--profile A --profile B``: each loaded, then merged in that order (B wins)."""
    return merge(load(n, env, system_dir=system_dir, shipped_dir=shipped_dir) for n in names)


def available(env: Mapping[str, str] | None = None, *, system_dir: Path = SYSTEM_DIR,
              shipped_dir: Path = SHIPPED_DIR) -> list[ProfileInfo]:
    """Every profile name found, with the file that wins; a file that does not parse is an error
    (naming it), so a broken profile is noticed at ``ls`` rather than at ``run``."""
    dirs = folders(env, system_dir=system_dir, shipped_dir=shipped_dir)
    names: set[str] = set()
    for _, d in dirs:
        try:
            entries = os.listdir(d)
        except OSError:
            continue
        names.update(e[: -len(".toml")] for e in entries if e.endswith(".toml") and NAME_RE.fullmatch(e[:-5]))
    out = []
    for name in sorted(names):
        hits = _hits(name, dirs)
        if not hits:
            continue
        origin, path = hits[0]
        profile = _read(name, path)
        out.append(ProfileInfo(name, origin, str(path), profile.description or "",
                               tuple(str(p) for _, p in hits[1:])))
    return out

