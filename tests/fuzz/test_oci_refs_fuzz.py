"""Malformed image references through the real CLI (in-process ``cman.cli.main``): exit 2 on
every engine (``run``: 125, its own usage errors), before any engine call. The CLI fuzzer's
sandbox makes every engine unreachable (no Docker socket, no LXD, a PATH with no tools at
all, so even the LXC backend cannot be made): an engine call, or making the backend, would
be exit 5, so exit 2 shows the reference was refused first (``backends.check_image``), with
--backend and without."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cman.errors import InvalidName
from cman.oci.refs import parse

from ._fuzz import FUZZ, counted
from .test_cli_fuzz import Sandbox, invoke


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("oci-refs")
    for sub in ("home", "lxc", "lxc-images", "run", "state", "config", "cache", "tmp", "cwd"):
        (root / sub).mkdir()
    yield Sandbox(root)

HAND_PICKED = [
    "127.0.0.1:5000/UPPER/repo", "127.0.0.1:5000/Repo", "127.0.0.1:5000/cman/busybox:", "127.0.0.1:5000/x:-t",
    "127.0.0.1:5000/x@sha256:1234", "127.0.0.1:5000/x@sha256:" + "g" * 64, "127.0.0.1:5000/x@md5:" + "a" * 64,
    "127.0.0.1:5000/x@sha256:" + "A" * 64, "127.0.0.1:99999/x", "127.0.0.1:0/x", "127.0.0.1:65536/x",
    "localhost:123456/x", "127.0.0.1:5000//x", "127.0.0.1:5000/x/", "127.0.0.1:5000/-x", "127.0.0.1:5000/x..y",
    "127.0.0.1:5000/x__-y", "127.0.0.1:5000/x:" + "t" * 129, "127.0.0.1:5000/" + "a" * 250,
    "reg.example/a b", "reg.example/a\nb", "-reg.example/x", "reg-.example/x", "reg..example/x",
    "reg.example:port/x", "reg.example/x:tag@", "reg.example/x@", "reg.example/x::t", "localhost/X",
    "reg.example/x:t/y", "reg.example/ä", "reg.example/x:tä", "reg.example/.x", "reg.example/x.", "reg.example/_x",
]


def _bad(ref: str) -> bool:
    try:
        parse(ref)
    except InvalidName:
        return True
    return False


_component = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)
_malformed = st.one_of(
    st.builds(lambda c, u: f"127.0.0.1:5000/{c}{u}", _component, st.from_regex(r"[A-Z]{1,3}", fullmatch=True)),
    st.builds(lambda c, p: f"127.0.0.1:{p}/{c}", _component, st.integers(65536, 10**7)),
    st.builds(lambda c: f"127.0.0.1:5000/{c}:", _component),
    st.builds(lambda c, d: f"127.0.0.1:5000/{c}@sha256:{d}", _component, st.text("0123456789abcdefxyz", max_size=70)),
    st.builds(lambda c, t: f"reg.example/{c}:{t}", _component, st.from_regex(r"[-.][A-Za-z0-9]{0,5}", fullmatch=True)),
    st.builds(lambda c, s: f"reg.example/{c}{s}", _component, st.sampled_from(["/", "//x", " x", "\tx", "$x", "!", "#"])),
).filter(_bad)


@pytest.mark.parametrize("ref", HAND_PICKED)
def test_hand_picked_references_are_exit_2(box: Sandbox, ref: str) -> None:
    assert _bad(ref), ref
    for backend in ("docker", "lxd", "lxc", None):
        got = invoke([*(["--backend", backend] if backend else []), "pull", "--", ref], box)
        assert got.code == 2, (backend, ref, got)
        assert "Traceback" not in got.stderr and "cman: " in got.stderr, got.stderr


@FUZZ
@given(ref=_malformed, backend=st.sampled_from(["docker", "lxd", "lxc", None]),
       verb=st.sampled_from(["pull", "run", "create"]))
@example(ref="127.0.0.1:5000/Cman", backend="lxc", verb="run")
@example(ref="127.0.0.1:5000/Cman", backend=None, verb="create")
@counted
def test_malformed_references_are_exit_2(box: Sandbox, ref: str, backend: str | None, verb: str) -> None:
    argv = [*(["--backend", backend] if backend else []), verb, "--", ref] + (["true"] if verb != "pull" else [])
    got = invoke(argv, box)
    assert got.code == (125 if verb == "run" else 2), (argv, got)  # run reports its own usage errors as 125
    assert "Traceback" not in got.stderr
