"""Dependency direction between the packages, and the programs' extras."""

import ast
import importlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from shared.extras import missing_modules, require_extra

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    "shared": {"shared"},
    "protocols": {"protocols", "shared"},
    "agent": {"agent", "protocols", "shared"},
    "collector": {"collector", "shared"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_import_only_downstream(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        unexpected = imported_packages(path) - ALLOWED[package]
        assert not unexpected, f"{path.relative_to(ROOT)} imports {unexpected}"


def test_the_agent_loads_no_server_code() -> None:
    code = (
        "import sys, agent.cli, agent.service\n"
        "bad = {'aiohttp', 'psycopg', 'psycopg_pool', 'collector'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_missing_extra_gives_an_install_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert missing_modules(["json", "surely_not_a_module_here"]) == ["surely_not_a_module_here"]
    with pytest.raises(SystemExit) as caught:
        require_extra("plantwire-x", "collector", ["surely_not_a_module_here"])
    assert caught.value.code == 2
    assert "pip install 'plantwire[collector]'" in capsys.readouterr().err
    require_extra("plantwire-x", "collector", ["json"])


@pytest.mark.parametrize("package", ["agent", "collector", "protocols.simulator"])
def test_entry_points_check_their_extra_then_run(
    package: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = importlib.import_module(f"{package}.__main__")
    monkeypatch.setattr(sys, "argv", ["plantwire", "--help"])
    with pytest.raises(SystemExit) as caught:
        entry.main()
    assert caught.value.code == 0
    assert "usage:" in capsys.readouterr().out


PRAGMA = re.compile(r"#\s*pragma:\s*no\s*cover(?P<rest>.*)$")


def test_every_coverage_exclusion_gives_its_reason() -> None:
    bare = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in ALLOWED
        for path in (ROOT / package).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if (found := PRAGMA.search(line)) and not re.match(r"\s*-\s*\w", found["rest"])
    ]
    assert not bare, f"`# pragma: no cover` without `- reason` at {bare}"


def test_the_coverage_floor_is_in_the_project_file() -> None:
    report = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["coverage"]
    assert report["run"]["branch"] is True
    assert report["report"]["fail_under"] == 100
