"""Contexts: named engine endpoints, so one cman drives many hosts.

As the docker CLI's contexts and LXD's remotes: a context names ONE backend and where its
engine is (``--docker unix://|tcp://|ssh://``, ``--lxd https://HOST:8443`` with a client
certificate, ``--lxc --lxcpath P``). The engine's own endpoint module checks the URL and
options and turns them into the settings the backend reads
(:func:`cman.backends.context_settings`); nothing here knows an engine's details.

Stored in cman's config folder (:func:`cman.config.config_dir`), one JSON file per context,
``contexts/NAME.json``, and the current context (``cman context use``) in
``contexts/current``. Files are written atomically with mode 0600 (a context may point at
a private key) in a 0700 folder; a file or folder that others may write is refused: it
would choose which engine cman talks to and with which key.

Which context a run uses: ``--context NAME`` > ``$CMAN_CONTEXT`` > the current one > none
(the environment and the auto-detected local engines, as without contexts). ``default``
names that last case; ``all`` means every stored context at once (``ps``, ``images``,
``stats``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CmanError, Conflict, InvalidName, InvalidValue, NotFound, UsageError

ENV_CONTEXT = "CMAN_CONTEXT"
ALL = "all"
DEFAULT = "default"
RESERVED = (ALL, DEFAULT)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
NAME_RULES = "context names are 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
CURRENT = "current"
"""The file in the contexts folder that holds the current context's name."""
FILE_MODE = 0o600
DIR_MODE = 0o700
OPTIONS = ("cert", "key", "verify", "lxcpath")
"""Options a context may store (each engine takes some of them; its endpoint module says which)."""


class ContextNotFound(NotFound):
    def __init__(self, name: str, source: str | None = None) -> None:
        where = f" (from {source})" if source else ""
        super().__init__(f"no such context: {name}{where}", hint="see `cman context ls`")
        self.name = name


@dataclass(frozen=True)
class Context:
    """A stored context: its backend, its URL and options as given (paths made absolute),
    and the settings the backend reads (computed and checked when loaded)."""

    name: str
    backend: str
    url: str | None
    options: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        """What the context points at, for listings: the URL, or the LXC path."""
        return self.url or self.options.get("lxcpath") or next((v for v in self.settings.values() if v), "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "backend": self.backend, "endpoint": self.endpoint, "url": self.url,
                "options": dict(self.options), "settings": dict(self.settings)}


def check_name(name: str) -> str:
    """A name a context may have: not empty, no '/', ':' or leading '-', and not ``all``/``default``."""
    if not NAME_RE.fullmatch(name):
        raise InvalidName(f"invalid context name {name!r}", hint=NAME_RULES)
    if name in RESERVED:
        raise InvalidName(f"the context name {name!r} is reserved",
                          hint="'all' means every context and 'default' none; choose another name")
    return name


def store_dir(env: Mapping[str, str] | None = None) -> Path:
    from .config import config_dir

    return config_dir(env) / "contexts"


def _path(name: str, env: Mapping[str, str] | None) -> Path:
    return store_dir(env) / f"{name}.json"


def _checked_dir(env: Mapping[str, str] | None, *, create: bool = False) -> Path:
    from .config import check_not_writable_by_others

    folder = store_dir(env)
    if create:
        folder.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    check_not_writable_by_others(folder, "contexts folder")
    return folder


def settings_for(backend: str, url: str | None, options: Mapping[str, str]) -> dict[str, str]:
    from . import backends

    return backends.context_settings(backend, url, options)


def create(name: str, backend: str, url: str | None, options: Mapping[str, str] | None = None, *,
           env: Mapping[str, str] | None = None) -> Context:
    """Check and store a new context (Conflict when the name is taken)."""
    check_name(name)
    options = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidValue("context option", unknown[0], f"known options: {', '.join(OPTIONS)}")
    # a file named relative to here is stored absolute, so the context works from anywhere
    options = {k: os.path.abspath(v) if v and os.path.isfile(v) else v for k, v in options.items()}
    settings = settings_for(backend, url, options)
    folder = _checked_dir(env, create=True)
    path = folder / f"{name}.json"
    if path.exists():
        raise Conflict(f"context {name} already exists", hint=f"remove it first: cman context rm {name}")
    record = {"backend": backend, "url": url, "options": options}
    from ._sys.files import atomic_write

    atomic_write(path, json.dumps(record, indent=2, sort_keys=True) + "\n", mode=FILE_MODE)
    return Context(name, backend, url, options, settings)


def load(name: str, *, env: Mapping[str, str] | None = None, source: str | None = None) -> Context:
    """A stored context, checked again (the files it names must still exist)."""
    if name in RESERVED or not NAME_RE.fullmatch(name):
        if name in RESERVED:
            raise UsageError(f"{name!r} is not a stored context here", hint="name one from `cman context ls`")
        raise ContextNotFound(name, source)
    _checked_dir(env)
    path = _path(name, env)
    from .config import check_not_writable_by_others

    check_not_writable_by_others(path, f"context file of {name}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ContextNotFound(name, source) from None
    except OSError as err:
        raise InvalidValue(f"context file of {name}", str(path), f"cannot read it ({err.strerror})") from None
    try:
        data = json.loads(raw)
    except ValueError:
        raise InvalidValue(f"context file of {name}", str(path), "not valid JSON") from None
    if not (isinstance(data, dict) and isinstance(data.get("backend"), str)
            and isinstance(data.get("url"), (str, type(None))) and isinstance(data.get("options", {}), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in data.get("options", {}).items())):
        raise InvalidValue(f"context file of {name}", str(path),
                           'expected {"backend": NAME, "url": URL or null, "options": {KEY: VALUE}}')
    options = dict(data.get("options") or {})
    try:
        settings = settings_for(data["backend"], data["url"], options)
    except CmanError as err:
        raise UsageError(f"context {name}: {err}", hint=None) from err
    return Context(name, data["backend"], data["url"], options, settings)


def names(env: Mapping[str, str] | None = None) -> list[str]:
    """The stored contexts' names, sorted."""
    try:
        entries = os.listdir(_checked_dir(env))
    except FileNotFoundError:
        return []
    return sorted(e[:-5] for e in entries if e.endswith(".json") and NAME_RE.fullmatch(e[:-5]))


def remove(name: str, *, env: Mapping[str, str] | None = None) -> None:
    """Remove a stored context; when it was the current one, there is no current one anymore."""
    check_name(name)
    _checked_dir(env)
    try:
        _path(name, env).unlink()
    except FileNotFoundError:
        raise ContextNotFound(name) from None
    if current(env) == name:
        (store_dir(env) / CURRENT).unlink(missing_ok=True)


def current(env: Mapping[str, str] | None = None) -> str | None:
    """The context ``cman context use`` chose, or None."""
    path = store_dir(env) / CURRENT
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, PermissionError):
        # cman writes it 0600 in a 0700 folder: one this user cannot read is another user's
        # choice (HOME kept across `sudo -u`), not this user's, as an absent one is
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidValue("current context file", str(path), f"cannot read it ({err})") from None
    from .config import check_not_writable_by_others

    check_not_writable_by_others(path, "current context file")
    if not text or text == DEFAULT:
        return None
    if not NAME_RE.fullmatch(text) or text in RESERVED:
        raise InvalidValue("current context file", str(path), f"{text[:64]!r} is not a context name")
    return text


def use(name: str, *, env: Mapping[str, str] | None = None) -> None:
    """Make ``name`` the current context (``default``: none)."""
    path = _checked_dir(env, create=True) / CURRENT
    if name == DEFAULT:
        path.unlink(missing_ok=True)
        return
    load(name, env=env)
    from ._sys.files import atomic_write

    atomic_write(path, name + "\n", mode=FILE_MODE)


def selected(option: str | None, env: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """The context a run uses and where that came from: ``--context`` > ``$CMAN_CONTEXT`` > the
    current one; None (with ``default``) means none. ``all`` is returned as is."""
    env = os.environ if env is None else env
    if option:
        return (None if option == DEFAULT else option), "--context"
    if env.get(ENV_CONTEXT):
        value = env[ENV_CONTEXT]
        return (None if value == DEFAULT else value), f"${ENV_CONTEXT}"
    return current(env), "cman context use"
