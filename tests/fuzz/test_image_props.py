"""Properties of image references on each engine: Docker's references (the grammar of
distribution/reference, and what goes into an Engine API path), LXD's aliases and remote
references, raw LXC's image names in cman's store.

A reference goes into a URL path (Docker, LXD), a JSON record or an LXC config line (LXC),
so an accepted reference must be one segment-safe, one-line value, whatever its spelling.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from hypothesis import example, given
from hypothesis import strategies as st

from cman.backends.docker import images as docker_images
from cman.backends.docker import refs as docker_refs
from cman.backends.lxc import store as lxc_store
from cman.backends.lxd import imagebuild
from cman.validate import check_config_value

from ._fuzz import FUZZ, Refused, counted, one_line, usage_or, values

# distribution/reference (reference.go), written out independently of cman's own pattern.
_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEP}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
REFERENCE = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?")

docker_ref = st.builds(
    lambda host, path, tag, digest: f"{host}{path}{tag}{digest}",
    st.sampled_from(("", "127.0.0.1:5000/", "localhost/", "registry.example.test/", "a-b.c:1/")),
    st.lists(st.from_regex(r"\A[a-z0-9]+(?:[._-][a-z0-9]+)?\Z"), min_size=1, max_size=3).map("/".join),
    st.sampled_from(("", ":latest", ":1.36", ":V_1-x")),
    st.sampled_from(("", "@sha256:" + "a" * 64)),
)


def _segments_safe(path: str) -> bool:
    """What Go's ServeMux would not clean away or redirect: no empty, '.' or '..' segment,
    nothing that ends the path ('?', '#')."""
    return all(seg not in ("", ".", "..") for seg in path.split("/")) and not set(path) & set("?# \n\r\0")


@example("../../etc/passwd")
@example("a..b/x")
@example("Evil.host\n/x")
@FUZZ
@given(values(docker_ref))
@counted
def test_docker_image_references(ref: str) -> None:
    out = usage_or(lambda: docker_images.DockerImages.validate_image_name(ref))
    if isinstance(out, Refused):
        return
    assert REFERENCE.fullmatch(ref) and len(ref) <= 255, f"docker accepts the reference {ref!r}"
    assert one_line(ref) and not ref.startswith("-")
    assert _segments_safe(docker_refs.image(ref)), f"{ref!r} as an API path: {docker_refs.image(ref)!r}"
    repo, tag = docker_images.repo_and_tag(ref)
    if "@" in ref:
        assert f"{repo}@{tag}" == ref
    elif ref.endswith(f":{tag}"):
        assert f"{repo}:{tag}" == ref
    else:
        assert (repo, tag) == (ref, "latest")


@FUZZ
@given(values(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,40}\Z")))
@counted
def test_docker_container_and_network_references(ref: str) -> None:
    for to_path in (docker_refs.container, docker_refs.network):
        out = usage_or(lambda f=to_path: f(ref))  # type: ignore[misc]
        if isinstance(out, Refused):
            continue
        assert isinstance(out, str) and "/" not in out and _segments_safe(out), f"{ref!r} -> {out!r}"
        assert one_line(ref) and not ref.startswith("-")


# -- LXD ---------------------------------------------------------------------------------------------

lxd_alias = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9/._-]{0,30}\Z")


@example("..")
@example("\x80")
@FUZZ
@given(values(lxd_alias))
@counted
def test_lxd_aliases(name: str) -> None:
    out = usage_or(lambda: imagebuild.check_alias(name))
    if isinstance(out, Refused):
        return
    assert out == name and 0 < len(name) <= 255
    assert one_line(name) and not any(c.isspace() for c in name) and not name.startswith("-"), \
        f"LXD alias {name!r} accepted"
    # cman puts an alias into /1.0/images/aliases/<quote(alias, safe="")>: '.' and '..' stay
    # themselves there, and LXD's router would clean them into another endpoint.
    assert quote(name, safe="") not in (".", ".."), f"the alias {name!r} is a dot segment in a URL"


lxd_ref = st.one_of(
    lxd_alias,
    st.builds(lambda r, a: f"{r}:{a}", st.sampled_from(("images", "ubuntu", "ubuntu-daily", "other")), lxd_alias),
    st.builds(lambda h, a: f"https://{h}:{a}", st.sampled_from(("127.0.0.1:8443", "mirror.test", "h/streams")), lxd_alias),
    st.sampled_from(("http://x:y", "lxd://x:y", "simplestreams://x:y", "https://:x", "https://h:1")),
)


@example("https://\x1b::")
@FUZZ
@given(values(lxd_ref))
@counted
def test_lxd_remote_references(ref: str) -> None:
    out = usage_or(lambda: imagebuild.parse_remote(ref))
    if isinstance(out, Refused) or out is None:
        return
    assert out.server.startswith("https://") and one_line(out.server + out.alias), f"{ref!r} -> {out}"
    assert not any(c.isspace() for c in out.server + out.alias), f"{ref!r} -> {out}"
    assert imagebuild.check_alias(out.alias) == out.alias
    again = imagebuild.parse_remote(out.canonical)
    assert again is not None and (again.server, again.alias) == (out.server, out.alias), "canonical reads back"


# -- raw LXC -------------------------------------------------------------------------------------------

LXC_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}")


@FUZZ
@given(values(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:/-]{0,40}\Z")))
@counted
def test_lxc_image_names(name: str) -> None:
    out = usage_or(lambda: lxc_store.validate_alias(name))
    if isinstance(out, Refused):
        assert not LXC_ALIAS.fullmatch(name), f"the valid LXC image name {name!r} is refused"
        return
    assert LXC_ALIAS.fullmatch(out) and out == name
    assert check_config_value("image name", out) == out
