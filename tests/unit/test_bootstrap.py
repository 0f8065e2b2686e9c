"""Pure parts of ``image bootstrap``: apt's sources, the mirror choice, what debootstrap builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from cman import bootstrap
from cman.errors import InvalidValue

DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: trixie

Enabled: no
Types: deb
URIs: http://off.example/debian
Suites: trixie
"""


def test_deb822() -> None:
    got = bootstrap.parse_deb822(DEB822)
    assert [(s.uris, s.suites) for s in got] == [
        (("http://mirror.example/debian",), ("bookworm", "bookworm-updates")),
        (("http://mirror.example/debian-security",), ("bookworm-security",)),
    ]


def test_one_line() -> None:
    text = ("# comment\ndeb-src http://x/debian bookworm main\n"
            "deb [arch=amd64 signed-by=/k.gpg] http://site/debian bookworm main # note\n")
    assert [(s.uris, s.suites) for s in bootstrap.parse_one_line(text)] == [(("http://site/debian",), ("bookworm",))]


def test_mirror_choice() -> None:
    sources = bootstrap.parse_deb822(DEB822)
    releases = ["bookworm", "trixie"]
    assert bootstrap.debian_mirror("bookworm", sources, releases) == "http://mirror.example/debian"
    assert bootstrap.debian_mirror("trixie", sources, releases) == "http://mirror.example/debian"  # any Debian suite
    security_only = bootstrap.parse_deb822(DEB822.split("\n\n")[1])
    assert bootstrap.debian_mirror("bookworm", security_only, releases) is None
    odd = bootstrap.parse_one_line("deb cdrom:[x]/ bookworm main\ndeb http://a b/debian bookworm main\n")
    assert bootstrap.debian_mirror("bookworm", odd, releases) is None


def test_read_sources_order(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb http://first/debian bookworm main\n")
    (tmp_path / "sources.list.d" / "b.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "a.list.disabled").write_text("deb http://no/debian bookworm main\n")
    uris = [s.uris[0] for s in bootstrap.read_sources(tmp_path)]
    assert uris == ["http://first/debian", "http://mirror.example/debian", "http://mirror.example/debian-security"]


def _scripts(tmp_path: Path) -> Path:
    d = tmp_path / "scripts"
    d.mkdir()
    (d / "sid").write_text(f"mirror_style release\nkeyring {bootstrap.DEBIAN_KEYRING}\n")
    (d / "gutsy").write_text("keyring /usr/share/keyrings/ubuntu-archive-keyring.gpg\n")
    for name, target in (("bookworm", "sid"), ("jammy", "gutsy"), ("beowulf", "sid")):
        (d / name).symlink_to(target)
    return d


def test_releases_and_targets(tmp_path: Path) -> None:
    d = _scripts(tmp_path)
    assert bootstrap.debian_releases(d) == ["bookworm", "sid"]
    target = bootstrap.parse_target("debian:bookworm", d)
    assert target.name == "debian:bookworm" and target.cache_name.startswith("debian-bookworm-")
    for bad in ("debian:jammy", "ubuntu:jammy", "debian:beowulf", "debian:../x", "debian:nope"):
        with pytest.raises(InvalidValue, match="can build debian:bookworm, debian:sid"):
            bootstrap.parse_target(bad, d)
