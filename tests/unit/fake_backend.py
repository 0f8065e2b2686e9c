"""An in-memory backend for tests of the verbs (lifecycle, leftovers) and of the CLI, no engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar, cast

from cman.backends.base import Backend, Feature
from cman.errors import ContainerNotFound, ImageNotFound
from cman.models import (
    Container,
    ContainerSpec,
    EngineStatus,
    Image,
    ImageConfig,
    ImageLayer,
    LogChunk,
    PruneResult,
    PullProgress,
    State,
    StdIO,
)
from cman.network.spec import Network


class FakeBackend(Backend):
    """Containers in a dict; every call logged in ``calls``; hooks to fail or to be interrupted."""

    name: ClassVar[str] = "docker"
    capabilities: ClassVar[frozenset[Feature]] = frozenset({Feature.NETWORKS})
    spec_rule: ClassVar[Callable[[ContainerSpec], None] | None] = None

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.made: dict[str, ContainerSpec] = {}
        self.states: dict[str, State] = {}
        self.exit_code = 0
        self.on_create: Callable[[], None] | None = None
        self.start_error: BaseException | None = None
        self.remove_error: BaseException | None = None
        self.engine_removes = False
        """auto_remove containers vanish when their command ends (an engine's AutoRemove)."""
        self.leftover_lines: list[str] = []
        self.network_names: list[str] = []

    @classmethod
    def probe(cls) -> EngineStatus:
        return EngineStatus(cls.name, True, True, True)

    @classmethod
    def validate_name(cls, name: str) -> None:
        return None

    @classmethod
    def validate_spec(cls, spec: ContainerSpec) -> None:
        if cls.spec_rule is not None:
            cls.spec_rule(spec)

    def _container(self, ref: str) -> Container:
        if ref not in self.made:
            raise ContainerNotFound(ref, self.name)
        spec = self.made[ref]
        return Container(self.name, ref, ref, spec.image, self.states[ref], "", True, labels=dict(spec.labels))

    def pull(self, ref: str) -> Iterator[PullProgress]:
        self.calls.append("pull")
        yield PullProgress(None, "done")

    def images(self) -> list[Image]:
        return []

    def image_inspect(self, ref: str) -> Image:
        self.calls.append("image_inspect")
        if ref == "missing":
            raise ImageNotFound(ref)
        return Image(self.name, ref, (ref,))

    def image_history(self, ref: str) -> list[ImageLayer]:
        return []

    def image_remove(self, ref: str, *, force: bool = False) -> None:
        return None

    def image_prune(self) -> PruneResult:
        return PruneResult(())

    def image_import(self, tarball: Path, name: str, *, config: ImageConfig | None = None) -> Image:
        return Image(self.name, name, (name,))

    def create(self, spec: ContainerSpec) -> Container:
        self.calls.append("create")
        ref = spec.name or f"c{len(self.made)}"
        self.made[ref] = spec
        self.states[ref] = State.CREATED
        if self.on_create is not None:
            self.on_create()  # e.g. a signal that arrives while the engine is answering
        return self._container(ref)

    def start(self, ref: str) -> None:
        self.calls.append("start")
        if self.start_error is not None:
            raise self.start_error
        self.states[ref] = State.RUNNING

    def start_attached(self, ref: str, io: StdIO) -> int:
        self.calls.append("start_attached")
        if self.start_error is not None:
            raise self.start_error
        self.states[ref] = State.STOPPED
        if self.engine_removes and self.made[ref].auto_remove:
            del self.made[ref]
        return self.exit_code

    def stop(self, ref: str, *, timeout: float = 10) -> None:
        self.states[ref] = State.STOPPED

    def remove(self, ref: str, *, force: bool = False) -> None:
        self.calls.append("remove")
        if self.remove_error is not None:
            raise self.remove_error
        if ref not in self.made:
            raise ContainerNotFound(ref, self.name)
        del self.made[ref]

    def containers(self, *, all: bool = False) -> list[Container]:  # noqa: A002
        return [self._container(r) for r in self.made]

    def inspect(self, ref: str) -> Container:
        return self._container(ref)

    def exec(self, ref: str, command: Sequence[str], io: StdIO, *, env: dict[str, str] | None = None) -> int:
        return 0

    def logs(self, ref: str, *, follow: bool = False) -> Iterator[LogChunk]:
        return iter(())

    def wait(self, ref: str) -> int:
        return self.exit_code

    def init_pid(self, ref: str) -> int | None:
        return None

    def prune_leftovers(self, *, dry_run: bool = False) -> list[str]:
        self.calls.append(f"prune dry_run={dry_run}")
        return list(self.leftover_lines)

    def networks(self) -> list[Network]:
        return [cast(Network, SimpleNamespace(name=n)) for n in self.network_names]
