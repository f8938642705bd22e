"""A full disk under the buffer is a state the agent rides out, on a real, small filesystem.

A tmpfs is mounted under the buffer (as root), an agent polls the simulator with no broker
so readings pile up, and a filler file takes the rest of the space. The buffer must report
itself failing (metrics, /healthz) while the poller stays alive, recover once the filler is
gone, and keep every reading committed before, with no gap and no duplicate.
"""

import contextlib
import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agent.service import AgentService
from protocols.simulator.machine import bulk_tags
from shared.supervisor import TaskState
from tests.buffer_file import held_seqs
from tests.harness import agent_config, eventually, get_json, running_simulator
from tests.servers import free_port

BULK_TAGS = 500


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path`; skips the test if it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs under the buffer needs root")
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(path: Path) -> int:
    """Write `path` until the filesystem is full; return the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as filler:
        for chunk in (1 << 20, 1 << 12):
            block = b"\0" * chunk
            while True:
                try:
                    written += filler.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def bulk_device(port: int) -> dict[str, Any]:
    """A Modbus device reading the simulator's bulk tags, so the buffer grows quickly."""
    return {
        "name": "bulk",
        "type": "modbus",
        "host": "127.0.0.1",
        "port": port,
        "poll_interval": "100ms",
        "timeout": "2s",
        "tags": [
            {
                "name": tag.name,
                "table": "holding_register",
                "address": tag.modbus_address,
                "type": tag.data_type.value,
            }
            for tag in bulk_tags(BULK_TAGS)
        ],
    }


def seqs(path: Path) -> list[int]:
    return held_seqs(path)


async def test_a_full_disk_pauses_buffering_and_loses_nothing(
    tmp_path: Path, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.buffer")
    with small_filesystem(tmp_path / "disk", "64m") as disk:
        async with running_simulator(opcua=False, bulk=BULK_TAGS) as simulator:
            config = agent_config(
                agent_id="diskfull",
                buffer=disk / "buffer.sqlite",
                mqtt_url=f"mqtt://127.0.0.1:{free_port()}",  # no broker: readings pile up
                prefix=topic_prefix,
                devices=[bulk_device(simulator.modbus_port)],
            )
            agent = AgentService(config)
            await agent.start()
            try:
                committed_before = await fail_and_recover(agent, disk)
            finally:
                await agent.stop()
        held = seqs(config.buffer.path)
    assert held == list(range(1, len(held) + 1)), "no gap and no duplicate"
    assert len(held) > committed_before
    buffer_logs = [r for r in caplog.records if r.name == "agent.buffer"]
    assert [r.levelno for r in buffer_logs] == [logging.ERROR, logging.INFO], (
        "one line when it starts failing, one when it recovers"
    )


async def fail_and_recover(agent: AgentService, disk: Path) -> int:
    """Fill the disk, see the buffer fail, free it, see it recover; return seqs from before."""
    local = f"http://127.0.0.1:{agent.http.port}"

    async def buffered(count: int) -> bool:
        return (await agent.buffer.stats()).readings >= count

    await eventually(lambda: buffered(20_000), what="readings piling up")
    committed_before = len(seqs(agent.config.buffer.path))
    filler = disk / "filler"
    assert fill(filler) > 0

    async def failing() -> bool:
        status, body = await get_json(f"{local}/healthz")
        return status == 503 and body["buffer"]["state"] == "failing"

    await eventually(failing, timeout=60, what="the buffer to report a full disk")
    status, body = await get_json(f"{local}/healthz")
    assert status == 503
    assert "full" in body["buffer"]["error"]
    assert body["tasks"]["poll-bulk"]["state"] == TaskState.RUNNING.value, "polling not dead"
    async with aiohttp.ClientSession() as session, session.get(f"{local}/metrics") as response:
        metrics = await response.text()
    assert "plantwire_agent_buffer_failing 1.0" in metrics
    assert "plantwire_agent_buffer_errors_total 0.0" not in metrics
    heartbeat = agent.health.heartbeat(await agent.health.snapshot(False))
    assert b'"state":"failing"' in heartbeat
    stuck = (await agent.buffer.stats()).readings

    filler.unlink()

    async def recovered() -> bool:
        status, body = await get_json(f"{local}/healthz")
        return body["buffer"]["state"] == "ok" and status == 200

    await eventually(recovered, timeout=30, what="the buffer to recover")
    await eventually(lambda: buffered(stuck + 5 * BULK_TAGS), what="buffering to go on")
    async with aiohttp.ClientSession() as session, session.get(f"{local}/metrics") as response:
        assert "plantwire_agent_buffer_failing 0.0" in await response.text()
    assert seqs(agent.config.buffer.path)[:committed_before] == list(
        range(1, committed_before + 1)
    ), "everything committed before the disk filled is still there"
    return committed_before
