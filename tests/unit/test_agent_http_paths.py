"""The agent's /metrics and /healthz endpoint, over a real socket, on every path it answers."""

import asyncio
import dataclasses
import errno
import json
import socket

import pytest

from agent.buffer import BufferCondition, BufferStats
from agent.health import Snapshot
from agent.http import AgentHttp, ListenError, _listen_problem
from shared.supervisor import TaskHealth, TaskState

HEALTHY = Snapshot(
    connected=True,
    buffer=BufferStats(readings=10, batches_in_flight=1, oldest_ts_us=None, used_bytes=4096),
    oldest_age_s=None,
    devices={"press": "connected"},
    polls={"press": 5},
    polls_skipped={"press": 0},
    overloaded=False,
    readings_polled={"press": 50},
    suppressed={"press": 0},
    handed={"press": 50},
    batches_sent=4,
    readings_sent=40,
    readings_acknowledged=30,
    resends=0,
    send_failures=0,
    rejected_batches=0,
    rejected_readings={},
    buffer_condition=BufferCondition("ok", None, 0),
    tasks=[TaskHealth("forwarder", TaskState.RUNNING, 0, None)],
)


async def exchange(port: int, request: bytes) -> tuple[int, bytes]:
    """Send a raw request; return the response's status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            response = await reader.read()
    finally:
        writer.close()
    head, body = response.split(b"\r\n\r\n", 1)
    return int(head.split(b" ", 2)[1]), body


async def serving(snapshot: Snapshot, max_bytes: int | None = None) -> AgentHttp:
    async def current() -> Snapshot:
        return snapshot

    http = AgentHttp(current, max_bytes)
    await http.start("127.0.0.1", 0)
    return http


async def get(http: AgentHttp, path: str) -> tuple[int, bytes]:
    return await exchange(http.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


async def test_metrics_count_rejected_readings_by_reason() -> None:
    snapshot = dataclasses.replace(
        HEALTHY, rejected_batches=1, rejected_readings={"schema": 7, "out_of_range": 2}
    )
    http = await serving(snapshot)
    try:
        status, body = await get(http, "/metrics?x=1")
    finally:
        await http.stop()
    assert status == 200
    text = body.decode()
    assert 'plantwire_agent_rejected_readings_total{reason="out_of_range"} 2.0' in text
    assert 'plantwire_agent_rejected_readings_total{reason="schema"} 7.0' in text
    assert "plantwire_agent_rejected_batches_total 1.0" in text


async def test_a_nearly_full_buffer_fails_the_health_check_before_readings_are_dropped() -> None:
    snapshot = dataclasses.replace(
        HEALTHY, buffer=dataclasses.replace(HEALTHY.buffer, used_bytes=950)
    )
    http = await serving(snapshot, max_bytes=1000)
    try:
        status, body = await get(http, "/healthz")
    finally:
        await http.stop()
    assert status == 503
    health = json.loads(body)
    assert health["status"] == "failing"
    assert health["problems"] == ["buffer 95% full: readings will be dropped soon"]


async def test_what_buffering_rides_out_degrades_and_a_failing_file_fails() -> None:
    degraded = dataclasses.replace(
        HEALTHY,
        connected=False,
        devices={"press": "connected", "oven": "disconnected"},
        polls_skipped={"press": 3, "oven": 0},
        overloaded=True,
    )
    failing = dataclasses.replace(
        HEALTHY, buffer_condition=BufferCondition("failing", "OperationalError: disk full", 2)
    )
    results = []
    for snapshot in (HEALTHY, degraded, failing):
        http = await serving(snapshot, max_bytes=1000_000)
        try:
            status, body = await get(http, "/healthz")
        finally:
            await http.stop()
        results.append((status, json.loads(body)))
    (ok_status, ok), (degraded_status, half), (failing_status, down) = results
    assert (ok_status, ok["status"], ok["problems"]) == (200, "ok", [])
    assert (degraded_status, half["status"]) == (200, "degraded")
    assert half["problems"] == [
        "broker disconnected: readings are being buffered",
        "device oven disconnected",
        "overloaded: polls skipped for lack of time (so far: {'press': 3})",
    ]
    assert (failing_status, down["status"]) == (503, "failing")
    assert down["problems"] == [
        "buffer cannot be written (OperationalError: disk full): polling paused"
    ]
    assert down["buffer"]["error"] == "OperationalError: disk full"


async def test_other_paths_methods_and_malformed_requests_get_their_status() -> None:
    http = await serving(HEALTHY)
    try:
        missing = await get(http, "/")
        posted = await exchange(http.port, b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        garbled = await exchange(http.port, b"NONSENSE\r\n\r\n")
    finally:
        await http.stop()
    assert missing == (404, b"not found: try /metrics or /healthz\n")
    assert posted == (405, b"only GET\n")
    assert garbled == (400, b"bad request\n")


async def test_a_busy_port_names_the_port_key() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        http = AgentHttp(lambda: asyncio.sleep(0, HEALTHY), None)
        with pytest.raises(ListenError, match=f"agent.http_port: port {port} on 127.0.0.1 is"):
            await http.start("127.0.0.1", port)


def test_any_other_listen_failure_names_the_port_key_and_the_reason() -> None:
    refused = OSError(errno.EACCES, "Permission denied")
    assert _listen_problem("127.0.0.1", 80, refused) == (
        "agent.http_port: cannot listen on 127.0.0.1:80: Permission denied"
    )
