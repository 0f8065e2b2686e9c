"""Properties of the input validators of cman.validate and of each engine's name rules.

Each validator either returns a value that keeps its invariants or raises a UsageError
(exit 2); never another exception, since any other one reaches the user as "internal
error". The invariants are the engines' own rules (Docker's container names, LXD's
hostnames), so a validator that is looser than its engine shows up here, not as an
engine error after half the work is done.
"""

from __future__ import annotations

import math
import re

from hypothesis import example, given
from hypothesis import strategies as st

from cman.backends import backend_class
from cman.models import RESERVED_LABEL_PREFIXES, ContainerSpec
from cman.validate import check_config_value, parse_cpus, parse_env, parse_labels, parse_size, split_ref

from ._fuzz import FUZZ, Refused, counted, one_line, usage_or, values

INT64_MAX = 2**63 - 1
"""Docker's API takes sizes as int64, LXD as uint64, cgroups as int64."""

# -- sizes and CPUs ---------------------------------------------------------------------------------

UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
SUFFIXES = ("", "b", "k", "kb", "kib", "m", "mb", "mib", "g", "gb", "gib", "t", "tb", "tib")
"""Docker's spellings of binary units (512m, 512mb, 512MiB)."""

valid_size = st.builds(lambda n, suffix, upper: f"{n}{suffix.upper() if upper else suffix}",
                       st.integers(1, 10**6), st.sampled_from(SUFFIXES), st.booleans())


@example("9" * 400)
@example("10000000000000000000")
@example("99999999999t")
@FUZZ
@given(values(valid_size))
@counted
def test_parse_size(text: str) -> None:
    out = usage_or(lambda: parse_size(text))
    if isinstance(out, Refused):
        return
    assert type(out) is int
    assert 0 < out <= INT64_MAX, f"{text!r} -> {out}: no engine takes that many bytes"
    assert parse_size(str(out)) == out, "a byte count reads back as itself"


@FUZZ
@given(st.integers(1, 10**6), st.sampled_from(SUFFIXES), st.booleans())
@counted
def test_parse_size_units(n: int, suffix: str, upper: bool) -> None:
    assert parse_size(f"{n}{suffix.upper() if upper else suffix}") == n * UNITS[suffix[:1]]


@example("1e-12")
@example("1E-10")
@FUZZ
@given(values(st.decimals(min_value="0.01", max_value="64", places=2).map(str)))
@counted
def test_parse_cpus(text: str) -> None:
    out = usage_or(lambda: parse_cpus(text))
    if isinstance(out, Refused):
        return
    assert math.isfinite(out)
    # Docker's minimum (NanoCpus 1e7) and LXC's/LXD's (a 1 ms quota per 100 ms): below it
    # Docker gets NanoCpus 0, which means "no limit", the opposite of what was asked.
    assert 0.01 <= out <= 1024, f"--cpus {text!r} -> {out}"
    assert parse_cpus(repr(out)) == out


# -- K=V -----------------------------------------------------------------------------------------------

ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*")

env_key = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_.-]{0,20}\Z")
label_key = st.one_of(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.\-/]{0,20}\Z"),
                      st.sampled_from(RESERVED_LABEL_PREFIXES).map(lambda p: p + "managed"))


def pairs(keys: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    pair = st.one_of(
        st.tuples(values(keys), values(st.text(max_size=12))).map(lambda kv: f"{kv[0]}={kv[1]}"),
        values(keys),  # no '=' at all, or one inside a hostile key
    )
    return st.lists(pair, max_size=5)


def _check_kv(given_pairs: list[str], out: dict[str, str]) -> None:
    last: dict[str, str] = {}
    for pair in given_pairs:
        key, _, value = pair.partition("=")
        last[key] = value
    assert out == last, "each key gets the value of its last pair"
    for value in out.values():
        assert "\0" not in value


@example(["FOO\n=x"])
@FUZZ
@given(pairs(env_key))
@counted
def test_parse_env(given_pairs: list[str]) -> None:
    out = usage_or(lambda: parse_env(given_pairs))
    if isinstance(out, Refused):
        return
    for key in out:
        assert ENV_KEY.fullmatch(key), f"env key {key!r} accepted"
    _check_kv(given_pairs, out)
    assert parse_env([f"{k}={v}" for k, v in out.items()]) == out


@example(["cman.managed=x"])
@example(["user.cman.isolate=1"])
@example(["a=b\rc"])
@FUZZ
@given(pairs(label_key))
@counted
def test_parse_labels(given_pairs: list[str]) -> None:
    out = usage_or(lambda: parse_labels(given_pairs))
    if isinstance(out, Refused):
        return
    for key, value in out.items():
        assert LABEL_KEY.fullmatch(key), f"label key {key!r} accepted"
        assert not key.startswith(RESERVED_LABEL_PREFIXES), f"label {key!r} sets cman's own namespace"
        assert "\n" not in value and "\r" not in value, f"label {key}={value!r}: a line break in a label value"
    _check_kv(given_pairs, out)
    assert parse_labels([f"{k}={v}" for k, v in out.items()]) == out


# -- config values -----------------------------------------------------------------------------------


@FUZZ
@given(values(st.from_regex(r"\A[A-Za-z0-9/][A-Za-z0-9/_.:= -]{0,30}\Z")), st.booleans())
@counted
def test_check_config_value(value: str, allow_empty: bool) -> None:
    out = usage_or(lambda: check_config_value("lxc.test", value, allow_empty=allow_empty))
    if isinstance(out, Refused):
        return
    assert out == value
    assert not any(c in out for c in "\n\r\0"), f"{out!r} would end its config line"
    assert not out.startswith("-"), f"{out!r} reads as an option"
    assert out or allow_empty


# -- container names, per engine ------------------------------------------------------------------

DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
"""moby's daemon/names: restrictedNamePattern (no length limit; cman takes 128)."""
LXD_NAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
"""An RFC 1123 hostname label, as LXD requires of instance names."""
LXC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""cman's rule for raw LXC: a directory name under the lxcpath and an lxc.uts.name value."""


def _check_name(engine: str, name: str, rule: re.Pattern[str], max_len: int) -> None:
    out = usage_or(lambda: backend_class(engine).validate_name(name))
    valid = bool(rule.fullmatch(name)) and len(name) <= max_len
    if isinstance(out, Refused):
        assert not valid, f"{engine} refuses the valid name {name!r}: {out}"
        return
    assert valid, f"{engine} accepts {name!r}, which breaks the engine's name rules"
    assert one_line(name) and name.isascii() and "/" not in name and not name.startswith("-")
    assert name not in (".", "..")


@FUZZ
@given(values(st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9_.-]{1,40}\Z")))
@counted
def test_docker_container_names(name: str) -> None:
    _check_name("docker", name, DOCKER_NAME, 128)


@FUZZ
@given(values(st.from_regex(r"\A[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")))
@counted
def test_lxd_container_names(name: str) -> None:
    _check_name("lxd", name, LXD_NAME, 63)


@FUZZ
@given(values(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")))
@counted
def test_lxc_container_names(name: str) -> None:
    _check_name("lxc", name, LXC_NAME, 64)
    if LXC_NAME.fullmatch(name):
        check_config_value("lxc.uts.name", name)


@FUZZ
@given(values(st.sampled_from(("docker:web", "lxd:db", "lxc:x", "web", "host:5000/x", "lxd:"))))
@counted
def test_split_ref(ref: str) -> None:
    out = usage_or(lambda: split_ref(ref, ("docker", "lxd", "lxc")))
    if isinstance(out, Refused):
        assert ref in ("docker:", "lxd:", "lxc:")
        return
    prefix, name = out
    if prefix is None:
        assert name == ref
    else:
        assert f"{prefix}:{name}" == ref and name


# -- a whole container spec, per engine -----------------------------------------------------------

spec_strategy = st.builds(
    ContainerSpec,
    image=values(st.sampled_from(("busybox", "cmantest-bb", "127.0.0.1:5000/cman/busybox:latest"))),
    name=st.none() | values(st.from_regex(r"\A[a-z][a-z0-9-]{0,20}\Z")),
    command=st.lists(values(st.sampled_from(("sh", "-c", "echo hi", "true"))), max_size=3).map(tuple),
    env=st.dictionaries(values(env_key), values(st.text(max_size=10)), max_size=3),
    labels=st.dictionaries(values(label_key), values(st.text(max_size=10)), max_size=3),
    cpus=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    memory=st.none() | st.integers(-(2**70), 2**70),
    auto_remove=st.booleans(),
    privileged=st.booleans(),
)


def _check_spec(engine: str, spec: ContainerSpec) -> None:
    out = usage_or(lambda: backend_class(engine).validate_spec(spec))
    if isinstance(out, Refused):
        return
    if engine == "lxd":
        # LXD turns the environment into LXC config lines (Backend.validate_spec's own
        # example): a newline there would be a line of its own.
        for key, value in spec.env.items():
            assert not any(c in key + value for c in "\n\r\0"), f"lxd accepts the variable {key!r}={value!r}"


@FUZZ
@given(spec_strategy)
@counted
def test_validate_spec_docker(spec: ContainerSpec) -> None:
    _check_spec("docker", spec)


@example(ContainerSpec(image="busybox", env={"A": "x\nlxc.hook.pre-start = /bin/evil"}))
@FUZZ
@given(spec_strategy)
@counted
def test_validate_spec_lxd(spec: ContainerSpec) -> None:
    _check_spec("lxd", spec)


@FUZZ
@given(spec_strategy)
@counted
def test_validate_spec_lxc(spec: ContainerSpec) -> None:
    _check_spec("lxc", spec)
