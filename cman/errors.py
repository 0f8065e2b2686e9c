"""One error family for cman.

Every error carries the exit code the CLI returns for it and a message that says
what to do. Backends translate their engine's exceptions into these at their
boundary, once, with ``raise ... from err`` so ``--debug`` still shows the cause.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes of cman's own failures (README, "Exit codes").

    ``run`` and ``exec`` pass the container command's code through instead, and map
    cman's own failures to 125/126/127 as ``docker run`` does, so a script can tell
    "the command exited 3" from "cman could not find the container".
    """

    OK = 0
    ERROR = 1  # unexpected engine error
    USAGE = 2  # bad input: invalid name, size, K=V, option
    NOT_FOUND = 3  # no such container, image or network
    CONFLICT = 4  # name in use, image in use, network in use
    UNAVAILABLE = 5  # engine not installed, not running, no permission
    UNSUPPORTED = 6  # the backend cannot do this feature
    TIMEOUT = 7  # an engine call did not finish in time
    PROVISION_FAILED = 8  # provision: a step stayed broken (the message names it, its cause and fix)
    RUN_FAILED = 125  # run/exec: cman itself failed (docker run's 125)
    CANNOT_INVOKE = 126  # run/exec: command found but not executable
    COMMAND_NOT_FOUND = 127  # run/exec: command not found in the container
    INTERRUPTED = 130  # Ctrl-C / SIGINT


class CmanError(Exception):
    """Base of every error cman raises on purpose."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class UsageError(CmanError):
    """The user's input is invalid; nothing was sent to an engine."""

    exit_code = ExitCode.USAGE


class InvalidName(UsageError):
    """A container, image or network name breaks the engine's rules."""


class InvalidValue(UsageError):
    """An option value (size, K=V pair, CPU count, address ...) is malformed."""

    def __init__(self, field: str, value: object, why: str) -> None:
        super().__init__(f"invalid {field} {value!r}: {why}")
        self.field = field
        self.value = value


class InvalidProfile(UsageError):
    """A profile file is malformed: the message names the file, the key and the reason."""

    def __init__(self, where: str, message: str, hint: str | None = None) -> None:
        super().__init__(f"profile {where}: {message}", hint=hint)
        self.where = where


class AmbiguousName(UsageError):
    """A bare NAME exists on several backends."""

    def __init__(self, name: str, backends: list[str]) -> None:
        choices = " or ".join(f"{b}:{name}" for b in backends)
        super().__init__(f"container {name!r} exists on {', '.join(backends)}", hint=f"write {choices}")


class NotFound(CmanError):
    exit_code = ExitCode.NOT_FOUND


class ContainerNotFound(NotFound):
    def __init__(self, name: str, backend: str | None = None) -> None:
        where = f" on {backend}" if backend else ""
        super().__init__(f"no such container: {name}{where}", hint="see `cman ps -a`")
        self.name = name


class ImageNotFound(NotFound):
    def __init__(self, ref: str, backend: str | None = None, detail: str | None = None) -> None:
        where = f" on {backend}" if backend else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"image not found: {ref}{where}{extra}",
            hint="check the name, `cman pull` it, or `cman image import TARBALL NAME`",
        )
        self.ref = ref


class ProfileNotFound(NotFound):
    def __init__(self, name: str, searched: str) -> None:
        super().__init__(f"no such profile: {name} (looked in {searched})", hint="see `cman profile ls`")
        self.name = name


class NetworkNotFound(NotFound):
    def __init__(self, name: str, backend: str | None = None) -> None:
        where = f" on {backend}" if backend else ""
        super().__init__(f"no such network: {name}{where}", hint="see `cman network ls`")


class Conflict(CmanError):
    exit_code = ExitCode.CONFLICT


class NameInUse(Conflict):
    def __init__(self, name: str, backend: str) -> None:
        super().__init__(
            f"name {name!r} is already in use on {backend}",
            hint=f"remove it with `cman rm -f {backend}:{name}` or choose another --name",
        )


class InUse(Conflict):
    """An image or network is still used by containers."""

    @classmethod
    def image(cls, ref: str, users: list[str]) -> InUse:
        return cls(f"image {ref} is in use by container(s) {', '.join(users)}",
                   hint="remove them first (cman rm -f NAME), or use --force")

    @classmethod
    def network(cls, name: str, backend: str, users: list[str] | tuple[str, ...]) -> InUse:
        return cls(f"network {name} is in use by container(s) {', '.join(users)}",
                   hint=f"remove them first, or `cman network rm -f {backend}:{name}` to disconnect them")


class EngineUnavailable(CmanError):
    """The engine is not installed, not running, or not reachable by this user."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, backend: str, problem: str, fix: str) -> None:
        super().__init__(f"{backend}: {problem}", hint=fix)
        self.backend = backend
        self.problem = problem
        self.fix = fix


class NoEngine(EngineUnavailable):
    """No backend is reachable (nothing to auto-detect)."""

    def __init__(self) -> None:
        CmanError.__init__(self, "no container engine is reachable",
                           hint="run `cman engine status` to see how to start one")
        self.backend = "cman"
        self.problem = "no container engine is reachable"
        self.fix = "run `cman engine status` to see how to start one"


class SourceUnreachable(CmanError):
    """A registry or image server cannot be reached (pull)."""

    exit_code = ExitCode.UNAVAILABLE

    def __init__(self, ref: str, detail: str) -> None:
        super().__init__(
            f"cannot reach the image source of {ref}: {detail}",
            hint="check the registry or remote address and the network, or import the image offline: cman image import TARBALL NAME",
        )


class Unsupported(CmanError):
    """A backend was asked for a feature it declares it does not have."""

    exit_code = ExitCode.UNSUPPORTED

    def __init__(self, backend: str, feature: str, why: str | None = None) -> None:
        reason = f": {why}" if why else ""
        super().__init__(
            f"the {backend} backend does not support {feature}{reason}",
            hint="see `cman engine features` for what each backend supports",
        )
        self.backend = backend
        self.feature = feature


class CommandNotRunnable(CmanError):
    """The container started, but its command cannot be executed in it: 126 (not an executable
    file) or 127 (not found), as ``docker run`` reports it."""

    def __init__(self, backend: str, container: str, program: str, code: int) -> None:
        why = "not found" if code == ExitCode.COMMAND_NOT_FOUND else "not an executable file"
        super().__init__(f"{backend}: cannot run {program!r} in {container}: {why}",
                         hint="check the command, the image and the container's PATH")
        self.exit_code = ExitCode(code)


class EngineError(CmanError):
    """The engine refused or failed a call in a way cman does not classify."""

    exit_code = ExitCode.ERROR


class EngineExecFailed(EngineError):
    """The engine failed to run a command in a container, or lost track of it: no exit status
    came back (LXD's exec under load). Not the command's own failure; a command that changes
    nothing, or a step that looks before it acts, may be tried again."""


class EngineTimeout(CmanError):
    exit_code = ExitCode.TIMEOUT


class Interrupted(CmanError):
    exit_code = ExitCode.INTERRUPTED

    def __init__(self, signame: str = "SIGINT") -> None:
        super().__init__(f"interrupted by {signame}")
        self.signame = signame
