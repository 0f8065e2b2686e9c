"""The CLI fuzzer: random argv through the real entry point, in-process (``cman.cli.main``).

Argv is built from the real commands and options, with valid-looking and hostile values
(newlines, '..', '/', very long strings, unicode, empty strings, leading '-', lone
surrogates, which is what undecodable argv bytes become), options out of place, unknown
options, missing and extra arguments. For every argv:

- the exit code is a documented one (README "Exit codes"); ``run`` and ``exec`` report
  their own failures as 125/126/127 (README), so a script can tell them from its command's;
- stderr never holds "Traceback" (only ``--debug`` may print one) nor "internal error",
  and nothing escapes ``main``;
- an error says something on stderr, without raw control characters taken from the input;
- the process is left as it was: signal mask and handlers, environment, working directory.

No engine, registry or network is ever reached: every engine is made unreachable through
the environment (:func:`isolated_env`: a Docker socket that does not exist, an LXD_DIR that
does not exist, a PATH without any program, so no ``lxc-*``, ``ip`` or ``iptables`` can
run), every path cman writes to points into a temporary directory, proxies point at a dead
port, and the two commands that act on the host whatever the engines do are held back:
``engine configure docker`` always gets ``--config`` in the temporary directory and never
``--apply``, and the monitor's daemon is not started (``monitor run`` only with an
interval it must refuse, which it checks before anything else).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cman.cli import main
from cman.validate import parse_interval

from ..conftest import ROOTFS
from ._fuzz import EXIT_CODES, FUZZ, counted, token, values

DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 7, 130}
"""README "Exit codes"."""
RUN_CODES = {0, 125, 126, 127, 130}
"""README: run and exec pass their command's code through and report their own failures as
125 (any error of the table), 126, 127, 130. No command can run here (no engine answers)."""
CASE_TIMEOUT = 30


# -- the grammar ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opt:
    names: tuple[str, ...]
    examples: tuple[str, ...] = ()
    """Valid-looking values; empty for a flag."""
    repeat: bool = False


def _v(*examples: str) -> tuple[str, ...]:
    return examples


CONTAINER_OPTS = (
    Opt(("-i", "--interactive")), Opt(("-t", "--tty")),
    Opt(("--name",), _v("web", "cmanfuzz-1", "a.b_c-d")),
    Opt(("-e", "--env"), _v("A=1", "PATH=/bin", "K="), repeat=True),
    Opt(("-l", "--label"), _v("team=blue", "tier=", "a/b=c"), repeat=True),
    Opt(("--cpus",), _v("0.5", "2", "0.01")), Opt(("-m", "--memory"), _v("64m", "1g", "1048576")),
    Opt(("--network",), _v("web", "none")), Opt(("--ip",), _v("10.210.0.5",)),
    Opt(("--dns",), _v("192.0.2.53", "::1"), repeat=True), Opt(("--dns-search",), _v("cman.test",), repeat=True),
)
IMAGES = _v("busybox", "127.0.0.1:5000/cman/busybox:latest", "template:busybox", "images:debian/12", "debian:12")
NAMES = _v("web", "docker:web", "lxd:db", "lxc:x", "cmanfuzz")
NET_NAMES = _v("web", "lxd:net1", "cmanfuzz0")
JSON = Opt(("--json",))


@dataclass(frozen=True)
class Command:
    path: tuple[str, ...]
    opts: tuple[Opt, ...] = ()
    args: tuple[tuple[str, ...], ...] = ()
    """Examples for each positional argument, in order."""
    rest: tuple[str, ...] = ()
    """Examples for a trailing variadic argument (names, a command)."""


COMMANDS = (
    Command(("run",), (*CONTAINER_OPTS, Opt(("--rm",)), Opt(("-d", "--detach"))), (IMAGES,), _v("sh", "-c", "true")),
    Command(("create",), CONTAINER_OPTS, (IMAGES,), _v("sleep", "1")),
    Command(("ps",), (Opt(("-a", "--all")), JSON, Opt(("-q", "--quiet")))),
    Command(("start",), (), (NAMES,), NAMES),
    Command(("stop",), (Opt(("-t", "--time"), _v("1", "0", "2.5")),), (NAMES,), NAMES),
    Command(("restart",), (Opt(("-t", "--time"), _v("1",)),), (NAMES,), NAMES),
    Command(("rm",), (Opt(("-f", "--force")),), (NAMES,), NAMES),
    Command(("exec",), (Opt(("-i", "--interactive")), Opt(("-t", "--tty")), Opt(("-e", "--env"), _v("X=1",), True)),
            (NAMES, _v("sh", "true")), _v("-c", "echo")),
    Command(("logs",), (Opt(("-f", "--follow")),), (NAMES,)),
    Command(("inspect",), (JSON,), (NAMES,), NAMES),
    Command(("pull",), (), (IMAGES,)),
    Command(("images",), (JSON,)),
    Command(("image", "ls"), (JSON,)),
    Command(("image", "inspect"), (JSON,), (IMAGES,)),
    Command(("image", "history"), (JSON,), (IMAGES,)),
    Command(("image", "rm"), (Opt(("-f", "--force")),), (IMAGES,), IMAGES),
    Command(("image", "prune"), (JSON,)),
    Command(("image", "import"), (JSON,), (_v("@rootfs", "@empty", "@missing", "/", "."), IMAGES)),
    Command(("network", "create"), (
        Opt(("--subnet",), _v("10.210.7.0/24", "10.0.0.0/8")), Opt(("--gateway",), _v("10.210.7.1",)),
        Opt(("--bridge",), _v("cm-web", "br0")), Opt(("--dns",), _v("192.0.2.53",), True),
        Opt(("--dns-search",), _v("cman.test",), True), Opt(("--icc",)), Opt(("--no-icc",)), JSON,
    ), (NET_NAMES,)),
    Command(("network", "ls"), (JSON, Opt(("-q", "--quiet")))),
    Command(("network", "inspect"), (JSON,), (NET_NAMES,), NET_NAMES),
    Command(("network", "rm"), (Opt(("-f", "--force")), JSON), (NET_NAMES,), NET_NAMES),
    Command(("engine", "status"), (JSON,)),
    Command(("engine", "features"), (JSON,)),
    Command(("engine", "configure", "docker"), (
        Opt(("--bridge",), _v("br0", "none")), Opt(("--bip",), _v("172.18.0.1/16",)),
        Opt(("--dns",), _v("192.0.2.53",), True), Opt(("--icc",)), Opt(("--no-icc",)),
        Opt(("--registry-mirror",), _v("http://127.0.0.1:5999/",), True),
        Opt(("--unset",), _v("bip", "dns", "icc"), True),
    )),
    Command(("stats",), (
        Opt(("-a", "--all")), Opt(("--no-stream",)), Opt(("--interval",), _v("1", "0.5")), JSON,
        Opt(("--cgroup",), _v("auto", "v1", "v2")), Opt(("--no-monitor",)), Opt(("--pidfile",), _v("mon.pid",)),
    ), (), NAMES),
    Command(("top",), (Opt(("-a", "--all")), Opt(("--interval",), _v("1",)), Opt(("--cgroup",), _v("auto",))), (), NAMES),
    Command(("monitor", "status"), (Opt(("--pidfile",), _v("mon.pid", "/", "")), JSON)),
    Command(("monitor", "stop"), (Opt(("--pidfile",), _v("mon.pid", "/", "")), Opt(("-t", "--timeout"), _v("0", "1")))),
    Command(("monitor", "run"), (Opt(("--listen",), _v("127.0.0.1:0", "[::1]:9464")),)),
)
GLOBAL = (Opt(("-B", "--backend"), _v("docker", "lxd", "lxc")), Opt(("-P", "--lxcpath"), _v("/var/lib/lxc", "/srv/lxc")))


def argv_text(s: str) -> str:
    """What a real argv element can hold: no NUL; surrogates only as undecodable bytes."""
    return "".join(c if c != "\0" and not ("\ud800" <= c <= "\udfff" and not "\udc80" <= c <= "\udcff") else "?"
                   for c in s)


def value_of(opt: Opt) -> st.SearchStrategy[str]:
    return values(st.sampled_from(opt.examples)).map(argv_text) if opt.examples else st.just("")


@st.composite
def argvs(draw: st.DrawFn) -> tuple[tuple[str, ...], list[str]]:
    """(the command's path, the whole argv)."""
    cmd = draw(st.sampled_from(COMMANDS))
    head: list[str] = []
    hostile_globals = cmd.path[0] not in ("run", "exec")  # run/exec: every failure below is their own
    for opt in GLOBAL:
        if draw(st.integers(0, 3)) == 0:
            head += [draw(st.sampled_from(opt.names)),
                     draw(value_of(opt) if hostile_globals else st.sampled_from(opt.examples))]
    if draw(st.integers(0, 30)) == 0:
        head.append(draw(st.sampled_from(("--debug", "--version", "--help", "-h", "--show-completion"))))
    parts: list[list[str]] = []
    for opt in draw(st.lists(st.sampled_from(cmd.opts), max_size=5)) if cmd.opts else []:
        name = draw(st.sampled_from(opt.names))
        parts.append([name, draw(value_of(opt))] if opt.examples else [name])
    positionals = [draw(values(st.sampled_from(ex)).map(argv_text)) for ex in cmd.args]
    if cmd.rest:
        positionals += draw(st.lists(values(st.sampled_from(cmd.rest)).map(argv_text), max_size=3))
    mode = draw(st.sampled_from(("options first", "mixed", "drop an argument", "extra", "unknown option", "raw")))
    if mode == "drop an argument" and positionals:
        positionals.pop(draw(st.integers(0, len(positionals) - 1)))
    elif mode == "extra":
        positionals.append(argv_text(draw(token())))
    elif mode == "unknown option":
        parts.insert(draw(st.integers(0, len(parts))), ["--" + argv_text(draw(st.text(max_size=8)))])
    elif mode == "raw":
        raw = draw(values(st.sampled_from(("-x", "--", "-"))))
        parts.insert(draw(st.integers(0, len(parts))), [argv_text(raw)])
    body = [a for p in parts for a in p]
    if mode == "mixed" and positionals:
        at = draw(st.integers(0, len(positionals)))
        body = positionals[:at] + body + positionals[at:]
    else:
        body += positionals
    return cmd.path, head + list(cmd.path) + body


# -- running one argv, isolated -------------------------------------------------------------------------


class Hang(BaseException):
    """The case ran longer than CASE_TIMEOUT (a BaseException: no ``except Exception`` eats it)."""


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Sandbox:
    root: Path

    def env(self) -> dict[str, str]:
        """The whole environment of a case: engines unreachable, every path cman writes in the sandbox."""
        r = self.root
        keep = {k: os.environ[k] for k in ("LANG", "LC_ALL", "TERM", "PYTHONPATH") if k in os.environ}
        return {
            **keep,
            "PATH": "/nonexistent-bin",
            "HOME": str(r / "home"),
            "DOCKER_HOST": "unix:///nonexistent/docker.sock",
            "DOCKER_CONFIG": str(r / "home" / ".docker"),
            "LXD_DIR": "/nonexistent/lxd",
            "CMAN_LXC_PATH": str(r / "lxc"),
            "CMAN_LXC_IMAGES": str(r / "lxc-images"),
            "CMAN_RUN_DIR": str(r / "run"),
            "CMAN_MONITOR_PIDFILE": str(r / "run" / "monitor.pid"),
            "CMAN_NETWORK_LOCK": str(r / "run" / "network.lock"),
            "CMAN_DOCKERD_PIDFILE": str(r / "run" / "dockerd.pid"),
            "XDG_RUNTIME_DIR": str(r / "run"),
            "XDG_STATE_HOME": str(r / "state"),
            "XDG_CONFIG_HOME": str(r / "config"),
            "XDG_CACHE_HOME": str(r / "cache"),
            "TMPDIR": str(r / "tmp"),
            **{k: "http://127.0.0.1:9" for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")},
            "NO_PROXY": "",
            "SHELL": "/bin/bash",
        }


def fill_in(path: tuple[str, ...], argv: list[str], box: Sandbox, bad_interval: str) -> list[str]:
    """Put the sandbox into argv: tarball placeholders, and what keeps the host untouched
    (options given last win: click keeps the last value of a single-value option)."""
    files = {"@rootfs": str(box.root / "rootfs.tar.gz"), "@empty": str(box.root / "empty.tar"),
             "@missing": str(box.root / "missing.tar"), "@binary": str(box.root / "binary.json")}
    out = [files.get(a, a) for a in argv if not a.startswith("--apply")]
    if path == ("engine", "configure", "docker"):
        out += ["--config", files["@binary"] if "@binary" in argv else str(box.root / "daemon.json")]
    if path == ("monitor", "run"):
        out += ["--pidfile", str(box.root / "run" / "fuzz.pid"), "--log", str(box.root / "monitor.log"),
                "--interval", bad_interval]
    return out


def _state() -> dict[str, Any]:
    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH, signal.SIGCHLD, signal.SIGPIPE)
    return {
        "mask": signal.pthread_sigmask(signal.SIG_BLOCK, []),
        "handlers": {s: signal.getsignal(s) for s in watched},
        "cwd": os.getcwd(),
    }


def _on_alarm(_signum: int, _frame: object) -> None:
    raise Hang()


def invoke(argv: list[str], box: Sandbox) -> Outcome:
    """``main(argv)`` as the console script runs it, with the sandbox's environment, an empty
    stdin, and stdout/stderr captured as Python sets them up (stdout strict UTF-8, stderr
    with backslash escapes); everything is put back afterwards."""
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_streams = (sys.stdin, sys.stdout, sys.stderr)
    out, err = io.BytesIO(), io.BytesIO()
    os.environ.clear()
    os.environ.update(box.env())
    os.chdir(box.root / "cwd")
    wrappers = (io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8"),
                io.TextIOWrapper(out, encoding="utf-8", errors="strict", write_through=True),
                io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True))
    sys.stdin, sys.stdout, sys.stderr = wrappers
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(CASE_TIMEOUT)
    try:
        try:
            code: Any = main(list(argv))
        except SystemExit as done:  # the console script would exit with it too
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        except Hang:
            raise AssertionError(f"cman {argv!r} still ran after {CASE_TIMEOUT} s with no engine to wait for") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        for wrapper in wrappers:
            with contextlib.suppress(ValueError):  # closed by the code under test
                wrapper.flush()
            with contextlib.suppress(ValueError):
                wrapper.detach()  # keeps the buffer open for reading
        os.environ.clear()
        os.environ.update(saved_env)
        os.chdir(saved_cwd)
    return Outcome(code, out.getvalue().decode("utf-8", "replace"), err.getvalue().decode("utf-8", "replace"))


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("cli-fuzz")
    for sub in ("home", "lxc", "lxc-images", "run", "state", "config", "cache", "tmp", "cwd"):
        (root / sub).mkdir()
    if ROOTFS.is_file():
        (root / "rootfs.tar.gz").write_bytes(ROOTFS.read_bytes())
    (root / "empty.tar").write_bytes(b"")
    (root / "binary.json").write_bytes(b"\x80\xff{")
    here = os.getcwd()
    try:
        yield Sandbox(root)
    finally:
        os.chdir(here)


def _refused_interval(text: str) -> bool:
    try:
        parse_interval(text)
    except Exception:
        return True
    return False


@example(case=(("run",), ["run", "--bogus", "busybox"]), bad_interval="0")
@example(case=(("exec",), ["exec"]), bad_interval="0")
@example(case=(("run",), ["run", "-m", "9" * 400, "busybox"]), bad_interval="0")
@example(case=(("ps",), ["ps"]), bad_interval="0")
@example(case=(("monitor", "status"), ["monitor", "status", "--pidfile", "/", "--json"]), bad_interval="0")
@example(case=(("monitor", "status"), ["monitor", "status", "--pidfile", "a" * 300 + "mon.pid"]), bad_interval="0")
@example(case=(("monitor", "run"), ["monitor", "run", "--listen", "127.0.0.1:\u00b2"]), bad_interval="0")
@example(case=(("engine", "configure", "docker"), ["engine", "configure", "docker", "--icc", "--config", "@binary"]),
         bad_interval="0")
@FUZZ
@given(case=argvs(), bad_interval=values(st.just("1")).filter(_refused_interval).map(argv_text))
@counted
def test_cli_fuzz(box: Sandbox, case: tuple[tuple[str, ...], list[str]], bad_interval: str) -> None:
    path, generated = case
    argv = fill_in(path, generated, box, bad_interval)
    before = _state()
    result = invoke(argv, box)
    after = _state()
    EXIT_CODES[result.code] += 1
    command = path[0]
    debug = "--debug" in argv
    shown = f"cman {argv!r} -> {result.code}\nstdout: {result.stdout[-500:]!r}\nstderr: {result.stderr[-1500:]!r}"
    assert isinstance(result.code, int), shown
    asked_help = any(a in ("--help", "-h", "--version", "--show-completion") for a in argv)
    allowed = RUN_CODES if command in ("run", "exec") and not asked_help else DOCUMENTED
    assert result.code in allowed, f"undocumented exit code: {shown}"
    assert "internal error" not in result.stderr, shown
    if not debug:
        assert "Traceback" not in result.stderr, shown
    answers_on_stdout = {("monitor", "status"): 3, ("engine", "status"): 5}  # LSB status; the status table
    if result.code != 0 and answers_on_stdout.get(path[:2]) != result.code:
        assert result.stderr.strip(), f"a failure that says nothing: {shown}"
    assert "cman: cman:" not in result.stderr, f"the prefix twice: {shown}"
    raw = [c for c in result.stderr if (ord(c) < 32 and c not in "\n\t") or ord(c) == 127]
    assert not raw, f"raw control characters from the input on stderr: {shown}"
    assert after == before, f"cman {argv!r} left the process changed: {before} -> {after}"
