"""plantwire-agent's command line: problems at start-up end in one line naming the key."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.health import Snapshot
from agent.http import AgentHttp, ListenError
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, http_port: int) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"agent: {{id: a1, http_port: {http_port}}}\n"
        f"buffer: {{path: {tmp_path / 'buffer.sqlite'}}}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{free_port()}'}}\n"
        "devices:\n"
        f"  - {{type: modbus, name: d1, host: 127.0.0.1, port: {free_port()},\n"
        "      tags: [{name: t, table: holding_register, address: 0}]}\n"
    )
    return path


def test_a_busy_metrics_port_names_the_port_and_key(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = _config(tmp_path, port)
        result = subprocess.run(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"agent.http_port: port {port} on 127.0.0.1 is already in use" in result.stderr
    assert str(config) in result.stderr


async def test_an_address_not_on_this_host_names_the_host_key() -> None:
    async def snapshot() -> Snapshot:
        raise AssertionError("never served")

    http = AgentHttp(snapshot, None)
    with pytest.raises(ListenError, match=r"agent\.http_host: cannot listen on '192\.0\.2\.1'"):
        await http.start("192.0.2.1", 0)  # TEST-NET-1: an address no host here has
