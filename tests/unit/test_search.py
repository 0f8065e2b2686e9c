"""Pure parts of ``cman search`` and of pre-engine reference checks: challenges, Link headers,
simplestreams files, the source list, credentials lookup, term and limit rules."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from cman import backends, config, search
from cman._sys.urlget import Answer
from cman.backends.base import ImageServer
from cman.errors import UsageError
from cman.oci.registry import Client, RegistryError, next_link, parse_challenge


def test_challenges() -> None:
    c = parse_challenge('Bearer realm="https://auth.example/token",service="reg",scope="registry:catalog:*"')
    assert c is not None and c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "reg", "scope": "registry:catalog:*"}
    basic = parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("") is None


def test_next_link() -> None:
    base = "http://127.0.0.1:5000/v2/_catalog?n=2"
    assert next_link('</v2/_catalog?last=b&n=2>; rel="next"', base) == "http://127.0.0.1:5000/v2/_catalog?last=b&n=2"
    assert next_link(None, base) is None
    assert next_link('</x>; rel="prev"', base) is None


def _fake(answers: dict[str, Answer], seen: list[tuple[str, dict[str, str]]]) -> Any:
    def fetch(url: str, *, headers: dict[str, str], timeout: float) -> Answer:
        seen.append((url, dict(headers)))
        key = url if url in answers else url.partition("?")[0]
        return answers[key]
    return fetch


def test_catalog_follows_pages_and_bearer_auth() -> None:
    creds = base64.b64encode(b"user:secret").decode()
    challenge = {"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:1/token",service="r",scope="registry:catalog:*"'}
    tokens = iter([Answer(401, challenge, b""), Answer(200, {"Link": '</v2/_catalog?last=a&n=1000>; rel="next"'},
                                                         b'{"repositories": ["a"]}')])
    seen: list[tuple[str, dict[str, str]]] = []

    def fetch(url: str, *, headers: dict[str, str], timeout: float) -> Answer:
        seen.append((url, dict(headers)))
        if url.startswith("http://127.0.0.1:1/token"):
            return Answer(200, {}, b'{"token": "T"}')
        if "last=a" in url:
            return Answer(200, {}, b'{"repositories": ["b"]}')
        return next(tokens)

    client = Client("http://reg:5000", creds, fetch=fetch)
    assert client.catalog() == ["a", "b"]
    token_call = next(h for u, h in seen if "/token" in u)
    assert token_call["Authorization"] == f"Basic {creds}"
    assert seen[-1][1]["Authorization"] == "Bearer T"


def test_registry_errors_say_why() -> None:
    seen: list[tuple[str, dict[str, str]]] = []
    client = Client("http://reg", None, fetch=_fake({"http://reg/v2/_catalog": Answer(404, {}, b"")}, seen))
    with pytest.raises(RegistryError, match="does not list its repositories"):
        client.catalog()
    client = Client("http://reg", None, fetch=_fake({"http://reg/v2/_catalog": Answer(200, {}, b"<html>")}, seen))
    with pytest.raises(RegistryError, match="not a JSON answer"):
        client.catalog()
    client = Client("http://reg", None, fetch=_fake({"http://reg/v2/_catalog": Answer(
        401, {"WWW-Authenticate": 'Basic realm="x"'}, b"")}, seen))
    with pytest.raises(RegistryError, match=r"not authorised.*no credentials"):
        client.catalog()


SOURCE = search.Source("lxd remote m (https://x)", "simplestreams", "https://x", "lxd:m", None, "m")


def test_simplestreams_files() -> None:
    index = {"index": {"images": {"datatype": "image-downloads", "path": "streams/v1/images.json"},
                       "other": {"datatype": "content-download", "path": "x.json"}}}
    assert search.product_paths(index) == ["streams/v1/images.json"]
    products = {"products": {"busybox:1:amd64:default": {"aliases": "busybox/1, busybox"},
                             "debian:12:amd64:default": {"aliases": "debian/12"}}}
    hits = search.product_hits(SOURCE, products, "BUSY", 10)
    assert [(h.name, h.tags) for h in hits] == [("m:busybox", ("busybox", "busybox/1"))]
    assert search.product_hits(SOURCE, products, "debian", 10)[0].repository == "debian:12:amd64:default"
    assert len(search.product_hits(SOURCE, products, ":", 1)) == 1
    with pytest.raises(search.SourceError):
        search.product_paths({"x": 1})
    with pytest.raises(search.SourceError):
        search.product_hits(SOURCE, [], "x", 1)


def test_sources_dedupe_and_order() -> None:
    conf = config.Config(
        registry_mirrors=(config.parse_mirror("http://127.0.0.1:5000", "t"),),
        insecure_registries=("127.0.0.1:5000", "10.0.0.5:5000"),
        search_registries=(config.parse_mirror("https://reg.example", "t"),),
    )
    got = search.sources(conf, [ImageServer("m", "https://127.0.0.1:8443")])
    assert [(s.kind, s.url) for s in got] == [
        ("registry", "http://127.0.0.1:5000"), ("registry", "https://reg.example"),
        ("registry", "http://10.0.0.5:5000"), ("simplestreams", "https://127.0.0.1:8443")]
    assert got[-1].short == "lxd:m"


@pytest.mark.parametrize("term", ["", " ", "a\nb", "\x1b[31m", "x" * 256])
def test_bad_terms(term: str) -> None:
    with pytest.raises(UsageError):
        search.check_term(term)


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_bad_limits(limit: int) -> None:
    with pytest.raises(UsageError):
        search.check_limit(limit)


def test_search_registries_in_config(tmp_path: Path) -> None:
    assert config.parse({"search_registries": ["http://127.0.0.1:5000"]}, "f")["search_registries"][0].host \
        == "127.0.0.1:5000"
    with pytest.raises(UsageError, match="search registry"):
        config.parse({"search_registries": ["127.0.0.1:5000"]}, "f")


def test_credentials_from_the_auth_file(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {"reg.example:5000": {"auth": "dXNlcjpwdw=="},
                                          "https://index.docker.io/v1/": {"auth": "aHViOnB3"}}}))
    env = {"REGISTRY_AUTH_FILE": str(auth), "HOME": str(tmp_path)}
    assert config.credentials("reg.example:5000", env) == "dXNlcjpwdw=="
    assert config.credentials("docker.io", env) == "aHViOnB3"
    assert config.credentials("other", env) is None
    auth.write_text("not json")
    assert config.credentials("reg.example:5000", env) is None


@pytest.mark.parametrize(("ref", "backend"), [
    ("images:debian/12", "lxd"), ("https://127.0.0.1:8443:busybox", "lxd"), ("my-alias", "lxd"),
    ("template:busybox", "lxc"), ("download:debian/bookworm", "lxc"), ("debian/bookworm", "lxc"),
    ("127.0.0.1:5000/cman/busybox:latest", "docker"), ("busybox", None), ("images:debian/12", None),
])
def test_engine_forms_pass_before_any_engine(ref: str, backend: str | None) -> None:
    backends.check_image(ref, backend)


@pytest.mark.parametrize(("ref", "backend"), [
    ("images:debian/12", "docker"), ("127.0.0.1:5000/Cman", "lxd"), ("127.0.0.1:5000/Cman", "lxc"),
    ("127.0.0.1:5000/Cman", None), ("a b", None), ("-x", None), ("http://x:busybox", "lxd"),
    ("127.0.0.1:5000/x@sha256:1234", None), ("a\nb", "lxc"),
])
def test_references_no_engine_takes(ref: str, backend: str | None) -> None:
    with pytest.raises(UsageError):
        backends.check_image(ref, backend)
