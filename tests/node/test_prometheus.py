"""The monitoring kit (`deploy/monitoring/`) against a real Prometheus server: it scrapes a
4-validator localnet of real `derivd` processes, sees every node's height rise through its HTTP
API, evaluates every dashboard query, and fires the missing-validator alert once a validator
stops; `promtool` checks the configurations and runs the alert rules' unit tests
(`alerts_test.yml`); the Grafana dashboard is checked against a JSON schema of its model.

Prometheus and promtool are Debian's package, which `make` fetches into `.venv/prometheus`
(`make prometheus`); `DERIVD_PROMETHEUS=/path/to/prometheus` points at another build.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from tests.node.e2e import NodeProcess, make_net, start_all, wait_for

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "deploy" / "monitoring"
DASHBOARD = KIT / "grafana" / "dashboards" / "derivd.json"
MISSING_ALERT = "DerivdValidatorMissingBlocks"


def prometheus_binary() -> Path:
    """Prometheus from DERIVD_PROMETHEUS, else the one `make prometheus` unpacked into the venv;
    a missing binary fails the test with how to get it (it is part of `make test`)."""
    path = Path(
        os.environ.get("DERIVD_PROMETHEUS") or REPO / ".venv" / "prometheus" / "usr" / "bin" / "prometheus"
    )
    if not path.is_file():
        pytest.fail(
            f"no Prometheus at {path}: run `make prometheus` (fetches Debian's package with apt-get "
            "download), or install it (apt-get install prometheus) and set DERIVD_PROMETHEUS"
        )
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(prometheus_binary().with_name("promtool")), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=KIT,
    )


def test_promtool_accepts_the_configurations_and_the_alert_unit_tests_pass() -> None:
    rules = yaml.safe_load((KIT / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    checked = promtool("check", "config", "prometheus.yml", "prometheus.compose.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts)} rules found" in checked.stdout  # each config loads the rule file
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tests = yaml.safe_load((KIT / "alerts_test.yml").read_text())
    exercised = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    assert alerts == exercised, "every alert has a unit test"


# -- the dashboard -----------------------------------------------------------------------------

_DATASOURCE = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"const": "prometheus"}, "uid": {"const": "${datasource}"}},
}
DASHBOARD_SCHEMA: dict[str, Any] = {
    # The fields Grafana's dashboard model (schemaVersion 39) requires or reads for what we use:
    # https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "templating", "time", "editable", "graphTooltip"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "editable": {"type": "boolean"},
        "graphTooltip": {"enum": [0, 1, 2]},
        "refresh": {"type": "string"},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-z_]+$"},
                            "type": {"enum": ["datasource", "query", "custom", "constant", "interval"]},
                        },
                    },
                }
            },
        },
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "type": {"enum": ["row", "timeseries", "stat", "gauge", "table"]},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": {
                        "type": "object",
                        "required": ["h", "w", "x", "y"],
                        "properties": {
                            "h": {"type": "integer", "minimum": 1},
                            "w": {"type": "integer", "minimum": 1, "maximum": 24},
                            "x": {"type": "integer", "minimum": 0, "maximum": 23},
                            "y": {"type": "integer", "minimum": 0},
                        },
                    },
                    "datasource": _DATASOURCE,
                    "targets": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["refId", "expr"],
                            "properties": {
                                "refId": {"type": "string", "pattern": "^[A-Z]$"},
                                "expr": {"type": "string", "minLength": 1},
                                "datasource": _DATASOURCE,
                            },
                        },
                    },
                },
                "if": {"properties": {"type": {"const": "row"}}},
                "then": {},
                "else": {"required": ["datasource", "targets"]},
            },
        },
    },
}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every dashboard target."""
    model = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"]) for panel in model["panels"] for target in panel.get("targets", [])
    ]


def test_the_dashboard_fits_grafanas_model() -> None:
    model = json.loads(DASHBOARD.read_text())
    jsonschema.validate(model, DASHBOARD_SCHEMA)
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in model["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    variables = {v["name"] for v in model["templating"]["list"]}
    for title, expr in dashboard_queries():
        assert set(re.findall(r"\$(\w+)", expr)) <= variables | {"__rate_interval"}, title
    rows = {panel["title"] for panel in model["panels"] if panel["type"] == "row"}
    assert rows == {"Chain", "Consensus", "Mempool", "P2P", "Exchange", "Risk", "Process"}


def test_the_schema_refuses_a_broken_dashboard() -> None:
    model = json.loads(DASHBOARD.read_text())
    panel = next(p for p in model["panels"] if p["type"] != "row")
    del panel["targets"][0]["expr"]
    with pytest.raises(jsonschema.ValidationError, match="'expr' is a required property"):
        jsonschema.validate(model, DASHBOARD_SCHEMA)


# -- a real Prometheus over a real localnet ------------------------------------------------------


def listening_port(pid: int) -> int | None:
    """The TCP port process `pid` listens on (its one listening socket), from /proc: Prometheus
    binds port 0 as asked but logs the address it was given, not the port it got."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN
                return int(fields[1].rsplit(":", 1)[1], 16)
    return None


class Prometheus:
    """A Prometheus server process on 127.0.0.1 and its HTTP API."""

    def __init__(self, config: Path, data: Path, log: Path) -> None:
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(prometheus_binary()),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={data}",
                    "--web.listen-address=127.0.0.1:0",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.log = log
        port = wait_for("Prometheus to listen", self._port)
        self.url = f"http://127.0.0.1:{port}"
        wait_for("Prometheus to be ready", self._ready)

    def _port(self) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        return listening_port(self.proc.pid)

    def _ready(self) -> bool | None:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=5).status_code == 200 or None
        except httpx.TransportError:
            return None

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        alerts: list[dict[str, Any]] = answer["data"]["alerts"]
        return alerts

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)


def kit_config(tmp: Path, metrics_ports: list[int], missing_for: str) -> Path:
    """The kit's localnet configuration with this network's metrics ports, a 1 s scrape and
    evaluation interval, and its rules with `for:` of the missing-validator alert cut to
    `missing_for` (its 1-minute hold is the unit tests' business)."""
    config = yaml.safe_load((KIT / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    [job] = config["scrape_configs"]
    assert job["job_name"] == "derivd" and len(job["static_configs"][0]["targets"]) == len(metrics_ports)
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}" for port in metrics_ports]}]
    rules = yaml.safe_load((KIT / "alerts.yml").read_text())
    [missing] = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == MISSING_ALERT]
    missing["for"] = missing_for
    (tmp / "alerts.yml").write_text(yaml.safe_dump(rules))
    config["rule_files"] = [str(tmp / "alerts.yml")]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


# Panels that must show data on a fresh, idle localnet (the others need trades, a feeder or
# liquidations); every panel's query must at least evaluate without error.
PANELS_WITH_DATA = {
    "Height",
    "Block interval (p50, p95)",
    "Transactions per block",
    "Block size",
    "Block processing time (FinalizeBlock, p95)",
    "Rounds",
    "Validators and power",
    "Missing and byzantine validators",
    "This node's validator: missed blocks",
    "This node's validator: last signed height",
    "Block sync",
    "Mempool size",
    "Peers",
    "Received bytes per second",
    "Open interest (base quantums)",
    "Insurance fund (quote quantums)",
    "Liquidation queue",
    "CPU",
    "Resident memory",
}


@pytest.fixture
def network(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    _, nodes = make_net(tmp_path, 4)
    try:
        start_all(nodes)
        yield nodes
    finally:
        for node in nodes:
            if node.alive():
                node.stop()


def test_prometheus_scrapes_a_localnet_and_the_missing_validator_alert_fires(
    network: list[NodeProcess], tmp_path: Path
) -> None:
    nodes = network
    ports = [node.chain.metrics_port for node in nodes]
    prometheus = Prometheus(kit_config(tmp_path, ports, "3s"), tmp_path / "tsdb", tmp_path / "prometheus.log")
    try:
        heights = "cometbft_consensus_height{job='derivd'}"

        def all_four() -> dict[str, float] | None:
            found = {r["metric"]["instance"]: float(r["value"][1]) for r in prometheus.query(heights)}
            return found if len(found) == 4 else None

        first = wait_for("Prometheus to scrape the four nodes", all_four)
        assert set(first) == {f"127.0.0.1:{port}" for port in ports}
        assert {r["metric"]["chain_id"] for r in prometheus.query(heights)} == {"e2e-chain"}
        wait_for(
            "every node's height to rise in Prometheus",
            lambda: ((now := all_four()) is not None and all(now[i] > first[i] for i in first)) or None,
        )
        assert [float(r["value"][1]) for r in prometheus.query("up{job='derivd'}")] == [1.0] * 4

        # every dashboard query evaluates (query() asserts it); the panels a fresh chain feeds have
        # data once their rates and quantiles have two scrapes in their window
        titles = {title for title, _ in dashboard_queries()}
        assert titles >= PANELS_WITH_DATA
        wait_for(
            "the dashboard's panels to have data",
            lambda: panels_with_data(prometheus) >= PANELS_WITH_DATA or None,
            timeout=20,
        )
        assert not prometheus_firing(prometheus, MISSING_ALERT)

        nodes[3].stop()
        alert = wait_for(
            "the missing-validator alert to fire", lambda: prometheus_firing(prometheus, MISSING_ALERT)
        )
        assert alert["labels"] == {"alertname": MISSING_ALERT, "chain_id": "e2e-chain", "severity": "warning"}
        assert float(alert["value"]) == 1.0
        stopped = f"127.0.0.1:{ports[3]}"
        down = [a for a in prometheus.alerts() if a["labels"]["alertname"] == "DerivdNodeDown"]
        assert [(a["labels"]["instance"], a["state"]) for a in down] == [(stopped, "pending")]  # for: 1m
    finally:
        prometheus.stop()


DASHBOARD_VARIABLES = {"$chain_id": "e2e-chain", "$instance": ".*", "$__rate_interval": "10s"}


def panels_with_data(prometheus: Prometheus) -> set[str]:
    """The titles of the dashboard panels with a query that returns data, the variables set as
    Grafana would for this network (each query must evaluate without error)."""
    found = set()
    for title, template in dashboard_queries():
        expr = template
        for variable, value in DASHBOARD_VARIABLES.items():
            expr = expr.replace(variable, value)
        if prometheus.query(expr):
            found.add(title)
    return found


def prometheus_firing(prometheus: Prometheus, name: str) -> dict[str, Any] | None:
    firing = [a for a in prometheus.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"]
    return firing[0] if firing else None
