"""Other "hosts" on this machine for the context tests and benchmarks, each a context manager
that removes everything it made, also on failure:

- :func:`second_dockerd`: a second Docker engine (its own socket, data root, exec root,
  pidfile, containerd namespace and bridge; no iptables), killed by its PID at the end.
  NOT ``--bridge=none``: a dockerd started so deletes the ``docker0`` link at start-up
  (moby's removeDefaultBridgeInterface), the first engine's bridge, whose containers then
  fail to start. It gets a bridge of its own instead, made here and removed at the end;
- :func:`ssh_alias`: a private sshd on loopback and a Host block in /etc/ssh/ssh_config.d,
  so ``ssh://ALIAS`` reaches this machine's Docker the way a remote host's would be;
- :func:`lxd_https`: a second LXD daemon (its own LXD_DIR) listening on HTTPS on loopback with
  a fresh client certificate trusted, as a remote.

Nothing here skips: a missing tool is a :class:`LabUnavailable`, which tests turn into the
engines-required rule (``unavailable``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cman._sys import unixhttp

SSHD = "/usr/sbin/sshd"
SSH_CONFIG_D = Path("/etc/ssh/ssh_config.d")


class LabUnavailable(Exception):
    """A tool or permission the lab needs is missing (the message says which)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@dataclass
class Dockerd:
    socket: str
    pid: int
    log: Path

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"


@contextlib.contextmanager
def second_dockerd(tag: str | None = None, image: str | None = None) -> Iterator[Dockerd]:
    """A second dockerd; ``image`` (on the first engine) is copied into it with docker save | load."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None or shutil.which("docker") is None:
        raise LabUnavailable("a second dockerd needs root, dockerd and the docker CLI")
    tag = tag or f"cmantest-{secrets.token_hex(3)}"
    run = Path("/run") / tag  # short: containerd's sockets live under the exec root
    data = Path("/var/lib") / tag
    bridge = f"cmb{secrets.token_hex(3)}"
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=10).stdout
    third = next(n for n in range(200, 256) if f" 10.234.{n}." not in used)
    run.mkdir(mode=0o700)
    data.mkdir(mode=0o700)
    sock = run / "docker.sock"
    (run / "daemon.json").write_text("{}\n")
    log = run / "dockerd.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        for argv in (["ip", "link", "add", bridge, "type", "bridge"],
                     ["ip", "addr", "add", f"10.234.{third}.1/24", "dev", bridge], ["ip", "link", "set", bridge, "up"]):
            subprocess.run(argv, check=True, capture_output=True, timeout=10)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["dockerd", "-H", f"unix://{sock}", "--data-root", str(data), "--exec-root", str(run / "exec"),
                 "--pidfile", str(run / "docker.pid"), "--iptables=false", "--ip-masq=false", "--bridge", bridge,
                 "--config-file", str(run / "daemon.json"), "--containerd-namespace", tag,
                 "--containerd-plugins-namespace", f"{tag}-plugins", "--log-level", "warn"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"the second dockerd exited with {proc.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError, unixhttp.HTTPStatusError):
                if unixhttp.request(str(sock), "GET", "/_ping", timeout=2).read_all() == b"OK":
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"the second dockerd did not answer in 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        if image:
            save = subprocess.Popen(["docker", "-H", "unix:///var/run/docker.sock", "save", image],
                                    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            loaded = subprocess.run(["docker", "-H", f"unix://{sock}", "load", "-q"], stdin=save.stdout,
                                    capture_output=True, timeout=120)
            assert save.stdout is not None
            save.stdout.close()
            assert save.wait(60) == 0 and loaded.returncode == 0, loaded.stderr
        yield Dockerd(str(sock), proc.pid, log)
    finally:
        if proc is not None:
            with contextlib.suppress(Exception):  # its containers first: a stop waits for each
                ids = subprocess.run(["docker", "-H", f"unix://{sock}", "ps", "-aq"], capture_output=True,
                                     text=True, timeout=30).stdout.split()
                if ids:
                    subprocess.run(["docker", "-H", f"unix://{sock}", "rm", "-f", *ids], capture_output=True,
                                   timeout=60)
            _stop(proc)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=10)
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)


def _includes_config_d() -> bool:
    try:
        text = Path("/etc/ssh/ssh_config").read_text()
    except OSError:
        return False
    return any(line.split()[:2] == ["Include", "/etc/ssh/ssh_config.d/*.conf"] for line in text.splitlines())


@contextlib.contextmanager
def ssh_alias(docker_host: str | None = None) -> Iterator[str]:
    """A private sshd on 127.0.0.1 and ``Host ALIAS`` for it; the far end's docker CLI talks to
    ``docker_host`` (default: its own default socket). Yields ALIAS (``ssh://ALIAS``)."""
    if os.geteuid() != 0:
        raise LabUnavailable("a private sshd and /etc/ssh/ssh_config.d need root")
    if not os.path.exists(SSHD) or not all(shutil.which(p) for p in ("ssh", "ssh-keygen", "docker")):
        raise LabUnavailable("openssh-server, openssh-client and the docker CLI are needed")
    if not _includes_config_d():
        raise LabUnavailable("/etc/ssh/ssh_config does not Include /etc/ssh/ssh_config.d/*.conf")
    alias = f"cmantest-{secrets.token_hex(4)}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{alias}-"))
    snippet = SSH_CONFIG_D / f"{alias}.conf"
    made_privsep_dir = not os.path.isdir("/run/sshd")
    proc: subprocess.Popen[bytes] | None = None
    try:
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", alias, "-f", str(tmp / key)],
                           check=True, capture_output=True, timeout=30)
        key = (tmp / "client_key.pub").read_text().strip()
        env = f'environment="DOCKER_HOST={docker_host}" ' if docker_host else ""
        (tmp / "authorized_keys").write_text(f"{env}{key}\n")
        port = free_port()
        (tmp / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {tmp / 'host_key'}\n"
            f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "PermitUserEnvironment DOCKER_HOST\n"
            f"PidFile {tmp / 'sshd.pid'}\nStrictModes no\n")
        if made_privsep_dir:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        log = tmp / "sshd.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([SSHD, "-D", "-f", str(tmp / "sshd_config"), "-e"], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"sshd exited with {proc.returncode}: {log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"sshd did not listen on 127.0.0.1:{port}: {log.read_text()}")
            time.sleep(0.1)
        snippet.write_text(
            f"# cman test {alias}: removed by tests/integration/contextlab.py\n"
            f"Host {alias}\n    HostName 127.0.0.1\n    Port {port}\n    User root\n"
            f"    IdentityFile {tmp / 'client_key'}\n    IdentitiesOnly yes\n    StrictHostKeyChecking no\n"
            "    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n")
        yield alias
    finally:
        if proc is not None:
            _stop(proc, 10)
        snippet.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if made_privsep_dir:
            with contextlib.suppress(OSError):
                os.rmdir("/run/sshd")


@dataclass
class LxdRemote:
    url: str
    cert: str
    key: str
    verify: str
    """The daemon's own certificate (pinned)."""
    lxd_dir: str
    """Its LXD_DIR (``unix://LXD_DIR/unix.socket`` is its local socket)."""


def _in(lxd_dir: Path, *argv: str, check: bool = True, timeout: float = 120,
        input: str | None = None) -> subprocess.CompletedProcess[str]:  # noqa: A002
    env = {**os.environ, "LXD_DIR": str(lxd_dir), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=check, env=env, input=input)


@contextlib.contextmanager
def lxd_https(name: str) -> Iterator[LxdRemote]:
    """A SECOND LXD daemon of the lab's own (its own LXD_DIR, a dir storage pool, no network),
    listening on HTTPS on loopback with a fresh client certificate trusted: a remote whose
    address no other test changes (the machine's LXD's ``core.https_address`` is shared).
    Shut down and removed at the end."""
    if os.geteuid() != 0:
        raise LabUnavailable("a second LXD daemon needs root")
    if not all(shutil.which(p) for p in ("lxd", "lxc", "openssl")):
        raise LabUnavailable("lxd, its client (lxd-client) and openssl are needed for LXD over HTTPS")
    lxd_dir = Path("/var/lib") / f"{name}-lxd"
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-lxd-"))
    lxd_dir.mkdir(mode=0o711)
    proc: subprocess.Popen[bytes] | None = None
    try:
        crt, key = tmp / "client.crt", tmp / "client.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp384r1",
                        "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", f"/CN={name}-client"],
                       capture_output=True, check=True, timeout=60)
        env = {**os.environ, "LXD_DIR": str(lxd_dir), "HTTPS_PROXY": "http://127.0.0.1:9"}
        with open(tmp / "lxd.log", "wb") as out:  # the dead proxy: nothing leaves the machine
            proc = subprocess.Popen(["lxd", "--group", "root"], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        _in(lxd_dir, "lxd", "waitready", "--timeout", "60", timeout=90)
        port = free_port()
        _in(lxd_dir, "lxd", "init", "--preseed", input=(
            f"config: {{core.https_address: '127.0.0.1:{port}'}}\n"
            "storage_pools: [{name: default, driver: dir}]\n"
            "profiles:\n- name: default\n  devices:\n    root: {path: /, pool: default, type: disk}\n"))
        _in(lxd_dir, "lxc", "config", "trust", "add", str(crt), "--name", f"{name}-client")
        yield LxdRemote(f"https://127.0.0.1:{port}", str(crt), str(key), str(lxd_dir / "server.crt"), str(lxd_dir))
    finally:
        if proc is not None:
            with contextlib.suppress(Exception):
                listed = _in(lxd_dir, "lxc", "list", "--format", "csv", "-c", "n", check=False, timeout=30).stdout
                for instance in listed.split():
                    _in(lxd_dir, "lxc", "delete", "-f", instance, check=False, timeout=60)
            with contextlib.suppress(Exception):
                _in(lxd_dir, "lxd", "shutdown", "--timeout", "30", check=False, timeout=60)
            _stop(proc)
        mounts = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, timeout=10).stdout
        for target in sorted((m for m in mounts.split() if m.startswith(f"{lxd_dir}/")), reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, timeout=10)
        shutil.rmtree(lxd_dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
