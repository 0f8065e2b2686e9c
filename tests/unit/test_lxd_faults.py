"""The LXD backend under faults and hostile input, without LXD: spec rules, the create
rollback, operation waits longer than the client's timeout, containers that vanish by
themselves (ephemeral), leftovers of killed runs, and the no-ICC pre-start hook line.

The daemon is replaced by small fakes of the pylxd calls the code makes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cman._sys.proc import mark
from cman.backends.lxd import LxdBackend, connection, endpoint, imagebuild, leftovers
from cman.backends.lxd import net as lxd_net
from cman.errors import CmanError, ContainerNotFound, EngineError, InvalidValue
from cman.models import RUN_LABEL, ContainerSpec
from cman.network import NetworkSpec, isolation


class _NoClient:
    def __getattr__(self, name: str) -> Any:
        pytest.fail(f"LXD was contacted before validation ({name})")


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> LxdBackend:
    monkeypatch.delenv(endpoint.ENV_ENDPOINT, raising=False)
    b = LxdBackend()
    b._client = _NoClient()
    return b


# -- validate_spec: what LXD turns into LXC config lines --------------------------------------


@pytest.mark.parametrize("value", ["line1\nlxc.hook.pre-start = /bin/evil", "a\rb", "nul\0byte", "end\n"])
def test_env_values_that_would_break_a_config_line_are_refused(backend: LxdBackend, value: str) -> None:
    spec = ContainerSpec(image="img", env={"SECRET_TOKEN": value})
    with pytest.raises(InvalidValue) as caught:
        LxdBackend.validate_spec(spec)
    assert caught.value.exit_code == 2
    assert "SECRET_TOKEN" in str(caught.value) and value not in str(caught.value), "the key, never the value"
    with pytest.raises(InvalidValue):
        backend.create(spec)  # also when create is called directly: before any call to LXD


@pytest.mark.parametrize("key", ["FOO\n", "FOO\n=x", "A B", "1ABC", "", "K=V", "é", "FOO\r"])
def test_env_keys_are_checked_whole(key: str) -> None:
    with pytest.raises(InvalidValue, match="environment key"):
        LxdBackend.validate_spec(ContainerSpec(image="img", env={key: "v"}))


@pytest.mark.parametrize("key", ["team\n", "a b", "-x", ""])
def test_label_keys_are_checked_whole(key: str) -> None:
    with pytest.raises(InvalidValue, match="label key"):
        LxdBackend.validate_spec(ContainerSpec(image="img", labels={key: "v"}))


def test_good_specs_pass() -> None:
    LxdBackend.validate_spec(ContainerSpec(image="img", env={"A_B": "x y=z\t", "x.y-z": ""},
                                           labels={"team/web.tier": "blue", RUN_LABEL: "12:34"}))


# -- create: privileged, and the rollback ----------------------------------------------------------


class _Created(LxdBackend):
    """create() with the daemon calls replaced; records what it would send."""

    def __init__(self, fail_after: Exception | None = None, fail_delete: Exception | None = None) -> None:
        super().__init__()
        self.bodies: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.fail_after = fail_after
        self.fail_delete = fail_delete

        class Instances:
            def __init__(self, outer: _Created) -> None:
                self.outer = outer

            def __getitem__(self, _name: str) -> Any:
                from pylxd import exceptions as lxd_exc

                class Missing:
                    def get(self) -> None:
                        class Response:
                            status_code = 404

                            def json(self) -> dict[str, Any]:
                                return {"error": "Instance not found"}

                        raise lxd_exc.NotFound(Response())

                return Missing()

            def post(self, json: dict[str, Any]) -> dict[str, Any]:
                self.outer.bodies.append(json)
                return json

        self._client = type("C", (), {"api": type("A", (), {"instances": Instances(self)})()})()

    def _image_raw(self, ref: str) -> dict[str, Any]:
        return {"fingerprint": "f" * 64}

    def _sync_or_wait(self, response: Any) -> dict[str, Any]:
        return {}

    def _raw(self, ref: str) -> dict[str, Any]:
        if self.fail_after is not None:
            raise self.fail_after
        return {"name": ref, "status": "Stopped", "config": self.bodies[-1]["config"], "expanded_devices": {}}

    def _delete(self, ref: str) -> None:
        if self.fail_delete is not None:
            raise self.fail_delete
        self.deleted.append(ref)


def test_privileged_only_when_asked() -> None:
    b = _Created()
    b.create(ContainerSpec(image="img", name="web"))
    b.create(ContainerSpec(image="img", name="root", privileged=True))
    assert b.bodies[0]["config"]["security.privileged"] == "false", "a profile cannot make it privileged"
    assert b.bodies[1]["config"]["security.privileged"] == "true"


def test_rollback_deletes_what_create_made() -> None:
    b = _Created(fail_after=EngineError("lxd create: disk on fire"))
    with pytest.raises(EngineError, match=r"^lxd create: disk on fire$"):
        b.create(ContainerSpec(image="img", name="web"))
    assert b.deleted == ["web"]


def test_a_failed_rollback_is_said_in_the_same_line() -> None:
    """Failed before: the rollback's own failure was suppressed, the container left silently."""
    b = _Created(fail_after=EngineError("lxd create: disk on fire"), fail_delete=EngineError("lxd remove: busy disk"))
    with pytest.raises(EngineError) as caught:
        b.create(ContainerSpec(image="img", name="web"))
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("lxd create: disk on fire; ")
    assert "web could not be removed (lxd remove: busy disk)" in text and "cman rm -f lxd:web" in text


def test_rollback_of_a_container_already_gone_is_quiet() -> None:
    b = _Created(fail_after=EngineError("lxd create: disk on fire"), fail_delete=ContainerNotFound("web", "lxd"))
    with pytest.raises(EngineError, match=r"^lxd create: disk on fire$"):
        b.create(ContainerSpec(image="img", name="web"))


def test_rollback_does_not_swallow_a_bug() -> None:
    b = _Created(fail_after=EngineError("lxd create: disk on fire"), fail_delete=TypeError("a bug"))
    with pytest.raises(EngineError, match="TypeError: a bug"):  # translated at the boundary, not hidden
        b.create(ContainerSpec(image="img", name="web"))


# -- operation waits are not capped by the client's timeout ---------------------------------------


class _Operations:
    """GET /1.0/operations/ID/wait: 'Running' until ``done_after`` waits, like a long stop.
    Each wait takes the time it asks for, on a fake clock."""

    def __init__(self, done_after: int, client_timeout: float) -> None:
        self.calls: list[tuple[dict[str, str], Any]] = []
        self.done_after = done_after
        self.client_timeout = client_timeout
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def __getitem__(self, _op: str) -> _Operations:
        return self

    @property
    def wait(self) -> _Operations:
        return self

    def get(self, params: dict[str, str] | None = None, timeout: Any = None) -> Any:
        import requests

        self.calls.append((params or {}, timeout))
        server_wait = int((params or {}).get("timeout", "-1"))
        read_timeout = timeout[1] if isinstance(timeout, tuple) else (timeout or self.client_timeout)
        if server_wait < 0 or server_wait >= read_timeout:
            raise requests.exceptions.ReadTimeout("read timed out")  # the daemon would still be waiting
        finished = len(self.calls) >= self.done_after
        self.now += 0.01 if finished else server_wait
        meta = {"status": "Success" if finished else "Running", "status_code": 200 if finished else 103}
        return type("R", (), {"json": lambda _self: {"metadata": meta}})()


def test_a_long_operation_is_waited_for_in_steps(backend: LxdBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed before: one wait request without a timeout, capped by the client's 120 s."""
    ops = _Operations(done_after=12, client_timeout=connection.CLIENT_TIMEOUT)
    monkeypatch.setattr(connection, "time", ops)
    backend._client = type("C", (), {"api": type("A", (), {"operations": ops})()})()
    assert backend._wait_op("/1.0/operations/abc")["status"] == "Success"
    assert len(ops.calls) == 12, "12 steps of 30 s: a 6-minute stop"
    for params, timeout in ops.calls:
        assert params == {"timeout": str(connection.WAIT_STEP)}
        assert timeout == (connection.CLIENT_TIMEOUT, connection.WAIT_STEP + connection.WAIT_MARGIN)


def test_a_wait_with_a_timeout_returns_a_running_operation(backend: LxdBackend,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    ops = _Operations(done_after=99, client_timeout=connection.CLIENT_TIMEOUT)
    monkeypatch.setattr(connection, "time", ops)
    backend._client = type("C", (), {"api": type("A", (), {"operations": ops})()})()
    assert backend._wait_op("/1.0/operations/abc", timeout=1)["status"] == "Running"
    assert [params for params, _ in ops.calls] == [{"timeout": "1"}]


# -- containers that vanish by themselves (ephemeral, --rm) -------------------------------------


class _Vanishing(LxdBackend):
    """An ephemeral instance that LXD deletes while cman talks to it."""

    def __init__(self, raw: dict[str, Any], gone_at: str) -> None:
        super().__init__()
        self.raw_record = raw
        self.gone_at = gone_at
        self.gone = False

    def _raw(self, ref: str) -> dict[str, Any]:
        if self.gone:
            raise ContainerNotFound(ref, "lxd")
        return self.raw_record

    def _set_state(self, ref: str, action: str, *, timeout: float = -1, force: bool = False) -> None:
        if self.gone_at == "stop":
            self.gone = True
            raise connection.OperationFailed("Instance not found")

    def job_state(self, ref: str) -> Any:
        return None if self.gone else "running"

    def _delete(self, ref: str) -> None:
        self.gone = True
        if self.gone_at == "delete":
            raise connection.OperationFailed("Instance not found")


@pytest.mark.parametrize(("status", "gone_at"), [("Running", "stop"), ("Stopped", "delete")])
def test_remove_of_an_ephemeral_container_that_goes_by_itself(status: str, gone_at: str) -> None:
    raw = {"name": "eph", "status": status, "ephemeral": True, "config": {"volatile.last_state.power": "RUNNING"}}
    _Vanishing(raw, gone_at).remove("eph", force=True)  # no error: it is gone, as asked


def test_remove_of_a_plain_container_that_goes_meanwhile_is_not_found() -> None:
    raw = {"name": "c", "status": "Stopped", "ephemeral": False, "config": {"volatile.last_state.power": "STOPPED"}}
    with pytest.raises(ContainerNotFound):
        _Vanishing(raw, "delete").remove("c")


def test_a_gone_container_is_not_a_missing_file(backend: LxdBackend) -> None:
    """The job's code of a vanished ephemeral container is "not found", not "killed (137)"."""
    from pylxd import exceptions as lxd_exc

    class Files:
        def __init__(self, message: str) -> None:
            self.message = message

        def get(self, **_kw: Any) -> Any:
            message = self.message

            class Response:
                status_code = 404

                def json(self) -> dict[str, Any]:
                    return {"type": "error", "error": message, "error_code": 404}

            raise lxd_exc.NotFound(Response())

    def client(message: str) -> Any:
        instance = type("I", (), {"files": Files(message)})()
        instances = type("Is", (), {"__getitem__": lambda _s, _k: instance})()
        return type("C", (), {"api": type("A", (), {"instances": instances})()})()

    backend._client = client("Not Found")
    assert backend.read_file("c1", "/var/log/cman/job.rc") is None
    backend._client = client("Instance not found")
    with pytest.raises(ContainerNotFound):
        backend.read_file("c1", "/var/log/cman/job.rc")


# -- leftovers of killed runs and imports ----------------------------------------------------------


def _dead_mark() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    value = mark(child.pid)
    child.wait()
    return value


def _instance(name: str, run: str | None, *, started: bool = False, managed: bool = True) -> dict[str, Any]:
    config = {"user.cman.managed": "true" if managed else "false"}
    if run is not None:
        config["user.cman.label." + RUN_LABEL] = run
    if started:
        config["volatile.last_state.power"] = "STOPPED"
    return {"name": name, "status": "Stopped", "config": config}


def test_abandoned_instances_are_the_never_started_ones_of_a_dead_run() -> None:
    dead, alive = _dead_mark(), mark()
    instances = [
        _instance("orphan", dead),
        _instance("starting", alive),  # a live run is still starting it
        _instance("ran", dead, started=True),  # it ran once: a user's stopped container
        _instance("users", None),  # made by `cman create`: no run label
        _instance("foreign", dead, managed=False),
        _instance("odd", "not-a-mark"),
    ]
    found = leftovers.abandoned_instances(instances, "user.cman.label." + RUN_LABEL, "user.cman.managed",
                                          lambda _raw: pytest.fail("only running ones are asked"))
    assert [item.name for item in found] == ["orphan"]
    assert found[0].line().startswith("container orphan: created by a run that was killed before it started")


def test_a_running_container_of_a_dead_run_without_its_job_is_abandoned() -> None:
    """SIGKILL between boot and the job's start: running, and nothing will ever start the job
    (with or without --rm: a job that began halts the container when it ends)."""
    dead = _dead_mark()

    def running(name: str, *, ephemeral: bool = True, command: str = '["sleep", "3"]',
                run: str | None = dead) -> dict[str, Any]:
        raw = _instance(name, run, started=True)
        raw.update(status="Running", ephemeral=ephemeral, state={"pid": 4242})
        raw["config"]["user.cman.command"] = command
        return raw

    jobs = {"nojob": False, "withjob": True, "unknown": None, "detached": False, "plain": False,
            "created": False, "livejob": False}
    instances = [running("nojob"), running("withjob"), running("unknown"),
                 running("detached", ephemeral=False),  # run -d killed before its job
                 running("plain", command="[]"),  # `run --rm IMAGE`: a system container, no job meant
                 running("created", ephemeral=False, run=None),  # `cman create` + `lxc start`: the user's
                 running("livejob", run=mark())]  # its run is alive: still starting the job
    found = leftovers.abandoned_instances(instances, "user.cman.label." + RUN_LABEL, "user.cman.managed",
                                          lambda raw: jobs[raw["name"]])
    assert [(item.name, item.running) for item in found] == [("nojob", True), ("detached", True)]
    assert all("killed before the container's job began" in item.why for item in found)


def _in_new_pid_namespace(argv0: str) -> tuple[subprocess.Popen[bytes], int]:
    """A shell as PID 1 of a new PID namespace (as a container's processes are), with ``argv0``
    as its $0; returns the unshare process and the shell's PID on this host."""
    outer = subprocess.Popen(["unshare", "--user", "--map-root-user", "--pid", "--fork",
                              "/bin/sh", "-c", "sleep 30; :", argv0])  # "; :" keeps sh (no exec)
    deadline = time.monotonic() + 10
    while True:
        children = Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split()
        if children:
            return outer, int(children[0])
        assert time.monotonic() < deadline, "unshare started no child"
        time.sleep(0.02)


def test_runs_job_looks_into_the_container_namespace_only() -> None:
    """Only processes of the container's own PID namespace count (an lxc-attach on the host
    with the same argv, or another container's job, does not)."""
    with_job, job_pid = _in_new_pid_namespace("cman-job")
    without, other_pid = _in_new_pid_namespace("something-else")
    try:
        deadline = time.monotonic() + 5
        while leftovers.runs_job(job_pid) is not True:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert leftovers.runs_job(other_pid) is False
    finally:
        for proc, inner in ((with_job, job_pid), (without, other_pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(inner, signal.SIGKILL)  # the namespace's init: the whole namespace goes
            proc.wait(timeout=10)
    assert leftovers.runs_job(999999999) is None


def test_abandoned_tarballs_carry_a_dead_process(tmp_path: Path) -> None:
    built = imagebuild.build_unified(_rootfs(tmp_path), "x", out_dir=tmp_path)
    try:
        assert built.path.name.startswith(f"{leftovers.TARBALL_PREFIX}{os.getpid()}-")
        assert leftovers.abandoned_tarballs(tmp_path) == [], "this process is alive: its file stays"
        dead_pid, dead_start = _dead_mark().split(":")
        stale = tmp_path / f"{leftovers.TARBALL_PREFIX}{dead_pid}-{dead_start}-abcd1234.tar.gz"
        stale.write_bytes(b"x")
        (tmp_path / "cman-lxd-image-unrelated.tar.gz").write_bytes(b"x")
        assert [item.name for item in leftovers.abandoned_tarballs(tmp_path)] == [str(stale)]
        assert f"cman process {dead_pid} is gone" in leftovers.abandoned_tarballs(tmp_path)[0].why
        assert leftovers.import_in_progress(tmp_path), "this process's tarball: an import is in progress"
        built.path.unlink()
        assert not leftovers.import_in_progress(tmp_path), "only a dead process's tarball is left"
    finally:
        built.path.unlink(missing_ok=True)


def test_unnamed_imports_are_cmans_own_images_without_an_alias_that_nothing_uses() -> None:
    def image(fp: str, *, aliases: list[str], built_by_cman: bool = True) -> dict[str, Any]:
        props = {"name": f"n{fp}", **({imagebuild.SOURCE_PROPERTY: "rootfs.tar"} if built_by_cman else {})}
        return {"fingerprint": fp, "aliases": [{"name": a} for a in aliases], "properties": props}

    images = [image("a1", aliases=[]), image("b2", aliases=["web"]), image("c3", aliases=[], built_by_cman=False),
              image("d4", aliases=[])]
    instances = [{"name": "x", "config": {"volatile.base_image": "d4"}}]
    found = leftovers.unnamed_imports(images, instances, imagebuild.SOURCE_PROPERTY)
    assert [(item.kind, item.name) for item in found] == [("image", "a1")]
    assert "imported as na1" in found[0].why and "killed before it named it" in found[0].why


def _rootfs(tmp_path: Path) -> Path:
    import io
    import tarfile

    path = tmp_path / "rootfs.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"x\n"))
    return path


def test_prune_leftovers_removes_and_reports(backend: LxdBackend, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    dead = _dead_mark()
    pid, start = dead.split(":")
    stale = tmp_path / f"{leftovers.TARBALL_PREFIX}{pid}-{start}-zz.tar.gz"
    stale.write_bytes(b"x")
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    listing = {"metadata": [_instance("orphan", dead), _instance("keep", mark())]}
    unnamed = {"fingerprint": "f00d", "aliases": [], "properties": {imagebuild.SOURCE_PROPERTY: "r.tar", "name": "x"}}
    image_listing = {"metadata": [unnamed]}

    def endpoint(data: dict[str, Any]) -> Any:
        return type("E", (), {"get": lambda _s, **_k: type("R", (), {"json": lambda _r: data})()})()

    api = type("A", (), {"instances": endpoint(listing), "images": endpoint(image_listing)})()
    backend._client = type("C", (), {"api": api})()
    removed: list[str] = []
    monkeypatch.setattr(LxdBackend, "remove", lambda _self, ref, force=False: removed.append(ref))
    monkeypatch.setattr(LxdBackend, "image_remove", lambda _self, ref, force=False: removed.append("image " + ref))
    dry = backend.prune_leftovers(dry_run=True)
    assert len(dry) == 3 and removed == [] and stale.exists()
    lines = backend.prune_leftovers()
    assert lines == dry and removed == ["orphan", "image f00d"] and not stale.exists()


# -- no-ICC: the pre-start hook line ---------------------------------------------------------------


def test_hook_line_runs_the_isolation_script_with_script_up_arguments(tmp_path: Path) -> None:
    hook = tmp_path / "hooks dir" / lxd_net.HOOK_FILE
    line = lxd_net.hook_line(isolation.hook_value(hook), "web", "cmantest-ab12cd", "cmi0123456789ab")
    key, _, value = line.partition(" = ")
    assert key == "lxc.hook.pre-start"
    assert value.startswith(str(tmp_path) + "/hooks\\ dir/" + lxd_net.HOOK_FILE + " ")
    assert value.endswith(" web net up veth cmantest-ab12cd cmi0123456789ab")
    assert "\n" not in line


def test_the_hook_isolates_the_port_it_is_given(tmp_path: Path) -> None:
    """The script, run as LXC runs it (``sh -c "exec VALUE"``), calls ``bridge`` with the port."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bridge").write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/called"\n')
    (bin_dir / "bridge").chmod(0o755)
    script = tmp_path / lxd_net.HOOK_FILE
    isolation.write_hook(script)
    text = script.read_text().replace("PATH=/usr/sbin:/sbin:/usr/bin:/bin", f"PATH={bin_dir}:/usr/bin:/bin")
    script.write_text(text)
    value = lxd_net.hook_line(isolation.hook_value(script), "web", "br0", "cmi0123456789ab").partition(" = ")[2]
    subprocess.run(["sh", "-c", f"exec {value}"], check=True, timeout=10)
    assert (bin_dir / "called").read_text().split() == ["link", "set", "dev", "cmi0123456789ab", "isolated", "on"]


def test_raw_lxc_block_with_the_hook_goes_away_whole() -> None:
    hook = lxd_net.hook_line("/var/lib/cman/hooks/" + lxd_net.HOOK_FILE, "web", "br0", "cmi0123456789ab")
    block = lxd_net.raw_lxc_block("n1", 0, "10.203.7.5", "10.203.7.0/24", "10.203.7.254", hook)
    assert block[-1] == hook
    users = "lxc.apparmor.profile = unconfined\n"
    text = lxd_net.with_block(users, block) + "lxc.hook.pre-start = /usr/local/bin/users-own-hook\n"
    rest = lxd_net.without_block(text)
    assert rest == users + "lxc.hook.pre-start = /usr/local/bin/users-own-hook\n", "only cman's lines go"


def test_no_icc_nics_get_a_fixed_port_name() -> None:
    spec = NetworkSpec(name="cmantest-ab12cd", subnet="10.203.7.0/24", gateway="10.203.7.254",
                       bridge="cmantest-ab12cd", icc=False)
    net = lxd_net.to_network({"name": spec.name, "type": "bridge", "managed": True,
                              "config": lxd_net.network_config(spec), "used_by": []})
    port = lxd_net.new_port_name()
    assert len(port) == 15 and port.startswith(lxd_net.PORT_PREFIX) and port != lxd_net.new_port_name()
    device = lxd_net.nic_device(net, port)
    assert device["host_name"] == port and device["security.port_isolation"] == "true"
    raw = {"config": {"user.cman.network": spec.name, "user.cman.ip": "10.203.7.2"},
           "expanded_devices": {"eth0": device}}
    att = lxd_net.attachment(raw)
    assert att is not None and att.port == port


def test_start_time_changes_with_the_process() -> None:
    assert leftovers.own_tag().startswith(f"{os.getpid()}-")
    first = _dead_mark()
    time.sleep(0.02)
    assert first != mark()


def test_errors_here_are_cman_errors() -> None:
    assert issubclass(InvalidValue, CmanError)


def test_a_failed_network_rollback_is_said_in_the_same_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failed before: both undo steps were suppressed, and the half-made network stayed silently."""
    from cman.network import netfilter

    monkeypatch.delenv(endpoint.ENV_ENDPOINT, raising=False)
    spec = NetworkSpec(name="cmantest-ab12cd", subnet="10.203.7.0/24", gateway="10.203.7.254",
                       bridge="cmantest-ab12cd", icc=True)

    def fail(message: str) -> Any:
        def raiser(*_a: Any, **_k: Any) -> None:
            raise EngineError(message)
        return raiser

    class Networks:
        def post(self, json: dict[str, Any]) -> None:
            return None

        def __getitem__(self, _name: str) -> Any:
            return type("N", (), {"delete": lambda _self: (_ for _ in ()).throw(connection.OperationFailed("disk on fire"))})()

    b = LxdBackend()
    b._client = type("C", (), {"api": type("A", (), {"networks": Networks()})()})()
    monkeypatch.setattr(LxdBackend, "_sync_or_wait", lambda _self, response: response)
    monkeypatch.setattr(netfilter, "ensure_bridge_rules", fail("iptables: no chain"))
    monkeypatch.setattr(netfilter, "remove_rules", fail("iptables: locked"))
    with pytest.raises(EngineError) as caught:
        b.network_create(spec)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("iptables: no chain; and the half-made network cmantest-ab12cd")
    assert "its host rules (iptables: locked)" in text and "the LXD network (lxd network rm cmantest-ab12cd: disk on fire)" in text
