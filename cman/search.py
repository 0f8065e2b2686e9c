"""``cman search TERM``: repositories and tags in the configured registries, and images on the
configured LXD image servers.

Sources, in this order, each asked at most once:

- registries from :mod:`cman.config`: ``registry_mirrors``, ``search_registries``, and
  ``insecure_registries`` (plain HTTP), listed with ``GET /v2/_catalog`` then
  ``GET /v2/REPO/tags/list`` for each matching repository (:mod:`cman.oci.registry`);
- image servers an engine declares (:meth:`Backend.image_servers`: LXD's
  ``$CMAN_LXD_REMOTES``), read as simplestreams: ``streams/v1/index.json`` then its products.

Only what the user configured is contacted: no configuration is a usage error, never a
query to docker.io or a public image server. Sources are asked in parallel, each with a
timeout; one that cannot be listed is a :class:`Failure` and the others still count.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urljoin

from . import backends
from . import config as _config
from ._sys.urlget import FetchError, get
from .backends.base import ImageServer
from .errors import ExitCode, InvalidValue, UsageError
from .oci.registry import Client, RegistryError

DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
TIMEOUT = 10.0
INDEX = "streams/v1/index.json"
HINT = ("name a registry in ~/.config/cman/config.toml (registry_mirrors, search_registries or "
        "insecure_registries) or $CMAN_REGISTRY_MIRROR, or an LXD image server in $CMAN_LXD_REMOTES")


class SourceError(Exception):
    """One source could not be listed; the message says why."""


@dataclass(frozen=True)
class Source:
    label: str
    """What the user configured, as messages show it: a registry's URL, ``lxd remote NAME (URL)``."""
    kind: str
    """``registry`` or ``simplestreams``."""
    url: str
    short: str
    """The source's column in the table: ``HOST[:PORT]`` or ``lxd:NAME``."""
    certificate: str | None = None
    remote: str | None = None
    """For an image server: the remote name, so ``REMOTE:ALIAS`` pulls the hit."""


@dataclass(frozen=True)
class Hit:
    source: str
    kind: str
    name: str
    """What to give ``cman pull``: ``HOST/REPO`` or ``REMOTE:ALIAS``."""
    repository: str
    """The repository, or the image server's product."""
    tags: tuple[str, ...]
    """A registry's tags; an image server's aliases of the product."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tags"] = list(self.tags)
        return data


@dataclass(frozen=True)
class Failure:
    source: str
    why: str


@dataclass(frozen=True)
class Result:
    hits: tuple[Hit, ...]
    failures: tuple[Failure, ...]
    answered: int
    """Sources that answered (with hits or none)."""
    searched: int = field(default=0)

    @property
    def exit_code(self) -> int:
        """0 when at least one source answered, else 5 (every source unavailable)."""
        return 0 if self.answered else int(ExitCode.UNAVAILABLE)


def check_term(term: str) -> str:
    if not term.strip() or len(term) > 255 or not term.isprintable():
        raise InvalidValue("TERM", term, "write 1-255 printable characters, e.g. busybox")
    return term


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidValue("--limit", limit, f"write 1-{MAX_LIMIT}")
    return limit


def sources(config: _config.Config, servers: Sequence[ImageServer] = ()) -> list[Source]:
    """Every configured source, registries first, each registry once (by HOST[:PORT])."""
    out: list[Source] = []
    seen: set[str] = set()
    for mirror in (*config.registry_mirrors, *config.search_registries):
        if mirror.host not in seen:
            seen.add(mirror.host)
            out.append(Source(mirror.url, "registry", mirror.url, mirror.host))
    for host in config.insecure_registries:
        if host not in seen:
            seen.add(host)
            out.append(Source(f"http://{host}", "registry", f"http://{host}", host))
    for server in servers:
        if server.protocol == "simplestreams":
            out.append(Source(f"lxd remote {server.name} ({server.url})", "simplestreams", server.url,
                              f"lxd:{server.name}", server.certificate, server.name))
    return out


def matches(term: str, *names: str) -> bool:
    needle = term.lower()
    return any(needle in n.lower() for n in names)


def registry_hits(source: Source, term: str, limit: int, *, timeout: float = TIMEOUT) -> list[Hit]:
    client = Client(source.url, _config.credentials(source.short), timeout=timeout)
    try:
        repos = [r for r in client.catalog() if matches(term, r)][:limit]
    except RegistryError as err:
        raise SourceError(str(err)) from None
    hits = []
    for repo in sorted(repos):
        try:
            tags = client.tags(repo)
        except RegistryError:
            tags = []  # gone since the catalog, or all its tags deleted: nothing to pull
        if tags:
            hits.append(Hit(source.short, "registry", f"{source.short}/{repo}", repo, tuple(tags)))
    return hits


def product_hits(source: Source, products: Any, term: str, limit: int) -> list[Hit]:
    """Matching products of a simplestreams products file (``{"products": {ID: {"aliases":
    "a,b", ...}}}``): by product ID or alias."""
    table = products.get("products") if isinstance(products, dict) else None
    if not isinstance(table, dict):
        raise SourceError("not a simplestreams products file (no 'products' object)")
    hits = []
    for product_id in sorted(table):
        product = table[product_id]
        raw = product.get("aliases") if isinstance(product, dict) else None
        aliases = tuple(sorted(a.strip() for a in raw.split(",") if a.strip())) if isinstance(raw, str) else ()
        if not matches(term, str(product_id), *aliases):
            continue
        first = min(aliases, key=len) if aliases else str(product_id)
        hits.append(Hit(source.short, "simplestreams", f"{source.remote}:{first}", str(product_id), aliases))
        if len(hits) >= limit:
            break
    return hits


def product_paths(index: Any) -> list[str]:
    """The products files an index lists for image downloads."""
    entries = index.get("index") if isinstance(index, dict) else None
    if not isinstance(entries, dict):
        raise SourceError(f"not a simplestreams index (no 'index' object in {INDEX})")
    return [str(e["path"]) for e in entries.values()
            if isinstance(e, dict) and e.get("datatype") == "image-downloads" and isinstance(e.get("path"), str)]


def server_hits(source: Source, term: str, limit: int, *, timeout: float = TIMEOUT) -> list[Hit]:
    base = source.url.rstrip("/") + "/"
    hits: list[Hit] = []
    for path in product_paths(_get_json(urljoin(base, INDEX), source, timeout)):
        hits += product_hits(source, _get_json(urljoin(base, path), source, timeout), term, limit - len(hits))
        if len(hits) >= limit:
            break
    return hits


def _get_json(url: str, source: Source, timeout: float) -> Any:
    try:
        answer = get(url, timeout=timeout, cadata=source.certificate)
    except FetchError as err:
        raise SourceError(str(err)) from None
    path = url.removeprefix(source.url.rstrip("/"))
    if answer.status != 200:
        raise SourceError(f"HTTP {answer.status} on {path}")
    try:
        return json.loads(answer.body)
    except ValueError:
        raise SourceError(f"not a JSON answer from {path}") from None


def _one(source: Source, term: str, limit: int, timeout: float) -> list[Hit] | Failure:
    try:
        if source.kind == "registry":
            return registry_hits(source, term, limit, timeout=timeout)
        return server_hits(source, term, limit, timeout=timeout)
    except SourceError as err:
        return Failure(source.label, str(err))


def search(term: str, *, limit: int = DEFAULT_LIMIT, backend: str | None = None,
           timeout: float = TIMEOUT) -> Result:
    """Ask every configured source (only ``backend``'s image servers when one is named)."""
    check_term(term)
    check_limit(limit)
    config = _config.load()
    servers: list[ImageServer] = []
    for name in [backend] if backend else backends.names():
        servers += backends.backend_class(name).image_servers()
    todo = sources(config, servers)
    if not todo:
        raise UsageError("search: no registry or image server is configured to search", hint=HINT)
    with ThreadPoolExecutor(max_workers=min(8, len(todo))) as pool:
        found = list(pool.map(lambda s: _one(s, term, limit, timeout), todo))
    hits = tuple(h for f in found if isinstance(f, list) for h in f)
    failures = tuple(f for f in found if isinstance(f, Failure))
    return Result(hits, failures, answered=len(todo) - len(failures), searched=len(todo))
