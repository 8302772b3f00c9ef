"""deploy/observability/: the alert rules hold up under promtool, and every metric the dashboard
and the alert rules use is really exported.

promtool (Debian's, see testkit/promtool.py) checks alerts.yaml and runs its unit tests,
alerts.test.yaml, in which every alert must fire on a synthetic series and stay silent on a
healthy one. The metric check starts the real worker and supervisor against a fresh database,
drives one job through the worker (so that labelled series exist), scrapes both /metrics and
compares metric names. Label names used in selectors and `by (...)` clauses are checked the
same way.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from testkit.localpg import free_port
from testkit.promtool import PromtoolUnavailable, ensure_promtool
from tests.conftest import Spawn

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "limbo-dashboard.json"
ALERTS = OBSERVABILITY / "alerts.yaml"
ALERT_TESTS = OBSERVABILITY / "alerts.test.yaml"
# Series that Prometheus makes itself, not the services; nothing else is exempt.
PROMETHEUS_OWN = {"up"}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance", "le", "quantile"}

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan", "le",
}  # fmt: skip
IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


# -- what the files use ------------------------------------------------------------------------


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    exprs.append(value)
                elif key == "query" and isinstance(value, dict) and "query" in value:
                    exprs.append(str(value["query"]))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    return exprs


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def strip_promql(expr: str) -> tuple[str, set[str]]:
    """The expression without strings, ranges and label matchers; and the label names used."""
    labels: set[str] = set()
    expr = re.sub(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*(\w+)\s*\)", r"\1", expr)
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    for clause in re.findall(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr
    ):
        labels |= {label.strip() for label in clause.split(",") if label.strip()}
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r'"[^"]*"', " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges, including $__rate_interval
    expr = re.sub(r"\$\w+", " ", expr)  # dashboard variables
    return expr, labels


def metric_names(expr: str) -> set[str]:
    stripped, _ = strip_promql(expr)
    names = set()
    for match in IDENTIFIER.finditer(stripped):
        name = match.group(0)
        following = stripped[match.end() :].lstrip()
        if following.startswith("(") or name.lower() in PROMQL_WORDS:
            continue  # a function or a keyword
        if re.fullmatch(r"\d.*", name):
            continue
        names.add(name)
    return names


def used() -> dict[str, set[str]]:
    """metric or label name -> where it is used."""
    uses: dict[str, set[str]] = {}
    for source, exprs in (("dashboard", dashboard_exprs()), ("alerts", alert_exprs())):
        assert exprs, f"no queries found in the {source}"
        for expr in exprs:
            for name in metric_names(expr):
                uses.setdefault(name, set()).add(source)
    return uses


def used_labels() -> set[str]:
    labels: set[str] = set()
    for expr in dashboard_exprs() + alert_exprs():
        labels |= strip_promql(expr)[1]
    return labels


def test_the_extractor_finds_names_and_skips_functions() -> None:
    expr = (
        'histogram_quantile(0.95, sum(rate(limbo_x_bucket{rule=~"a|b"}[5m])) by (le))'
        " / ignoring(job) up or vector(0)"
    )
    assert metric_names(expr) == {"limbo_x_bucket", "up"}
    assert strip_promql(expr)[1] == {"rule", "le", "job"}


# -- what the services export -------------------------------------------------------------------


def exposition_names(text: str) -> tuple[set[str], set[str]]:
    """Sample names (including those of families without samples yet) and label names."""
    names: set[str] = set()
    labels: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created", ""),
        "gauge": ("",),
        "info": ("_info",),
        "untyped": ("",),
    }
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            base = family.removesuffix("_total") if kind == "counter" else family
            names |= {base + suffix for suffix in suffixes.get(kind, ("",))}
        elif line and not line.startswith("#"):
            sample = IDENTIFIER.match(line)
            assert sample is not None
            names.add(sample.group(0))
            labels |= set(re.findall(r'([a-zA-Z_]\w*)="', line.split("}")[0]))
    return names, labels


@pytest.fixture
def scraped(spawn: Spawn, database_url: str) -> tuple[set[str], set[str]]:
    worker_port, supervisor_port = free_port(), free_port()
    token = "obs-token"
    worker = spawn(
        "services.worker",
        {
            "DATABASE_URL": database_url,
            "WORKER_PORT": str(worker_port),
            "WORKER_API_TOKEN": token,
            "WORKER_EXECUTOR_ID": "obs-worker",
            "DEMO_STEP_SECONDS": "0.01",
            "DEMO_SLEEP_SECONDS": "0.01",
        },
        name="worker",
    )
    supervisor = spawn(
        "services.supervisor",
        {"DATABASE_URL": database_url, "SUPERVISOR_PORT": str(supervisor_port)},
        name="supervisor",
    )
    worker_url = f"http://127.0.0.1:{worker_port}"
    supervisor_url = f"http://127.0.0.1:{supervisor_port}"
    worker.wait_http(f"{worker_url}/readyz", timeout=60)
    supervisor.wait_http(f"{supervisor_url}/readyz", timeout=60)
    headers = {"Authorization": f"Bearer {token}"}
    # one job through, and a duplicate: the labelled series of both outcomes then exist
    job = {"children": 1, "steps": 1, "dedup_id": "obs-1"}
    created = httpx.post(f"{worker_url}/workflows", json=job, headers=headers)
    assert created.status_code < 300, created.text
    duplicate = httpx.post(f"{worker_url}/workflows", json=job, headers=headers)
    assert duplicate.status_code == 409, duplicate.text
    workflow_id = created.json().get("workflow_id") or created.json().get("id")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = httpx.get(f"{worker_url}/workflows/{workflow_id}", headers=headers).json()
        if status.get("status") == "SUCCESS":
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"workflow {workflow_id} did not succeed: {status}")
    time.sleep(2.5)  # a few supervisor sweeps
    names: set[str] = set()
    labels: set[str] = set()
    for url in (worker_url, supervisor_url):
        response = httpx.get(f"{url}/metrics", timeout=10)
        assert response.status_code == 200
        more_names, more_labels = exposition_names(response.text)
        names |= more_names
        labels |= more_labels
    return names, labels


def declared_labels() -> set[str]:
    """Label names the services' metrics declare (a labelled family has no series until used)."""
    import prometheus_client

    import services.supervisor.metrics
    import services.worker.metrics

    modules = (services.supervisor.metrics, services.worker.metrics)
    labels: set[str] = set()
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, prometheus_client.metrics.MetricWrapperBase):
                labels |= set(getattr(value, "_labelnames", ()))
    assert "rule" in labels  # the introspection works
    return labels


def test_every_used_metric_is_exported(scraped: tuple[set[str], set[str]]) -> None:
    exported, exported_labels = scraped
    uses = used()
    missing = {
        name: sorted(where)
        for name, where in uses.items()
        if name not in exported and name not in PROMETHEUS_OWN
    }
    ours = sorted(n for n in exported if n.startswith(("limbo_", "litestar_")))
    assert not missing, f"metrics used but not exported: {missing}\nexported: {ours}"
    unknown_labels = used_labels() - exported_labels - declared_labels() - TARGET_LABELS
    assert not unknown_labels, (
        f"labels used but not on any exported series: {sorted(unknown_labels)}; "
        f"exported: {sorted(exported_labels)}"
    )


# -- promtool: the rules are valid, and each alert fires and stays silent when it should ------


@pytest.fixture(scope="session")
def promtool() -> Path:
    try:
        return ensure_promtool()
    except PromtoolUnavailable as exc:
        pytest.fail(f"promtool is needed: {exc}")


def run_promtool(promtool: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rules(promtool: Path) -> None:
    result = run_promtool(promtool, "check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    assert found is not None, result.stdout
    assert int(found.group(1)) == len(alerts())


def test_promtool_unit_tests_of_the_alerts_pass(promtool: Path) -> None:
    result = run_promtool(promtool, "test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def duration(text: str) -> float:
    """A Prometheus duration (`90s`, `15m`, `1h30m`) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(number) * units[unit] for number, unit in parts)


def alerts(rules: dict[str, Any] | None = None) -> dict[str, float]:
    """alert name -> its `for`, in seconds."""
    rules = rules if rules is not None else yaml.safe_load(ALERTS.read_text())
    return {
        rule["alert"]: duration(rule.get("for", "0s"))
        for group in rules["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def missing_cases(rules: dict[str, Any], unit_tests: dict[str, Any]) -> list[str]:
    """What the unit tests lack: for each alert, a case where it fires and one where it stays
    silent on input series, each evaluated once the alert's `for` has passed."""
    fires: set[str] = set()
    silent: set[str] = set()
    wanted = alerts(rules)
    for group in unit_tests.get("tests", []):
        for case in group.get("alert_rule_test", []):
            name = case["alertname"]
            if name not in wanted or duration(case["eval_time"]) < wanted[name]:
                continue  # pending alerts are never reported: such a case proves nothing
            if case.get("exp_alerts"):
                fires.add(name)
            elif group.get("input_series"):
                silent.add(name)
    return [f"{name}: no case where it fires" for name in wanted if name not in fires] + [
        f"{name}: no case where it stays silent" for name in wanted if name not in silent
    ]


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    unit_tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert unit_tests["rule_files"] == [ALERTS.name]
    assert not missing_cases(yaml.safe_load(ALERTS.read_text()), unit_tests)


def test_an_alert_without_cases_is_noticed() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    unit_tests = yaml.safe_load(ALERT_TESTS.read_text())
    rules["groups"][0]["rules"].append({"alert": "LimboNew", "expr": "vector(1)", "for": "5m"})
    assert missing_cases(rules, unit_tests) == [
        "LimboNew: no case where it fires",
        "LimboNew: no case where it stays silent",
    ]
    # a silent case evaluated before the alert's `for` does not count
    unit_tests["tests"].append(
        {
            "input_series": [{"series": "up", "values": "1x10"}],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "LimboNew", "exp_alerts": []},
                {"eval_time": "6m", "alertname": "LimboNew", "exp_alerts": [{"exp_labels": {}}]},
            ],
        }
    )
    assert missing_cases(rules, unit_tests) == ["LimboNew: no case where it stays silent"]


@pytest.mark.parametrize(
    ("mutation", "expr"),
    [("never fires", "vector(1) < 0"), ("always fires", "vector(1)")],
)
def test_the_unit_tests_catch_a_broken_alert(
    promtool: Path, tmp_path: Path, mutation: str, expr: str
) -> None:
    """With every expression replaced by one that never (always) fires, the firing (silent)
    case of every single alert fails."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = expr
    (tmp_path / ALERTS.name).write_text(yaml.safe_dump(rules))
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    result = run_promtool(promtool, "test", "rules", tmp_path / ALERT_TESTS.name)
    assert result.returncode != 0, f"{mutation}: {result.stdout}"
    failed = set(re.findall(r"alertname: (\w+), time:", result.stdout + result.stderr))
    assert failed == set(alerts()), f"{mutation}: not caught for {set(alerts()) - failed}"
