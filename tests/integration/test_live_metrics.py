"""The dashboard and the alert rules, evaluated by a real Prometheus scraping a live plant.

Every panel's and every rule's expression must run without error, and every metric it names
must be one the collector or the agent really exported: a panel over a metric nobody exports
draws an empty graph forever, and an alert over one never fires.
"""

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from protocols.simulator.runner import Simulator
from shared.mqtt import MqttClient
from shared.readings import DataType, Reading
from shared.wire import Topics, encode_batch
from tests.harness import (
    AUTH,
    agent_config,
    collector_config,
    eventually,
    modbus_device,
    running_agent,
    running_collector,
)
from tests.servers import MosquittoServer, running_prometheus

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "helm" / "plantwire" / "files"
RULES = FILES / "prometheus" / "alerts.yml"
DASHBOARD = FILES / "dashboards" / "plantwire-operations.json"

GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "__range_s": "3600",
}
"""Values for Grafana's built-in variables, so a panel's query runs as Grafana would send it."""

SYNTHETIC = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "ALERTS",
        "ALERTS_FOR_STATE",
    }
)
"""Series Prometheus makes itself: present in any scrape, so no proof the programs export them."""

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][\w:]*")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects, exactly as written (suffixes included)."""
    if "__name__" in expr:
        raise ValueError(f"selecting by __name__ is not understood here: {expr}")
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges, subqueries
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        if before.isalnum() or before in "_.:":
            continue  # the tail of a number or duration: 1e3, 5m
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def as_grafana_sends(expr: str) -> str:
    """The expression with Grafana's built-in variables replaced; fail on any other variable."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VARIABLES:
            raise AssertionError(f"unknown Grafana variable ${name} in {expr}")
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expression) of every target of every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"])
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def rule_queries() -> list[tuple[str, str]]:
    """(where, expression) of every rule."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [
        (f"rule {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in groups
        for rule in group["rules"]
    ]


def test_metric_names_are_read_from_selectors_only() -> None:
    expr = (
        'sum by (le, job) (rate(a_bucket{route=~"/api/.+", x="b_total"}[5m]))'
        " / on (job) group_left (instance) b_total offset 5m > 1e3"
        ' or max without (state) (c:recorded) or vector(0) or label_replace(d, "x", "$1", "y", "z")'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c:recorded", "d"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[1m:10s])))") == {
        "x_bucket"
    }
    assert as_grafana_sends("rate(x[$__rate_interval]) + rate(y[${__interval}])") == (
        "rate(x[1m]) + rate(y[15s])"
    )
    with pytest.raises(AssertionError, match="unknown Grafana variable"):
        as_grafana_sends("x{job=~'$job'}")


def bad_batch(agent: str) -> bytes:
    """A batch with one good reading and one from 1601: the collector refuses the second."""
    now_us = time.time_ns() // 1000
    readings = [
        Reading("d", "t", DataType.FLOAT64, now_us, 1.0),
        Reading("d", "t", DataType.FLOAT64, -11_644_473_600_000_000, 2.0),
    ]
    return encode_batch(agent, 1, [1, 2], readings)


@pytest.mark.integration
async def test_every_panel_and_rule_queries_metrics_the_programs_export(
    simulator: Simulator,
    mosquitto: MosquittoServer,
    database_url: str,
    topic_prefix: str,
    publisher: MqttClient,
    tmp_path: Path,
) -> None:
    queries = dashboard_queries() + rule_queries()
    assert simulator.modbus_port is not None
    collector = collector_config(
        database_url=database_url,
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        client_id=f"{topic_prefix}-c",
        sections={
            "agents": {"offline_after": "4s"},
            # The sample's machine reads this test's agent, so equipment_status has series.
            "equipment": {"file": str(ROOT / "config" / "equipment.yaml"), "status_interval": "1s"},
        },
    )
    agent = agent_config(
        agent_id="line-1",
        buffer=tmp_path / "b.sqlite",
        mqtt_url=mosquitto.url,
        prefix=topic_prefix,
        devices=[modbus_device(simulator.modbus_port)],
    )
    topics = Topics(topic_prefix)
    async with running_collector(collector) as base, running_agent(agent) as service:
        # A dead letter and a refused reading, so their labelled counters have a series.
        await publisher.publish(topics.batch("line-9"), b"not a batch", timeout=5)
        await publisher.publish(topics.batch("line-9"), bad_batch("line-9"), timeout=5)
        targets = {
            "plantwire-collector": [base.removeprefix("http://")],
            "plantwire-agent": [f"127.0.0.1:{service.http.port}"],
        }
        with running_prometheus(targets, [RULES]) as prometheus:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

                async def api(path: str, **params: str) -> Any:
                    async with http.get(f"{prometheus.url}/api/v1/{path}", params=params) as r:
                        body = await r.json()
                    if body["status"] != "success":
                        raise AssertionError(f"{path} {params}: {body.get('error')}")
                    return body["data"]

                async def scraped_a_few_times() -> bool:
                    await http.get(f"{base}/api/v1/agents", headers=AUTH)  # API series too
                    data = await api("query", query="count_over_time(up[1m]) >= 3 and up == 1")
                    return {s["metric"]["job"] for s in data["result"]} == set(targets)

                try:
                    await eventually(scraped_a_few_times, timeout=20, what="three scrapes of both")
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{prometheus.log()}") from None

                wanted = {name for _, expr in queries for name in metric_names(expr)}

                async def exported() -> set[str]:
                    return set(await api("label/__name__/values")) - SYNTHETIC

                async def all_exported() -> bool:
                    return wanted <= await exported()

                # The agent registry and the dead letter take a few seconds to show.
                try:
                    await eventually(all_exported, timeout=20, what="every metric named")
                except AssertionError:
                    missing = {
                        where: sorted(metric_names(expr) - await exported())
                        for where, expr in queries
                        if metric_names(expr) - await exported()
                    }
                    raise AssertionError(f"metrics nobody exports: {missing}") from None

                failures = []
                for where, expr in queries:
                    try:
                        await api("query", query=as_grafana_sends(expr))
                    except AssertionError as exc:
                        failures.append(f"{where}: {exc}")
                assert not failures, "\n".join(failures)

                # Not only names: the figures are the plant's.
                stored = await api("query", query=as_grafana_sends(queries[0][1]))
                assert float(stored["result"][0]["value"][1]) > 0, "readings are being stored"
                online = await api("query", query="plantwire_collector_agent_online")
                # line-9 only sent batches, never a birth: known, but not known to be online.
                assert {s["metric"]["agent"]: s["value"][1] for s in online["result"]} == {
                    "line-1": "1",
                    "line-9": "0",
                }

                expected = {where.removeprefix("rule ") for where, _ in rule_queries()}

                async def rules_evaluated() -> bool:
                    groups = (await api("rules"))["groups"]
                    rules = [rule for group in groups for rule in group["rules"]]
                    return {r["name"] for r in rules} == expected and all(
                        r["health"] != "unknown" for r in rules
                    )

                await eventually(rules_evaluated, timeout=10, what="every rule evaluated")
                rules = [r for g in (await api("rules"))["groups"] for r in g["rules"]]
                broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
                assert not broken, f"rules failing in Prometheus: {broken}"
