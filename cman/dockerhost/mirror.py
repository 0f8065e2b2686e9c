"""``cman provision registry-mirror`` on LXC and LXD: a Docker registry in its own system container.

Debian's ``docker-registry`` (the CNCF distribution registry) runs from its init script as
user docker-registry, with a ``config.yml`` that cman renders itself from validated values:
a pull-through cache of ``--upstream`` (``proxy: remoteurl``), or without it a plain registry
to push to. Docker hosts then use it as ``--registry-mirror http://IP:PORT`` (and
``--insecure-registry IP:PORT``: it speaks plain HTTP).

It has **no authentication and no TLS**: it is meant for a private bridge (a cman network)
whose only clients are the docker hosts on it. Do not publish its port beyond that.

The steps: the image (cman's Debian image with the registry, bootstrapped once and cached),
the container, ``config.yml``, and the registry answering ``GET /v2/`` from this host. Each
looks before it acts, so a rerun on a healthy mirror changes nothing.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..backends.base import Backend
from ..errors import InvalidValue, UsageError
from ..models import _Jsonable
from ..validate import check_name
from .container import SystemContainer, debian_target
from .faults import Finding
from .guest import Guest
from .steps import Notify, Report, Step, ok, problem, run_steps

if TYPE_CHECKING:
    from ..bootstrap import Target

FLAVOUR = "registry"
"""The image's name and cache word: ``debian-registry:RELEASE``."""
PACKAGES = ("docker-registry", "iproute2")
CONFIG = "/etc/docker/registry/config.yml"
STORAGE = "/var/lib/docker-registry"
"""The package's storage folder, owned by its user."""
LOG = "/var/log/docker-registry.log"
PIDFILE = "/var/run/docker-registry.pid"
"""Made by the init script's start-stop-daemon when the registry starts."""
REGISTRY_STOP = ("start-stop-daemon", "--stop", "--oknodo", "--retry", "TERM/10/KILL/5",
                 "--pidfile", PIDFILE, "--exec", "/usr/bin/docker-registry")
"""The init script's ``stop``, but one that waits for the process to end (so the port is free
again) and succeeds when none runs: its ``restart`` stops at a failed stop (``set -e``)."""
REGISTRY_START = ("/etc/init.d/docker-registry", "start")
REGISTRY_STATUS = ("start-stop-daemon", "--status", "--pidfile", PIDFILE, "--exec", "/usr/bin/docker-registry")
CONFIG_NEWER = ("test", CONFIG, "-nt", PIDFILE)
"""Was config.yml written after the registry started (cman stopped between the two)? coreutils'
test, which compares the timestamps to the nanosecond."""
START_WAIT = 20.0
"""Seconds for a (re)started registry to answer."""
ADDRESS_WAIT = 30.0
"""Seconds for a new container to show its IPv4 address (LXD reports it once the NIC is up)."""
PROBE_TIMEOUT = 3.0
HOSTNAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
HOSTNAME_RULES = "a mirror's name is its hostname: 1-63 letters, digits and '-', starting with a letter"
DEFAULT_PORT = 5000


def check_upstream(text: str) -> str:
    """dockerd's rules for a mirror URL (http(s)://HOST[:PORT], no path, no credentials), under
    ``--upstream``; without a trailing slash, as the registry appends ``/v2/`` itself."""
    from ..dockerd.settings import check_mirror

    return check_mirror(text, "--upstream").rstrip("/")


@dataclass(frozen=True)
class MirrorSpec(_Jsonable):
    """What ``cman provision registry-mirror`` is asked for; valid by construction (exit 2)."""

    name: str
    upstream: str | None = None
    """None: a plain registry that docker hosts pull from and one pushes to."""
    port: int = DEFAULT_PORT
    network: str | None = None
    """The cman network to join: :func:`provision_mirror` needs one (it gives the address)."""

    def __post_init__(self) -> None:
        from ..network import check_network_name

        check_name(self.name, HOSTNAME, 63, HOSTNAME_RULES, "mirror name")
        if self.upstream is not None:
            object.__setattr__(self, "upstream", check_upstream(self.upstream))
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise InvalidValue("--port", self.port, "use a TCP port, 1-65535")
        if self.network is not None:
            check_network_name(self.network)

    def config(self) -> bytes:
        """The registry's ``config.yml``: every value is validated (a port, a checked URL) and
        strings are JSON-quoted, which YAML reads as the same strings."""
        lines = [
            "# Written by cman provision registry-mirror: a rerun puts it back as it is here.",
            "version: 0.1",
            "log:",
            "  fields:",
            "    service: registry",
            "storage:",
            "  cache:",
            "    blobdescriptor: inmemory",
            "  filesystem:",
            f"    rootdirectory: {json.dumps(STORAGE)}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: {json.dumps(f':{self.port}')}",
            "  headers:",
            "    X-Content-Type-Options: [nosniff]",
        ]
        if self.upstream is not None:
            lines += ["proxy:", f"  remoteurl: {json.dumps(self.upstream)}"]
        return ("\n".join(lines) + "\n").encode()


@dataclass
class MirrorResult(_Jsonable):
    report: Report
    address: str
    """``http://IP:PORT``: a docker host's ``--registry-mirror``, and ``$CMAN_REGISTRY_MIRROR``."""
    host_port: str
    """``IP:PORT``: a docker host's ``--insecure-registry`` (plain HTTP)."""


def registry_target() -> Target:
    """cman's registry image for this host's Debian release (its bootstrap target)."""
    return debian_target(FLAVOUR, PACKAGES)


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> tuple[int | None, str]:
    """``GET url`` straight from this host (never through a proxy of the environment): the HTTP
    status, or None and why there was none."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout) as answer:
            return int(answer.status), ""
    except urllib.error.HTTPError as err:
        return int(err.code), str(err.reason)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return None, str(reason)


@dataclass
class Mirror:
    """The steps for one container; ``notify`` hears each as it runs."""

    backend: Backend
    spec: MirrorSpec
    notify: Notify
    restart: bool = False
    """config.yml changed: the running registry must restart to read it."""
    ip: str | None = None
    waited: bool = False
    box: SystemContainer = field(init=False)

    def __post_init__(self) -> None:
        self.box = SystemContainer(self.backend, self.spec.name, self.notify, registry_target,
                                   network=self.spec.network)

    @property
    def guest(self) -> Guest:
        return Guest(self.backend, self.spec.name)

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.spec.port}"

    # -- inside -----------------------------------------------------------------------------------

    def check_config(self) -> Finding:
        what = f"a pull-through cache of {self.spec.upstream}" if self.spec.upstream else "a plain registry"
        if self.guest.read(CONFIG) == self.spec.config():
            return ok("config", f"{CONFIG}: {what} on port {self.spec.port}")
        return problem("config", f"{CONFIG} is not cman's ({what} on port {self.spec.port})")

    def write_config(self, _found: Finding) -> str:
        done = self.guest.write(CONFIG, self.spec.config())
        if done.exit_code != 0:
            return f"could not write {CONFIG} ({_last_line(done.stdout + done.stderr)})"
        self.restart = True
        return f"wrote {CONFIG}"

    def _address(self) -> str | None:
        """The container's IPv4 address on its network, waiting a little the first time."""
        deadline = time.monotonic() + (0.0 if self.waited else ADDRESS_WAIT)
        self.waited = True
        while True:
            found = self.backend.inspect(self.spec.name).addresses.get(self.spec.network or "")
            if found or time.monotonic() >= deadline:
                return found or None
            time.sleep(1.0)

    def check_registry(self) -> Finding:
        if self.restart:
            return problem("registry", f"must restart to read its new {CONFIG}")
        if self.guest.ok(CONFIG_NEWER, timeout=30):
            return problem("registry", f"started before {CONFIG} was last written: must restart to read it")
        self.ip = self.ip or self._address()
        if self.ip is None:
            return problem("address", f"{self.spec.name} has no IPv4 address on network {self.spec.network}",
                           f"see `cman network inspect {self.spec.network}`: a cman network gives its containers "
                           "their addresses")
        status, why = probe(f"{self.url}/v2/")
        if status == 200:
            return ok("registry", f"GET {self.url}/v2/ answers 200")
        answer = f"answers {status}" if status is not None else f"does not answer ({why})"
        log = self.guest.text(["tail", "-n", "80", LOG], timeout=30)
        detail = f"GET {self.url}/v2/ {answer}; {LOG}: {registry_error(log)}"
        fix = f"see {LOG} in the container"
        if self.spec.upstream:
            fix += f"; with --upstream the registry asks {self.spec.upstream}/v2/ when it starts, and exits when " \
                   "it cannot reach it"
        if self.spec.port < 1024:
            fix += f"; the registry runs as user docker-registry, which cannot bind port {self.spec.port}: use 1024 " \
                   "or above"
        return problem("registry", detail, fix)

    def restart_registry(self, found: Finding) -> str:
        if found.name == "address":
            return "nothing to restart"
        self.restart = False
        self.guest.run(REGISTRY_STOP, timeout=30)
        done = self.guest.run(REGISTRY_START, timeout=30)
        if done.exit_code != 0:
            return f"{' '.join(REGISTRY_START)} failed ({_last_line(done.stdout + done.stderr)})"
        self.ip = self.ip or self._address()
        if self.ip is not None:
            deadline = time.monotonic() + START_WAIT
            while probe(f"{self.url}/v2/", timeout=1.0)[0] != 200 and time.monotonic() < deadline:
                if not self.guest.ok(REGISTRY_STATUS, timeout=30):
                    break  # it exited (a bad upstream, a port in use): the check says why
                time.sleep(0.5)
        return "restarted the registry"

    def steps(self) -> list[Step]:
        return [
            *self.box.steps(),
            Step("config", self.check_config, self.write_config),
            Step("registry", self.check_registry, self.restart_registry),
        ]


_FAILED = re.compile(r"^(panic: .*|.*level=(?:fatal|error|panic) .*)$", re.M)
_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def registry_error(log: str) -> str:
    """What the registry's log says went wrong last: its ``panic:`` (a bad config, an upstream
    it cannot reach at start), else its last error's message, else its last line."""
    found = _FAILED.findall(log)
    if not found:
        return _last_line(log.encode())[:300]
    line = found[-1].strip()
    msg = _MSG.search(line)
    return (msg.group(1) if msg and not line.startswith("panic:") else line)[:300]


def _last_line(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "no output")


def provision_mirror(backend: Backend, spec: MirrorSpec, notify: Notify) -> MirrorResult:
    """Run every step; :class:`~.steps.ProvisionFailed` names the one that stayed broken."""
    if backend.name not in ("lxc", "lxd"):
        from ..errors import Unsupported

        raise Unsupported(backend.name, "provision registry-mirror", "the registry runs in a system container: "
                          "use lxc or lxd")
    backend.validate_name(spec.name)
    if spec.network is None:
        raise UsageError("provision registry-mirror needs --network NET: the docker hosts reach the mirror on a "
                         "cman network, which gives its container an address (cman's image has no DHCP client, and "
                         "without a network an LXC container has loopback only)",
                         hint="create one with `cman network create NET --subnet ...`")
    mirror = Mirror(backend, spec, notify)
    report = run_steps(mirror.steps(), notify)
    assert mirror.ip is not None  # the registry step answered on it
    return MirrorResult(report, mirror.url, f"{mirror.ip}:{spec.port}")
