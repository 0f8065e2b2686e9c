"""CLI behaviour that needs no engine: usage errors, exit codes, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ..conftest import assert_clean_error, cli


def test_version() -> None:
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("cman ")


def test_unknown_backend_option_and_env() -> None:
    assert_clean_error(cli("ps", backend="nosuch"), 2, "unknown backend", "docker, lxd, lxc")
    assert_clean_error(cli("ps", env={"CMAN_BACKEND": "bogus"}), 2, "CMAN_BACKEND")


def test_click_usage_errors_exit_2() -> None:
    proc = cli("ps", "--no-such-flag")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = cli("stop")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_image_import_missing_file() -> None:
    assert_clean_error(cli("image", "import", "/nonexistent.tar", "x", backend="docker"), 2, "no such file")


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("engine", "--help")])
def test_start_up_imports_no_engine_sdk(args: tuple[str, ...]) -> None:
    code = (
        f"import sys; from cman.cli import main; main({list(args)!r}); "
        "print(json.dumps(sorted(m for m in ('docker', 'pylxd', 'requests', 'tenacity', 'rich') if m in sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_features_matrix_lists_every_backend() -> None:
    proc = cli("engine", "features", "--json")
    assert proc.returncode == 0, proc.stderr
    matrix = json.loads(proc.stdout)
    assert set(matrix) == {"docker", "lxd", "lxc"}
    assert "tty" in matrix["docker"]
