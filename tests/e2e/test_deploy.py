"""docker/: the image, the compose stack, the Prometheus alert rules and the Grafana dashboard.

No container runs here. What is checked is what breaks a deployment silently: alert rules that
are invalid or never fire (promtool checks and unit-tests them), dashboard queries that name
metrics or labels refguard does not export (checked against tracker/metrics.py), compose wiring
that points at the wrong host, path or volume, and an image that would not contain the
migrations (the wheel is built from exactly the files the Dockerfile copies).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from aiohttp import web
from prometheus_client.metrics import MetricWrapperBase

from tracker import metrics
from tracker.db import APP_ROLE
from tracker.settings import Settings
from tracker.web.app import create_app
from tracker.web.server import STOP_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"
ALERTS = DOCKER / "prometheus" / "alerts.yml"
ALERTS_TEST = DOCKER / "prometheus" / "alerts_test.yml"
GRAFANA = DOCKER / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "refguard.json"

# Labels Prometheus attaches to every scraped series; a metric's own label of the same name is
# stored as exported_<name> (honor_labels is false in prometheus.yml).
TARGET_LABELS = frozenset({"job", "instance"})
# What the dashboard's Grafana variables stand for when the queries are checked.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m", "$__interval": "15s", "$__range": "6h", "$instance": ".*",
}


# --- helpers -------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name /metrics can expose (tracker/metrics.py), with its label names as
    Prometheus stores them after a scrape."""
    out: dict[str, frozenset[str]] = {}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        own = {f"exported_{n}" if n in TARGET_LABELS else n for n in obj._labelnames}
        labels = frozenset(own | TARGET_LABELS)
        name, kind = obj._name, obj._type
        if kind == "counter":
            out[name + "_total"] = labels
        elif kind == "gauge":
            out[name] = labels
        elif kind == "histogram":
            out[name + "_bucket"] = labels | {"le"}
            out[name + "_sum"] = out[name + "_count"] = labels
        elif kind == "summary":
            out[name + "_sum"] = out[name + "_count"] = labels
        else:
            out[name] = labels
    # Prometheus' own per-target series.
    out["up"] = TARGET_LABELS
    return out


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\s*\{([^{}]*)\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset({
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2",
})


Matcher = tuple[str, str, str]  # label, operator, value


def selectors(expr: str) -> list[tuple[str, list[Matcher]]]:
    """The series selectors of a PromQL expression: (metric name, [(label, op, value)]).

    Enough PromQL for the queries written here: selectors with or without matchers, functions,
    aggregations with by/without, binary operators, ranges and numbers.
    """
    found: list[tuple[str, list[Matcher]]] = []

    def take(match: re.Match[str]) -> str:
        matchers = [(m.group(1), m.group(2), m.group(3)) for m in _MATCHER.finditer(match.group(2))]
        if match.group(1) and match.group(1) not in _KEYWORDS:
            found.append((match.group(1), matchers))
        else:
            raise AssertionError(f"selector without a metric name in {expr!r}")
        return " "

    rest = _SELECTOR.sub(take, expr)
    rest = _GROUPING.sub(" ", _RANGE.sub(" ", _STRING.sub(" ", rest)))
    for ident, call in _IDENT.findall(rest):
        if not call and ident.lower() not in _KEYWORDS:
            found.append((ident, []))
    return found


def equal_matchers(matchers: list[Matcher]) -> dict[str, str]:
    return {label: value for label, op, value in matchers if op == "="}


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in _GROUPING.findall(_STRING.sub(" ", expr))
            for label in group.split(",") if label.strip()}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def dashboard_panels(data: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    def walk(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    yield from walk((data or dashboard())["panels"])


def substitute(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL with the Grafana variables substituted) of every query."""
    data = dashboard()
    out = [(f"variable {v['name']}", _variable_selector(v))
           for v in data.get("templating", {}).get("list", []) if v.get("type") == "query"]
    for panel in dashboard_panels(data):
        out.extend((panel["title"], substitute(t["expr"])) for t in panel.get("targets", []))
    return out


def _variable_selector(variable: dict[str, Any]) -> str:
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    match = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", text)
    assert match, f"variable {variable['name']}: expected label_values(selector, label)"
    return match.group(1)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; `make pytest` "
                    "installs it through the Makefile's promtool target)")
    return path


def run_promtool(*args: str | Path) -> str:
    proc = subprocess.run([promtool(), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return output


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions per stage, continuation lines joined, comments dropped."""
    stages: list[list[tuple[str, str]]] = []
    buffer = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        instruction, _, args = (buffer + line).partition(" ")
        buffer = ""
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), args.strip()))
    return stages


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, args in stage:
        if instruction == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def interpolate(value: str) -> str:
    """Compose variable substitution with nothing set: defaults apply."""
    value = re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)
    return value.replace("$$", "$")


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a named volume, or a host path resolved from docker/)."""
    out: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), str(volume["target"])
        else:
            source, target, *_ = [*volume.split(":"), ""]
            if not target:
                source, target = "", source
        if source.startswith((".", "/")):
            source = str((DOCKER / source).resolve())
        out[target.rstrip("/")] = source
    return out


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    assert parts, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def app_routes(tmp_path: Path) -> set[str]:
    """The `route` label values refguard can emit: the canonical path of every resource."""
    settings = Settings(data_dir=tmp_path, database_url="postgresql://u@db/refguard",
                        secret_key=b"k" * 32)
    routes = {"redirect"}

    def walk(app: web.Application) -> None:
        for resource in app.router.resources():
            routes.add(resource.canonical)
            if isinstance(resource, web.PrefixedSubAppResource):
                walk(resource._app)

    walk(create_app(settings, background=False))
    return routes


# --- the PromQL helpers find what they must --------------------------------------------------


def test_selector_parser_finds_metrics_labels_and_ignores_functions() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, route) (rate(refguard_api_seconds_bucket'
            '{route="/api/v1/x", instance=~".*"}[5m]))) / on (instance) group_left up'
            ' and deriv(refguard_journal_backlog_clicks[10m]) > 3 * 86400')
    assert selectors(expr) == [
        ("refguard_api_seconds_bucket", [("route", "=", "/api/v1/x"), ("instance", "=~", ".*")]),
        ("up", []),
        ("refguard_journal_backlog_clicks", []),
    ]
    assert grouping_labels(expr) == {"le", "route", "instance"}
    assert exported_series()["refguard_job_runs_total"] >= {"exported_job", "result", "job"}
    assert "refguard_redirect_seconds_bucket" in exported_series()
    assert "refguard_redirect_seconds" not in exported_series()


# --- Prometheus: config and alert rules ------------------------------------------------------


def test_alert_rules_pass_promtool_check() -> None:
    output = run_promtool("check", "rules", ALERTS)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_prometheus_config_passes_promtool_check_with_its_rule_files() -> None:
    output = run_promtool("check", "config", PROMETHEUS)
    assert "SUCCESS" in output
    config = load_yaml(PROMETHEUS)
    rule_files = [PROMETHEUS.parent / f for f in config["rule_files"]]
    assert ALERTS in rule_files, "prometheus.yml does not load alerts.yml"


def test_alert_rules_fire_on_incidents_and_stay_quiet_when_healthy() -> None:
    """promtool test rules: series in, alerts out (docker/prometheus/alerts_test.yml)."""
    output = run_promtool("test", "rules", ALERTS_TEST)
    assert "SUCCESS" in output


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    spec = load_yaml(ALERTS_TEST)
    assert [PurePosixPath(f).name for f in spec["rule_files"]] == [ALERTS.name]
    for case in spec["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts never shown to fire in alerts_test.yml"
    assert names - quiet == set(), "alerts never shown to stay quiet in alerts_test.yml"


def test_alert_rules_are_written_for_operations() -> None:
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules), "duplicate alert names"
    for rule in rules:
        name = rule.get("alert")
        assert name, f"not an alerting rule: {rule}"
        assert duration_s(str(rule.get("for", ""))) > 0, f"{name}: no `for:`"
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, name
        annotations = rule.get("annotations", {})
        assert len(annotations.get("summary", "")) > 10, f"{name}: no summary"
        assert len(annotations.get("description", "")) > 40, f"{name}: no description"


def test_alerts_cover_the_failures_ops_must_hear_about() -> None:
    rules = alert_rules()

    def alert_on(metric: str, *patterns: str) -> bool:
        return any(
            metric in {name for name, _ in selectors(r["expr"])}
            and all(re.search(p, r["expr"]) for p in patterns) for r in rules
        )

    assert alert_on("up", r'job="refguard"', r"== 0"), "refguard target down"
    assert alert_on("refguard_database_up", r"== 0"), "database down"
    assert alert_on("refguard_flush_failures_total", r"increase\("), "flush failing"
    assert alert_on("refguard_journal_backlog_clicks", r"deriv\(", r">\s*\d+"), "backlog growing"
    assert alert_on("refguard_review_queue_oldest_seconds", r">\s*3 \* 86400"), "review queue age"
    assert alert_on("refguard_geoip_database_age_seconds", r">\s*30 \* 86400"), "GeoIP age"
    assert alert_on("refguard_job_runs_total", r'result="failed"', r'exported_job="fraud_scan"'), (
        "fraud scan failing")


# --- metric and label names in PromQL --------------------------------------------------------


def check_promql(where: str, expr: str, series: dict[str, frozenset[str]],
                 routes: set[str]) -> list[str]:
    problems = []
    used = selectors(expr)
    if not used:
        problems.append(f"{where}: no metric in {expr!r}")
    allowed: set[str] = set()
    for name, matchers in used:
        if name not in series:
            problems.append(f"{where}: {name} is not exported by tracker/metrics.py")
            continue
        allowed |= series[name]
        unknown = {label for label, _, _ in matchers} - series[name]
        if unknown:
            problems.append(f"{where}: {name} has no label {sorted(unknown)}")
        for label, op, value in matchers:
            if label == "route" and op in {"=", "!="} and value not in routes:
                problems.append(f"{where}: route={value!r} is not a refguard route")
    unknown_groups = grouping_labels(expr) - allowed
    if allowed and unknown_groups:
        problems.append(f"{where}: grouping by unknown labels {sorted(unknown_groups)}")
    if "refguard_job_runs_total" in {n for n, _ in used} and "job" in grouping_labels(expr):
        problems.append(f"{where}: the refguard job name is `exported_job`, not `job`")
    return problems


def test_dashboard_and_alert_queries_use_only_exported_metrics_and_labels(
    tmp_path: Path,
) -> None:
    series = exported_series()
    routes = app_routes(tmp_path)
    assert "/api/v1/conversions" in routes
    problems: list[str] = []
    exprs = [*dashboard_exprs(), *((f"alert {r['alert']}", r["expr"]) for r in alert_rules())]
    for where, expr in exprs:
        problems += check_promql(where, expr, series, routes)
    assert problems == []
    # The check itself can fail.
    assert check_promql("x", 'rate(refguard_clicks{outcome="bot"}[1m])', series, routes)
    assert check_promql("x", 'refguard_rewards{state="paid"}', series, routes)
    assert check_promql("x", 'refguard_http_requests_total{route="/api/conversions"}',
                        series, routes)
    assert check_promql("x", "sum by (job) (refguard_job_runs_total)", series, routes)


def test_dashboard_legends_name_labels_the_queries_return() -> None:
    series = exported_series()
    problems = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = substitute(target["expr"])
            wanted = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            if re.search(r"\b(sum|max|min|avg|count|topk|bottomk)\b", expr):
                returned = grouping_labels(expr) - {"le"}
            else:
                returned = set().union(*(series.get(n, set()) for n, _ in selectors(expr)))
            if wanted - returned:
                problems.append(f"{panel['title']}: legend {sorted(wanted - returned)} "
                                f"not in the result of {expr!r}")
    assert problems == []


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [{"record": f"dashboard:query_{i}", "expr": expr}
             for i, (_, expr) in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}),
                    encoding="utf-8")
    output = run_promtool("check", "rules", path)
    assert f"SUCCESS: {len(rules)} rules found" in output
    # A broken query fails the same way.
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [
        {"record": "bad:q", "expr": "sum by (le (rate(refguard_redirect_seconds_bucket[1m]))"},
    ]}]}), encoding="utf-8")
    proc = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode != 0


# --- Grafana ---------------------------------------------------------------------------------

# Topic -> (series, required label values, patterns the panel's queries must contain).
DASHBOARD_TOPICS: dict[str, tuple[str, dict[str, str], tuple[str, ...]]] = {
    "redirect rate": ("refguard_http_requests_total", {"route": "redirect"}, (r"rate\(",)),
    "redirect latency p50/p99": ("refguard_redirect_seconds_bucket", {},
                                 (r"histogram_quantile\(0\.5,", r"histogram_quantile\(0\.99,")),
    "journal backlog clicks": ("refguard_journal_backlog_clicks", {}, ()),
    "journal backlog segments": ("refguard_journal_backlog_segments", {}, ()),
    "flush failures": ("refguard_flush_failures_total", {}, (r"(increase|rate)\(",)),
    "flush duration": ("refguard_flush_seconds_bucket", {}, (r"histogram_quantile\(",)),
    "clicks by outcome": ("refguard_clicks_total", {}, (r"by \(outcome\)",)),
    "conversions": ("refguard_http_requests_total", {"route": "/api/v1/conversions"},
                    (r"rate\(",)),
    "fraud flags by kind": ("refguard_fraud_flags", {}, (r"by \(kind\)",)),
    "fraud scan duration": ("refguard_fraud_scan_seconds_sum", {}, (r"by \(mode\)",)),
    "review queue size": ("refguard_review_queue_size", {}, ()),
    "review queue oldest age": ("refguard_review_queue_oldest_seconds", {}, ()),
    "rewards by status": ("refguard_rewards", {}, (r"by \(status\)",)),
    "payouts": ("refguard_paid_out", {}, (r"by \(currency\)",)),
    "database up": ("refguard_database_up", {}, ()),
    "GeoIP database age": ("refguard_geoip_database_age_seconds", {}, (r"by \(database\)",)),
    "job runs by result": ("refguard_job_runs_total", {}, (r"by \(exported_job, result\)",)),
}


def test_dashboard_covers_what_ops_watch() -> None:
    panels = [p for p in dashboard_panels() if p.get("targets")]
    missing = []
    for topic, (metric, labels, patterns) in DASHBOARD_TOPICS.items():
        def covers(panel: dict[str, Any], metric: str = metric, labels: dict[str, str] = labels,
                   patterns: tuple[str, ...] = patterns) -> bool:
            exprs = [t["expr"] for t in panel["targets"]]
            uses = any(name == metric and labels.items() <= equal_matchers(matchers).items()
                       for expr in exprs for name, matchers in selectors(expr))
            return uses and all(any(re.search(p, e) for e in exprs) for p in patterns)

        if not any(covers(p) for p in panels):
            missing.append(topic)
    assert missing == []


def test_dashboard_is_wired_to_the_provisioned_datasource() -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    url = urlsplit(source["url"])
    assert url.hostname in compose()["services"], "datasource url is not a compose service"
    assert url.hostname == "prometheus"
    assert url.port == 9090

    data = dashboard()
    assert data["uid"] and data["title"]
    panels = list(dashboard_panels(data))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                 for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & occupied, f"panel {panel['title']!r} overlaps another"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]
            # Per-node series follow the node selector.
            if any(n.startswith("refguard_") for n, _ in selectors(substitute(target["expr"]))):
                assert 'instance=~"$instance"' in target["expr"], panel["title"]
    for variable in data["templating"]["list"]:
        assert variable["datasource"]["uid"] == source["uid"]


def test_grafana_provisioning_and_dashboards_are_mounted_where_grafana_reads_them() -> None:
    grafana = compose()["services"]["grafana"]
    mounted = mounts(grafana)
    assert mounted.get("/etc/grafana/provisioning") == str(GRAFANA / "provisioning")
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "refguard.yml")["providers"]
    paths = {p["options"]["path"].rstrip("/") for p in providers}
    assert any(mounted.get(path) == str(DASHBOARD.parent) for path in paths), (
        "the dashboard provider's path is not where docker/grafana/dashboards is mounted")
    assert grafana.get("healthcheck", {}).get("test")


# --- compose ---------------------------------------------------------------------------------


def test_compose_postgres_is_16_with_a_volume_and_a_healthcheck() -> None:
    spec = compose()
    postgres = spec["services"]["postgres"]
    assert re.fullmatch(r"postgres:16(?:[.-].*)?", postgres["image"]), postgres["image"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume = mounts(postgres).get("/var/lib/postgresql/data")
    assert volume in spec["volumes"], "PostgreSQL data is not on a named volume"


def test_compose_refguard_serves_two_workers_with_jobs_against_postgres(tmp_path: Path) -> None:
    spec = compose()
    services = spec["services"]
    refguard = services["refguard"]
    command = refguard["command"]
    args = command.split() if isinstance(command, str) else [str(a) for a in command]
    env = {k: interpolate(v) for k, v in service_env(refguard).items()}
    assert args[0] == "serve"
    workers = args[args.index("--workers") + 1] if "--workers" in args else env.get(
        "REFGUARD_WORKERS")
    assert workers == "2"
    assert "--no-jobs" not in args, "the jobs must run"

    # The environment is one refguard accepts, and points at the postgres service.
    assert "REFGUARD_TRUSTED_PROXIES" in env
    image_env = dockerfile_env(dockerfile_stages()[-1])
    settings = Settings.from_env({**image_env, **env, "REFGUARD_DATA_DIR": str(tmp_path)})
    assert settings.trusted_proxies == ()
    assert settings.database_url is not None
    dsn = urlsplit(settings.database_url)
    postgres_env = {k: interpolate(v) for k, v in service_env(services["postgres"]).items()}
    assert dsn.hostname == "postgres"
    assert dsn.path.lstrip("/") == postgres_env["POSTGRES_DB"]
    assert refguard["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The server runs as the application's role, never as the owner (who could switch the
    # ledger's append-only triggers off), and its container does not hold the owner's password.
    assert dsn.username == APP_ROLE != postgres_env["POSTGRES_USER"]
    raw_env = service_env(refguard)
    assert "REFGUARD_MIGRATE_DATABASE_URL" not in raw_env
    assert not any("POSTGRES_PASSWORD" in v for v in raw_env.values()), (
        "the owner's password is in the server's environment")

    # The owner migrates first, in a one-shot service that also sets up the application's
    # login role with the password of the server's DSN.
    migrate = services["migrate"]
    assert [str(a) for a in migrate["command"]] == ["migrate"]
    assert migrate.get("restart") == "no"
    assert migrate["image"] == refguard["image"] and migrate["build"] == refguard["build"]
    migrate_env = {k: interpolate(v) for k, v in service_env(migrate).items()}
    owner = urlsplit(migrate_env["REFGUARD_MIGRATE_DATABASE_URL"])
    assert (owner.hostname, owner.username, owner.password, owner.path.lstrip("/")) == (
        "postgres", postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_PASSWORD"],
        postgres_env["POSTGRES_DB"])
    assert migrate_env["REFGUARD_DATABASE_URL"] == settings.database_url
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert refguard["depends_on"]["migrate"]["condition"] == "service_completed_successfully"

    build = refguard["build"]
    assert (DOCKER / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_refguard_keeps_its_journal_across_restarts() -> None:
    spec = compose()
    refguard = spec["services"]["refguard"]
    image_env = dockerfile_env(dockerfile_stages()[-1])
    data_dir = service_env(refguard).get("REFGUARD_DATA_DIR") or image_env["REFGUARD_DATA_DIR"]
    source = mounts(refguard).get(data_dir.rstrip("/"))
    assert source, f"no volume on the data dir {data_dir} (the click journal)"
    assert source in spec["volumes"] or Path(source).is_absolute(), "anonymous volume"
    # Shutdown seals the workers' segments, then drains the journal: each step may take
    # STOP_TIMEOUT_S, and docker kills the container when the grace period ends.
    assert duration_s(refguard["stop_grace_period"]) > 2 * STOP_TIMEOUT_S


def test_compose_prometheus_loads_the_config_and_rules_and_scrapes_refguard() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    flags = dict(a.split("=", 1) for a in prometheus["command"] if "=" in a)
    config_path = PurePosixPath(flags["--config.file"])
    mounted = mounts(prometheus)
    assert mounted.get(str(config_path)) == str(PROMETHEUS)
    for rule_file in load_yaml(PROMETHEUS)["rule_files"]:
        in_container = config_path.parent / rule_file
        assert mounted.get(str(in_container)) == str(PROMETHEUS.parent / rule_file), (
            f"{rule_file} is not mounted where prometheus.yml looks for it")
    assert prometheus.get("healthcheck", {}).get("test")

    image_env = dockerfile_env(dockerfile_stages()[-1])
    port = service_env(services["refguard"]).get("REFGUARD_PORT") or image_env["REFGUARD_PORT"]
    (job,) = [j for j in load_yaml(PROMETHEUS)["scrape_configs"] if j["job_name"] == "refguard"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert not job.get("honor_labels"), "alerts and dashboard query exported_job"
    targets = [t for c in job["static_configs"] for t in c["targets"]]
    assert f"refguard:{port}" in targets


def test_every_service_has_a_healthcheck() -> None:
    services = compose()["services"]
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if service.get("restart") == "no" and any(
                (d or {}).get("condition") == "service_completed_successfully"
                for other in services.values()
                for d in [(other.get("depends_on") or {}).get(name)]):
            continue  # a one-shot (migrate): others wait for it to exit, not to be healthy
        assert not check.get("disable"), name
        if name == "refguard" and not check:
            continue  # the image's HEALTHCHECK, checked below
        assert check.get("test"), f"{name} has no healthcheck"


# --- the image -------------------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user_with_a_liveness_check() -> None:
    final = dockerfile_stages()[-1]
    users = [args for instr, args in final if instr == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    healthchecks = [args for instr, args in final if instr == "HEALTHCHECK"]
    assert healthchecks and "/healthz" in healthchecks[-1]
    # Exec form (JSON), or Docker silently runs it through /bin/sh: as ENTRYPOINT, sh would be
    # PID 1 and keep SIGTERM from refguard's supervisor (journal not sealed on stop).
    check = json.loads(healthchecks[-1].split(" CMD ", 1)[1])
    assert check[:2] == ["python", "-c"]
    compile(check[2], "HEALTHCHECK", "exec")
    entry = [args for instr, args in final if instr == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1])[0] == "refguard"
    env = dockerfile_env(final)
    volumes = [v for instr, args in final if instr == "VOLUME" for v in json.loads(args)]
    assert env["REFGUARD_DATA_DIR"] in volumes
    # The user must own the data dir (journal, generated secret): a fresh named volume copies
    # the image's directory, ownership included.
    user = users[-1].split(":")[0]
    data_dir = re.escape(env["REFGUARD_DATA_DIR"])
    owned = (rf"install -d\b[^&;]*-o {user}\b[^&;]*{data_dir}"
             rf"|chown [^&;]*{user}\S* [^&;]*{data_dir}")
    assert any(instr == "RUN" and re.search(owned, args) for instr, args in final), (
        f"{env['REFGUARD_DATA_DIR']} is not made {user}'s in the image")
    assert env["REFGUARD_HOST"] == "0.0.0.0"  # noqa: S104 (inside the container)


def build_stage_copies() -> tuple[list[tuple[str, str]], str]:
    """(source, destination) of the COPY instructions from the build context, and the stage's
    WORKDIR, for the stage that runs `pip install .`."""
    for stage in dockerfile_stages():
        if any(i == "RUN" and re.search(r"pip install (\S+ )*\.(\s|$)", a) for i, a in stage):
            workdir = "/"
            copies = []
            for instr, args in stage:
                if instr == "WORKDIR":
                    workdir = args
                elif instr == "COPY" and "--from" not in args:
                    *sources, dest = args.split()
                    copies += [(s, dest) for s in sources]
            return copies, workdir
    raise AssertionError("no stage runs `pip install .`")


def test_dockerfile_copies_everything_pip_install_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    copies, _ = build_stage_copies()
    sources = {PurePosixPath(s).as_posix().rstrip("/") for s, _ in copies}
    needed = {"pyproject.toml", project["project"]["readme"]}
    included = project["tool"]["setuptools"]["packages"]["find"]["include"]
    needed |= {p.split(".")[0] for p in included}
    assert needed - sources == set()


def test_the_image_wheel_contains_every_package_and_the_migrations(tmp_path: Path) -> None:
    """Build the wheel from exactly what the Dockerfile copies, as `pip install .` does there,
    and load the migrations from it the way tracker/db.py does (importlib.resources)."""
    copies, _ = build_stage_copies()
    src = tmp_path / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for source, dest in copies:
        target = src / (source if dest.endswith("/") or dest in {".", "./"} else dest)
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, ignore=ignore)
        else:
            shutil.copy2(ROOT / source, target)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir",
         str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        unreachable = ("Could not find a version that satisfies", "NewConnectionError",
                       "Temporary failure in name resolution", "No matching distribution")
        if any(s in proc.stderr for s in unreachable):
            pytest.skip("no package index reachable for the build backend (setuptools)")
        raise AssertionError(proc.stdout + proc.stderr)
    (wheel,) = (tmp_path / "dist").glob("refguard-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "site")

    # Every module of the copied packages is installed (a subpackage that package discovery
    # missed would be missing from the image), and so are the templates and static files of
    # the pages (package data).
    expected = {
        path.relative_to(src).as_posix()
        for top in ("tracker", "geo", "fraud", "attribution", "growth", "migrations")
        for path in (src / top).rglob("*")
        if path.is_file() and path.suffix in {".py", ".sql", ".typed", ".html", ".css", ".js"}
    }
    assert expected - names == set()

    probe = (
        "import json, tracker; from tracker.db import load_migrations; "
        "print(json.dumps([tracker.__file__, [m.name for m in load_migrations()]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, check=True, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin"},
    ).stdout
    module_file, loaded = json.loads(out)
    assert module_file.startswith(str(tmp_path / "site"))
    assert loaded == sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert loaded, "no migrations"
