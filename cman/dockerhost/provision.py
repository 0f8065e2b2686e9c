"""``cman provision docker-host`` on LXC and LXD, and ``cman doctor docker-host``.

The steps (README "Docker inside LXC / Proxmox VE"): an image with Docker (cman's Debian
one, bootstrapped from the host's Debian mirror and cached, unless ``--image``), the
container with the ``docker-host`` profile, then inside it: nesting, cgroup mounts,
keyctl, AppArmor, docker.io, daemon.json, dockerd, the storage driver, SSH (``--ssh``),
and a ``docker run`` of the inner Docker that must print :data:`.spec.CHECK_WORDS`.
Each step looks before it acts, so a rerun on a healthy host changes nothing, and a rerun
on a broken one mends only what is broken. ``doctor`` runs the same looks and changes
nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..backends.base import Backend
from ..bootstrap import Target
from ..models import State
from . import faults
from .container import SystemContainer, debian_target
from .faults import OK, PROBLEM, WARNING, Finding
from .guest import CGROUPS_MOUNT, DOCKER_PROBE, KEYCTL_PROBE, NESTING_PROBE, Guest
from .spec import CHECK_WORDS, DAEMON_JSON, FLAVOUR, PACKAGES, HostSpec
from .steps import Notify, Report, Step, ok, problem, run_steps

RECORD = "/etc/cman/docker-host.json"
"""What provision set (daemon settings, ssh), kept in the container for ``doctor`` and reruns."""
DOCKERD_START = ("sh", "-c", "/etc/init.d/docker start >/dev/null 2>&1 && docker info >/dev/null 2>&1 && exit 0; "
                 "exec start-stop-daemon --start --background --no-close --exec /usr/sbin/dockerd "
                 "--pidfile /var/run/docker-ssd.pid --make-pidfile -- -p /var/run/docker.pid "
                 ">> /var/log/docker.log 2>&1")
"""Debian's init script, or what it runs when its ``ulimit -n 1048576`` is refused (a host whose
root may not raise that limit): the same start-stop-daemon call, so ``/etc/init.d/docker stop``
and ``status`` still work."""
DOCKERD_STOP = ("/etc/init.d/docker", "stop")
DOCKERD_WAIT = ("sh", "-c", "for i in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done; exit 1")
SSH_KEYS = ("sh", "-c", "rm -f /etc/ssh/ssh_host_*key*; ssh-keygen -A >/dev/null")
SSH_START = ("sh", "-c", "update-rc.d ssh enable >/dev/null 2>&1; /etc/init.d/ssh start >/dev/null")
SSH_OFF = ("sh", "-c", "update-rc.d ssh disable >/dev/null 2>&1; /etc/init.d/ssh stop >/dev/null 2>&1; true")
APT_INSTALL = ("sh", "-c", "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -q -y "
               "--no-install-recommends \"$@\"", "sh")


def host_apparmor() -> bool:
    try:
        return Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y"
    except OSError:
        return False


def docker_target() -> Target:
    """cman's docker-host image for this host's Debian release (its bootstrap target)."""
    return debian_target(FLAVOUR, PACKAGES)


@dataclass
class DockerHost:
    """The steps for one container; ``notify`` hears each as it runs."""

    backend: Backend
    spec: HostSpec
    notify: Notify
    restart_dockerd: bool = False
    box: SystemContainer = field(init=False)

    def __post_init__(self) -> None:
        self.box = SystemContainer(self.backend, self.spec.name, self.notify, docker_target, self.spec.image,
                                   self.spec.profiles, self.spec.network, self.spec.dns, self._first_boot)

    @property
    def guest(self) -> Guest:
        return Guest(self.backend, self.spec.name)

    def _first_boot(self, g: Guest) -> None:
        """An image is shared by every host made from it: new SSH host keys for this one, and
        sshd off unless ``--ssh`` (least privilege)."""
        if g.ok(["test", "-x", "/usr/sbin/sshd"]):
            g.run(SSH_KEYS, timeout=60)
            if not self.spec.ssh:
                g.run(SSH_OFF, timeout=60)

    # -- inside -----------------------------------------------------------------------------------

    def check_nesting(self) -> Finding:
        done = self.guest.run(NESTING_PROBE, timeout=30)
        if done.exit_code == 0:
            return ok("nesting", "a nested PID namespace mounts its own /proc")
        text = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
        return problem("nesting", f"a nested /proc cannot be mounted ({text.splitlines()[-1] if text else 'no output'})",
                       faults.FIXES["nesting"])

    def check_cgroups(self) -> Finding:
        mountinfo = (self.guest.read("/proc/self/mountinfo") or b"").decode("utf-8", "replace")
        enabled = faults.enabled_controllers((self.guest.read("/proc/cgroups") or b"").decode("utf-8", "replace"))
        return faults.check_cgroups(mountinfo, enabled)

    def mount_cgroups(self, _found: Finding) -> str:
        self.guest.run(CGROUPS_MOUNT, timeout=60)
        self.restart_dockerd = True
        return "mounted the cgroup hierarchies"

    def check_keyctl(self) -> Finding:
        done = self.guest.run(KEYCTL_PROBE, timeout=30)
        if done.exit_code == 0:
            return ok("keyctl", "a session keyring can be joined")
        if done.exit_code == 3:
            return Finding("keyctl", WARNING, "not probed on this architecture", faults.FIXES["keyctl"])
        if b"perl" in done.stderr and done.exit_code in (126, 127):
            return Finding("keyctl", WARNING, "not probed: no perl in the container", faults.FIXES["keyctl"])
        why = done.stdout.decode("utf-8", "replace").strip() or f"exit {done.exit_code}"
        return problem("keyctl", f"keyctl is denied ({why})", faults.FIXES["keyctl"])

    def check_apparmor(self) -> Finding:
        label = (self.guest.read("/proc/1/attr/current") or b"").decode("utf-8", "replace")
        confined_host = host_apparmor()
        runc = self.guest.text(["runc", "--version"]) if confined_host else ""
        return faults.check_apparmor(confined_host, label, runc)

    def check_docker(self) -> Finding:
        # Exit 1 is the shell's "not found"; any other failure is the probe's own (an exec
        # that went wrong on a loaded engine), asked once more before it counts as missing.
        for _ in range(2):
            done = self.guest.run(DOCKER_PROBE, timeout=60)
            if done.exit_code == 0:
                return ok("docker", self.guest.text(["dockerd", "--version"]).strip())
            if done.exit_code == 1:
                return problem("docker", "docker.io is not installed", faults.FIXES["docker"])
        said = (done.stdout + done.stderr).decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return problem("docker", f"could not check for docker.io (exit {done.exit_code}) {said[0]}".strip(),
                       faults.FIXES["docker"])

    def install_docker(self, _found: Finding) -> str:
        done = self.guest.run([*APT_INSTALL, "docker.io", "cgroupfs-mount"], timeout=900)
        if done.exit_code != 0:
            last = (done.stdout + done.stderr).decode("utf-8", "replace").strip().splitlines()[-1:] or ["?"]
            return f"apt-get install docker.io failed ({last[0]}): the container needs a Debian mirror"
        return "installed docker.io"

    def check_daemon_json(self) -> Finding:
        change = self.spec.daemon_json(self.guest.read(DAEMON_JSON))
        if change is None:
            return ok("daemon-json", f"{DAEMON_JSON} has {', '.join(self.spec.settings.values()) or 'nothing to set'}")
        return problem("daemon-json", f"{DAEMON_JSON} lacks {', '.join(self.spec.settings.values())}")

    def write_daemon_json(self, _found: Finding) -> str:
        change = self.spec.daemon_json(self.guest.read(DAEMON_JSON))
        if change is None:
            return "nothing to write"
        self.guest.write(DAEMON_JSON, change[1])
        record = {"daemon": self.spec.settings.values(), "ssh": self.spec.ssh}
        self.guest.write(RECORD, json.dumps(record, indent=2).encode() + b"\n")
        self.restart_dockerd = True
        return f"wrote {DAEMON_JSON}"

    def check_dockerd(self) -> Finding:
        if self.restart_dockerd:
            return problem("dockerd", "must restart to read its new settings")
        if self.guest.ok(["docker", "info"], timeout=30):
            return ok("dockerd", "answers")
        log = self.guest.text(["tail", "-n", "20", "/var/log/docker.log"])
        cause = faults.cause_of(log)
        if cause is None:
            return problem("dockerd", "does not answer", faults.FIXES["dockerd"])
        said = faults.explain(log, step="dockerd")
        return problem("dockerd", f"does not answer; its log names {cause}: {said.detail.removeprefix('dockerd: ')}",
                       f"{faults.FIXES[cause]}; then {faults.FIXES['dockerd']}")

    def start_dockerd(self, _found: Finding) -> str:
        restart = self.restart_dockerd
        self.restart_dockerd = False
        if restart:
            self.guest.run(DOCKERD_STOP, timeout=60)
        self.guest.run(DOCKERD_START, timeout=60)
        self.guest.run(DOCKERD_WAIT, timeout=90)
        return "restarted dockerd" if restart else "started dockerd"

    def check_storage(self) -> Finding:
        return faults.check_storage(self.guest.text(["docker", "info", "--format", "{{.Driver}}"], timeout=30))

    def check_ssh(self) -> Finding:
        key = self.spec.public_key()
        keys = self.guest.read("/root/.ssh/authorized_keys") or b""
        if key.strip() not in keys.splitlines():
            return problem("ssh", "the key is not authorized for root")
        if not self.guest.ok(["pgrep", "-x", "sshd"]):
            return problem("ssh", "sshd does not run")
        addresses = self.backend.inspect(self.spec.name).addresses
        where = ", ".join(f"ssh root@{ip}" for ip in addresses.values()) or "no address yet"
        return ok("ssh", where)

    def start_ssh(self, _found: Finding) -> str:
        if not self.guest.ok(["test", "-x", "/usr/sbin/sshd"]):
            self.guest.run([*APT_INSTALL, "openssh-server"], timeout=900)
        keys = self.guest.read("/root/.ssh/authorized_keys") or b""
        key = self.spec.public_key()
        if key.strip() not in keys.splitlines():
            self.guest.run(["sh", "-c", "mkdir -p /root/.ssh && chmod 700 /root/.ssh"])
            self.guest.write("/root/.ssh/authorized_keys", keys + (b"" if not keys or keys.endswith(b"\n") else b"\n")
                             + key, "600")
        self.guest.run(SSH_START, timeout=60)
        return "authorized the key and started sshd"

    def check_run(self) -> Finding:
        done = self.guest.run(["docker", "run", "--rm", self.spec.check_image, "echo", CHECK_WORDS], timeout=300)
        if done.exit_code == 0 and CHECK_WORDS.encode() in done.stdout:
            return ok("check", f"docker run --rm {self.spec.check_image} printed {CHECK_WORDS}")
        text = (done.stdout + done.stderr).decode("utf-8", "replace")
        found = faults.explain(text, step="check")
        if found.name == "check" and ("pull" in text or "manifest" in text or "dial tcp" in text):
            return problem("check", found.detail, f"the inner Docker could not get {self.spec.check_image}: give "
                           "--registry-mirror URL (and --insecure-registry HOST:PORT for plain HTTP), or "
                           "--check-image of a registry it can reach")
        return found

    def steps(self) -> list[Step]:
        steps = [
            *self.box.steps(),
            Step("nesting", self.check_nesting),
            Step("cgroups", self.check_cgroups, self.mount_cgroups),
            Step("keyctl", self.check_keyctl),
            Step("apparmor", self.check_apparmor),
            Step("docker.io", self.check_docker, self.install_docker),
            Step("daemon.json", self.check_daemon_json, self.write_daemon_json),
            Step("dockerd", self.check_dockerd, self.start_dockerd),
            Step("storage", self.check_storage),
        ]
        if self.spec.ssh:
            steps.append(Step("ssh", self.check_ssh, self.start_ssh))
        steps.append(Step("check", self.check_run))
        return steps


def provision(backend: Backend, spec: HostSpec, notify: Notify) -> Report:
    """Run every step; :class:`~.steps.ProvisionFailed` names the one that stayed broken."""
    if spec.ssh:
        spec.public_key()  # a missing key is a usage error before anything is made
    return run_steps(DockerHost(backend, spec, notify).steps(), notify)


def doctor(backend: Backend, name: str) -> list[Finding]:
    """Every look of :func:`provision` on an existing container (made by cman or not); no change."""
    state = backend.inspect(name).state  # ContainerNotFound: exit 3
    if state != State.RUNNING:
        return [Finding("container", PROBLEM, f"{name} is {state.value}", f"start it: cman start {name}")]
    host = DockerHost(backend, HostSpec(name=name), lambda _m: None)
    findings = [host.check_nesting(), host.check_cgroups(), host.check_keyctl(), host.check_apparmor()]
    findings.append(docker := host.check_docker())
    if docker.status == PROBLEM:
        return findings
    findings.append(_daemon_json(host.guest))
    dockerd = host.check_dockerd()
    findings.append(dockerd)
    if dockerd.status == OK:
        findings.append(host.check_storage())
    return findings


def _daemon_json(guest: Guest) -> Finding:
    """Valid JSON, and (on a host cman provisioned) holding what provision set."""
    text = guest.read(DAEMON_JSON)
    raw = guest.read(RECORD)
    try:
        wanted = json.loads(raw).get("daemon") or {} if raw else {}
    except ValueError:
        wanted = {}
    if text is None:
        if wanted:
            return Finding("daemon-json", PROBLEM, f"{DAEMON_JSON} is missing (provision set "
                           f"{', '.join(wanted)})", faults.FIXES["daemon-json"])
        return Finding("daemon-json", OK, f"no {DAEMON_JSON} (dockerd's defaults)")
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as err:
        return Finding("daemon-json", PROBLEM, f"{DAEMON_JSON} is not JSON ({err})", faults.FIXES["daemon-json"])
    if not isinstance(data, dict):
        return Finding("daemon-json", PROBLEM, f"{DAEMON_JSON} is not a JSON object", faults.FIXES["daemon-json"])
    lost = [k for k, v in wanted.items() if data.get(k) != v]
    if lost:
        return Finding("daemon-json", PROBLEM, f"{DAEMON_JSON} lost {', '.join(lost)} (provision set them)",
                       faults.FIXES["daemon-json"])
    return Finding("daemon-json", OK, f"{DAEMON_JSON}: {', '.join(data) or 'empty'}")

