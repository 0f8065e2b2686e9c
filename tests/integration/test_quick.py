"""``ps`` and ``stats`` answered without typer (cman.cli.quick) say what the typer commands say,
on each real engine: the same rows, the same errors, the same exit codes.

Each argv runs through :func:`cman.cli.main` twice in this process: as it is (quick answers)
and with quick declining every argv (the typer app answers).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from cman.cli import main, quick

from ..conftest import PREFIX, Engine

pytestmark = pytest.mark.engine

Outcome = tuple[int, str, str]


def _through_both(args: list[str], capsys: pytest.CaptureFixture[str],
                  monkeypatch: pytest.MonkeyPatch) -> tuple[Outcome, Outcome]:
    assert quick.parse(args) is not None, args
    capsys.readouterr()
    fast = main(args)
    fast_out = capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(quick, "parse", lambda _args: None)
        slow = main(args)
    slow_out = capsys.readouterr()
    return (fast, fast_out.out, fast_out.err), (slow, slow_out.out, slow_out.err)


def _ours(name: object) -> bool:
    """This run's containers only: the soak runs beside the suite in CI and its containers come
    and go between the two listings."""
    return str(name).startswith(PREFIX)


def _rows(text: str) -> list[dict[str, object]]:
    """JSON rows without what changes from one second to the next ("Up 3 seconds")."""
    rows: list[dict[str, object]] = json.loads(text)
    return [{k: v for k, v in row.items() if k != "status"} for row in rows if _ours(row["name"])]


def _refs(text: str) -> list[str]:
    return [line for line in text.splitlines() if _ours(line.partition(":")[2])]


STATS_KEYS = ("name", "backend", "id", "managed", "state", "pid", "cgroup_version", "cgroup", "online_cpus", "sampled_by")
"""What a stats row says that does not change between two samples."""


def _stats_rows(text: str) -> list[dict[str, object]]:
    return [{k: row.get(k) for k in STATS_KEYS} for row in json.loads(text)]


def _first_columns(text: str) -> list[list[str]]:
    """A table's BACKEND, NAME, ID, IMAGE and STATE columns (STATUS says "Up 3 seconds")."""
    return [line.split()[:5] for line in text.splitlines()[1:] if _ours(line.split()[1])]


@pytest.mark.parametrize(("form", "compare"), [
    (["ps", "-a", "--json"], _rows),
    (["ps", "-aq"], _refs),
    (["ps", "--all"], _first_columns),
])
def test_ps_says_the_same_without_typer(eng: Engine, form: list[str], compare: Callable[[str], object],
                                        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    name = eng.name_for("quick")
    assert eng.cli("run", "-d", "--name", name, eng.image, "sleep", "300").returncode == 0
    fast, slow = _through_both(["--backend", eng.name, *form], capsys, monkeypatch)
    assert fast[0] == slow[0] == 0, (fast, slow)
    assert compare(fast[1]) == compare(slow[1])
    assert name in str(compare(fast[1]))


def test_stats_says_the_same_without_typer(eng: Engine, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    name = eng.name_for("quick-stats")
    assert eng.cli("run", "-d", "--name", name, eng.image, "sleep", "300").returncode == 0
    args = ["--backend", eng.name, "stats", "--no-stream", "--no-monitor", "--interval", "0.2", "--json", name]
    fast, slow = _through_both(args, capsys, monkeypatch)
    assert fast[0] == slow[0] == 0, (fast, slow)
    assert _stats_rows(fast[1]) == _stats_rows(slow[1])
    assert [row["name"] for row in _stats_rows(fast[1])] == [name]


@pytest.mark.parametrize("form", [
    ["stats", "--no-stream", "--interval", "0.2", "cmantest-no-such-container"],
    ["stats", "--no-stream", "--interval", "nan"],
    ["stats", "--no-stream", "--cgroup", "v3"],
    ["stats", "--no-stream", "--pidfile", "/"],
])
def test_the_same_errors_without_typer(eng: Engine, form: list[str], capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fast, slow = _through_both(["--backend", eng.name, *form], capsys, monkeypatch)
    assert fast == slow
    assert fast[0] != 0 and fast[2].startswith("cman: ") and fast[2].count("\n") == 1, fast


def test_an_unreachable_engine_is_the_same_error_without_typer(eng: Engine, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in eng.unreachable_env.items():
        monkeypatch.setenv(key, value)
    fast, slow = _through_both(["--backend", eng.name, "ps", "-a"], capsys, monkeypatch)
    assert fast == slow
    assert fast[0] == 5, fast
