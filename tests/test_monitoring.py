"""Dashboards and alerts as code (deploy/): promtool accepts them, their unit tests pass, and
every metric they name is one a real askq /metrics serves.

promtool comes with Debian's `prometheus` package (`.ci/run` installs it).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from askq.config.settings import ApiSettings, Settings
from askq.producers.api import create_app
from askq.producers.client import Client
from askq.stack import Stack
from tests.conftest import Sim, wait_for, wait_workers

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "askq.json"
TOKEN = "monitoring-token"

# Grafana's variables, as Prometheus would see them once Grafana filled them in.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": "askq", "${datasource}": "prometheus"}
# PromQL words that look like metric names to the extraction below.
PROMQL_WORDS = frozenset({"sum", "max", "min", "by", "without", "rate", "increase", "histogram_quantile", "or",
                          "and", "vector", "up", "le", "job", "instance", "humanize", "on", "ignoring"})


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("promtool"), "promtool is missing: install Debian's prometheus package (.ci/run does)"
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def dashboard_exprs() -> list[str]:
    def walk(panels: list[dict[str, Any]]) -> list[str]:
        found = []
        for panel in panels:
            found += [t["expr"] for t in panel.get("targets", [])]
            found += walk(panel.get("panels", []))
        return found

    exprs = walk(json.loads(DASHBOARD.read_text())["panels"])
    assert len(exprs) > 20
    return exprs


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"an unknown Grafana variable in {expr}"
    return expr


def rule_exprs() -> list[str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def recorded_names() -> set[str]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers not followed by '(' that are not keywords or labels."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_labels)
    without_ranges = re.sub(r"\[[^\]]*\]", "[]", without_groupings)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", without_ranges))
    return {n for n in names if n not in PROMQL_WORDS and not re.fullmatch(r"[0-9.e]+", n)}


def grouping_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        labels.update(label.strip() for label in group.split(",") if label.strip())
    return labels


def test_promtool_accepts_the_rules_and_the_prometheus_config(tmp_path: Path) -> None:
    rules = promtool("check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # The config as mounted in the container, with the token file (written there at start) present.
    token = tmp_path / "askq-token"
    token.write_text("a-token")
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert "credentials_file: /prometheus/askq-token" in config
    (tmp_path / "prometheus.yml").write_text(config.replace("/prometheus/askq-token", str(token)))
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    checked = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "alerts.yml" in checked.stdout  # the rule file the config names was found and checked


def test_every_alert_fires_when_it_should_and_stays_quiet_below_its_threshold() -> None:
    done = promtool("test", "rules", str(PROMETHEUS / "alerts_test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    quiet = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case.get("exp_alerts")}
    assert alerts == fired, "each alert has a test where it fires"
    assert alerts == quiet, "each alert has a test where it stays quiet"
    assert {"AskqErrorRateHigh", "AskqRetryRateHigh", "AskqLatencyHigh", "AskqWorkerDead", "AskqOldestJobWaiting",
            "AskqBreakerOpen", "AskqDeadLettersRising"} <= alerts


def test_every_dashboard_query_is_promql_prometheus_accepts(tmp_path: Path) -> None:
    # promtool has no query checker of its own: each query becomes a recording rule it parses.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": grafana_to_promql(expr)} for i, expr in enumerate(dashboard_exprs())
    ]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "askq"
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    for needed in ("askq_jobs_answered_total", "askq_errors_total", "askq_breaker_state", "askq_queue_depth",
                   "askq_oldest_pending_job_age_seconds", "askq_worker_heartbeat_age_seconds",
                   "askq_dead_letters_total", "askq_job_end_to_end_seconds_bucket"):
        assert needed in used, needed
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job"} <= variables


def _scrape(api: TestClient) -> dict[str, set[str]]:
    """Every sample name a scrape serves, with the label names it carries."""
    reply = api.get("/metrics")
    assert reply.status_code == 200
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
        # A family served without samples yet (askq_events before any such event) still counts.
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        for suffix in suffixes:
            names.setdefault(family.name + suffix, set())
    return names


def test_every_metric_the_dashboard_and_alerts_use_is_one_askq_serves(
    stack: Stack, r: redis.Redis, settings: Settings, sim: Sim
) -> None:
    """A real worker runs jobs that retry, fail, open and close a breaker; then a real scrape
    must serve every metric (and every label grouped by) the dashboard and the rules name."""
    # A breaker that opens on two failures and probes again after a second.
    breaker = {"ASKQ_BREAKER__MIN_REQUESTS": "2", "ASKQ_BREAKER__COOLDOWN_S": "1"}
    stack.start_worker(concurrency=4, **breaker)
    wait_workers(r, 1)
    api = TestClient(create_app(settings.model_copy(update={"api": ApiSettings(tokens=[TOKEN])})),
                     headers={"Authorization": f"Bearer {TOKEN}"})
    client = Client(settings)
    client.wait(client.submit("Where is my order?"), timeout=60)
    client.wait(client.submit("Where is my refund [[sim:bad_request]]"), timeout=60)  # dead letter
    client.wait(client.submit("Is it in stock [[sim:server_error@primary]]"), timeout=60)  # retries, opens
    # The open breaker is skipped, then a probe closes it again.
    questions = (f"Do you ship to country {n}?" for n in itertools.count())  # never a cache hit
    wait_for(lambda: client.wait(client.submit(next(questions)), timeout=60)
             and {"askq_tier_skipped_total", "askq_breaker_closed_total"} <= set(_scrape(api)),
             60, interval=0.5, what="a skipped tier and a breaker closing again")
    served = _scrape(api)

    recorded = recorded_names()
    used: dict[str, str] = {}
    for expr in [grafana_to_promql(e) for e in dashboard_exprs()] + rule_exprs():
        for name in metric_names(expr) - recorded:
            used.setdefault(name, expr)
    missing = {name: expr for name, expr in used.items() if name not in served}
    assert missing == {}, "metrics named in deploy/ that askq does not serve"
    assert len(used) >= 20

    served_labels = set().union(*served.values()) | {"instance", "job"}
    grouped = set().union(*(grouping_labels(e) for e in dashboard_exprs() + rule_exprs()))
    assert grouped - served_labels == set(), "labels grouped by in deploy/ that askq does not serve"


@pytest.mark.parametrize("expr, names", [
    ('sum by (tier) (max without (instance) (rate(askq_x_total{job=~"$job",tier!~"a|b"}[5m])))', {"askq_x_total"}),
    # `up` is Prometheus's own, not askq's.
    ("histogram_quantile(0.95, sum by (le) (rate(askq_y_bucket[1m]))) / up", {"askq_y_bucket"}),
    ("askq:ratio:rate5m > 0.10 or askq_z * 0", {"askq:ratio:rate5m", "askq_z"}),
])
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    # The check above is only as good as this extraction: it must find names, not functions or labels.
    assert metric_names(expr) == names
