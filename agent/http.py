"""The agent's local HTTP endpoint: GET /metrics (Prometheus) and GET /healthz (JSON).

A few lines over asyncio streams instead of a web framework: an edge box runs no server
framework, and these two read-only pages need none.
"""

import asyncio
import contextlib
import errno
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agent.health import Snapshot
from shared.commands import AGENT_OUTCOMES
from shared.errors import PlantwireError
from shared.invariants import required

log = logging.getLogger(__name__)
SnapshotSource = Callable[[], Awaitable[Snapshot]]
FULL_WARNING = 0.9


class _SnapshotMetrics:
    """A prometheus_client collector that reports the latest snapshot."""

    def __init__(self, max_bytes: int | None) -> None:
        self.snapshot: Snapshot | None = None
        self._max_bytes = max_bytes

    def collect(self) -> Iterator[Metric]:
        # Registered without auto-describe: only a scrape collects, after setting a snapshot.
        snap = required(self.snapshot, "a metrics snapshot")
        prefix = "plantwire_agent_"
        yield GaugeMetricFamily(
            prefix + "mqtt_connected",
            "1 while connected to the broker.",
            value=1.0 if snap.connected else 0.0,
        )
        yield GaugeMetricFamily(
            prefix + "buffer_readings", "Readings held in the buffer.", value=snap.buffer.readings
        )
        yield GaugeMetricFamily(
            prefix + "buffer_used_bytes",
            "Bytes of buffer pages in use.",
            value=snap.buffer.used_bytes,
        )
        yield GaugeMetricFamily(
            prefix + "buffer_oldest_age_seconds",
            "Age of the oldest unconfirmed reading (0 when empty).",
            value=snap.oldest_age_s or 0.0,
        )
        yield GaugeMetricFamily(
            prefix + "batches_in_flight",
            "Batches awaiting confirmation.",
            value=snap.buffer.batches_in_flight,
        )
        dropped = CounterMetricFamily(
            prefix + "buffer_dropped_readings",
            "Readings dropped by the full-buffer policy.",
            labels=["policy"],
        )
        dropped.add_metric(["drop_oldest"], snap.buffer.dropped_oldest)
        dropped.add_metric(["drop_newest"], snap.buffer.dropped_newest)
        yield dropped
        yield GaugeMetricFamily(
            prefix + "buffer_failing",
            "1 while the buffer file cannot be written (disk full, I/O error, read-only).",
            value=1.0 if snap.buffer_condition.state == "failing" else 0.0,
        )
        yield CounterMetricFamily(
            prefix + "buffer_errors",
            "Buffer file reads and writes that SQLite refused.",
            value=snap.buffer_condition.errors,
        )
        rejected = CounterMetricFamily(
            prefix + "rejected_readings",
            "Readings the collector refused or rejected with their batch, by reason.",
            labels=["reason"],
        )
        for reason, count in sorted(snap.rejected_readings.items()):
            rejected.add_metric([reason], count)
        yield rejected
        restarts = CounterMetricFamily(
            prefix + "task_restarts",
            "Restarts of the agent's long-running tasks after a crash.",
            labels=["task"],
        )
        failing = GaugeMetricFamily(
            prefix + "task_failing",
            "1 while a task has crashed and not yet run steadily since.",
            labels=["task"],
        )
        for task in snap.tasks:
            restarts.add_metric([task.name], task.restarts)
            failing.add_metric([task.name], 1.0 if task.name in snap.failing_tasks else 0.0)
        yield restarts
        yield failing
        for name, help_text, value in [
            ("batches_sent", "Batches sent for the first time.", snap.batches_sent),
            ("readings_sent", "Readings sent for the first time.", snap.readings_sent),
            (
                "readings_acknowledged",
                "Readings confirmed by a collector.",
                snap.readings_acknowledged,
            ),
            ("batch_resends", "Batches sent again after no confirmation.", snap.resends),
            ("send_failures", "Publishes the broker did not acknowledge.", snap.send_failures),
            ("rejected_batches", "Batches the collector quarantined.", snap.rejected_batches),
        ]:
            yield CounterMetricFamily(prefix + name, help_text, value=value)
        state = GaugeMetricFamily(
            prefix + "device_connected", "1 while a device is connected.", labels=["device"]
        )
        polls = CounterMetricFamily(prefix + "device_polls", "Successful polls.", labels=["device"])
        yield GaugeMetricFamily(
            prefix + "overloaded",
            "1 while polls are being skipped for lack of time (the agent is at its capacity).",
            value=1.0 if snap.overloaded else 0.0,
        )
        skipped = CounterMetricFamily(
            prefix + "polls_skipped",
            "Polls that could not start on time (the device or the agent is overloaded).",
            labels=["device"],
        )
        polled = CounterMetricFamily(
            prefix + "device_readings", "Readings polled.", labels=["device"]
        )
        suppressed = CounterMetricFamily(
            prefix + "device_suppressed_readings",
            "Readings held back by report by exception.",
            labels=["device"],
        )
        handed = CounterMetricFamily(
            prefix + "device_buffered_readings",
            "Readings handed to the buffer (bad quality included).",
            labels=["device"],
        )
        for device, device_state in snap.devices.items():
            state.add_metric([device], 1.0 if device_state == "connected" else 0.0)
            polls.add_metric([device], snap.polls[device])
            skipped.add_metric([device], snap.polls_skipped[device])
            polled.add_metric([device], snap.readings_polled[device])
            suppressed.add_metric([device], snap.suppressed[device])
            handed.add_metric([device], snap.handed[device])
        yield from (state, polls, skipped, polled, suppressed, handed)
        commands = CounterMetricFamily(
            prefix + "commands",
            "Commands to equipment finished, by result (applied, refused, expired, unreachable).",
            labels=["result"],
        )
        for result in AGENT_OUTCOMES:
            commands.add_metric([result], snap.commands.get(result, 0))
        yield commands
        yield CounterMetricFamily(
            prefix + "command_duplicates",
            "Commands delivered again after they finished: answered, not applied again.",
            value=snap.command_duplicates,
        )

    def health(self) -> tuple[int, dict[str, object]]:
        """HTTP status and body of /healthz.

        503 while the buffer is close to dropping or cannot be written, or a task keeps
        crashing; 200 with status "degraded" for what buffering rides out (broker, devices).
        """
        snap = required(self.snapshot, "a health snapshot")
        full = snap.buffer.used_bytes / self._max_bytes if self._max_bytes else 0.0
        condition = snap.buffer_condition
        failing = []
        if full >= FULL_WARNING:
            failing.append(f"buffer {full:.0%} full: readings will be dropped soon")
        if condition.state == "failing":
            failing.append(f"buffer cannot be written ({condition.last_error}): polling paused")
        failing += [f"task {name} keeps crashing" for name in snap.failing_tasks]
        problems = list(failing)
        if not snap.connected:
            problems.append("broker disconnected: readings are being buffered")
        problems += [f"device {d} {s}" for d, s in snap.devices.items() if s != "connected"]
        if snap.overloaded:
            late = {d: n for d, n in snap.polls_skipped.items() if n}
            problems.append(f"overloaded: polls skipped for lack of time (so far: {late})")
        body: dict[str, object] = {
            "status": "failing" if failing else ("degraded" if problems else "ok"),
            "problems": problems,
            "buffer": {
                "state": condition.state,
                "error": condition.last_error,
                "readings": snap.buffer.readings,
                "oldest_age_s": snap.oldest_age_s,
                "used_bytes": snap.buffer.used_bytes,
            },
            "devices": snap.devices,
            "overloaded": snap.overloaded,
            "tasks": {
                task.name: {
                    "state": task.state.value,
                    "restarts": task.restarts,
                    "last_error": task.last_error,
                }
                for task in snap.tasks
            },
        }
        return (503 if failing else 200), body


class ListenError(PlantwireError):
    """The /metrics and /healthz port cannot be opened; the message names the key."""


def _listen_problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"agent.http_port: port {port} on {host} is already in use (by another program"
            " or agent); choose another port, or null to turn /metrics off"
        )
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return f"agent.http_host: cannot listen on {host!r}: {exc.strerror or exc}"
    return f"agent.http_port: cannot listen on {host}:{port}: {exc.strerror or exc}"


class AgentHttp:
    """Serves /metrics and /healthz on a local port."""

    def __init__(self, snapshot: SnapshotSource, max_bytes: int | None) -> None:
        self._snapshot = snapshot
        self._metrics = _SnapshotMetrics(max_bytes)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._metrics)
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Listen; port 0 picks a free port (see `port`); raise ListenError if it cannot."""
        try:
            self._server = await asyncio.start_server(self._serve, host, port)
        except OSError as exc:
            raise ListenError(_listen_problem(host, port, exc)) from exc
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):  # not wait_for, which can lose a cancel on 3.11
                head = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, content_type, body = await self._route(method, path.split("?", 1)[0])
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            status, content_type, body = 400, "text/plain", b"bad request\n"
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            503: "Service Unavailable",
        }[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if path not in ("/metrics", "/healthz"):
            return 404, "text/plain", b"not found: try /metrics or /healthz\n"
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        self._metrics.snapshot = await self._snapshot()
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4", generate_latest(self._registry)
        status, body = self._metrics.health()
        return status, "application/json", json.dumps(body).encode()
