"""plantwire-agent's discover and run commands on their less common outcomes, in-process.

discover's browsing is replaced by a fake here: what is under test is what the command
makes of the server's answer (tests/integration/test_opcua_driver.py browses a real one).
"""

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.cli import main
from tests.servers import free_port

ENDPOINT = "opc.tcp://127.0.0.1:4840"
TAGS = [
    {"name": "Line.Speed", "node": "ns=2;s=Line.Speed", "type": "float32"},
    {"name": "Line.Setpoint", "node": "ns=2;s=Line.Setpoint", "type": "uint16", "writable": True},
]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the fake server holds, and what discover was asked for."""
    found: dict[str, Any] = {"tags": TAGS, "skipped": ["ns=2;i=9 (Line/Blob): type i=15"]}

    async def discover(endpoint: str, **options: Any) -> tuple[list[dict[str, Any]], list[str]]:
        found["asked"] = (endpoint, options)
        return [dict(tag) for tag in found["tags"]], list(found["skipped"])

    monkeypatch.setattr("protocols.opcua.discover.discover", discover)
    return found


def test_discover_prints_a_configuration_with_a_certificate_identity(
    server: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    certificate, key = tmp_path / "user.der", tmp_path / "user.pem"
    command = ["discover", ENDPOINT, "--name", "line", "--identity-type", "certificate"]
    command += ["--identity-certificate", str(certificate), "--identity-private-key", str(key)]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# 2 variables found on {ENDPOINT}, 1 of them writable")
    assert "# skipped ns=2;i=9 (Line/Blob): type i=15\n" in out
    [device] = yaml.safe_load(out)["devices"]
    assert device["identity"] == {
        "type": "certificate",
        "certificate": str(certificate),
        "private_key": str(key),
    }, "no password key for a certificate identity"
    assert device["tags"] == TAGS
    assert server["asked"][1]["identity"].type == "certificate"


def test_discover_that_finds_nothing_readable_says_so(
    server: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    server["tags"] = []
    assert main(["discover", ENDPOINT]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{ENDPOINT}: no variable of a type Plantwire reads was found" in captured.err


def test_discover_prints_no_configuration_that_check_config_would_refuse(
    server: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["discover", ENDPOINT, "--agent-id", "not an id"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "the discovered configuration is not valid" in captured.err
    assert "agent.id" in captured.err


def test_run_with_a_busy_metrics_port_exits_naming_the_file_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = one_device_config(tmp_path, "busy", port)
        assert main(["run", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"plantwire-agent: {config}: agent.http_port: port {port} on 127.0.0.1" in err


def test_run_exits_0_once_the_agent_has_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped: list[object] = []

    async def stops_at_once(service: object, stop: object) -> None:
        stopped.append(service)  # as run_agent returns after a SIGTERM's stop

    monkeypatch.setattr("agent.cli.run_agent", stops_at_once)
    config = one_device_config(tmp_path, "calm", free_port())
    assert main(["run", "--config", str(config)]) == 0
    assert len(stopped) == 1


def one_device_config(folder: Path, agent_id: str, http_port: int) -> Path:
    """An agent config file with one Modbus device on a port nothing listens on."""
    config = folder / "agent.yaml"
    device = {
        "type": "modbus",
        "name": "d1",
        "host": "127.0.0.1",
        "port": free_port(),
        "tags": [{"name": "t", "table": "holding_register", "address": 0}],
    }
    config.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": agent_id, "http_port": http_port},
                "buffer": {"path": str(folder / "b.sqlite")},
                "mqtt": {"url": f"mqtt://127.0.0.1:{free_port()}"},
                "devices": [device],
            }
        )
    )
    return config
