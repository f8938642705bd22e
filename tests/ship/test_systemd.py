"""The agent's systemd unit: verified by systemd-analyze, and checked for what the agent needs."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ENV_OVERRIDES

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "plantwire-agent.service"
INSTALLED_PROGRAM = "/opt/plantwire/bin/plantwire-agent"


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order; repeated keys are kept."""
    section = ""
    found = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line}"
        found.append((section, key.strip(), value.strip()))
    return found


def values(section: str, key: str) -> list[str]:
    """Every value the unit assigns to a key of a section."""
    return [
        v for s, k, v in directives(UNIT.read_text(encoding="utf-8")) if (s, k) == (section, key)
    ]


def one(section: str, key: str) -> str:
    """The value of a key the unit assigns exactly once."""
    found = values(section, key)
    assert len(found) == 1, f"[{section}] {key}: {found}"
    return found[0]


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: apt-get install systemd"
    return found


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze verify on a unit file."""
    return subprocess.run(
        [_systemd_analyze(), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def runnable_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at this venv's plantwire-agent, since /opt is not here."""
    program = Path(sys.executable).parent / "plantwire-agent"
    assert program.is_file(), f"{program} missing: install the project into the venv"
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(INSTALLED_PROGRAM) == 1
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED_PROGRAM, str(program)), encoding="utf-8")
    return unit


def test_systemd_analyze_verify_finds_nothing(runnable_unit: Path) -> None:
    """systemd-analyze verify accepts the unit without a single warning."""
    result = verify(runnable_unit)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_analyze_verify_reports_mistakes(runnable_unit: Path) -> None:
    """The check really runs: an unknown key and an unknown syscall group are reported."""
    text = runnable_unit.read_text(encoding="utf-8")
    runnable_unit.write_text(
        text.replace("[Service]\n", "[Service]\nProtectSistem=strict\nSystemCallFilter=@nope\n"),
        encoding="utf-8",
    )
    output = verify(runnable_unit)
    assert "Unknown key" in output.stderr
    assert "@nope" in output.stderr


def test_unit_runs_the_agent_with_its_config_and_buffer_paths() -> None:
    """The config comes from the ConfigurationDirectory, the buffer goes to the StateDirectory."""
    assert one("Service", "ExecStart") == (
        f"{INSTALLED_PROGRAM} run --config %E/plantwire/agent.yaml"
    )
    assert one("Service", "ConfigurationDirectory") == "plantwire"
    assert one("Service", "StateDirectory") == "plantwire"
    assert ENV_OVERRIDES["PLANTWIRE_BUFFER_PATH"] == ("buffer", "path")
    assert "PLANTWIRE_BUFFER_PATH=%S/plantwire/buffer.sqlite" in values("Service", "Environment")
    assert one("Service", "EnvironmentFile") == "-%E/plantwire/agent.env"


def test_unit_restarts_on_failure_within_limits() -> None:
    """Crashes restart after a pause, a bad configuration (exit 2) does not, bursts stop."""
    assert one("Service", "Restart") == "on-failure"
    assert one("Service", "RestartSec")
    assert one("Service", "RestartPreventExitStatus") == "2"
    assert int(one("Unit", "StartLimitBurst")) > 1
    assert one("Unit", "StartLimitIntervalSec")


def test_unit_runs_as_a_dedicated_unprivileged_user() -> None:
    """A plantwire user with no capabilities, in dialout for serial Modbus devices."""
    assert one("Service", "User") == "plantwire"
    assert one("Service", "Group") == "plantwire"
    assert one("Service", "SupplementaryGroups") == "dialout"
    assert one("Service", "CapabilityBoundingSet") == ""
    assert one("Service", "AmbientCapabilities") == ""
    assert one("Service", "NoNewPrivileges") == "yes"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("LockPersonality", "yes"),
        ("SystemCallArchitectures", "native"),
        ("DevicePolicy", "closed"),
    ],
)
def test_unit_hardening(key: str, value: str) -> None:
    """Each sandboxing directive is set as intended."""
    assert one("Service", key) == value


def test_unit_network_syscalls_and_devices() -> None:
    """IP and Unix sockets only, the system-service syscall set, and the serial ports allowed."""
    assert set(one("Service", "RestrictAddressFamilies").split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
    }
    assert values("Service", "SystemCallFilter")[0] == "@system-service"
    assert {value.split()[0] for value in values("Service", "DeviceAllow")} == {
        "char-ttyS",
        "char-ttyUSB",
        "char-ttyACM",
    }
    assert one("Service", "MemoryMax")
