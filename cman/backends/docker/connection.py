"""The Docker backend's shared base: one transport, one error boundary.

Every call is written once, against Engine API paths (the transport adds the
version), and goes through :meth:`DockerConnection._call` (or a transport call inside
:func:`boundary`). Names and references go into paths only through :mod:`.refs`.
Engine errors are translated into cman's error family here, in :func:`boundary`,
and nowhere else; an answer that is not the record asked for is an error too.
"""

from __future__ import annotations

import abc
import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...errors import (
    CmanError,
    Conflict,
    ContainerNotFound,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    ImageNotFound,
    InUse,
    NameInUse,
)
from ...validate import check_name
from ..base import Backend, Locality
from . import endpoint
from .api import ApiError, Transport

if TYPE_CHECKING:
    from ...models import EngineStatus
    from ...network import Network

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
NAME_RULES = "Docker names are 2-128 characters of letters, digits, '_', '.', '-', starting with a letter or digit"


def _unavailable(cause: BaseException | None = None) -> EngineUnavailable:
    status = endpoint.probe()
    if status.reachable:  # it came back meanwhile; report what we saw
        return EngineUnavailable("docker", f"lost the connection to the daemon ({cause})", "retry")
    return EngineUnavailable("docker", status.problem or "daemon not reachable", status.fix or "")


def is_transient(err: BaseException) -> bool:
    """Connection refused/reset (daemon restarting) and 502/503/504; never a missing socket."""
    cause = err.__cause__ if isinstance(err, CmanError) else err
    if isinstance(cause, ApiError):
        return cause.status in (502, 503, 504)
    return isinstance(cause, (ConnectionResetError, ConnectionRefusedError))


@contextlib.contextmanager
def boundary(*, container: str | None = None, image: str | None = None, action: str = "") -> Iterator[None]:
    """Translate transport errors into cman errors, once."""
    what = f" {action}" if action else ""
    try:
        yield
    except CmanError:
        raise
    except ApiError as err:
        text = err.message
        if err.status == 404:
            if container is not None and "image" not in text.lower():
                raise ContainerNotFound(container, "docker") from err
            raise ImageNotFound(image or container or "?", "docker", text) from err
        if err.status == 409:
            if container is not None and "already in use" in text:
                raise NameInUse(container, "docker") from err
            if image is not None and container is None:
                raise InUse(f"image {image} is in use: {text}", hint="remove its containers first, or use --force") from err
            raise Conflict(f"docker{what}: {text}", hint="stop the container first, or use -f") from err
        raise EngineError(f"docker{what}: {text}") from err
    except TimeoutError as err:
        raise EngineTimeout(f"docker did not answer in time{what}") from err
    except (ConnectionResetError, ConnectionRefusedError) as err:
        raise _unavailable(err) from err
    except OSError as err:
        raise _unavailable(err) from err


class DockerConnection(Backend):
    """The transport (opened on first use), the engine-level class methods, and low-level calls."""

    def __init__(self) -> None:
        self._transport: Transport | None = None

    def locality(self) -> Locality:
        return endpoint.locality()

    @property
    def api(self) -> Transport:
        if self._transport is None:
            with boundary(action="connect"):
                self._transport = endpoint.open_transport()
        return self._transport

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None,
              timeout: float | None = 60.0, container: str | None = None, image: str | None = None,
              action: str = "", kind: type | None = None) -> Any:
        """One Engine API call; ``kind`` (dict, list) is what the answer must be, else EngineError."""
        with boundary(container=container, image=image, action=action):
            return self.api.call(method, path, params=params, body=body, timeout=timeout, kind=kind)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @classmethod
    def probe(cls) -> EngineStatus:
        return endpoint.probe()

    @classmethod
    def validate_name(cls, name: str) -> None:
        check_name(name, NAME_RE, 128, NAME_RULES)

    @abc.abstractmethod
    def _network(self, name: str, *, detail: bool = False) -> Network:
        """A bridge network (:mod:`.networks`); a container's create and start follow its policy."""
