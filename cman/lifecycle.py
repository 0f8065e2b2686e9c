"""Verbs made of several backend calls: ``run``, ``create``, ``ensure_image``, ``create_network``,
``remove_network``.

This is where "nothing is lost or leaked" is kept:

- a run whose start fails removes the container it made;
- ``remove=True`` (``--rm``) asks the *engine* to remove the container when it stops
  (``auto_remove``: Docker's AutoRemove, LXD's ephemeral, LXC's ``lxc.ephemeral``), so the
  promise holds even when cman is SIGKILLed; cman also removes it itself after the command
  ends, fails, or cman gets SIGINT, SIGTERM or SIGHUP, and a container the engine already
  removed counts as removed. A removal that fails is reported (:attr:`RunOutcome.warnings`,
  or a note on the exception), never swallowed;
- those signals are held (blocked) from just before ``create`` until the cleanup is armed,
  so an interrupt cannot fall between ``create`` returning and the ``try`` that removes the
  container: it is delivered inside the ``try``, and the container goes;
- every container ``run`` makes carries :data:`~cman.models.RUN_LABEL` (``PID:STARTTIME``
  of this process), so ``cman system prune`` can tell one whose run was SIGKILLed before it
  started from one a live run is still starting.

Cleanup runs with the signals blocked, so a second Ctrl-C cannot cut it short.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._sys.proc import mark
from .backends.base import Backend, Feature
from .errors import CmanError, Conflict, ContainerNotFound, ImageNotFound, Interrupted, NetworkNotFound
from .models import RUN_LABEL, Container, ContainerSpec, Image, PullProgress, State, StdIO
from .network.host import host_conflicts, host_lock, overlap_error, read_host, resolve
from .network.spec import Network, NetworkSpec, NetworkSpecConflict, spec_diff
from .validate import check_user_labels

if TYPE_CHECKING:
    from .profiles import Profile

ProgressFn = Callable[[PullProgress], None]
_CAUGHT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class RunOutcome:
    container: Container
    exit_code: int | None
    """None for a detached run."""
    removed: bool
    warnings: tuple[str, ...] = field(default=())
    """What went wrong without changing the outcome (a ``--rm`` removal that failed):
    one line each, for the caller to show (the CLI prints them on stderr)."""


def ensure_image(backend: Backend, ref: str, on_progress: ProgressFn | None = None) -> Image | None:
    """Pull ``ref`` unless the backend already has it (``docker run`` semantics); returns the
    image when it was there already (None after a pull)."""
    try:
        return backend.image_inspect(ref)
    except ImageNotFound:
        pass
    for event in backend.pull(ref):
        if on_progress is not None:
            on_progress(event)
    return None


def follow_image_config(backend: Backend, spec: ContainerSpec, image: Image | None) -> ContainerSpec:
    """On a system container (LXD, LXC), the job follows the image's OCI config as Docker does
    (:func:`cman.oci.imageconfig.job`): Entrypoint + Cmd when no command is given, Env under
    ``-e``, WorkingDir and User; and the container remembers WorkingDir and User
    (:data:`~cman.oci.imageconfig.EXEC_LABEL`) for ``exec``. Docker applies its images'
    configs itself."""
    if not backend.system_containers:
        return spec
    if image is None:
        image = backend.image_inspect(spec.image)
    from .oci import imageconfig

    config = imageconfig.of_image(image)
    if config is None:
        return spec
    command, env = imageconfig.job(config, spec.command, spec.env)
    label = imageconfig.exec_label(config)
    labels = {**spec.labels, imageconfig.EXEC_LABEL: label} if label else spec.labels
    new = dataclasses.replace(spec, command=command, env=env, labels=labels)
    type(backend).validate_spec(new)
    return new


def check_spec(backend: Backend, spec: ContainerSpec) -> None:
    """Every rule on a spec that needs no engine call: user labels outside cman's namespace,
    the engine's name rules and its own spec rules (:meth:`Backend.validate_spec`)."""
    check_user_labels(spec.labels)
    if spec.name is not None:
        backend.validate_name(spec.name)
    if spec.nesting:
        backend.require(Feature.NESTING)
    if spec.target is not None:  # the one rule that asks the engine: is the daemon a cluster member?
        backend.require(Feature.CLUSTER)
    type(backend).validate_spec(spec)


def create(backend: Backend, spec: ContainerSpec, *, on_progress: ProgressFn | None = None) -> Container:
    """``cman create``: check the spec, pull if needed, create (not start) the container."""
    check_spec(backend, spec)
    spec = follow_image_config(backend, spec, ensure_image(backend, spec.image, on_progress))
    return backend.create(spec)


class _Hold:
    """Signals held in the main thread (see :func:`signals_blocked`)."""

    depth = 0
    noted: list[int] = []


def _raise_interrupted(signum: int, _frame: object) -> None:
    if _Hold.depth:
        _Hold.noted.append(signum)  # held: raised when the hold ends
        return
    raise Interrupted(signal.Signals(signum).name)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into :class:`Interrupted` so ``finally`` blocks run."""
    if not _main_thread():
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
    """Hold SIGINT/SIGTERM/SIGHUP for the block; one that arrived meanwhile is raised as
    :class:`Interrupted` when the block ends without an error of its own.

    Two holds, because one is not enough: the signal mask keeps the signals from this
    thread and from the subprocesses the block starts (they inherit it), and the handler
    of :func:`interruptible` only takes note while a hold lasts, since a signal that
    another thread of the process receives still runs the Python handler in the main
    thread, at its next instruction. Nothing is swapped or restored piecemeal on the way
    out, so a signal cannot cut the way out short either.
    """
    main = _main_thread()
    if main:
        if not _Hold.depth:
            _Hold.noted = []  # a note left by a signal that was raised at once is stale
        _Hold.depth += 1
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _CAUGHT)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)  # one pending is handled now: noted
        if main:
            _Hold.depth -= 1
    if main and not _Hold.depth and _Hold.noted:
        signum, _Hold.noted = _Hold.noted[0], []
        raise Interrupted(signal.Signals(signum).name)


def _discard(backend: Backend, ref: str) -> str | None:
    """Remove the container; None when it is gone (also when the engine removed it first),
    else a one-line warning that says what is left and how to remove it."""
    with signals_blocked():
        try:
            backend.remove(ref, force=True)
        except ContainerNotFound:
            return None
        except CmanError as err:
            return f"could not remove container {ref} on {backend.name}: {err} (remove it with `cman rm -f {backend.name}:{ref}`)"
        return None


def run(
    backend: Backend,
    spec: ContainerSpec,
    io: StdIO,
    *,
    remove: bool = False,
    detach: bool = False,
    on_progress: ProgressFn | None = None,
) -> RunOutcome:
    """Create and start a container; in the foreground, return its command's exit code.

    Raises before any engine call when the spec breaks a rule (:func:`check_spec`). A
    cleanup that fails while an error propagates is added to that error as a note
    (``BaseException.add_note``), which the CLI prints on the error's line.
    """
    check_spec(backend, spec)
    spec = follow_image_config(backend, spec, ensure_image(backend, spec.image, on_progress))
    labels = {**spec.labels, RUN_LABEL: mark()}
    spec = dataclasses.replace(spec, labels=labels, auto_remove=spec.auto_remove or remove)
    with interruptible():
        container: Container | None = None
        finished = False
        ref = ""
        try:
            with signals_blocked():  # held until the container is ours to remove, then raised here
                container = backend.create(spec)
                ref = container.id or container.name
            if detach:
                backend.start(ref)
                finished = True
                try:
                    shown = backend.inspect(ref)
                except CmanError:  # it started: the run worked even if the engine went away since
                    shown = dataclasses.replace(container, state=State.RUNNING)
                return RunOutcome(shown, None, False)
            code = backend.start_attached(ref, io)
            finished = True
            problem = _discard(backend, ref) if remove else None
            return RunOutcome(container, code, remove and problem is None, () if problem is None else (problem,))
        except BaseException as err:
            # Start failed or we were interrupted: never leave a half-made container,
            # and keep --rm's promise.
            if container is not None and not finished and (remove or not _ever_started(backend, ref)):
                problem = _discard(backend, ref)
                if problem is not None:
                    err.add_note(problem)
            raise


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


def ensure_network(backend: Backend, name: str, *, icc: bool | None,
                   others: Iterable[Network] = ()) -> tuple[Network, bool]:
    """A profile's network: used when it exists (with the profile's ``icc``, when it sets one),
    else created with that ``icc`` (default on) and cman's choice of subnet: (network, created).
    A user's ``--network`` is never created: only a profile says what the network should be."""
    backend.require(Feature.NETWORKS)
    existing = find(backend, name)
    if existing is not None:
        if icc is not None and existing.icc != icc:
            raise NetworkSpecConflict(name, backend.name, spec_diff(existing, NetworkSpec(name=name, icc=icc)))
        return existing, False
    # One profile names the same network on every engine; Docker's and LXC's default bridges
    # (cm-NAME) would collide, so the second engine's bridge carries its name too.
    bridge = type(backend).default_bridge_name(name)
    if bridge in read_host().links:
        bridge = type(backend).default_bridge_name(f"{name}-{backend.name}")
    network, created = create_network(backend, NetworkSpec(name=name, bridge=bridge, icc=True if icc is None else icc),
                                      others=others)
    if icc is not None and network.icc != icc:  # made meanwhile by someone else, another way
        raise NetworkSpecConflict(name, backend.name, spec_diff(network, NetworkSpec(name=name, icc=icc)))
    return network, created


def remove_network(backend: Backend, name: str, *, force: bool = False) -> None:
    """Remove a network (InUse while containers are attached, unless ``force``)."""
    backend.require(Feature.NETWORKS)
    with host_lock():
        backend.network_remove(name, force=force)


def spec_with_profile(profile: Profile | None, *, image: str, name: str | None = None, command: tuple[str, ...] = (),
                   env: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None, tty: bool = False,
                   interactive: bool = False, cpus: float | None = None, memory: int | None = None,
                   network: str | None = None, ip: str | None = None, dns: tuple[str, ...] = (),
                   dns_search: tuple[str, ...] = (), privileged: bool = False) -> ContainerSpec:
    """The spec from the merged profiles, then the given values over them (README "Profiles":
    flags win; ``env`` and ``labels`` merge by key; ``dns``, ``dns_search`` and ``network`` replace)."""
    p = profile
    return ContainerSpec(
        image=image,
        name=name,
        command=command,
        env={**(p.env if p else {}), **(env or {})},
        labels={**(p.labels if p else {}), **(labels or {})},
        tty=tty,
        interactive=interactive,
        cpus=cpus if cpus is not None else (p.cpus if p else None),
        memory=memory if memory is not None else (p.memory if p else None),
        network=network if network is not None else (p.network if p else None),
        ip=ip,
        dns=dns or tuple((p.dns if p else None) or ()),
        dns_search=dns_search or tuple((p.dns_search if p else None) or ()),
        privileged=privileged or bool(p and p.privileged),
        nesting=bool(p and p.nesting),
        extras=dict(p.engines) if p else {},
    )
