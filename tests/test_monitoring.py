"""Prometheus metrics: the exporter on its own, the Grafana dashboard's metric names, and
a real Prometheus server (Debian's ``prometheus``) scraping a running fedkt server."""

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedkt.config import MonitoringConfig
from fedkt.errors import ConfigError
from fedkt.monitoring import METRICS, MetricsExporter
from fedkt.rounds import RoundRecord

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_exporter_serves_every_metric():
    exp = MetricsExporter(MonitoringConfig(port=0), "demo")
    try:
        line = RoundRecord(
            round=2,
            alma=0.75,
            global_accuracy=0.5,
            participants=2,
            bytes_down=1000,
            bytes_up=800,
            wall_seconds=1.5,
            rejected=1,
            rejected_reasons={"range": 1},
            failed=2,
        )
        rows = [{"client": 0, "accuracy": 0.7}, {"client": 1, "accuracy": 0.8}]
        exp.round_done(line, rows)
        exp.round_done(dataclasses.replace(line, round=3, alma=None), rows[:1])
        got = _scrape(exp.port)
    finally:
        exp.close()
    e = (("experiment", "demo"),)
    assert got[("fedkt_round", e)] == 3
    assert got[("fedkt_alma", e)] != got[("fedkt_alma", e)]  # NaN: no accuracy in round 3
    assert got[("fedkt_client_accuracy", (("client", "1"), ("experiment", "demo")))] == 0.8
    assert (
        got[("fedkt_bytes_sent_total", e)] == 2000
        and got[("fedkt_bytes_received_total", e)] == 1600
    )
    rejected = {
        dict(labels)["reason"]: v
        for (name, labels), v in got.items()
        if name == "fedkt_rejected_knowledge_total"
    }
    assert (
        sum(rejected.values()) == 2
        and rejected["range"] == 2
        and got[("fedkt_failed_clients_total", e)] == 4
    )
    assert got[("fedkt_round_duration_seconds", e)] == 1.5 and got[("fedkt_participants", e)] == 2
    assert {
        name for name, _ in got if name.startswith("fedkt_") and not name.endswith("_created")
    } == set(METRICS)


def test_port_in_use_is_a_config_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(
            ConfigError, match=r"monitoring.port: cannot serve metrics on 127.0.0.1:\d+"
        ):
            MetricsExporter(MonitoringConfig(port=s.getsockname()[1]), "x")


def test_grafana_dashboard_uses_exactly_the_exported_metrics():
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    used = {
        word
        for word in exprs.replace("(", " ").replace(")", " ").replace("{", " ").split()
        if word.startswith("fedkt_")
    }
    assert used == set(METRICS)


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _query(api: str, expr: str) -> dict[str, float]:
    url = f"{api}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(urllib.request.urlopen(url, timeout=5).read())
    assert body["status"] == "success", body
    return {r["metric"].get("client", ""): float(r["value"][1]) for r in body["data"]["result"]}


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_real_prometheus_scrapes_a_running_server(tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(
                "prometheus is not installed (.ci/run installs Debian's prometheus package)"
            )
        pytest.skip("needs Debian's prometheus package (apt-get install prometheus)")
    metrics_port, prom_port = _free_port(), _free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        "scrape_configs: "
        f"[{{job_name: fedkt, static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]}}]\n"
    )
    prom = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "w"),
        start_new_session=True,
    )
    run = None
    api = f"http://127.0.0.1:{prom_port}"
    out = tmp_path / "run"
    try:
        _wait_http(f"{api}/-/ready", 60)
        run = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedkt.server",
                "run",
                "--out",
                str(out),
                "--set",
                "name=prom-test",
                "--set",
                "num_clients=3",
                "--set",
                "rounds=3",
                "--set",
                "train.epochs=1",
                "--set",
                "distill.epochs=1",
                "--set",
                f"monitoring.port={metrics_port}",
                "--set",
                "monitoring.linger=4",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
        sel = '{experiment="prom-test"}'
        last = lambda name: _query(api, f"last_over_time({name}{sel}[10m])")  # noqa: E731
        rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert last("fedkt_round") == {"": 3.0}
        assert last("fedkt_alma")[""] == pytest.approx(rounds[-1]["alma"])
        assert last("fedkt_global_accuracy")[""] == pytest.approx(rounds[-1]["global_accuracy"])
        assert last("fedkt_bytes_sent_total")[""] == sum(r["bytes_down"] for r in rounds)
        assert last("fedkt_bytes_received_total")[""] == sum(r["bytes_up"] for r in rounds)
        assert last("fedkt_round_duration_seconds")[""] == pytest.approx(rounds[-1]["wall_seconds"])
        assert (
            last("fedkt_failed_clients_total")[""] == 0
            and _query(api, f"sum(last_over_time(fedkt_rejected_knowledge_total{sel}[10m]))")[""]
            == 0
        )
        final = {str(m["client"]): m["accuracy"] for m in metrics if m["round"] == 3}
        assert last("fedkt_client_accuracy") == pytest.approx(final)
    finally:
        if run is not None:
            _stop(run)
        _stop(prom)
