"""The event hub: one LISTEN connection per collector, fanning new events out to stream clients.

Every collector appends events to one table (collector/events.py) and notifies; each
collector's hub reads what is new by id, so a client of any replica sees every replica's
events, and a lost notification or a reconnect costs a delay, never an event.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import psycopg
from psycopg.rows import TupleRow

from collector.events import CHANNEL, StoredEvent, events_after, last_event_id
from shared.backoff import Backoff
from shared.cancellation import raise_if_cancelled
from shared.invariants import required

log = logging.getLogger(__name__)

POLL_S = 1.0
"""Longest wait for a notification before reading anyway (covers a lost one)."""
CONNECT_TIMEOUT_S = 10.0
QUERY_TIMEOUT_S = 10.0
SLOW = "slow"
"""Why a client whose queue filled up is dropped."""
SHUTDOWN = "shutdown"
"""Why every client is dropped when the collector stops."""

Accepts = Callable[[StoredEvent], bool]


class Subscriber:
    """A stream client: which events it wants, and those not yet sent, at most `limit`."""

    def __init__(self, accepts: Accepts, limit: int) -> None:
        self.accepts = accepts
        self._limit = limit
        self._events: deque[StoredEvent] = deque()
        self._arrived = asyncio.Event()
        self.dropped: str | None = None

    @property
    def queued(self) -> int:
        """Events waiting to be sent."""
        return len(self._events)

    def offer(self, event: StoredEvent) -> bool:
        """Queue the event; False when the queue is full."""
        if len(self._events) >= self._limit:
            return False
        self._events.append(event)
        self._arrived.set()
        return True

    def drop(self, reason: str) -> None:
        """Give up on this client: forget what it has queued, and say why."""
        self.dropped = reason
        self._events.clear()
        self._arrived.set()

    def take_queued(self) -> list[StoredEvent]:
        """Every event queued now, without waiting."""
        events = list(self._events)
        self._events.clear()
        return events

    async def next(self, timeout: float) -> StoredEvent | None:
        """The next event, or None once dropped; TimeoutError if none comes within `timeout`."""
        async with asyncio.timeout(timeout):
            while not self._events and self.dropped is None:
                self._arrived.clear()
                await self._arrived.wait()
        if self.dropped is not None:
            return None
        return self._events.popleft()


class EventHub:
    """Follows the events table and hands each new event to the subscribers that accept it."""

    def __init__(
        self,
        url: str,
        client_queue: int,
        *,
        poll_s: float = POLL_S,
        backoff: Backoff | None = None,
        dropped: Callable[[str], None] | None = None,
        arrived: Callable[[], None] | None = None,
    ) -> None:
        self._url = url
        self._dropped = dropped or (lambda _reason: None)
        self._arrived = arrived or (lambda: None)
        self._client_queue = client_queue
        self._poll_s = poll_s
        self._backoff = backoff or Backoff(initial=0.5, cap=10.0)
        self._subscribers: set[Subscriber] = set()
        self.encoded: dict[int, bytes] = {}
        """Events as the stream sends them, by id: encoded once, however many clients get them."""
        self._position: int | None = None
        self._ready = asyncio.Event()
        self._failing = False

    @property
    def clients(self) -> int:
        """Subscribers now."""
        return len(self._subscribers)

    async def wait_ready(self) -> None:
        """Return once the hub knows where the table ends (its first connection)."""
        await self._ready.wait()

    def subscribe(self, accepts: Accepts) -> tuple[Subscriber, int]:
        """A new subscriber, and the last id handed out before it: it gets every later one."""
        position = required(self._position, "the hub's position")
        subscriber = Subscriber(accepts, self._client_queue)
        self._subscribers.add(subscriber)
        return subscriber, position

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a subscriber (its client went away); no-op if it was dropped."""
        self._subscribers.discard(subscriber)

    def close(self) -> None:
        """Drop every subscriber: the collector stops, and their clients resume elsewhere."""
        for subscriber in self._subscribers:
            subscriber.drop(SHUTDOWN)
            self._dropped(SHUTDOWN)
        self._subscribers.clear()

    def dispatch(self, events: list[StoredEvent]) -> None:
        """Queue each event (there is at least one) for the subscribers that accept it; drop
        those that are full."""
        self._arrived()  # e.g. webhooks fan them out now, not at their next poll
        for event in events:
            for subscriber in list(self._subscribers):
                if subscriber.accepts(event) and not subscriber.offer(event):
                    # Dropped rather than waited for: a client that does not keep up must not
                    # hold the others back or grow this process's memory.
                    self._subscribers.discard(subscriber)
                    subscriber.drop(SLOW)
                    self._dropped(SLOW)
                    log.info("stream client dropped: %d events queued", self._client_queue)

    async def run(self) -> None:
        """Follow the table for as long as the collector runs, reconnecting when needed."""
        while True:
            try:
                await self._follow()
            except (psycopg.OperationalError, TimeoutError) as exc:
                raise_if_cancelled(exc)
                if not self._failing:
                    log.error("event hub lost the database: %s; reconnecting", exc)
                self._failing = True
            await asyncio.sleep(self._backoff.next_delay())

    async def _follow(self) -> None:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                application_name="plantwire-event-hub",
                # Times in UTC, as the pool's sessions give them (the API writes ...Z).
                options="-c TimeZone=UTC",
            )
        async with conn:
            async with asyncio.timeout(QUERY_TIMEOUT_S):
                # Listening first: what is committed after the reads below wakes the hub.
                await conn.execute(f"LISTEN {CHANNEL}")
                if self._position is None:
                    self._position = await last_event_id(conn)
                # Inside the block: coverage.py on Python 3.11 misplaces the arc out of an `if`
                # that ends an `async with`, and would not see a reconnect keep its position.
                self._ready.set()
            self._backoff.reset()
            if self._failing:
                log.info("event hub reconnected at event %d", self._position)
                self._failing = False
            while True:
                async with asyncio.timeout(QUERY_TIMEOUT_S):
                    await self._catch_up(conn)
                # Read at least every poll_s: a notification lost (or sent while this
                # connection was down) delays an event by that much, never loses it.
                async for _ in conn.notifies(timeout=self._poll_s, stop_after=1):
                    pass

    async def _catch_up(self, conn: psycopg.AsyncConnection[TupleRow]) -> None:
        while True:
            events = await events_after(conn, required(self._position, "the hub's position"))
            if not events:
                return
            self._position = events[-1].id
            self.dispatch(events)
