"""The alert rules, their runbooks and the operations dashboard, checked offline.

promtool comes from Debian's `prometheus` package; without it these tests fail, not skip.
"""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "helm" / "plantwire" / "files"
RULES = FILES / "prometheus" / "alerts.yml"
RULE_TESTS = FILES / "prometheus" / "alerts_test.yml"
DASHBOARD = FILES / "dashboards" / "plantwire-operations.json"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/plantwire/plantwire/blob/main/docs/runbooks/"
SECTIONS = ("## What it means", "## How to confirm", "## How to fix", "## How to escalate")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail the test if it is not installed."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: install Debian's `prometheus` package")
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, cwd=RULES.parent
    )


def alerts() -> list[dict[str, Any]]:
    """Every alerting rule of the rule file."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def kebab(name: str) -> str:
    """AgentOffline -> agent-offline."""
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts with no test where they fire"
    assert names - quiet == set(), "alerts with no test where they stay quiet"


def test_every_alert_has_severity_for_annotations_and_its_runbook() -> None:
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in alerts():
        name = rule["alert"]
        assert "for" in rule, name
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        notes = rule["annotations"]
        assert notes["summary"], name
        assert notes["description"], name
        assert notes["runbook_url"] == f"{RUNBOOK_BASE}{kebab(name)}.md", name
        assert (RUNBOOKS / f"{kebab(name)}.md").is_file(), f"{name}: runbook missing"


def test_every_runbook_belongs_to_an_alert_and_is_complete_and_indexed() -> None:
    names = {kebab(rule["alert"]) for rule in alerts()}
    books = {path.stem for path in RUNBOOKS.glob("*.md")} - {"README"}
    assert books == names, "one runbook per alert, no more"
    index = (RUNBOOKS / "README.md").read_text()
    for book in sorted(books):
        text = (RUNBOOKS / f"{book}.md").read_text()
        missing = [section for section in SECTIONS if section not in text]
        assert not missing, f"{book}.md lacks {missing}"
        assert f"({book}.md)" in index, f"README.md does not link {book}.md"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"]
    assert dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["id"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['id']} {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}", panel["id"]
        for target in panel["targets"]:
            assert target["expr"].strip(), f"panel {panel['id']} has an empty query"
            assert target["datasource"]["uid"] == "${datasource}", panel["id"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["id"]
