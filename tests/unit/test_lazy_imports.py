"""Start-up cost: what cheap questions import (issue 10's start-up-bound targets).

Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

BACKEND_CODE = [f"cman.backends.{e}.{part}" for e in ("docker", "lxd", "lxc") for part in ("backend", "containers")]


def loaded_after(code: str, watched: list[str]) -> list[str]:
    """Which of ``watched`` are in sys.modules after ``code`` ran in a new interpreter."""
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {watched!r} if m in sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


def test_asking_which_engines_answer_imports_no_backend_class() -> None:
    code = "from cman import backends\nfor n in backends.names(): backends.quick_reachable(n)"
    assert loaded_after(code, BACKEND_CODE) == []


def test_naming_the_backend_class_loads_it() -> None:
    code = "from cman.backends.docker import DockerBackend\nassert DockerBackend.name == 'docker'"
    assert loaded_after(code, BACKEND_CODE) == ["cman.backends.docker.backend", "cman.backends.docker.containers"]


MODEL_PARTS = ["cman.models.engine", "cman.models.image", "cman.models.run"]


@pytest.mark.parametrize(("package", "cls"), [("docker", "DockerBackend"), ("lxc", "LxcBackend")])
def test_a_backend_class_loads_only_the_models_a_listing_needs(package: str, cls: str) -> None:
    """`ps` builds Container and State only: the other records (each frozen dataclass costs
    its generated methods at import) load when a verb first makes one."""
    code = f"from cman.backends.{package} import {cls}\nassert {cls}.name == {package!r}"
    assert loaded_after(code, ["cman.models", *MODEL_PARTS]) == ["cman.models"]


def test_every_name_the_models_package_exports_resolves() -> None:
    import cman.models

    for name in cman.models.__all__:
        assert getattr(cman.models, name) is not None, name
    assert cman.models.StdIO.__module__ == "cman.models.run"
    with pytest.raises(AttributeError):
        _ = cman.models.NoSuchThing  # type: ignore[attr-defined]
    assert loaded_after("from cman.models import ImageConfig", MODEL_PARTS) == ["cman.models.image"]


@pytest.mark.parametrize("package", ["docker", "lxd", "lxc"])
def test_an_unknown_name_of_a_backend_package_is_an_attribute_error(package: str) -> None:
    import importlib

    module = importlib.import_module(f"cman.backends.{package}")
    with pytest.raises(AttributeError):
        _ = module.NoSuchThing


def test_the_stats_package_loads_its_parts_on_first_use() -> None:
    watched = ["cman.stats.collector", "cman.stats.rows", "cman.cgroups"]
    assert loaded_after("import cman.stats", watched) == []
    assert loaded_after("from cman.stats import Snapshot", watched) == ["cman.cgroups", "cman.stats.rows"]


def test_every_name_the_stats_package_exports_resolves() -> None:
    import cman.stats

    for name in cman.stats.__all__:
        assert getattr(cman.stats, name) is not None, name
    with pytest.raises(AttributeError):
        _ = cman.stats.parse_interval  # type: ignore[attr-defined]  # moved to cman.validate


def test_reading_the_monitors_state_imports_no_daemon() -> None:
    watched = ["cman.monitor.daemon", "cman.monitor.metrics", "cman.monitor.state"]
    assert loaded_after("from cman.monitor.config import check_pidfile", watched) == []
    assert loaded_after("from cman.monitor import read_state", watched) == ["cman.monitor.state"]


def test_a_lazy_package_still_hands_out_its_submodules() -> None:
    from cman.monitor import MonitorError, daemon

    assert daemon.__name__ == "cman.monitor.daemon" and issubclass(MonitorError, Exception)


def test_a_json_list_prints_one_item_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The C encoder's compact items, one per line (indent would take the pure-Python encoder)."""
    from cman.cli._common import print_json

    rows = [{"name": "a", "cpu": None, "n": 1}, {"name": "b\n", "cpu": 2.5, "n": 2}]
    print_json(rows)
    out = capsys.readouterr().out
    assert json.loads(out) == rows
    assert out.splitlines() == ["[", '  {"name": "a", "cpu": null, "n": 1},', '  {"name": "b\\n", "cpu": 2.5, "n": 2}', "]"]
    for empty_or_one in ([], {"k": [1]}):
        print_json(empty_or_one)
        assert json.loads(capsys.readouterr().out) == empty_or_one


def test_a_backend_class_loads_no_profile_store_and_no_registry_client() -> None:
    """`ps` loads the backend class: profiles are read and registry layouts fetched only by
    the verbs that use them."""
    watched = ["cman.profiles.store", "cman.profiles.schema", "cman.oci.layout"]
    code = "from cman.backends.lxd import LxdBackend\nfrom cman.backends.lxc import LxcBackend"
    assert loaded_after(code, watched) == []
    assert loaded_after("from cman.profiles import load", watched) == ["cman.profiles.schema", "cman.profiles.store"]


def test_version_first_builds_no_command() -> None:
    commands = ["cman.cli.containers", "cman.cli.images", "cman.cli.stats", "cman.cli.network"]
    assert loaded_after("from cman.cli import main\nmain(['--version'])", commands) == []
    assert loaded_after("from cman.cli import main\nmain(['--help', '--version'])", commands) == sorted(commands)
