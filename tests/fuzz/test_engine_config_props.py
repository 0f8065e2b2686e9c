"""Properties of what cman writes into engine configuration: Docker's daemon.json
(cman.dockerd.settings) and a raw LXC container's config file (cman.backends.lxc.config).

A config file is only as safe as its reader is faithful: every accepted value is read back
the way the engine reads it (LXC: one ``key = value`` per line, blanks around the value
trimmed; dockerd: JSON) and must come back unchanged, and every line a setting makes is
exactly one line.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hypothesis import example, given
from hypothesis import strategies as st

from cman.backends.lxc import config as lxc_config
from cman.backends.lxc import tools as lxc_tools
from cman.dockerd import settings as ds

from ._fuzz import FUZZ, Refused, counted, one_line, usage_or, values

octet = st.integers(0, 255)
ipv4 = st.tuples(octet, octet, octet, octet).map(lambda t: ".".join(map(str, t)))
bip = st.builds(lambda a, p: f"{a}/{p}", ipv4, st.integers(0, 32))
mirror = st.builds(lambda scheme, host, port, slash: f"{scheme}://{host}{port}{slash}",
                   st.sampled_from(("http", "https", "ftp", "")),
                   st.sampled_from(("127.0.0.1", "mirror.test", "[::1]", "localhost", "")),
                   st.sampled_from(("", ":5000", ":0", ":99999", ":x")), st.sampled_from(("", "/", "/v2/")))
ifname = st.from_regex(r"\A[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}\Z")

settings_fields = st.fixed_dictionaries({
    "bridge": st.none() | values(st.one_of(ifname, st.just("none"))),
    "bip": st.none() | values(bip),
    "dns": st.none() | st.lists(values(st.one_of(ipv4, st.just("fe80::1%eth0"))), max_size=4).map(tuple),
    "icc": st.none() | st.booleans(),
    "registry_mirrors": st.none() | st.lists(values(mirror), max_size=3).map(tuple),
    "unset": st.lists(values(st.sampled_from(ds.KEYS)), max_size=2).map(tuple),
})

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
other_keys = st.dictionaries(st.text(max_size=10).filter(lambda k: k not in ds.KEYS),
                             st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3), max_leaves=5),
                             max_size=4)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


@example(fields={"registry_mirrors": ("http://a\nb/",), "bridge": None, "bip": None, "dns": None, "icc": None,
                 "unset": ()}, current={})
@example(fields={"bridge": "\udcff", "bip": None, "dns": None, "icc": None, "registry_mirrors": None, "unset": ()},
         current={})
@FUZZ
@given(settings_fields, other_keys)
@counted
def test_daemon_settings(fields: dict[str, Any], current: dict[str, Any]) -> None:
    out = usage_or(lambda: ds.DaemonSettings(**fields))
    if isinstance(out, Refused):
        return
    for key, value in out.values().items():
        for text in _strings(value):
            assert one_line(text) and not any(c.isspace() for c in text), f"daemon.json {key}: {text!r}"
    if out.bip is not None:
        assert ds.check_bip(out.bip) == out.bip, "bip is canonical"
    for m in out.registry_mirrors or ():
        assert ds.check_mirror(m) == m, "a mirror is canonical"
        assert urlsplit(m).geturl() == m, f"the mirror {m!r} is not the URL dockerd will parse"
    merged = usage_or(lambda: ds.merge(current, out))
    if isinstance(merged, Refused):
        return
    text = ds.render(merged)
    assert json.loads(text) == merged, "daemon.json reads back"
    assert [k for k in merged if k in current and k not in ds.KEYS] == [k for k in current if k not in ds.KEYS], \
        "keys cman does not manage are kept, in their order"
    for key in current:
        if key not in ds.KEYS:
            assert merged[key] == current[key]


@example(b"\x80")
@FUZZ
@given(st.one_of(st.binary(max_size=40), values(st.sampled_from(('{"icc": false}', "{}", "[]", "", '{"a": 1}')))
                 .map(lambda s: s.encode("utf-8", "surrogatepass"))))
@counted
def test_read_daemon_json(data: bytes) -> None:
    """Whatever the file holds (binary, not JSON, not an object), reading it is a value or
    one clear error, never a crash."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "daemon.json"
        path.write_bytes(data)
        out = usage_or(lambda: ds.read_config(path))
    if isinstance(out, Refused):
        return
    _text, config = out
    assert isinstance(config, dict)


# -- raw LXC config ----------------------------------------------------------------------------------------

lxc_key = st.from_regex(r"\Alxc(?:\.[a-z0-9_]{1,10}){1,3}\Z")
lxc_value = st.from_regex(r"\A[A-Za-z0-9/:][A-Za-z0-9/:_.,= -]{0,30}\Z")
COMMENTS = ("", "limits", "from the image", "Written by cman")


def read_like_lxc(text: str) -> list[tuple[str, str]]:
    """LXC's parser (parse.c, confile.c, string_utils.c): lines split on '\\n'; blank and '#'
    lines skipped; ``key = value`` split at the first '='; lxc_char_left_gc trims spaces and
    tabs on the left, lxc_char_right_gc spaces, tabs, newlines and NULs on the right."""
    out = []
    for line in text.split("\n"):
        body = line.lstrip(" \t")
        if not body or body.startswith("#"):
            continue
        key, sep, value = body.partition("=")
        assert sep, f"a line without '=': {line!r}"
        out.append((key.strip(" \t"), value.lstrip(" \t").rstrip(" \t\n\0")))
    return out


@example([("lxc.uts.name", " -x")])
@example([("lxc.uts.name", "a\x1c b")])
@example([("lxc.uts.name", "\udcff")])
@FUZZ
@given(st.lists(st.one_of(st.tuples(values(lxc_key), values(lxc_value)), st.sampled_from(COMMENTS)), max_size=6))
@counted
def test_lxc_render_config(entries: list[tuple[str, str] | str]) -> None:
    out = usage_or(lambda: lxc_config.render_config(entries))
    if isinstance(out, Refused):
        return
    settings = [e for e in entries if isinstance(e, tuple)]
    assert out.count("\n") == max(1, len(entries)), "one line per entry"
    assert read_like_lxc(out) == settings, "LXC reads back exactly the settings given"
    payload = out.encode()  # the config is written as UTF-8 (files.atomic_write)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config"
        path.write_bytes(payload)
        keys = tuple({k for k, _ in settings})
        assert lxc_tools.config_values(path, keys) == settings, "cman's own reader agrees with LXC's"
    for key, value in settings:
        assert not value.strip(" \t").startswith("-"), f"{key} = {value!r} reads as an option once trimmed"


@FUZZ
@given(values(st.sampled_from(("/var/lib/lxc", "/srv/lxc", "/tmp/x y"))))
@counted
def test_lxc_paths_from_the_environment(value: str) -> None:
    """$CMAN_LXC_PATH and $CMAN_LXC_IMAGES become config values and paths."""
    saved = {k: os.environ.get(k) for k in (lxc_tools.ENV_LXC_PATH, lxc_tools.ENV_IMAGES)}
    try:
        for var, read in ((lxc_tools.ENV_LXC_PATH, lxc_tools.lxc_path_from_env),
                          (lxc_tools.ENV_IMAGES, lxc_tools.image_store_from_env)):
            try:
                os.environ[var] = value
            except ValueError:  # a NUL: no environment can hold it
                continue
            out = usage_or(read)
            if isinstance(out, Refused):
                continue
            text = str(out)
            assert os.path.isabs(text) and not any(c in text for c in "\n\r\0"), (var, value, text)
            # every container's config holds it, and is written as UTF-8
            lxc_config.render_config([("lxc.rootfs.path", f"dir:{text}/x/rootfs")]).encode()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
