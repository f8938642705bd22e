"""Every shell script of the repository passes shellcheck."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def shell_scripts() -> list[str]:
    """Tracked shell scripts: `*.sh` and CI's entry point."""
    listed = subprocess.run(
        ["git", "ls-files", "*.sh", ".ci/run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return listed.stdout.split()


def test_there_are_scripts_to_check() -> None:
    assert {".ci/run", "scripts/test.sh", "scripts/backup/restore-pitr.sh"} <= set(shell_scripts())


def test_shellcheck_reports_nothing() -> None:
    result = subprocess.run(
        ["shellcheck", "--severity=style", *shell_scripts()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_reports_a_broken_script(tmp_path: Path) -> None:
    script = tmp_path / "broken.sh"
    script.write_text("#!/usr/bin/env bash\nrm -rf $1/data\n")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "SC2086" in result.stdout
