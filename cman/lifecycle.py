"""Verbs made of several backend calls: ``run``, ``ensure_image``, ``create_network``, ``remove_network``.

This is where "nothing is lost or leaked" is kept: a run whose start fails
removes the container it made, and ``remove=True`` (``--rm``) removes it also
when the command fails or cman gets SIGINT, SIGTERM or SIGHUP. Cleanup runs with
those signals blocked, so a second Ctrl-C cannot cut it short.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from .backends.base import Backend, Feature
from .errors import CmanError, Conflict, ImageNotFound, Interrupted, NetworkNotFound
from .models import Container, ContainerSpec, PullProgress, State, StdIO
from .network.host import host_conflicts, host_lock, overlap_error, read_host, resolve
from .network.spec import Network, NetworkSpec, NetworkSpecConflict, spec_diff

ProgressFn = Callable[[PullProgress], None]
_CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class RunOutcome:
    container: Container
    exit_code: int | None
    """None for a detached run."""
    removed: bool


def ensure_image(backend: Backend, ref: str, on_progress: ProgressFn | None = None) -> None:
    """Pull ``ref`` unless the backend already has it (``docker run`` semantics)."""
    try:
        backend.image_inspect(ref)
        return
    except ImageNotFound:
        pass
    for event in backend.pull(ref):
        if on_progress is not None:
            on_progress(event)


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into :class:`Interrupted` so ``finally`` blocks run."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_interrupted) for s in _CAUGHT}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _CAUGHT)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _discard(backend: Backend, ref: str) -> bool:
    with signals_blocked():
        try:
            backend.remove(ref, force=True)
        except CmanError:
            return False
        return True


def run(
    backend: Backend,
    spec: ContainerSpec,
    io: StdIO,
    *,
    remove: bool = False,
    detach: bool = False,
    on_progress: ProgressFn | None = None,
) -> RunOutcome:
    """Create and start a container; in the foreground, return its command's exit code."""
    ensure_image(backend, spec.image, on_progress)
    if detach and remove:
        spec = dataclasses.replace(spec, auto_remove=True)
    with interruptible():
        container = backend.create(spec)
        ref = container.id or container.name
        finished = False
        try:
            if detach:
                backend.start(ref)
                finished = True
                return RunOutcome(backend.inspect(ref), None, False)
            code = backend.start_attached(ref, io)
            finished = True
            return RunOutcome(container, code, remove and _discard(backend, ref))
        finally:
            # Start failed or we were interrupted: never leave a half-made container,
            # and keep --rm's promise.
            if not finished and (remove or not _ever_started(backend, ref)):
                _discard(backend, ref)


def _ever_started(backend: Backend, ref: str) -> bool:
    try:
        return backend.inspect(ref).state != State.CREATED
    except CmanError:
        return False


# -- networks: checked against the host under the network lock (see cman.network) ----------------


def find(backend: Backend, name: str) -> Network | None:
    try:
        return backend.network_inspect(name)
    except NetworkNotFound:
        return None


def check_static(backend: Backend, spec: NetworkSpec) -> None:
    """Every check that needs neither an engine nor host state beyond a route read."""
    backend.require(Feature.NETWORKS)
    if not spec.icc:
        backend.require(Feature.NO_ICC)
    type(backend).validate_network_spec(spec)
    early = host_conflicts(spec, read_host(), defer_bridges=True)
    if early:
        raise overlap_error(spec, early)


def create_network(backend: Backend, spec: NetworkSpec, *, others: Iterable[Network] = ()) -> tuple[Network, bool]:
    """Create ``spec`` on ``backend`` unless an identical network exists: (network, created).

    ``others`` are networks of other backends on this host that must not overlap.
    Raises NetworkSpecConflict (same name, other spec), InvalidValue (overlap,
    pool exhausted), Conflict (bridge interface taken), Unsupported.
    """
    check_static(backend, spec)
    with host_lock():
        existing = find(backend, spec.name)
        if existing is not None:
            diff = spec_diff(existing, spec)
            if diff:
                raise NetworkSpecConflict(spec.name, backend.name, diff)
            return existing, False
        host = read_host()
        bridge = spec.bridge or type(backend).default_bridge_name(spec.name)
        if bridge in host.links:
            raise Conflict(
                f"interface {bridge} already exists on this host and belongs to no {backend.name} network {spec.name}",
                hint="choose another --bridge, or remove that interface",
            )
        peers = [n for n in backend.networks() if n.name != spec.name]
        resolved = resolve(spec, bridge=bridge, host=host, others=[*peers, *others])
        type(backend).validate_network_spec(resolved)
        return backend.network_create(resolved), True


def remove_network(backend: Backend, name: str, *, force: bool = False) -> None:
    """Remove a network (InUse while containers are attached, unless ``force``)."""
    backend.require(Feature.NETWORKS)
    with host_lock():
        backend.network_remove(name, force=force)
