"""The event hub's subscribers, its dispatch, and its retries while the database is away."""

import asyncio
import logging
from datetime import UTC, datetime

import pytest

from collector.api import stream as stream_api
from collector.api.contract import openapi
from collector.api.operations import API
from collector.config import StreamSettings
from collector.event_hub import SHUTDOWN, SLOW, EventHub, Subscriber
from collector.events import StoredEvent
from shared.backoff import Backoff
from tests.harness import eventually

NOWHERE = "postgresql://nobody@127.0.0.1:1/none"


def stored(n: int, kind: str = "test.thing") -> StoredEvent:
    return StoredEvent(n, datetime.now(UTC), kind, "viewer", f"s{n}", {})


async def test_a_subscriber_waits_with_a_timeout_and_stops_at_a_drop() -> None:
    subscriber = Subscriber(lambda event: True, limit=2)
    with pytest.raises(TimeoutError):
        await subscriber.next(0.01)
    assert subscriber.offer(stored(1))
    assert subscriber.offer(stored(2))
    assert not subscriber.offer(stored(3))
    assert (await subscriber.next(0.01)).id == 1
    subscriber.drop(SLOW)
    assert subscriber.queued == 0  # what it held is released at once
    assert await subscriber.next(0.01) is None
    assert subscriber.dropped == "slow"


async def test_dispatch_offers_only_what_each_accepts_and_drops_the_full() -> None:
    hub = EventHub(NOWHERE, client_queue=1)
    hub._position = 0  # as after its first connection
    picky, _ = hub.subscribe(lambda event: event.kind == "test.other")
    eager, position = hub.subscribe(lambda event: True)
    assert (position, hub.clients) == (0, 2)
    hub.dispatch([stored(1), stored(2)])
    assert (hub.clients, eager.dropped, picky.dropped) == (1, SLOW, None)
    hub.dispatch([stored(3, "test.other")])
    assert (await picky.next(0.01)).id == 3
    hub.unsubscribe(eager)  # already gone: no error
    hub.close()
    assert (hub.clients, picky.dropped) == (0, SHUTDOWN)


class CountingBackoff(Backoff):
    """Tiny delays, counted."""

    def __init__(self) -> None:
        super().__init__(initial=0.001, cap=0.002)
        self.delays = 0

    def next_delay(self) -> float:
        self.delays += 1
        return super().next_delay()


async def test_the_hub_retries_a_missing_database_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backoff = CountingBackoff()
    hub = EventHub(NOWHERE, client_queue=10, backoff=backoff)
    with caplog.at_level(logging.INFO, logger="collector.event_hub"):
        task = asyncio.create_task(hub.run())

        async def retried() -> bool:
            return backoff.delays >= 3

        await eventually(retried, timeout=10, what="three attempts")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "event hub lost the database" in errors[0].getMessage()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await hub.wait_ready()


def test_the_contract_says_the_stream_is_text_event_stream() -> None:
    document = openapi(API)
    operation = document["paths"]["/api/v1/stream"]["get"]
    content = operation["responses"]["200"]["content"]
    assert list(content) == ["text/event-stream"]
    assert content["text/event-stream"]["schema"]["type"] == "string"
    assert content["text/event-stream"]["x-event-data"] == {
        "$ref": "#/components/schemas/StreamEventOut"
    }
    assert operation["x-required-role"] == "viewer"
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert names == {"kinds", "agents", "machines", "last_event_id"}


def test_stream_settings_have_defaults_and_refuse_unknown_keys() -> None:
    settings = StreamSettings()
    assert (settings.retention, settings.heartbeat) == (86400.0, 15.0)
    assert (settings.client_queue, settings.max_clients) == (1000, 500)
    assert StreamSettings.model_validate({"retention": "2h"}).retention == 7200.0
    with pytest.raises(ValueError, match="Extra inputs"):
        StreamSettings.model_validate({"retain": "2h"})


def test_an_event_is_encoded_once_and_the_oldest_encodings_are_let_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream_api, "FRAMES_KEPT", 2)
    encoded: dict[int, bytes] = {}
    first = stream_api._frame(encoded, stored(1, kind="a.b"))
    assert first.startswith(b"id: 1\r\nevent: a.b\r\ndata: {")
    assert first.endswith(b"}\r\n\r\n")
    assert first.count(b"\n") == 4  # one line each: id, event, data; then the blank one
    assert stream_api._frame(encoded, stored(1, kind="changed")) is first
    stream_api._frame(encoded, stored(2))
    stream_api._frame(encoded, stored(3))
    assert list(encoded) == [2, 3]
