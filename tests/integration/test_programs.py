"""The three programs' command lines, run in this process against real servers."""

import asyncio
import os
import signal
import sqlite3
import threading
from pathlib import Path

import pytest
import yaml

from agent.cli import main as agent_main
from agent.cli import run_agent
from agent.config import load_agent_config
from agent.service import AgentService
from collector.cli import main as collector_main
from protocols.simulator import cli as sim_cli
from protocols.simulator.runner import Simulator
from tests.harness import eventually, modbus_device
from tests.servers import MosquittoServer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


def test_agent_check_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert agent_main(["check-config", str(ROOT / "config" / "agent.yaml")]) == 0
    assert "OK: agent demo-agent, 2 devices, 26 tags" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: {id: x}\n")
    assert agent_main(["check-config", str(bad)]) == 2
    assert "buffer: required key is missing" in capsys.readouterr().err
    assert agent_main(["run", "--config", str(bad)]) == 2


def test_collector_check_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert collector_main(["check-config", str(ROOT / "config" / "collector.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{ROOT / 'config' / 'collector.yaml'}: OK: collector consuming plantwire/v1/+/batch"
        " from 127.0.0.1:1883, API on 127.0.0.1:8080, readings kept forever"
    ]
    secured = tmp_path / "secured.yaml"
    secured.write_text(
        "database: {url: 'postgresql://u:hunter2@db:5432/p', retention_days: 90}\n"
        "mqtt: {url: 'mqtts://u:pw@broker', topic_prefix: site}\n"
    )
    assert collector_main(["check-config", str(secured)]) == 0
    line = capsys.readouterr().out
    assert "consuming site/v1/+/batch from broker:8883 over TLS" in line
    assert "readings kept 90 days" in line
    assert "hunter2" not in line
    assert "pw@" not in line
    for text, named in [
        ("database: {url: x}\n", "mqtt: required key is missing"),
        (
            "database: {url: x}\nmqtt: {url: 'mqtt://b'}\nhttp: {prot: 1}\n",
            "http.prot: unknown key",
        ),
        ("database: {url: x, pool_size: 0}\nmqtt: {url: 'mqtt://b'}\n", "database.pool_size"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        assert collector_main(["check-config", str(bad)]) == 2
        assert named in capsys.readouterr().err
    assert collector_main(["check-config", str(tmp_path / "missing.yaml")]) == 2


def test_simulator_lists_its_tags(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_cli.main(["--list-tags"]) == 0
    out = capsys.readouterr().out
    assert "temperature     float32  input_register@0" in out
    assert "s=Machine.Program" in out


async def test_simulator_serves_until_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    args = sim_cli.build_parser().parse_args(["--opcua-port", "0", "--modbus-port", str(port)])
    stop = asyncio.Event()
    task = asyncio.create_task(sim_cli.serve(args, stop))
    await asyncio.to_thread(wait_for_port, port)
    stop.set()
    await task
    assert f"Modbus socket 127.0.0.1:{port}" in capsys.readouterr().out


async def test_agent_runs_until_stopped(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    port = free_port()
    sim_args = sim_cli.build_parser().parse_args(["--opcua-port", "0", "--modbus-port", str(port)])
    sim_stop = asyncio.Event()
    sim = asyncio.create_task(sim_cli.serve(sim_args, sim_stop))
    await asyncio.to_thread(wait_for_port, port)
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": "cli-agent", "http_port": 0},
                "buffer": {"path": str(tmp_path / "b.sqlite")},
                "mqtt": {"url": mosquitto.url, "topic_prefix": "cli-test"},
                "devices": [modbus_device(port)],
            }
        )
    )
    service = AgentService(load_agent_config(path))
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(service, stop))

    async def forwarded() -> bool:
        return service.forwarder.readings_sent > 0

    await eventually(forwarded, what="the agent to forward readings")
    stop.set()
    await task
    sim_stop.set()
    await sim


def test_programs_stop_cleanly_on_sigterm(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """main() of the agent and of the simulator returns 0 when SIGTERM arrives."""
    port = free_port()
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": "sig-agent", "http_port": 0},
                "buffer": {"path": str(tmp_path / "b.sqlite")},
                "mqtt": {"url": mosquitto.url, "topic_prefix": "sig-test"},
                "devices": [modbus_device(port)],
            }
        )
    )
    programs = [
        lambda: agent_main(["run", "--config", str(path)]),
        lambda: sim_cli.main(["--opcua-port", "0", "--modbus-port", str(port)]),
    ]
    # Not SIGALRM: the suite's per-test time limit owns it.
    for program in programs:
        sigterm = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGTERM))
        sigterm.start()
        try:
            assert program() == 0
        finally:
            sigterm.cancel()


async def test_one_unreachable_device_does_not_hold_up_the_others(
    tmp_path: Path, simulator: Simulator
) -> None:
    from tests.harness import agent_config

    config = agent_config(
        agent_id="two-devices",
        buffer=tmp_path / "b.sqlite",
        mqtt_url=f"mqtt://127.0.0.1:{free_port()}",
        prefix="iso",
        devices=[
            {**modbus_device(free_port(), name="gone"), "timeout": "200ms"},
            modbus_device(simulator.modbus_port, name="here", interval="100ms"),
        ],
    )
    service = AgentService(config)
    await service.start()
    try:
        gone, here = service.pollers

        async def both_seen() -> bool:
            return here.polls >= 10 and (await service.buffer.stats()).readings > 0

        await eventually(both_seen, what="the reachable device to be polled on schedule")
        assert gone.polls == 0
        assert gone.state.value == "disconnected"
    finally:
        await service.stop()


def test_agent_refuses_a_buffer_file_of_another_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        conn.execute("CREATE TABLE readings (seq INTEGER PRIMARY KEY, value)")
    path = tmp_path / "agent.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "agent": {"id": "old-buffer", "http_port": 0},
                "buffer": {"path": str(old)},
                "mqtt": {"url": "mqtt://127.0.0.1:1"},
                "devices": [modbus_device(free_port())],
            }
        )
    )
    assert agent_main(["run", "--config", str(path)]) == 1
    message = capsys.readouterr().err
    assert "has no layout version; this version reads layout 2" in message
    assert "move it away" in message
