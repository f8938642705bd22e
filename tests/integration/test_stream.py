"""The live event stream against real collectors and PostgreSQL: live, resume, reset, roles,
slow clients, heartbeats, replicas, and the hub losing its database connection."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import aiohttp
import psycopg
import pytest
from aiohttp import web

from collector.agents import AgentRegistry
from collector.api import stream as stream_api
from collector.app import maintain
from collector.config import CollectorConfig
from collector.event_hub import EventHub
from collector.events import Event, append_events
from collector.state import AGENTS, EVENT_HUB, SETTINGS
from tests.harness import TEST_KEY, eventually, metric, replica_configs, running_collector_app
from tests.servers import MosquittoServer
from tests.sse_client import Sse, streaming

pytestmark = pytest.mark.integration
Pool = Any


def state(status: str) -> bytes:
    """A birth or death message."""
    return json.dumps(
        {"v": 1, "status": status, "version": "1.0", "config_hash": "h", "devices": [], "epoch": 1}
    ).encode()


def heartbeat() -> bytes:
    """A heartbeat message."""
    buffer = {
        "readings": 0,
        "oldest_age_s": None,
        "in_flight": 0,
        "dropped_oldest": 0,
        "dropped_newest": 0,
        "used_bytes": 0,
    }
    return json.dumps(
        {"v": 1, "ts": 1, "buffer": buffer, "devices": {}, "readings_acknowledged": 0}
    ).encode()


def thing(n: int, *, role: str = "viewer", kind: str = "test.thing", agent: str = "a") -> Event:
    """A test event."""
    return Event.model_validate(
        {"kind": kind, "subject": f"s{n}", "role": role, "body": {"n": n, "agent": agent}}
    )


async def append(pool: Pool, *events: Event) -> list[int]:
    """Append events in one transaction of their own."""
    async with pool.connection() as conn, conn.transaction():
        return await append_events(conn, list(events))


@pytest.fixture
def stream_config(
    plant_collector_config: Callable[..., CollectorConfig],
) -> Callable[..., CollectorConfig]:
    """A collector configuration with these stream settings."""
    return lambda **stream: plant_collector_config(sections={"stream": stream})


@pytest.fixture
async def collector(
    stream_config: Callable[..., CollectorConfig],
) -> AsyncIterator[tuple[web.Application, str]]:
    async with running_collector_app(stream_config()) as running:
        yield running


async def new_key(base: str, role: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/api/v1/api-keys",
            json={"name": f"{role} key", "role": role},
            headers={"Authorization": f"Bearer {TEST_KEY}"},
        ) as response,
    ):
        assert response.status == 201
        return str((await response.json())["key"])


async def test_an_agent_going_offline_and_online_makes_one_event_each(db_pool: Pool) -> None:
    registry = AgentRegistry(db_pool)
    await registry("press-1", "state", state("online"))  # unknown -> online
    await registry("press-1", "heartbeat", heartbeat())
    await registry("press-1", "state", state("online"))  # a rebirth changes nothing
    await registry("press-1", "state", state("offline"))
    await registry("press-1", "state", state("offline"))
    await registry("press-1", "heartbeat", heartbeat())  # offline -> online
    await registry("press-1", "heartbeat", heartbeat())
    assert await registry.mark_silent_offline(0.0) == ["press-1"]
    assert await registry.mark_silent_offline(0.0) == []
    async with db_pool.connection() as conn:
        rows = await (
            await conn.execute("SELECT kind, subject, role, body FROM events ORDER BY id")
        ).fetchall()
        since = (
            await (
                await conn.execute("SELECT status_since FROM agents WHERE agent_id = 'press-1'")
            ).fetchone()
        )[0]
    assert [(kind, subject, role) for kind, subject, role, _ in rows] == [
        ("agent.status", "press-1", "viewer")
    ] * 4
    assert [body["status"] for *_, body in rows] == ["online", "offline", "online", "offline"]
    assert all(body["agent"] == "press-1" for *_, body in rows)
    assert datetime.fromisoformat(rows[-1][3]["since"]) == since


async def test_a_client_receives_live_events(
    collector: tuple[web.Application, str], db_pool: Pool
) -> None:
    app, base = collector
    async with streaming(base) as sse:
        await app[AGENTS]("press-1", "state", state("online"))
        ids = await append(db_pool, thing(1))
        status, other = await sse.events(2)
        assert await metric(base, "plantwire_collector_stream_events_sent_total") == 2
        assert await metric(base, "plantwire_collector_stream_clients") == 1
    assert status["event"] == "agent.status"
    assert status["data"]["subject"] == "press-1"
    assert status["data"]["body"]["status"] == "online"
    assert int(status["id"]) == status["data"]["id"] < ids[0]
    assert other["event"] == "test.thing"
    assert other["id"] == str(ids[0])
    assert other["data"]["body"] == {"n": 1, "agent": "a"}
    assert set(other["data"]) == {"id", "at", "kind", "subject", "body"}
    assert other["data"]["at"].endswith("Z")


async def test_a_client_resuming_with_its_last_id_gets_exactly_what_it_missed(
    collector: tuple[web.Application, str], db_pool: Pool
) -> None:
    _, base = collector
    async with streaming(base) as sse:
        first = await append(db_pool, thing(1), thing(2), thing(3))
        seen = await sse.events(3)
    assert [int(event["id"]) for event in seen] == first
    missed = await append(db_pool, thing(4))
    missed += await append(db_pool, thing(5))
    # The header wins over the parameter (EventSource keeps the URL of its first connect).
    resumed = {"Last-Event-ID": seen[-1]["id"]}
    async with streaming(base, headers=resumed, last_event_id="0") as sse:
        replayed = await sse.events(2)
        live = await append(db_pool, thing(6))
        after = await sse.event()
    assert [int(event["id"]) for event in replayed] == missed
    assert int(after["id"]) == live[0]
    # A client ahead of this collector (it saw ids at another replica) gets only newer ones.
    ahead = live[0] + 2
    async with streaming(base, last_event_id=str(ahead)) as sse:
        later = await append(db_pool, thing(7), thing(8), thing(9))
        (event,) = await sse.events(1)
    assert int(event["id"]) == later[2] == ahead + 1


async def test_an_id_older_than_retention_gets_a_reset_then_the_kept_events(
    collector: tuple[web.Application, str], db_pool: Pool
) -> None:
    app, base = collector
    ids = await append(db_pool, *[thing(n) for n in range(5)])
    async with db_pool.connection() as conn:
        await conn.execute(
            "UPDATE events SET at = now() - interval '2 days' WHERE id <= %s", (ids[2],)
        )
    await maintain(db_pool, app[SETTINGS].database, events_retention=86400.0)
    async with db_pool.connection() as conn:
        kept = await (await conn.execute("SELECT id FROM events ORDER BY id")).fetchall()
    assert [row[0] for row in kept] == ids[3:]
    async with streaming(base, last_event_id=str(ids[0])) as sse:
        reset, *events = await sse.events(3)
    assert reset["event"] == "reset"
    assert reset["data"] == {"oldest": ids[3]}
    assert "id" not in reset
    assert [int(event["id"]) for event in events] == ids[3:]
    # The last event deleted is no loss to a client that had it.
    async with streaming(base, last_event_id=str(ids[2])) as sse:
        assert int((await sse.event())["id"]) == ids[3]


async def test_a_viewer_sees_neither_admin_events_nor_what_its_filters_leave_out(
    collector: tuple[web.Application, str], db_pool: Pool
) -> None:
    _, base = collector
    viewer = await new_key(base, "viewer")
    async with (
        streaming(base, key=viewer) as as_viewer,
        streaming(base) as as_admin,
        streaming(base, key=viewer, kinds="test.other,test.more", agents="b") as filtered,
    ):
        admin_only = await append(db_pool, thing(1, role="admin"))
        public = await append(
            db_pool, thing(2), thing(3, kind="test.other"), thing(4, kind="test.other", agent="b")
        )
        assert [int(e["id"]) for e in await as_viewer.events(3)] == public
        assert [int(e["id"]) for e in await as_admin.events(4)] == admin_only + public
        assert int((await filtered.event())["id"]) == public[2]
    # Resuming, the same: the replay leaves out what the key or the filters may not have.
    async with streaming(
        base, key=viewer, kinds="test.other", last_event_id=str(admin_only[0] - 1)
    ) as resumed:
        assert [int(e["id"]) for e in await resumed.events(2)] == public[1:]


async def test_a_machines_filter_keeps_only_those_machines_events(
    collector: tuple[web.Application, str], db_pool: Pool
) -> None:
    _, base = collector

    def state(site: str, machine: str) -> Event:
        body = {"site": site, "machine": machine, "state": 1}
        return Event(kind="machine.state", subject=f"{site}/{machine}", role="viewer", body=body)

    async with streaming(base, machines="p1/m1,p2/m1") as filtered:
        ids = await append(
            db_pool, state("p1", "m2"), state("p1", "m1"), thing(1), state("p2", "m1")
        )
        assert [int(e["id"]) for e in await filtered.events(2)] == [ids[1], ids[3]]


async def test_a_client_that_does_not_read_is_dropped_as_slow_and_forgotten(
    stream_config: Callable[..., CollectorConfig], db_pool: Pool
) -> None:
    async with running_collector_app(stream_config(client_queue=2)) as (app, base):
        hub = app[EVENT_HUB]
        reader, writer = await _raw_stream(base)
        try:
            await eventually(lambda: _clients(hub, 1), timeout=10, what="the subscription")
            await _flood_until_gone(db_pool, hub)
            # The client reads at last: what was sent, then why it was dropped, then the end.
            async with asyncio.timeout(30):
                received = await reader.read()
            assert (
                await metric(base, "plantwire_collector_stream_dropped_total", reason="slow") == 1
            )
        finally:
            writer.close()
    assert b"event: dropped\r\ndata: " + json.dumps({"reason": "slow"}).encode() in received
    assert received.endswith(b"0\r\n\r\n")


async def test_a_client_that_takes_nothing_for_long_is_let_go(
    stream_config: Callable[..., CollectorConfig],
    db_pool: Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream_api, "WRITE_TIMEOUT_S", 0.5)
    async with running_collector_app(stream_config()) as (app, base):
        hub = app[EVENT_HUB]
        _, writer = await _raw_stream(base)
        try:
            await eventually(lambda: _clients(hub, 1), timeout=10, what="the subscription")
            await _flood_until_gone(db_pool, hub)
        finally:
            writer.close()


async def _clients(hub: EventHub, count: int) -> bool:
    return hub.clients == count


async def _raw_stream(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream request over a socket with a small receive buffer, which this never reads."""
    port = int(base.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        f"GET /api/v1/stream HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TEST_KEY}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def _flood_until_gone(pool: Pool, hub: EventHub) -> None:
    """Append large events until the hub has no client left (at most 64 MB of them)."""
    big = Event(kind="test.flood", subject="s", role="viewer", body={"pad": "x" * 65536})
    for _ in range(1000):
        await append(pool, big)
        if hub.clients == 0:
            return
    raise AssertionError("the client was never let go")


async def test_heartbeats_keep_an_idle_stream_and_a_gone_client_is_forgotten(
    stream_config: Callable[..., CollectorConfig],
) -> None:
    async with running_collector_app(stream_config(heartbeat="200ms")) as (app, base):
        async with streaming(base) as sse:
            assert await sse.block(timeout=5) == [": ping"]
            assert await sse.block(timeout=5) == [": ping"]
        # The next heartbeat finds the client gone.
        await eventually(lambda: _clients(app[EVENT_HUB], 0), timeout=10, what="forgetting")


async def test_an_event_appended_at_one_collector_reaches_a_client_of_another(
    database_url: str, mosquitto: MosquittoServer, topic_prefix: str
) -> None:
    one, two = replica_configs(database_url, mosquitto.url, topic_prefix)
    async with (
        running_collector_app(one) as (app_one, _),
        running_collector_app(two) as (_, base_two),
        streaming(base_two) as sse,
    ):
        await app_one[AGENTS]("press-9", "state", state("online"))
        event = await sse.event()
    assert event["event"] == "agent.status"
    assert event["data"]["body"]["agent"] == "press-9"


async def test_the_hub_reconnects_and_loses_nothing_when_its_connection_dies(
    collector: tuple[web.Application, str], db_pool: Pool, database_url: str
) -> None:
    _, base = collector
    async with streaming(base) as sse:
        before = await append(db_pool, thing(1))
        assert int((await sse.event())["id"]) == before[0]
        with psycopg.connect(database_url, autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'plantwire-event-hub' AND datname = current_database()"
            ).fetchall()
        assert killed == [(True,)]
        # Appended while the hub has no connection: read by id once it is back.
        after = await append(db_pool, thing(2), thing(3))
        assert [int(e["id"]) for e in await sse.events(2)] == after


async def test_too_many_clients_and_bad_parameters_are_refused(
    stream_config: Callable[..., CollectorConfig],
) -> None:
    async with (
        running_collector_app(stream_config(max_clients=1)) as (_, base),
        streaming(base),
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TEST_KEY}"}) as session,
    ):
        url = f"{base}/api/v1/stream"
        async with session.get(url) as response:
            assert response.status == 503
            assert response.headers["Content-Type"].startswith("application/problem+json")
            assert "Retry-After" in response.headers
        for params, headers, name in [
            ({"kinds": "Not A Kind"}, {}, "kinds"),
            ({"agents": "a,,b"}, {}, "agents"),
            ({"last_event_id": "-1"}, {}, "last_event_id"),
            ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
        ]:
            async with session.get(url, params=params, headers=headers) as response:
                assert response.status == 400, params
                body = await response.json(content_type=None)
                assert [p["name"] for p in body["invalid_params"]] == [name]


async def test_a_stream_before_the_hub_has_connected_is_refused(
    collector: tuple[web.Application, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, base = collector
    async with asyncio.timeout(10):
        await app[EVENT_HUB].wait_ready()  # so it does not connect after the swap below
    monkeypatch.setattr(stream_api, "READY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(app[EVENT_HUB], "_ready", asyncio.Event())
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/api/v1/stream", headers={"X-API-Key": TEST_KEY}) as response,
    ):
        assert response.status == 503
        assert "not connected" in (await response.json(content_type=None))["detail"]


async def test_a_database_failure_while_replaying_ends_the_stream(
    collector: tuple[web.Application, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(*_: object) -> list[object]:
        raise psycopg.OperationalError("the database went away")

    _, base = collector
    monkeypatch.setattr(stream_api, "events_after", failing)
    async with streaming(base, last_event_id="0") as sse:
        with pytest.raises(EOFError):
            await sse.event()


async def test_a_client_gone_is_forgotten_at_the_next_event_it_would_get(
    stream_config: Callable[..., CollectorConfig], db_pool: Pool
) -> None:
    async with running_collector_app(stream_config(heartbeat="1h")) as (app, base):
        hub = app[EVENT_HUB]
        async with streaming(base) as sse:
            await append(db_pool, thing(1))
            await sse.event()
        # No heartbeat notices it: sending the next events does.
        for n in range(1000):
            await append(db_pool, thing(n))
            if hub.clients == 0:
                break
        assert hub.clients == 0


async def test_streams_end_with_a_reason_when_their_collector_stops(
    stream_config: Callable[..., CollectorConfig],
) -> None:
    async with aiohttp.ClientSession() as session:
        async with running_collector_app(stream_config()) as (_, base):
            response = await session.get(
                f"{base}/api/v1/stream", headers={"Authorization": f"Bearer {TEST_KEY}"}
            )
        async with response:
            event = await Sse(response).event()
            assert (event["event"], event["data"]) == ("dropped", {"reason": "shutdown"})
            with pytest.raises(EOFError):
                await Sse(response).event()
