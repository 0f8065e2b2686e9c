"""Properties of the smaller parsers: options of stats and the monitor, and what cman reads
back from engines and from inside containers.

Options are user input: a value or a UsageError. What comes from an engine or from a
container's files (``job.rc``, an image's ``lxc.signal.halt``, ``lxc-ls`` output, engine
timestamps) is not under cman's control either: a container can write anything into its
own files, so those parsers must return a sane value or "unknown", and never raise.
"""

from __future__ import annotations

import math
import signal
from datetime import datetime

from hypothesis import example, given
from hypothesis import strategies as st

from cman import images, jobs
from cman._sys.times import parse_time
from cman.backends.lxc import tools as lxc_tools
from cman.monitor.config import parse_listen
from cman.validate import parse_interval

from ._fuzz import FUZZ, Refused, counted, usage_or, values


@FUZZ
@given(values(st.sampled_from(("1", "0.5", "2.25", "10"))))
@counted
def test_parse_interval(text: str) -> None:
    out = usage_or(lambda: parse_interval(text))
    if isinstance(out, Refused):
        return
    assert math.isfinite(out) and out > 0


@example("127.0.0.1:\u00b2")
@FUZZ
@given(values(st.sampled_from(("127.0.0.1:9464", "[::1]:9464", "localhost:1", ":9464", "9464", "0.0.0.0:80"))))
@counted
def test_parse_listen(text: str) -> None:
    out = usage_or(lambda: parse_listen(text))
    if isinstance(out, Refused):
        return
    host, port = out
    assert 0 < port < 65536
    import ipaddress

    ipaddress.ip_address(host)


# -- what containers and engines write -------------------------------------------------------------------

rc_bytes = st.one_of(
    st.binary(max_size=12),
    values(st.integers(-300, 300).map(str)).map(lambda s: s.encode("utf-8", "surrogatepass")),
)


@example(b"-1")
@example(b"300")
@FUZZ
@given(st.none() | rc_bytes)
@counted
def test_parse_job_rc(data: bytes | None) -> None:
    """``job.rc`` is written inside the container: an exit code (0-255) or unknown."""
    out = jobs.parse_rc(data)
    assert out is None or (type(out) is int and 0 <= out <= 255), f"{data!r} -> {out}"


@example("0")
@example("\u00b2")
@example("SIGRTMIN+99")
@FUZZ
@given(st.none() | values(st.sampled_from(("SIGPWR", "PWR", "SIGRTMIN+3", "30", "sigterm", "9"))))
@counted
def test_parse_halt_signal(value: str | None) -> None:
    """An image's ``lxc.signal.halt``: a signal the kernel knows, else the default."""
    out = jobs.parse_signal(value)
    assert type(out) is int and 1 <= out <= signal.SIGRTMAX, f"{value!r} -> {out}"


@example(253402300800.0)
@FUZZ
@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                 values(st.sampled_from(("2024-05-01T10:00:00.123456789Z", "0001-01-01T00:00:00Z",
                                         "2024-05-01 10:00:00+02:00", "1714557600")))))
@counted
def test_parse_engine_time(value: object) -> None:
    out = parse_time(value)
    assert out is None or (isinstance(out, datetime) and out.tzinfo is not None)


lxc_lines = st.lists(values(st.sampled_from(("State:          RUNNING", "PID:            1234", "web RUNNING 42",
                                             "db STOPPED -", "NAME STATE PID"))), max_size=5).map("\n".join)


@FUZZ
@given(lxc_lines)
@counted
def test_parse_lxc_tool_output(text: str) -> None:
    """``lxc-info`` output (container names made outside cman included)."""
    _state, pid = lxc_tools.parse_info(text)
    assert pid is None or (type(pid) is int and pid > 0)


@FUZZ
@given(values(st.sampled_from(('{"web": "images:debian/12"}', "{}", "[]", '{"a": 1}', ""))),
       values(st.sampled_from(("debian:12", "busybox", "web", "images:x"))))
@counted
def test_image_short_name_maps(env_value: str, ref: str) -> None:
    """$CMAN_LXD_IMAGE_MAP / $CMAN_LXC_IMAGE_MAP: a map of strings, or one clear error."""
    import os

    var = images.MAP_ENV["lxd"]
    saved = os.environ.get(var)
    try:
        try:
            os.environ[var] = env_value
        except ValueError:  # a NUL: no environment can hold it
            return
        out = usage_or(lambda: images.expand(ref, "lxd"))
        if not isinstance(out, Refused):
            assert isinstance(out, str)
    finally:
        if saved is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = saved
