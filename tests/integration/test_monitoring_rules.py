"""deploy/ monitoring material: the Prometheus rules pass promtool (syntax, config and unit tests that make every
alert fire and not fire), and every query of the rules and of the Grafana dashboard names a metric the code exports.

promtool comes from Debian's `prometheus` package (/usr/bin/promtool); the tests fail, not skip, without it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from evolution.observability import metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = (PROMETHEUS_DIR / "recording-rules.yml", PROMETHEUS_DIR / "alert-rules.yml")
RULE_TESTS = tuple(sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml")))
DASHBOARD = ROOT / "deploy" / "grafana" / "controlled-evolution.json"

# Prometheus writes `up` for every scrape target itself: the only way a rule can see a process that is down.
PROMETHEUS_SYNTHETIC = frozenset({"up"})
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"})
# What issue 6 asks the dashboard to show (matched case-insensitively against panel titles).
REQUIRED_PANELS = (
    "Drift detection latency",
    "Retraining duration",
    "rollout window",
    "availability",
    "Error budget left",
    "Training status per tenant",
    "PSI per feature",
    "Canary p-value",
    "Canary labels",
    "Rollbacks",
    "quota",
    "Latency by role",
)


# ----------------------------------------------------------------------------------------------- promtool runs


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package (apt-get install prometheus)")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS_DIR
    )


def test_promtool_accepts_the_recording_and_alert_rule_files() -> None:
    done = _run("check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_accepts_the_example_prometheus_config_and_the_rules_it_loads() -> None:
    done = _run("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    for rule_file in RULE_FILES:
        assert rule_file.name in done.stdout, f"prometheus.yml does not load {rule_file.name}"


def test_the_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no deploy/prometheus/tests/*.test.yml"
    done = _run("test", "rules", *map(str, RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_TESTS), done.stdout


# ---------------------------------------------------------------------------- reading the rule files (no PyYAML)


@dataclass(frozen=True)
class Rule:
    kind: str  # "record" or "alert"
    name: str
    expr: str


_RULE_HEAD = re.compile(r"^(\s*)- (record|alert): (\S+)\s*$")
_EXPR = re.compile(r"^(\s*)expr: (.*)$")


def _read_rules(path: Path) -> list[Rule]:
    """The rules of a rule file, read line by line (the files keep one shape: `- record:`/`- alert:` then `expr:`,
    inline or as a block scalar). The count is checked against promtool's own, so a rule this misses fails a test."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rules: list[Rule] = []
    for i, line in enumerate(lines):
        head = _RULE_HEAD.match(line)
        if head is None:
            continue
        for j in range(i + 1, len(lines)):
            found = _EXPR.match(lines[j])
            if found is None:
                continue
            indent, value = len(found.group(1)), found.group(2).strip()
            if value[:1] in ("|", ">"):
                block = []
                for k in range(j + 1, len(lines)):
                    text = lines[k]
                    if text.strip() and len(text) - len(text.lstrip()) <= indent:
                        break
                    block.append(text.strip())
                value = " ".join(part for part in block if part)
            rules.append(Rule(head.group(2), head.group(3), value))
            break
    return rules


def _all_rules() -> list[Rule]:
    return [rule for path in RULE_FILES for rule in _read_rules(path)]


def test_every_rule_of_the_files_is_read_for_the_metric_checks() -> None:
    done = _run("check", "rules", *map(str, RULE_FILES))
    promtool_count = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", done.stdout))
    rules = _all_rules()
    assert len(rules) == promtool_count, done.stdout
    assert all(rule.expr for rule in rules)


# ------------------------------------------------------------------------------ metric names in PromQL queries


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL (or Grafana-templated PromQL) expression selects.

    Drops what is not a metric name: string literals, label matchers, range and subquery brackets, label lists of
    by/without/on/ignoring/group_left/group_right, offsets, Grafana variables, function and aggregation calls
    (an identifier followed by "("), operators written as words and numbers."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+-?\w+", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names: set[str] = set()
    for found in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, is_call = found.group(1), found.group(2) is not None
        if not is_call and name.lower() not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def test_metric_names_are_found_and_functions_labels_and_variables_are_not() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (tenant, le) (rate(drift_detection_latency_seconds_bucket{tenant=~"$tenant",'
        ' le=~"14400(\\\\.0)?"}[$__rate_interval]))) > bool 1e3 and on (tenant) max(rollout_window_seconds offset 5m)'
        " unless tenant:inference_error_ratio:rate5m / ignoring(le) group_left (model) up"
    )
    assert metric_names(expr) == {
        "drift_detection_latency_seconds_bucket",
        "rollout_window_seconds",
        "tenant:inference_error_ratio:rate5m",
        "up",
    }


def _exposed_names() -> dict[str, set[str]]:
    """Each metric of evolution/observability/metrics.py -> the sample names a scrape shows for it, taken from the collectors
    themselves: prometheus-client exposes a Counter declared "x_total" as x_total, a Histogram x as
    x_bucket/x_sum/x_count, a Gauge x as x."""
    exposed: dict[str, set[str]] = {}
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        for family in collector.describe():
            if family.type == "counter":
                exposed[family.name + "_total"] = {family.name + "_total"}
            elif family.type == "histogram":
                exposed[family.name] = {family.name, *(family.name + suffix for suffix in HISTOGRAM_SUFFIXES)}
            else:
                exposed[family.name] = {family.name}
    return exposed


def _exported_sample_names() -> set[str]:
    exposed = _exposed_names()
    return {name for metric in metrics.EXPORTED_METRICS for name in exposed[metric]}


def test_exported_metrics_lists_every_metric_the_code_registers_under_its_scraped_name() -> None:
    assert set(metrics.EXPORTED_METRICS) == set(_exposed_names())


def test_every_metric_in_the_rules_is_exported_or_recorded_by_the_rules() -> None:
    rules = _all_rules()
    recorded = {rule.name for rule in rules if rule.kind == "record"}
    allowed = _exported_sample_names() | recorded | PROMETHEUS_SYNTHETIC
    unknown = {(rule.name, name) for rule in rules for name in metric_names(rule.expr) if name not in allowed}
    assert not unknown, f"rules select metrics nothing exports or records: {sorted(unknown)}"


def test_recorded_series_follow_the_level_metric_operation_naming() -> None:
    for rule in _all_rules():
        if rule.kind == "record":
            assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule.name), rule.name


# -------------------------------------------------------------------------- every alert fires and stays quiet


def _alert_cases() -> tuple[set[str], set[str]]:
    """Alert names with an alert_rule_test that expects them firing, and names with one that expects none."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        for i, line in enumerate(lines[:-1]):
            found = re.fullmatch(r"alertname: (\S+)", line)
            if found is None:
                continue
            if lines[i + 1] == "exp_alerts: []":
                quiet.add(found.group(1))
            elif lines[i + 1] == "exp_alerts:" and lines[i + 2].startswith("- exp_labels:"):
                firing.add(found.group(1))
    return firing, quiet


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() -> None:
    alerts = {rule.name for rule in _all_rules() if rule.kind == "alert"}
    firing, quiet = _alert_cases()
    assert alerts - firing == set(), "alerts never seen firing"
    assert alerts - quiet == set(), "alerts never seen quiet"
    assert (firing | quiet) - alerts == set(), "tests name alerts that do not exist"


def test_every_alert_has_a_severity_and_names_the_tenant_or_the_process() -> None:
    text = RULE_FILES[1].read_text(encoding="utf-8")
    blocks = re.split(r"^\s*- alert: ", text, flags=re.M)[1:]
    assert len(blocks) == sum(1 for rule in _all_rules() if rule.kind == "alert")
    for block in blocks:
        name = block.split()[0]
        assert re.search(r"^\s*severity: (page|ticket|warning)\s*$", block, re.M), name
        summary = re.search(r"^\s*summary: (.*)$", block, re.M)
        assert summary is not None and re.search(r"\$labels\.(tenant|instance|job)", summary.group(1)), name
        assert re.search(r"^\s*description: ", block, re.M), name


# ------------------------------------------------------------------------------------------ Grafana dashboard


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows; rows themselves are layout, not panels."""
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def test_the_dashboard_is_a_current_grafana_dashboard_with_a_tenant_variable() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    tenant_query = variables["tenant"]["query"]
    tenant_query = tenant_query["query"] if isinstance(tenant_query, dict) else tenant_query
    assert tenant_query.startswith("label_values(") and "tenant" in tenant_query
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    ids = [panel["id"] for panel in rows + _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_the_dashboard_has_the_sla_breach_risk_row_and_the_per_tenant_views() -> None:
    dashboard = _dashboard()
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows and rows[0].startswith("SLA breach risk")
    titles = " | ".join(panel["title"] for panel in _panels(dashboard))
    for needle in REQUIRED_PANELS:
        assert needle.lower() in titles.lower(), needle


def test_every_dashboard_panel_has_queries() -> None:
    for panel in _panels(_dashboard()):
        assert panel.get("targets"), f"panel {panel['title']!r} has no targets"
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), f"panel {panel['title']!r} has an empty query"


def test_every_dashboard_query_names_only_exported_metrics() -> None:
    exported = _exported_sample_names()
    for panel in _panels(_dashboard()):
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"panel {panel['title']!r}: no metric in {target['expr']!r}"
            assert names <= exported, f"panel {panel['title']!r}: {sorted(names - exported)} are not exported"


def test_the_dashboard_shows_every_exported_metric_and_filters_by_tenant() -> None:
    exposed = _exposed_names()
    shown: set[str] = set()
    for panel in _panels(_dashboard()):
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            shown |= {metric for metric in metrics.EXPORTED_METRICS if names & exposed[metric]}
            # The serving process's own availability ratio is the one metric without a tenant label.
            if names != {"inference_availability_ratio"}:
                assert 'tenant=~"$tenant"' in target["expr"], f"panel {panel['title']!r} ignores $tenant"
    assert set(metrics.EXPORTED_METRICS) - shown == set()


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (JSON is YAML); Grafana's $__rate_interval becomes 5m."""
    queries = [
        target["expr"].replace("$__rate_interval", "5m")
        for panel in _panels(_dashboard())
        for target in panel["targets"]
    ]
    rules = [{"record": f"dashboard:query:n{i}", "expr": expr} for i, expr in enumerate(queries)]
    rule_file = tmp_path / "dashboard-queries.yml"
    rule_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    done = _run("check", "rules", str(rule_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(queries)} rules found" in done.stdout
