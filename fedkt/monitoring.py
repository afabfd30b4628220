"""Prometheus metrics of a running experiment, served over HTTP by the server.

The server loop calls :meth:`MetricsExporter.round_done` after every round; Prometheus
scrapes ``http://HOST:PORT/metrics``. Every metric carries an ``experiment`` label (the
config's ``name``) so one Prometheus can watch several federations. The metric names
below are the contract with ``deploy/grafana-dashboard.json`` (a test keeps the two in
step). Each exporter has its own registry: several runs in one process never collide.
"""

from __future__ import annotations

import math
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from fedkt.config import MonitoringConfig
from fedkt.errors import REJECTION_REASONS, ConfigError
from fedkt.rounds import RoundRecord

METRICS: dict[str, str] = {
    "fedkt_round": "last completed round",
    "fedkt_alma": (
        "average local model accuracy (mean of each client's accuracy on its own test split), "
        "last round"
    ),
    "fedkt_global_accuracy": "mean accuracy of the local models on the global test set, last round",
    "fedkt_client_accuracy": (
        "each client's accuracy on its own test split, last round it took part in"
    ),
    "fedkt_participants": "clients whose metrics arrived in the last round",
    "fedkt_bytes_sent_total": "bytes the server sent to clients (serialised messages)",
    "fedkt_bytes_received_total": "bytes the server received from clients (serialised messages)",
    "fedkt_round_duration_seconds": "wall time of the last round",
    "fedkt_rejected_knowledge_total": (
        "client replies whose knowledge the server rejected, by reason"
    ),
    "fedkt_failed_clients_total": (
        "sampled clients that failed or did not answer in time, summed over rounds"
    ),
}


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


class MetricsExporter:
    """Serves the metrics of one experiment until :meth:`close` (after ``linger``
    seconds, so that a last scrape sees the final round)."""

    def __init__(self, cfg: MonitoringConfig, experiment: str) -> None:
        if cfg.port is None:
            raise ValueError("monitoring is off (monitoring.port is null)")
        self.cfg = cfg
        self.registry = CollectorRegistry()
        label = ["experiment"]

        def gauge(name: str, extra: list[str] | None = None) -> Gauge:
            return Gauge(name, METRICS[name], label + (extra or []), registry=self.registry)

        def counter(name: str) -> Counter:
            # prometheus_client appends "_total" to counter names itself.
            return Counter(
                name.removesuffix("_total"), METRICS[name], label, registry=self.registry
            )

        self.round = gauge("fedkt_round").labels(experiment)
        self.alma = gauge("fedkt_alma").labels(experiment)
        self.global_accuracy = gauge("fedkt_global_accuracy").labels(experiment)
        self.client_accuracy = gauge("fedkt_client_accuracy", ["client"])
        self.participants = gauge("fedkt_participants").labels(experiment)
        self.sent = counter("fedkt_bytes_sent_total").labels(experiment)
        self.received = counter("fedkt_bytes_received_total").labels(experiment)
        self.duration = gauge("fedkt_round_duration_seconds").labels(experiment)
        self.rejected = Counter(
            "fedkt_rejected_knowledge",
            METRICS["fedkt_rejected_knowledge_total"],
            label + ["reason"],
            registry=self.registry,
        )
        for (
            reason
        ) in REJECTION_REASONS:  # every reason exists (at 0) from the start, as Prometheus advises
            self.rejected.labels(experiment, reason)
        self.failed = counter("fedkt_failed_clients_total").labels(experiment)
        self.experiment = experiment
        try:
            self._server, self._thread = start_http_server(
                cfg.port, addr=cfg.host, registry=self.registry
            )
        except OSError as exc:
            raise ConfigError(
                f"monitoring.port: cannot serve metrics on {cfg.host}:{cfg.port} "
                f"({exc.strerror or exc})"
            ) from None

    @property
    def port(self) -> int:
        """The bound port (useful with ``port: 0``, which picks a free one)."""
        return int(self._server.server_address[1])

    def round_done(self, line: RoundRecord, rows: list[dict[str, Any]]) -> None:
        """Update every metric from a round's record and per-client rows."""
        self.round.set(line.round)
        for gauge, measured in (
            (self.alma, line.alma),
            (self.global_accuracy, line.global_accuracy),
        ):
            value = _finite(measured)
            gauge.set(value if value is not None else math.nan)
        for row in rows:
            value = _finite(row.get("accuracy"))
            if value is not None:
                self.client_accuracy.labels(self.experiment, str(row["client"])).set(value)
        self.participants.set(line.participants)
        self.sent.inc(line.bytes_down)
        self.received.inc(line.bytes_up)
        self.duration.set(line.wall_seconds)
        for reason, n in line.rejected_reasons.items():
            self.rejected.labels(self.experiment, reason).inc(n)
        self.failed.inc(line.failed)

    def close(self) -> None:
        if self.cfg.linger > 0:
            time.sleep(self.cfg.linger)
        self._server.shutdown()
        self._server.server_close()
