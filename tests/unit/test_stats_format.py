"""Formatting and JSON of `cman stats` / `cman top`, with fake samples (no engine, no cgroups)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cman.cli.stats import select_from_monitor
from cman.cli.stats_format import (
    HEADERS,
    UNKNOWN,
    backend_totals,
    by_cpu,
    by_name,
    fmt_cpu_time,
    fmt_percent,
    sparkline,
    status_text,
    table_row,
    totals_line,
)
from cman.errors import AmbiguousName
from cman.monitor import MonitorState
from cman.stats import STATUSES, ContainerStats

REQUIRED = {"name", "backend", "cpu_percent", "cpu_user_percent", "cpu_system_percent", "cpu_usage_ns",
            "host_percent", "cpu_user_ns", "cpu_system_ns", "pid", "status"}


def row(name: str = "web", backend: str = "docker", cpu: float | None = 12.5, **kw: Any) -> dict[str, Any]:
    stats = ContainerStats(
        name=name,
        backend=backend,
        id=kw.pop("id", f"{name}-id-0123456789abcdef"),
        managed=kw.pop("managed", True),
        state=kw.pop("state", "running"),
        status=kw.pop("status", "ok" if cpu is not None else "first"),
        pid=kw.pop("pid", 4242),
        cpu_percent=cpu,
        cpu_user_percent=kw.pop("user", None if cpu is None else cpu * 0.75),
        cpu_system_percent=kw.pop("system", None if cpu is None else cpu * 0.25),
        cpu_usage_ns=kw.pop("usage_ns", 3_500_000_000),
        **kw,
    )
    return stats.to_dict()


def test_unknown_is_dashes_never_zero() -> None:
    assert fmt_percent(None) == UNKNOWN
    assert fmt_percent(0.0) == "0.00%"
    assert fmt_percent(99.999) == "100.00%"
    assert fmt_cpu_time(None) == UNKNOWN


@pytest.mark.parametrize(
    ("ns", "text"),
    [(0, "0.00s"), (420_000_000, "0.42s"), (185 * 10**9, "3m05s"), (7380 * 10**9, "2h03m")],
)
def test_cpu_time(ns: int, text: str) -> None:
    assert fmt_cpu_time(ns) == text


def test_table_row_columns_and_first_sample() -> None:
    assert len(HEADERS) == 8
    cells = table_row(row(cpu=None, usage_ns=None, status="first"))
    assert cells == ["web", "docker", "--", "--", "--", "--", "4242", "first"]
    cells = table_row(row(cpu=50.0))
    assert cells[2:5] == ["50.00%", "37.50%", "12.50%"]
    assert cells[-1] == "running"


def test_status_text_shows_state_when_ok_and_reason_otherwise() -> None:
    assert status_text(row(state="paused")) == "paused"
    assert status_text(row(cpu=None, status="gone", pid=None)) == "gone"
    stopped = row(cpu=None, status="stopped", state="stopped", pid=None)
    assert status_text(stopped) == "stopped"
    assert table_row(stopped)[6] == ""


def test_json_object_fields_and_nulls() -> None:
    data = json.loads(json.dumps([row(cpu=None, status="first")]))
    assert data[0].keys() >= REQUIRED
    assert data[0]["cpu_percent"] is None and data[0]["cpu_user_percent"] is None
    assert data[0]["sampled_by"] == "cman"


def test_container_stats_round_trip_ignores_unknown_keys() -> None:
    original = row()
    again = ContainerStats.from_dict({**original, "from_a_newer_monitor": 1}).to_dict()
    assert again == original


def test_statuses_are_documented() -> None:
    assert set(STATUSES) == {"ok", "first", "restarted", "gone", "unreadable", "stopped"}


def test_sorting() -> None:
    rows = [row("b", cpu=None), row("a", cpu=5.0), row("c", cpu=80.0), row("d", backend="lxd", cpu=5.0)]
    assert [r["name"] for r in by_cpu(rows)] == ["c", "a", "d", "b"]
    assert [r["name"] for r in by_name(rows)] == ["a", "b", "c", "d"]


def test_sparkline() -> None:
    assert sparkline([], width=4) == "    "
    assert sparkline([0, 50, 100, 250], width=4) == "▁▅██"
    assert sparkline([None, 100], width=3) == "  █"
    assert len(sparkline(range(100), width=20)) == 20


def test_backend_totals() -> None:
    rows = [row("a", cpu=40.0), row("b", cpu=None), row("c", backend="lxd", cpu=None),
            row("d", cpu=None, status="stopped", pid=None, state="stopped")]
    assert backend_totals(rows) == {"docker": (2, 40.0), "lxd": (1, None)}
    assert totals_line(rows) == "docker: 2 running, 40.00%   lxd: 1 running, --"
    assert totals_line([]) == "no containers"


# -- answering from the monitor's samples ---------------------------------------------------


def state(*rows: dict[str, Any], backends: tuple[str, ...] = ("docker", "lxd")) -> MonitorState:
    return MonitorState(pid=1, listen="127.0.0.1:9464", interval_s=1.0, started=0.0, timestamp=0.0,
                        backends=backends, errors={}, rows=tuple(rows))


def test_monitor_default_selection_is_running_managed() -> None:
    st = state(row("mine"), row("theirs", managed=False),
               row("off", cpu=None, status="stopped", state="stopped", pid=None))
    assert [r["name"] for r in select_from_monitor(st, [], False, None) or []] == ["mine"]
    assert len(select_from_monitor(st, [], True, None) or []) == 3


def test_monitor_names_prefix_and_backend_filter() -> None:
    st = state(row("web"), row("web", backend="lxd", id="lxd-web"), row("db", backend="lxd", id="db"))
    with pytest.raises(AmbiguousName):
        select_from_monitor(st, ["web"], False, None)
    picked = select_from_monitor(st, ["lxd:web", "db"], False, None)
    assert [(r["backend"], r["name"]) for r in picked or []] == [("lxd", "web"), ("lxd", "db")]
    only = select_from_monitor(st, ["web"], False, "docker")
    assert [(r["backend"], r["name"]) for r in only or []] == [("docker", "web")]


def test_monitor_cannot_answer_falls_back() -> None:
    st = state(row("web"), row("new", cpu=None, status="first"))
    assert select_from_monitor(st, ["missing"], False, None) is None
    assert select_from_monitor(st, ["new"], False, None) is None, "a first sample has no rate yet"
    assert select_from_monitor(st, [], False, "lxc") is None, "the monitor did not ask lxc"
    assert select_from_monitor(st, [], False, None, ["docker", "lxd", "lxc"]) is None, "lxc is reachable now"
    assert select_from_monitor(st, ["web"], False, None, ["docker", "lxd"]) is not None
    assert select_from_monitor(st, ["web"], False, None) is not None


def test_a_listing_keeps_a_container_seen_once_with_its_rate_unknown() -> None:
    """Under churn some container is always new: the listing still comes from the monitor."""
    st = state(row("web"), row("new", cpu=None, status="first"))
    listed = select_from_monitor(st, [], False, None) or []
    assert [(r["name"], r["cpu_percent"]) for r in listed] == [("web", 12.5), ("new", None)]
