"""The docker-host pieces that need no engine: fault names from the lines engines print, the
cgroup mounts a container sees, the AppArmor/runc rule, daemon.json merges, SSH keys, and the
step runner's idempotence and failure report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cman.dockerhost import faults
from cman.dockerhost.faults import OK, PROBLEM, WARNING, Finding
from cman.dockerhost.provision import DockerHost
from cman.dockerhost.spec import HostSpec
from cman.dockerhost.steps import ProvisionFailed, Step, run_steps
from cman.errors import ExitCode, UsageError
from cman.models import ExecResult

# Lines as dockerd, runc and the docker CLI print them (from this machine's logs, Docker's and
# runc's issue trackers, and the Proxmox VE reports of the November 2025 runc change).
CAUSES = [
    ("cgroup-mounts", 'level=fatal msg="Error starting daemon: Devices cgroup isn\'t mounted"'),
    ("cgroup-mounts", "docker: Error response from daemon: failed to create shim task: OCI runtime create failed: "
                      "runc create failed: no cgroup mount found in mountinfo: unknown."),
    ("apparmor", "docker: Error response from daemon: failed to create task for container: failed to create shim "
                 "task: OCI runtime create failed: runc create failed: unable to start container process: error "
                 "during container init: open sysctl net.ipv4.ip_unprivileged_port_start file: reopen fd 8: "
                 "permission denied: unknown."),
    ("keyctl", "OCI runtime create failed: runc create failed: unable to join session keyring: unable to create "
               "session key: function not implemented: unknown"),
    ("nesting", "runc create failed: unable to start container process: error during container init: error "
                "mounting \"proc\" to rootfs at \"/proc\": mount proc:/proc (via /proc/self/fd/6), flags: 0xe: "
                "operation not permitted: unknown"),
    ("overlay", 'level=error msg="failed to mount overlay: invalid argument" storage-driver=overlay2'),
    (None, "docker: Error response from daemon: Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup "
           "registry-1.docker.io: i/o timeout."),
]


@pytest.mark.parametrize(("cause", "text"), CAUSES)
def test_a_failure_is_named_by_its_cause(cause: str | None, text: str) -> None:
    assert faults.cause_of(text) == cause
    found = faults.explain(f"Unable to find image 'x' locally\n{text}\nSee 'docker run --help'.\n", step="check")
    assert found.status == PROBLEM
    assert found.name == (cause or "check")
    assert found.fix == (faults.FIXES[cause] if cause else "")
    assert "See 'docker run --help'" not in found.detail  # the line that says what went wrong


def test_the_apparmor_fix_names_the_cve_and_both_ways_out() -> None:
    fix = faults.FIXES["apparmor"]
    assert "CVE-2025-52881" in fix and "lxc.apparmor.profile = unconfined" in fix and "pve" in fix.lower()


MOUNTINFO = """\
22 1 0:21 / / rw,relatime - overlay overlay rw
325 22 0:117 / /sys/fs/cgroup rw,nosuid - tmpfs none rw,size=10240k
327 325 0:36 / /sys/fs/cgroup/pids rw - cgroup none rw,pids
328 325 0:35 / /sys/fs/cgroup/blkio rw - cgroup none rw,blkio
329 325 0:34 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup none rw,cpu,cpuacct
330 325 0:33 / /sys/fs/cgroup/devices rw - cgroup none rw,devices
331 325 0:32 / /sys/fs/cgroup/memory rw - cgroup none rw,memory
332 325 0:31 / /sys/fs/cgroup/freezer rw - cgroup none rw,freezer
"""
PROC_CGROUPS = """\
#subsys_name\thierarchy\tnum_cgroups\tenabled
cpu\t2\t80\t1
cpuacct\t3\t80\t1
devices\t4\t80\t1
memory\t5\t80\t1
pids\t6\t80\t1
freezer\t7\t80\t1
blkio\t8\t80\t1
net_cls\t9\t1\t1
rdma\t10\t1\t0
"""


def test_cgroup_mounts_are_what_the_container_sees() -> None:
    enabled = faults.enabled_controllers(PROC_CGROUPS)
    assert enabled == {"cpu", "cpuacct", "devices", "memory", "pids", "freezer", "blkio", "net_cls"}
    assert faults.check_cgroups(MOUNTINFO, enabled).status == OK
    # one controller fewer: named
    without = "\n".join(line for line in MOUNTINFO.splitlines() if "devices" not in line)
    found = faults.check_cgroups(without, enabled)
    assert (found.name, found.status, found.detail) == ("cgroup-mounts", PROBLEM, "not mounted inside: devices")
    # a tmpfs mounted over /sys/fs/cgroup later hides every hierarchy under it
    hidden = MOUNTINFO + "400 325 0:99 / /sys/fs/cgroup rw - tmpfs cman-fault rw\n"
    assert faults.check_cgroups(hidden, enabled).status == PROBLEM
    # ... and hierarchies mounted on top of that tmpfs count again
    again = hidden + "401 400 0:36 / /sys/fs/cgroup/devices rw - cgroup none rw,devices\n"
    assert faults.check_cgroups(again, {"devices"}).status == OK
    assert faults.check_cgroups("30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", enabled).status == OK
    assert faults.check_cgroups("", enabled).status == PROBLEM


@pytest.mark.parametrize(("version", "fixed"), [
    ("runc version 1.1.5+ds1\ncommit: ...", False), ("runc version 1.2.7", False), ("runc version 1.2.8", True),
    ("runc version 1.3.2", False), ("runc version 1.3.3", True), ("runc version 1.4.0-rc.3", True),
    ("runc version 1.5.1", True), ("no version here", None),
])
def test_runc_releases_with_the_2025_procfs_change(version: str, fixed: bool | None) -> None:
    assert faults.runc_has_2025_fix(version) is fixed


def test_apparmor_is_a_problem_only_when_confined_with_a_fixed_runc() -> None:
    assert faults.check_apparmor(False, "lxc-container-default-cgns (enforce)", "runc version 1.3.3").status == OK
    assert faults.check_apparmor(True, "unconfined\n", "runc version 1.3.3").status == OK
    assert faults.check_apparmor(True, "lxc-container-default-cgns (enforce)", "runc version 1.1.5").status == OK
    found = faults.check_apparmor(True, "lxc-container-default-cgns (enforce)", "runc version 1.3.3")
    assert (found.name, found.status) == ("apparmor", PROBLEM) and "CVE-2025-52881" in found.fix


def test_vfs_is_a_warning_that_offers_fuse_overlayfs() -> None:
    found = faults.check_storage("vfs\n")
    assert found.status == WARNING and "fuse-overlayfs" in found.fix
    assert faults.check_storage("overlay2").status == OK


def test_daemon_json_keeps_other_keys_and_is_written_only_when_it_differs() -> None:
    spec = HostSpec(name="h", registry_mirrors=("http://10.0.3.5:5000",), insecure_registries=("10.0.3.5:5000",),
                    dns=("10.0.3.1",), icc=False)
    merged, text = spec.daemon_json(b'{"log-level": "warn", "icc": true}')  # type: ignore[misc]
    assert list(merged) == ["log-level", "icc", "dns", "registry-mirrors", "insecure-registries"]
    assert merged["icc"] is False and merged["registry-mirrors"] == ["http://10.0.3.5:5000/"]
    assert json.loads(text) == merged
    assert spec.daemon_json(text) is None  # already right: nothing to write
    assert spec.daemon_json(None) is not None  # removed: written again
    assert HostSpec(name="h").daemon_json(None) is None  # nothing asked, nothing there: fine
    with pytest.raises(UsageError, match="not valid JSON"):
        spec.daemon_json(b"{oops")
    with pytest.raises(UsageError, match="JSON object"):
        spec.daemon_json(b"[1]")


@pytest.mark.parametrize("kwargs", [
    {"registry_mirrors": ("ftp://x",)}, {"registry_mirrors": ("http://u:p@x:5000",)},
    {"insecure_registries": ("http://x:5000",)}, {"insecure_registries": ("x:70000",)},
    {"insecure_registries": ("-x",)}, {"dns": ("not-an-ip",)}, {"check_image": "Bad/Ref"},
    {"ssh_key": Path("/k.pub")},
])
def test_bad_settings_are_usage_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError) as err:
        HostSpec(name="h", **kwargs)  # type: ignore[arg-type]
    assert err.value.exit_code == ExitCode.USAGE


def test_the_ssh_key_must_be_a_public_one(tmp_path: Path) -> None:
    pub = tmp_path / "k.pub"
    pub.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB cman@test\n")
    assert HostSpec(name="h", ssh=True, ssh_key=pub).public_key() == pub.read_bytes()
    private = tmp_path / "k"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n")
    with pytest.raises(UsageError, match="not an OpenSSH public key"):
        HostSpec(name="h", ssh=True, ssh_key=private).public_key()
    with pytest.raises(UsageError, match="no public key"):
        HostSpec(name="h", ssh=True, ssh_key=tmp_path / "absent.pub").public_key()


class _Thing:
    """A pretend piece of state for the step runner (pure logic: no engine involved)."""

    def __init__(self, *, broken: bool, mendable: bool = True) -> None:
        self.broken, self.mendable, self.repairs = broken, mendable, 0

    def check(self) -> Finding:
        return Finding("thing", PROBLEM if self.broken else OK, "broken" if self.broken else "fine", "mend it")

    def repair(self, _found: Finding) -> str:
        self.repairs += 1
        self.broken = not self.mendable
        return "mended"


def test_steps_repair_only_what_is_broken_and_say_so() -> None:
    good, bad = _Thing(broken=False), _Thing(broken=True)
    said: list[str] = []
    report = run_steps([Step("good", good.check, good.repair), Step("bad", bad.check, bad.repair)], said.append)
    assert (good.repairs, bad.repairs) == (0, 1)
    assert [(s.name, s.status) for s in report.steps] == [("good", "ok"), ("bad", "repaired")]
    assert report.changed
    assert said[-1] == "[2/2] bad: repaired: mended; fine"
    again = run_steps([Step("good", good.check, good.repair), Step("bad", bad.check, bad.repair)], said.append)
    assert not again.changed and bad.repairs == 1


def test_a_step_that_stays_broken_stops_the_run_with_exit_8() -> None:
    stuck, after = _Thing(broken=True, mendable=False), _Thing(broken=True)
    with pytest.raises(ProvisionFailed) as err:
        run_steps([Step("stuck", stuck.check, stuck.repair), Step("after", after.check, after.repair)],
                  lambda _m: None)
    assert err.value.exit_code == ExitCode.PROVISION_FAILED == 8
    assert str(err.value) == "provision step stuck failed (thing): broken: mend it"
    assert after.repairs == 0  # nothing after the failed step is touched


class _Probes:
    """A guest that answers the Docker probe with the given exit codes in turn (the judging only)."""

    def __init__(self, *codes: int) -> None:
        self.codes = list(codes)
        self.asked = 0

    def run(self, argv: list[str], **_kw: object) -> ExecResult:
        if "dockerd" in argv and "--version" in argv:
            return ExecResult(0, b"Docker version 20.10.24\n", b"")
        self.asked += 1
        return ExecResult(self.codes.pop(0), b"", b"exec: lost\n")

    def text(self, argv: list[str], **kw: object) -> str:
        done = self.run(argv, **kw)
        return (done.stdout + done.stderr).decode()


class _Host(DockerHost):
    probes: _Probes

    @property
    def guest(self) -> Any:
        return self.probes


def _host(*codes: int) -> _Host:
    host = _Host.__new__(_Host)
    host.probes = _Probes(*codes)
    return host


@pytest.mark.parametrize(("codes", "status", "asked", "detail"), [
    ((0,), OK, 1, "Docker version"),
    ((1,), PROBLEM, 1, "docker.io is not installed"),
    ((255, 0), OK, 2, "Docker version"),  # a probe that failed by itself is asked again
    ((255, 137), PROBLEM, 2, "could not check for docker.io (exit 137) exec: lost"),
])
def test_the_docker_check_tells_missing_from_a_failed_probe(
        codes: tuple[int, ...], status: str, asked: int, detail: str) -> None:
    host = _host(*codes)
    found = host.check_docker()
    assert (found.status, host.probes.asked) == (status, asked)
    assert detail in found.detail


class _FlakyExec:
    """A backend's exec_capture that fails as given, then answers (Guest needs nothing else)."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    def exec_capture(self, ref: str, command: list[str], *, stdin: bytes = b"") -> ExecResult:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return ExecResult(0, b'{"dns": ["10.0.0.1"]}', b"")


def test_a_guest_read_asks_again_when_the_engine_failed_to_run_it() -> None:
    """LXD under load can fail to start an exec (its log: "Failed to retrieve PID of executing
    child process"): a read changes nothing, so it is asked again, not taken for a missing file."""
    from cman.dockerhost.guest import Guest
    from cman.errors import EngineExecFailed

    flaky = _FlakyExec(EngineExecFailed("lxd: exec in dh: the daemon could not run or follow the command (code -1)"))
    guest = Guest(backend=flaky, name="dh")  # type: ignore[arg-type]
    assert guest.read("/etc/docker/daemon.json") == b'{"dns": ["10.0.0.1"]}'
    assert flaky.calls == 2


def test_a_guest_read_does_not_ask_again_for_an_answer_of_the_engine() -> None:
    from cman.dockerhost.guest import Guest
    from cman.errors import ContainerNotFound

    flaky = _FlakyExec(ContainerNotFound("dh", "lxd"))
    with pytest.raises(ContainerNotFound):
        Guest(backend=flaky, name="dh").read("/etc/docker/daemon.json")  # type: ignore[arg-type]
    assert flaky.calls == 1


def test_a_step_is_run_again_from_its_look_when_the_engine_failed_a_command() -> None:
    """A step looks before it acts: when the engine fails to run one of its commands, the step
    runs again; what an earlier attempt mended still counts as repaired."""
    from cman.errors import EngineExecFailed

    state = {"fixed": False, "looks": 0}

    def check() -> Finding:
        state["looks"] += 1
        if state["looks"] == 2:  # the look after the repair: the engine lost the command
            raise EngineExecFailed("lxd: exec in dh: the daemon could not run or follow the command (code -1)")
        return Finding("thing", OK if state["fixed"] else PROBLEM, "fixed" if state["fixed"] else "broken")

    def repair(_found: Finding) -> str:
        state["fixed"] = True
        return "fixed it"

    report = run_steps([Step("thing", check, repair)], lambda _m: None)
    assert [(s.status, s.detail) for s in report.steps] == [("repaired", "fixed it; fixed")]
    assert report.changed and state["looks"] == 3


def test_a_step_is_not_run_again_for_other_errors() -> None:
    calls: list[str] = []

    def check() -> Finding:
        calls.append("look")
        raise UsageError("bad")

    with pytest.raises(UsageError):
        run_steps([Step("thing", check)], lambda _m: None)
    assert calls == ["look"]
