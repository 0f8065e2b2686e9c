"""Several engines on one host: one listing, and names that exist on two backends."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest

from cman.errors import CmanError

from ..conftest import PREFIX, Engine, _make_engine, assert_clean_error, cli, selected_engines, unavailable

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def two() -> Iterator[list[Engine]]:
    names = selected_engines()
    if len(names) < 2:
        unavailable("needs two engines in CMAN_TEST_ENGINES")
    engines = [_make_engine(n) for n in names[:3]]
    yield engines
    for e in engines:
        e.cleanup()
        with contextlib.suppress(CmanError):
            e.backend.image_remove(e.image, force=True)


def test_ps_lists_every_backend_and_ambiguous_names_are_refused(two: list[Engine]) -> None:
    shared = f"{PREFIX}-shared"
    for e in two:
        e.made.append(shared)
        proc = e.cli("run", "-d", "--name", shared, e.image, "sleep", "300")
        assert proc.returncode == 0, proc.stderr
    listed = json.loads(cli("ps", "-a", "--json").stdout)
    backends_with_name = sorted(c["backend"] for c in listed if c["name"] == shared)
    assert backends_with_name == sorted(e.name for e in two)
    table = cli("ps", "-a")
    assert "BACKEND" in table.stdout.splitlines()[0]

    refused = cli("inspect", shared)
    assert_clean_error(refused, 2, *(f"{e.name}:{shared}" for e in two))

    first, second = two[0], two[1]
    assert cli("stop", "-t", "1", f"{first.name}:{shared}").returncode == 0
    states = {c["backend"]: c["state"] for c in json.loads(cli("ps", "-a", "--json").stdout) if c["name"] == shared}
    assert states[first.name] == "stopped"
    assert states[second.name] == "running"
    info = json.loads(cli("inspect", f"{second.name}:{shared}", "--json").stdout)[0]
    assert info["backend"] == second.name


def test_unique_name_needs_no_prefix(two: list[Engine]) -> None:
    only = two[-1]
    name = only.name_for("solo")
    assert only.cli("run", "-d", "--name", name, only.image, "sleep", "300").returncode == 0
    proc = cli("inspect", name, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["backend"] == only.name
