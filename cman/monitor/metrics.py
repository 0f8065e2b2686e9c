"""The HTTP server: Prometheus metrics on ``/metrics`` (and ``/``), the samples on ``/samples.json``.

Metrics: ``cman_container_cpu_seconds_total{name,backend,mode="user"|"system"}``
(counter, from the cgroup's cumulative counters), ``cman_container_cpu_percent{name,backend}``
(gauge over the last interval, 100 = one CPU; absent while unknown, never 0), and
``cman_monitor_*`` figures about the monitor itself. prometheus_client is imported
only here, inside the functions that use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..stats import Snapshot


class SnapshotCollector:
    """A prometheus_client collector exporting the latest snapshot as it is.

    The cgroup counters are already cumulative, so they are exported as counter
    samples directly (a Counter object only knows how to inc()).
    """

    def __init__(self, latest: Callable[[], tuple[Snapshot | None, float]]) -> None:
        self._latest = latest

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snapshot, duration = self._latest()
        seconds = CounterMetricFamily(
            "cman_container_cpu_seconds",
            "CPU time used by the container's cgroup since it was created, by mode.",
            labels=["name", "backend", "mode"],
        )
        percent = GaugeMetricFamily(
            "cman_container_cpu_percent",
            "CPU use over the last sampling interval; 100 = one full CPU (as docker stats).",
            labels=["name", "backend"],
        )
        containers = GaugeMetricFamily(
            "cman_monitor_containers", "Containers sampled in the last pass, by backend.", labels=["backend"]
        )
        last = GaugeMetricFamily("cman_monitor_last_sample_timestamp_seconds", "When the last pass ended.")
        took = GaugeMetricFamily("cman_monitor_sample_duration_seconds", "Time the last pass took (listing and reading).")
        if snapshot is not None:
            counts: dict[str, int] = dict.fromkeys(snapshot.backends, 0)
            for row in snapshot.rows:
                if row.pid is None:
                    continue
                counts[row.backend] = counts.get(row.backend, 0) + 1
                if row.cpu_user_ns is not None:
                    seconds.add_metric([row.name, row.backend, "user"], row.cpu_user_ns / 1e9)
                if row.cpu_system_ns is not None:
                    seconds.add_metric([row.name, row.backend, "system"], row.cpu_system_ns / 1e9)
                if row.cpu_percent is not None:
                    percent.add_metric([row.name, row.backend], row.cpu_percent)
            for backend, n in counts.items():
                containers.add_metric([backend], n)
            last.add_metric([], snapshot.timestamp)
            took.add_metric([], duration)
        yield from (seconds, percent, containers, last, took)


def wsgi_app(latest: Callable[[], tuple[Snapshot | None, float]], document: Callable[[], bytes]) -> Callable[..., Any]:
    """The server's one WSGI app: ``latest`` feeds the metrics, ``document`` is ``/samples.json``."""
    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(latest))
    ProcessCollector(registry=registry, namespace="cman_monitor")
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "/")
        if path == "/samples.json":
            body = document()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path in ("/", "/metrics"):
            return metrics(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"see /metrics or /samples.json\n"]

    return app


def make_server(listen: tuple[str, int], app: Callable[..., Any]) -> Any:
    """A threading WSGI server bound to ``listen``; OSError when the port is taken."""
    import socket
    from socketserver import TCPServer, ThreadingMixIn
    from wsgiref import simple_server
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    host, port = listen

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            pass

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def server_bind(self) -> None:
            # HTTPServer.server_bind would call socket.getfqdn(host): a reverse DNS
            # lookup for nothing. Bind, and name the server by its address.
            TCPServer.server_bind(self)
            self.server_name, self.server_port = host, port
            self.setup_environ()

    return simple_server.make_server(host, port, app, Server, handler_class=Handler)
