"""The backend contract every engine implements.

A backend is one package with one class. The class declares what its engine can
do in ``capabilities``; an *instance* says what it can do where it is connected
(:meth:`Backend.features`): a remote engine cannot do what needs this host's
files (bridge ports, cgroups, bind-mounted files). Callers check with
:meth:`Backend.require` before relying on a feature, so "not supported" is a clear
:class:`~cman.errors.Unsupported` error that names the backend and the feature, up
front and the same way on every backend, never an AttributeError, a crash, or a
silently skipped step.

:meth:`Backend.locality` says where the containers run: on this host (their init
PIDs and cgroups are this kernel's) or elsewhere. :meth:`Backend.init_pids` finds
the init PIDs of many containers at once, as cheaply as the engine allows.

Names are validated by :meth:`Backend.validate_name` before any engine call.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ..errors import ContainerNotFound, Unsupported
from ..models import State

if TYPE_CHECKING:
    from ..cgroups.counters import CpuCounters
    from ..models import (
        ClusterMember,
        Container,
        ContainerSpec,
        EngineStatus,
        ExecResult,
        Image,
        ImageConfig,
        ImageLayer,
        LogChunk,
        PruneResult,
        PullProgress,
        StdIO,
    )
    from ..network.spec import Network, NetworkSpec


class Feature(StrEnum):
    """Features a backend may declare. ``cman engine features`` prints the matrix."""

    PULL = "pull"
    PULL_PROGRESS = "pull-progress"
    IMAGE_IMPORT = "image-import"
    IMAGE_HISTORY = "image-history"
    IMAGE_EXPORT = "image-export"
    """An image's root filesystem as a tarball (``image copy`` between engines)."""
    TTY = "tty"
    EXEC = "exec"
    LOGS = "logs"
    LOGS_FOLLOW = "logs-follow"
    CPU_LIMIT = "cpu-limit"
    MEMORY_LIMIT = "memory-limit"
    NETWORKS = "networks"
    NO_ICC = "no-icc"
    """Networks without inter-container traffic: bridge ports isolated on the engine's host."""
    NETWORK_DNS = "network-dns"
    """A container's resolv.conf shows its network's DNS servers."""
    CPU_STATS = "cpu-stats"
    """CPU accounting from the cgroup files of this host."""
    API_CPU_STATS = "api-cpu-stats"
    """CPU counters from the engine's own API (:meth:`Backend.cpu_counters`): how ``stats``
    samples containers that run on another host."""
    REMOTE = "remote"
    NESTING = "nesting"
    """Containers inside a container (``ContainerSpec.nesting``: Docker in LXD or LXC)."""
    CLUSTER = "cluster"
    """The engine can be a cluster of hosts (an LXD cluster): ``run --target MEMBER``, each
    container's ``location``, and the members in ``engine status``. Whether the daemon is a
    cluster member is asked by ``require(Feature.CLUSTER)`` only, never by ``features()``."""


LOCAL_ONLY = frozenset({Feature.NO_ICC, Feature.NETWORK_DNS, Feature.CPU_STATS})
"""Features that need the engine on this host. Docker's NETWORK_DNS is a bind-mounted file
of this host; LXD writes resolv.conf through its API, so it keeps NETWORK_DNS when remote."""


@dataclass(frozen=True)
class Locality:
    """Where a backend's containers run."""

    local: bool
    """On this host: their init PIDs, cgroups and host veths are this kernel's."""
    endpoint: str
    why: str | None = None
    """For a remote engine, what says so (``DOCKER_HOST=ssh://...``)."""


@dataclass(frozen=True)
class ImageServer:
    """An image server an engine pulls from besides OCI registries (LXD's simplestreams
    remotes), as configured for it: what ``cman search`` lists."""

    name: str
    """The remote's name: ``NAME:ALIAS`` pulls from it."""
    url: str
    protocol: str = "simplestreams"
    certificate: str | None = None
    """A pinned certificate (PEM) to verify the server with, instead of the system's CAs."""


def loopback_url(url: str) -> bool:
    """Does ``url`` (tcp://, https://) point at this host?"""
    from urllib.parse import urlparse

    host = urlparse(url.replace("tcp://", "http://", 1)).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"


class Backend(abc.ABC):
    """One container engine behind cman's verbs.

    Container arguments (``ref``) are a name or an ID as the engine knows it,
    without the ``backend:`` prefix (the CLI strips it).
    """

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Feature]]
    system_containers: ClassVar[bool] = False
    """True when containers boot an init and ``run CMD`` executes CMD inside (LXD, LXC)."""

    # -- engine -----------------------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> EngineStatus:
        """Is the engine installed, running and reachable? Never raises; says the fix."""

    @classmethod  # noqa: B027 - optional hook
    def validate_spec(cls, spec: ContainerSpec) -> None:
        """Engine-specific rules on a container spec, checked before any engine call (exit 2).

        Example: LXD turns environment values into LXC config lines, so it refuses newlines
        in them; Docker passes them through its API and accepts them.
        """

    @classmethod  # noqa: B027 - optional hook
    def validate_image_ref(cls, ref: str) -> None:
        """Raise InvalidName unless ``ref`` could name an image on this engine: the OCI grammar
        where the engine reads a registry reference, and the engine's own forms. Pure (no
        engine call, no instance), so a bad reference is exit 2 before the engine is probed.
        Default: no rule."""

    @classmethod
    def image_servers(cls) -> list[ImageServer]:
        """The non-registry image servers configured for this engine (no engine call). Default: none."""
        return []

    @classmethod
    @abc.abstractmethod
    def validate_name(cls, name: str) -> None:
        """Raise InvalidName unless ``name`` follows the engine's rules for containers."""

    def locality(self) -> Locality:
        """Where this backend's containers run; cheap (configuration only, no connection)."""
        return Locality(True, "local")

    def features(self) -> frozenset[Feature]:
        """What this instance can do where it is connected: the class's capabilities, minus
        what needs this host when the engine is elsewhere."""
        remote_can = self.remote_features()
        return self.capabilities if self.locality().local else self.capabilities - (LOCAL_ONLY - remote_can)

    def remote_features(self) -> frozenset[Feature]:
        """LOCAL_ONLY features this engine still has when it is remote (see LOCAL_ONLY)."""
        return frozenset()

    def require(self, feature: Feature, why: str | None = None) -> None:
        """Raise Unsupported unless this instance has ``feature``; a remote engine says so."""
        if feature in self.features():
            return
        where = self.locality()
        if why is None and feature in self.capabilities and not where.local:
            why = f"the engine is not on this host ({where.why or where.endpoint})"
        raise Unsupported(self.name, str(feature), why)

    def cluster_members(self) -> list[ClusterMember]:
        """The members of the cluster this engine belongs to, with their state. Raises
        Unsupported unless the instance has ``Feature.CLUSTER``."""
        raise Unsupported(self.name, str(Feature.CLUSTER))

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Optional."""

    def prune_leftovers(self, *, dry_run: bool = False) -> list[str]:
        """Remove what a killed cman left half-made on this engine; one line per item, as
        ``KIND NAME: why`` ("container web: created by a run that was killed before it
        started"). With ``dry_run`` nothing is removed. Never touches what a user made or
        what a live cman process is working on. Default: nothing to clean."""
        return []

    # -- images -------------------------------------------------------------------

    @abc.abstractmethod
    def pull(self, ref: str) -> Iterator[PullProgress]:
        """Fetch an image, yielding progress events as they arrive."""

    @abc.abstractmethod
    def images(self) -> list[Image]: ...

    @abc.abstractmethod
    def image_inspect(self, ref: str) -> Image:
        """Raises ImageNotFound."""

    @abc.abstractmethod
    def image_history(self, ref: str) -> list[ImageLayer]: ...

    @abc.abstractmethod
    def image_remove(self, ref: str, *, force: bool = False) -> None:
        """Refuses (InUse) while a container uses the image, unless ``force``."""

    @abc.abstractmethod
    def image_prune(self) -> PruneResult:
        """Remove images that no container uses and that have no name."""

    @abc.abstractmethod
    def image_import(self, tarball: Path, name: str, *, config: ImageConfig | None = None) -> Image:
        """Make an image from a rootfs tarball (the offline path).

        ``config`` (``image copy``: the source image's) becomes the image's own, so runs and
        ``image inspect`` follow it as they follow a pulled image's: Docker's image config;
        on LXD and LXC the stored OCI config, User resolved through the tarball's
        /etc/passwd and /etc/group unless ``config`` has the ids. Without it, each engine's
        defaults for an import (Docker: ``CMD ["/bin/sh"]``).
        """

    def layout_user(self) -> str | None:
        """Who this engine's pulls are in the host's OCI layout (:mod:`cman.oci.layout`): one
        string per image store (``lxc:STORE``, ``lxd:ENDPOINT``), so ``image prune`` drops a
        layout tag only when it asked every store that pulled it. None: no pulls through it."""
        return None

    def image_export(self, ref: str, dest: Path) -> Path:
        """Write the image's root filesystem to ``dest`` as a plain rootfs tarball (members
        relative to /, possibly compressed: every ``image_import`` detects it) and return it.

        The counterpart of :meth:`image_import`, so ``image copy`` moves an image between
        engines; ``dest`` is written whole or not at all. Raises ImageNotFound.
        """
        raise Unsupported(self.name, str(Feature.IMAGE_EXPORT))

    # -- containers ---------------------------------------------------------------

    @abc.abstractmethod
    def create(self, spec: ContainerSpec) -> Container:
        """Create (not start) a container marked as managed by cman.

        On failure nothing is left behind. Never retried: it is not idempotent.
        """

    @abc.abstractmethod
    def start(self, ref: str) -> None: ...

    @abc.abstractmethod
    def start_attached(self, ref: str, io: StdIO) -> int:
        """Start a created container in the foreground and return its command's exit code.

        For application containers (Docker) this attaches to the main process; for
        system containers it boots init, then runs the stored command inside.
        """

    @abc.abstractmethod
    def stop(self, ref: str, *, timeout: float = 10) -> None:
        """Ask nicely, wait up to ``timeout`` seconds, then kill."""

    def restart(self, ref: str, *, timeout: float = 10) -> None:
        self.stop(ref, timeout=timeout)
        self.start(ref)

    @abc.abstractmethod
    def remove(self, ref: str, *, force: bool = False) -> None:
        """Remove a container; ``force`` kills it first when running."""

    @abc.abstractmethod
    def containers(self, *, all: bool = False) -> list[Container]:  # noqa: A002 - docker's word
        """Running containers, or every container with ``all``."""

    @abc.abstractmethod
    def inspect(self, ref: str) -> Container:
        """Raises ContainerNotFound."""

    @abc.abstractmethod
    def exec(
        self,
        ref: str,
        command: Sequence[str],
        io: StdIO,
        *,
        env: dict[str, str] | None = None,
    ) -> int:
        """Run a command in a running container with the given streams; return its exit code."""

    def exec_capture(self, ref: str, command: Sequence[str], *, stdin: bytes = b"") -> ExecResult:
        """Run a command and capture its output (library convenience over :meth:`exec`)."""
        import io as _io

        from ..models import ExecResult, StdIO

        out, err = _io.BytesIO(), _io.BytesIO()
        code = self.exec(ref, command, StdIO(stdin=_io.BytesIO(stdin) if stdin else None, stdout=out, stderr=err))
        return ExecResult(code, out.getvalue(), err.getvalue())

    @abc.abstractmethod
    def logs(self, ref: str, *, follow: bool = False) -> Iterator[LogChunk]: ...

    @abc.abstractmethod
    def wait(self, ref: str) -> int:
        """Block until the container's command exits; return its exit code."""

    @abc.abstractmethod
    def init_pid(self, ref: str) -> int | None:
        """Host PID of the container's init process, or None when it is not running."""

    def cpu_counters(self, ids: Sequence[str]) -> dict[str, CpuCounters | None]:
        """Container ID -> cumulative CPU counters as the engine's API reports them (None for a
        container that stopped or vanished); ``user_ns``/``system_ns`` are None where the
        engine does not split them. For engines elsewhere: a local one is read from cgroups."""
        raise Unsupported(self.name, str(Feature.API_CPU_STATS))

    def init_pids(self, containers: Sequence[Container]) -> dict[str, int | None]:
        """Container ID -> host PID of its init, for many containers at once (``stats``).

        The listing's PID where it has one, else one :meth:`init_pid` call per running
        container; engines override this with something cheaper. Only meaningful when
        :meth:`locality` is local: :meth:`require` ``CPU_STATS`` first.
        """
        out: dict[str, int | None] = {}
        for c in containers:
            if c.pid is not None or c.state not in (State.RUNNING, State.PAUSED, State.RESTARTING):
                out[c.id] = c.pid
                continue
            try:
                out[c.id] = self.init_pid(c.id)
            except ContainerNotFound:
                out[c.id] = None  # removed since the listing
        return out

    # -- networks ---------------------------------------------------------------------
    # Declared here so every backend shows up in the feature matrix. A backend that
    # implements networks declares Feature.NETWORKS and overrides the four verbs.
    # Callers go through cman.lifecycle.create_network / remove_network, which
    # validate, resolve and lock before calling these.

    @classmethod  # noqa: B027 - optional hook
    def validate_network_spec(cls, spec: NetworkSpec) -> None:
        """Engine-specific rules on a network spec, checked before any engine call.

        Called twice: on the user's spec (fields may be None) and on the resolved one.
        Raise InvalidName / InvalidValue naming the field. Default: no extra rule.
        """

    @classmethod
    def default_bridge_name(cls, network: str) -> str:
        """The bridge interface used when the user gives no ``--bridge``."""
        from ..network.spec import default_bridge_name

        return default_bridge_name(network)

    def network_create(self, spec: NetworkSpec) -> Network:
        """Create a network from a *resolved* spec (subnet, gateway and bridge set).

        Called under :func:`cman.network.host_lock` after the caller checked that no
        network of that name exists, that the subnet overlaps nothing on the host or
        in ``networks()`` and that the bridge interface does not exist yet. Must
        record dns, dns_search and icc with the network (``spec.labels()``) and mark
        it managed, install the host rules it needs (:mod:`cman.netfilter`), and on
        failure leave nothing behind.
        """
        raise Unsupported(self.name, str(Feature.NETWORKS))

    def networks(self) -> list[Network]:
        """Every network of this engine that has a bridge (managed or not)."""
        raise Unsupported(self.name, str(Feature.NETWORKS))

    def network_inspect(self, name: str) -> Network:
        """Raises NetworkNotFound. ``containers`` lists attached containers, running or not."""
        raise Unsupported(self.name, str(Feature.NETWORKS))

    def network_remove(self, name: str, *, force: bool = False) -> None:
        """Remove a network and the host rules cman installed for it.

        Refuses (InUse, naming them) while containers are attached, unless ``force``,
        which detaches them first (they are kept). Raises NetworkNotFound.
        """
        raise Unsupported(self.name, str(Feature.NETWORKS))
