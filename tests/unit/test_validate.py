"""Input parsing: every kind of bad input has a clear UsageError that names the field."""

from __future__ import annotations

import re

import pytest

from cman.errors import ExitCode, InvalidName, InvalidValue, UsageError
from cman.validate import (
    check_config_value,
    check_name,
    parse_cpus,
    parse_env,
    parse_labels,
    parse_size,
    split_ref,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512m", 512 * 1024**2), ("1g", 1024**3), ("1.5G", int(1.5 * 1024**3)), ("100", 100), ("64MiB", 64 * 1024**2), ("2kb", 2048)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "m", "12parsecs", "-5m", "0", "1..2g", "5 gigs"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InvalidValue, match="--memory") as err:
        parse_size(text)
    assert err.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("text", ["lots", "0", "-1", "", "nan"])
def test_parse_cpus_rejects(text: str) -> None:
    with pytest.raises(InvalidValue, match="--cpus"):
        parse_cpus(text)


def test_parse_cpus() -> None:
    assert parse_cpus("0.5") == 0.5
    assert parse_cpus(2) == 2.0


def test_parse_env() -> None:
    assert parse_env(["A=1", "B=", "C=x=y"]) == {"A": "1", "B": "", "C": "x=y"}


@pytest.mark.parametrize("pair", ["NOEQUALS", "=value", "1BAD=x", "BAD KEY=x"])
def test_parse_env_rejects(pair: str) -> None:
    with pytest.raises(InvalidValue, match=r"KEY=VALUE|bad key"):
        parse_env([pair])


def test_parse_labels() -> None:
    assert parse_labels(["com.example/tier=web", "a="]) == {"com.example/tier": "web", "a": ""}
    with pytest.raises(InvalidValue, match="--label"):
        parse_labels(["=x"])
    with pytest.raises(InvalidValue, match="newline"):
        parse_labels(["a=b\nc"])


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "-x", "a\0b", ""])
def test_check_config_value_rejects(value: str) -> None:
    with pytest.raises(InvalidValue):
        check_config_value("lxc.uts.name", value)


def test_split_ref() -> None:
    backends = ["docker", "lxd", "lxc"]
    assert split_ref("docker:web", backends) == ("docker", "web")
    assert split_ref("web", backends) == (None, "web")
    # an image-like reference is not a backend prefix
    assert split_ref("127.0.0.1:5000/x", backends) == (None, "127.0.0.1:5000/x")
    with pytest.raises(InvalidName):
        split_ref("lxd:", backends)


def test_check_name() -> None:
    pattern = re.compile(r"[a-z]+")
    assert check_name("abc", pattern, 5, "rules") == "abc"
    for bad in ("", "abcdef", "ABC"):
        with pytest.raises(UsageError, match="rules"):
            check_name(bad, pattern, 5, "rules")


@pytest.mark.parametrize("pair", ["FOO\n=x", "FOO\r=x", "A\nB=x", "FOO\0=x", "FOO =x"])
def test_parse_env_keys_are_matched_whole(pair: str) -> None:
    """``re.match`` with ``$`` let ``FOO\\n=x`` through: ``$`` matches before a final newline."""
    with pytest.raises(InvalidValue, match="bad key"):
        parse_env([pair])


@pytest.mark.parametrize("pair", ["tier\n=x", "a\n=b", "tier\r=x"])
def test_parse_labels_keys_are_matched_whole(pair: str) -> None:
    with pytest.raises(InvalidValue, match="bad key"):
        parse_labels([pair])


@pytest.mark.parametrize("text", ["512m\n\n", "1g\x00"])
def test_parse_size_is_matched_whole(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_size(text + "x")


@pytest.mark.parametrize("key", ["cman.managed", "cman.isolate", "cman.run", "user.cman.label.x", "CMAN.Managed",
                                 "User.Cman.x"])
def test_cman_namespace_is_reserved(key: str) -> None:
    with pytest.raises(InvalidValue, match=r"cman\. and user\.cman\. namespaces are cman's own") as err:
        parse_labels([f"{key}=x"])
    assert err.value.exit_code == ExitCode.USAGE


def test_keys_near_the_namespace_are_the_users() -> None:
    assert parse_labels(["cmanx=1", "com.example.cman=2", "user.cmanager=3"]) == {
        "cmanx": "1", "com.example.cman": "2", "user.cmanager": "3"}


def test_check_user_labels_covers_library_specs() -> None:
    from cman.validate import check_user_labels

    check_user_labels({"team": "blue"})
    for bad in ({"cman.managed": "true"}, {"ok": "a\nb"}, {"bad\n": "x"}):
        with pytest.raises(InvalidValue):
            check_user_labels(bad)
