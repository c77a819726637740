"""Metrics: gathered from the same views as the reports, rendered by ``reports.metrics``, then written to a
textfile (node_exporter) or served on 127.0.0.1 by a running ``fleet watch``.

``prometheus_client`` is the optional ``metrics`` extra: it is imported only here, on these paths, and its absence
is a one-line ``Unavailable`` (exit 7) naming the extra.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet_watch import __version__
from fleet_watch.atomic import write_text_atomic
from fleet_watch.errors import Unavailable, UsageError
from fleet_watch.service.fleet import Fleet
from fleet_watch.service.report import Views, gather_views
from fleet_watch.store import audit

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from fleet_watch.reports.metrics import MetricsData

LISTEN_ADDRESS = "127.0.0.1"  # never another interface: the metrics name every workload on this machine
TEXTFILE_MODE = 0o644  # node_exporter reads it as another user (e.g. `prometheus`)


def _reports_metrics() -> Any:
    try:
        from fleet_watch.reports import metrics
    except ImportError as err:
        raise Unavailable("prometheus-client is not installed: pip install 'fleet-watch[metrics]'") from err
    return metrics


def gather_metrics(fleet: Fleet, *, views: Views | None = None, watch_cycles: int | None = None,
                   watch_errors: int | None = None) -> MetricsData:
    """From ``views`` when the caller has them (a watch tick just wrote the reports), else read now (read-only)."""
    module = _reports_metrics()
    if views is None:
        views = gather_views(fleet)
    with fleet.reading() as conn:
        conflicts = audit.count(conn, event_type="CONFLICT", since="")
    data: MetricsData = module.MetricsData(state=views.state, budgets=views.budgets, conflicts_total=conflicts,
                                           version=__version__, watch_cycles_total=watch_cycles,
                                           watch_errors_total=watch_errors)
    return data


def render(data: MetricsData) -> str:
    text: str = _reports_metrics().render(data)
    return text


def write_textfile(path: Path, data: MetricsData) -> None:
    """Atomically (temp file in the same folder, fsync, rename), mode 0644: node_exporter's textfile collector reads
    only ``*.prom`` files and must never see half of one."""
    if path.suffix != ".prom":
        raise UsageError(f"--textfile must end in .prom (node_exporter's textfile collector reads only *.prom), "
                         f"got {path}")
    if not path.parent.is_dir():
        raise UsageError(f"--textfile: directory {path.parent} does not exist")
    text = render(data)
    try:
        write_text_atomic(path, text, mode=TEXTFILE_MODE)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror}") from err


class MetricsServer:
    """``/metrics`` on 127.0.0.1, answering from the latest data that the watch loop handed over (``update``);
    the HTTP thread never touches the registry database."""

    def __init__(self, port: int) -> None:
        if not 0 <= port <= 65535:
            raise UsageError(f"--metrics-port must be from 0 to 65535, got {port}")
        _reports_metrics()  # a missing extra is a one-line error, before anything starts
        from prometheus_client.exposition import start_http_server
        from prometheus_client.registry import Collector, CollectorRegistry

        self._lock = threading.Lock()
        self._families: list[Metric] = []

        server = self

        class Latest(Collector):
            def collect(self) -> Iterator[Metric]:
                with server._lock:
                    return iter(list(server._families))

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Latest())
        try:
            self._http, self._thread = start_http_server(port, addr=LISTEN_ADDRESS, registry=registry)
        except OSError as err:
            raise Unavailable(f"cannot serve metrics on {LISTEN_ADDRESS}:{port}: {err.strerror}") from err
        self.port: int = self._http.server_port

    def update(self, data: MetricsData) -> None:
        families = _reports_metrics().families(data)
        with self._lock:
            self._families = families

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)
