"""A misbehaving neighbour: a second agent identity flooding its own topics with garbage.

Runs as its own process (`python -m tests.faults.neighbour ...`) beside a plant, publishing at
QoS 1 as fast as the broker acknowledges, for a bounded time and number of messages. It writes
a JSON report of what it sent, so the test knows which of its readings must be stored exactly
once and which must never be stored.
"""

import argparse
import asyncio
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import MqttError
from shared.mqtt import MqttClient, MqttSettings
from shared.readings import DataType, Quality, Reading, Value
from shared.wire import PREAMBLE, WIRE_VERSION, Topics, encode_batch
from tests.payloads import join, mutate, split

TS_1601_US = -11_644_473_600_000_000
"""1601-01-01, OPC UA's null DateTime, in microseconds since the Unix epoch."""
TS_9999_US = 253_402_300_799_000_000
"""9999-12-31T23:59:59, what an out-of-range OPC UA server timestamp decodes to."""
HUGE_STATUS_BYTES = 1_200_000
"""Size of the schema-valid but huge state and heartbeat messages: beyond any sane limit."""
HUGE_EVERY = 1500
"""A huge state and a huge heartbeat per this many messages (each kept whole as a dead letter)."""
HUGE_MAX = 3
"""Most huge messages of each status kind in one run."""
OVERSIZED_EVERY = 100
"""One batch above the collector's payload limit per this many messages (kept whole too)."""

# The neighbour's own tags: one of each family of checks the collector makes on a value.
TAGS = (
    ("oven", "door", DataType.BOOL),
    ("oven", "level", DataType.UINT16),
    ("oven", "offset", DataType.INT16),
    ("oven", "temp", DataType.FLOAT64),
    ("oven", "recipe", DataType.STRING),
)
# Readings that fail validation one by one, each in a batch that is otherwise good.
BAD_READINGS: tuple[tuple[str, int, DataType, Value], ...] = (
    ("timestamp_1601", TS_1601_US, DataType.FLOAT64, 20.5),
    ("timestamp_9999", TS_9999_US, DataType.UINT16, 7),
    ("uint16_too_big", 0, DataType.UINT16, 70_000),
    ("uint16_negative", 0, DataType.UINT16, -1),
    ("int16_fraction", 0, DataType.INT16, 1.5),
    ("int16_too_small", 0, DataType.INT16, -40_000),
    ("bool_two", 0, DataType.BOOL, 2),
)


@dataclass
class Report:
    """What the neighbour sent; seqs are its own sequence numbers (epoch 1).

    `refused_readings` are the bad readings of otherwise good batches (all in `must_not_store`).
    """

    sent: Counter[str] = field(default_factory=Counter)
    must_store: list[int] = field(default_factory=list)
    must_not_store: list[int] = field(default_factory=list)
    refused_readings: list[int] = field(default_factory=list)
    spoofed_batches: list[int] = field(default_factory=list)
    failed: int = 0
    sentinel_seq: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """A plain dict for json.dump."""
        return {
            "sent": dict(self.sent),
            "must_store": self.must_store,
            "must_not_store": self.must_not_store,
            "refused_readings": self.refused_readings,
            "spoofed_batches": self.spoofed_batches,
            "failed": self.failed,
            "sentinel_seq": self.sentinel_seq,
            "seconds": self.seconds,
        }


Payload = tuple[str, bytes]
"""(topic kind: batch, state or heartbeat; payload)."""


class Garbage:
    """Makes the neighbour's messages, each kind in turn, and notes which readings are good."""

    def __init__(
        self,
        agent: str,
        *,
        victim: str,
        victim_epoch: int,
        victim_from: int,
        payload_limit: int,
        seed: int,
    ) -> None:
        self.agent = agent
        self.victim = victim
        self.victim_epoch = victim_epoch
        self.victim_next = victim_from
        self.payload_limit = payload_limit
        self.rng = random.Random(seed)
        self.report = Report()
        self.seq = 0
        self.recent: list[bytes] = []
        self.count = 0
        weights: dict[str, int] = {
            "batch_malformed": 2,
            "batch_random": 2,
            "batch_version": 1,
            "batch_schema": 2,
            "batch_agent_mismatch": 1,
            "batch_mixed": 4,
            "batch_good": 1,
            "batch_resend": 1,
            "state_malformed": 1,
            "state_schema": 1,
            "heartbeat_malformed": 1,
            "heartbeat_schema": 1,
        }
        order = [kind for kind, weight in weights.items() for _ in range(weight)]
        self.rng.shuffle(order)
        self._kinds = itertools.cycle(order)
        self._makers: dict[str, Callable[[], Payload]] = {
            kind: getattr(self, f"_{kind}")
            for kind in [*weights, "batch_oversized", "state_huge", "heartbeat_huge"]
        }

    def next(self) -> tuple[str, Payload]:
        """The next message: (what it is, (topic kind, payload))."""
        self.count += 1
        kind = next(self._kinds)
        if self.count % OVERSIZED_EVERY == 0:
            kind = "batch_oversized"
        huge = {100: "state_huge", 200: "heartbeat_huge"}.get(self.count % HUGE_EVERY)
        if huge is not None and self.count // HUGE_EVERY < HUGE_MAX:
            kind = huge
        return kind, self._makers[kind]()

    # -- batches --------------------------------------------------------------------------

    def _readings(self, n: int) -> list[Reading]:
        now = time.time_ns() // 1000
        out = []
        for i in range(n):
            device, tag, data_type = TAGS[self.rng.randrange(len(TAGS))]
            value: Value
            if data_type is DataType.BOOL:
                value = self.rng.random() < 0.5
            elif data_type is DataType.UINT16:
                value = self.rng.randrange(65_536)
            elif data_type is DataType.INT16:
                value = self.rng.randrange(-32_768, 32_768)
            elif data_type is DataType.FLOAT64:
                value = self.rng.uniform(-1e6, 1e6)
            else:
                value = self.rng.choice(["RECIPE-A", "RECIPE-B", "", "é" * 40])
            out.append(Reading(device, tag, data_type, now + i, value, Quality.GOOD))
        return out

    def _seqs(self, n: int) -> list[int]:
        first = self.seq + 1
        self.seq += n
        return list(range(first, first + n))

    def _refused_batch(self, n: int) -> tuple[list[int], bytes]:
        """A valid batch whose readings must never be stored, since something else spoils it."""
        seqs = self._seqs(n)
        self.report.must_not_store.extend(seqs)
        return seqs, encode_batch(self.agent, 1, seqs, self._readings(n))

    def _batch_malformed(self) -> Payload:
        options = [
            b"",
            b"{}",
            b"PW",
            b"PWB",
            b"not a batch at all",
            # A preamble whose header length runs far past the payload's end.
            PREAMBLE.pack(b"PWB", WIRE_VERSION, 2**31, 2**31) + b"{}",
        ]
        return "batch", self.rng.choice(options)

    def _batch_random(self) -> Payload:
        raw = self.rng.randbytes(self.rng.randint(1, 512))
        return "batch", b"\x00" + raw  # never the magic bytes by chance

    def _batch_oversized(self) -> Payload:
        # Real readings that would be stored were the size limit not enforced.
        n = self.payload_limit // 30 + 10
        _, raw = self._refused_batch(n)
        assert len(raw) > self.payload_limit
        return "batch", raw

    def _batch_version(self) -> Payload:
        _, raw = self._refused_batch(5)
        header, dictionary, columns = split(raw)
        version = self.rng.choice([1, WIRE_VERSION + 1, 255])
        return "batch", join(header, dictionary, columns, version=version)

    def _batch_schema(self) -> Payload:
        seqs, raw = self._refused_batch(6)
        dictionary = split(raw)[1]
        breakages: list[Callable[[], bytes]] = [
            lambda: mutate(raw, n=7),  # the body is too short for n
            lambda: mutate(raw, epoch=0),
            lambda: mutate(raw, batch=seqs[0] + 1),  # batch id is not the first seq
            lambda: mutate(raw, seq=seqs[::-1]),  # sequence numbers go backwards
            lambda: mutate(raw, colour="red"),  # a header field nobody knows
            lambda: mutate(raw, device=dictionary["device"][:-1] or ["x", "y"]),
            lambda: mutate(raw, type=["decimal128"] * len(dictionary["type"])),
            lambda: raw[:-3],  # truncated
        ]
        return "batch", self.rng.choice(breakages)()

    def _batch_agent_mismatch(self) -> Payload:
        """A valid batch on our topic naming the victim agent, with a batch id it will use.

        Were it stored, the victim's own batch of that id would later look like a resend
        and be dropped, and its reading would appear twice.
        """
        batch_id = self.victim_next
        self.victim_next += 1
        self.report.spoofed_batches.append(batch_id)
        now = time.time_ns() // 1000
        reading = Reading("press", "count", DataType.UINT32, now, 1, Quality.GOOD)
        return "batch", encode_batch(self.victim, self.victim_epoch, [batch_id], [reading])

    def _batch_mixed(self) -> Payload:
        """Mostly good readings and one to three bad ones, at random places."""
        readings = self._readings(self.rng.randint(8, 40))
        bad_at = set(self.rng.sample(range(len(readings)), self.rng.randint(1, 3)))
        for i in bad_at:
            _, ts, data_type, value = self.rng.choice(BAD_READINGS)
            device, tag = next((d, t) for d, t, dt in TAGS if dt is data_type)
            readings[i] = Reading(device, tag, data_type, ts or readings[i].ts_us, value)
        seqs = self._seqs(len(readings))
        for i, seq in enumerate(seqs):
            if i in bad_at:
                self.report.must_not_store.append(seq)
                self.report.refused_readings.append(seq)
            else:
                self.report.must_store.append(seq)
        raw = encode_batch(self.agent, 1, seqs, readings)
        self._remember(raw)
        return "batch", raw

    def _batch_good(self) -> Payload:
        raw = self.good_batch()
        self._remember(raw)
        return "batch", raw

    def good_batch(self) -> bytes:
        """A batch of only good readings, all of which must be stored."""
        readings = self._readings(self.rng.randint(1, 20))
        seqs = self._seqs(len(readings))
        self.report.must_store.extend(seqs)
        return encode_batch(self.agent, 1, seqs, readings)

    def _batch_resend(self) -> Payload:
        """A batch sent before, as an agent resends one whose acknowledgement it missed."""
        if not self.recent:
            return self._batch_good()
        return "batch", self.rng.choice(self.recent)

    def _remember(self, raw: bytes) -> None:
        self.recent.append(raw)
        del self.recent[:-50]

    # -- status ---------------------------------------------------------------------------

    def _not_json(self) -> bytes:
        options = [b"{", b"\xff\xfe\x00", b"null", b"[]", b"42", b'"online"', b"{}"]
        return self.rng.choice([*options, self.rng.randbytes(self.rng.randint(1, 256))])

    def _state_malformed(self) -> Payload:
        return "state", self._not_json()

    def _heartbeat_malformed(self) -> Payload:
        return "heartbeat", self._not_json()

    def _state(self, **changes: object) -> dict[str, object]:
        state: dict[str, object] = {
            "v": 1,
            "status": "online",
            "version": "0.0.0",
            "config_hash": "0" * 64,
            "devices": ["oven"],
            "epoch": 1,
        }
        state.update(changes)
        return state

    def _heartbeat(self, **changes: object) -> dict[str, object]:
        beat: dict[str, object] = {
            "v": 1,
            "ts": time.time_ns() // 1000,
            "buffer": {
                "readings": 0,
                "oldest_age_s": None,
                "in_flight": 0,
                "dropped_oldest": 0,
                "dropped_newest": 0,
                "used_bytes": 0,
            },
            "devices": {"oven": "connected"},
            "readings_acknowledged": 0,
        }
        beat.update(changes)
        return beat

    def _state_schema(self) -> Payload:
        wrong = self.rng.choice(
            [
                self._state(v=2),
                self._state(status="sideways"),
                self._state(epoch="one"),
                self._state(extra=True),
                {"v": 1},
                self._heartbeat(),  # a heartbeat on the state topic
            ]
        )
        return "state", json.dumps(wrong).encode()

    def _heartbeat_schema(self) -> Payload:
        wrong = self.rng.choice(
            [
                self._heartbeat(v=0),
                self._heartbeat(buffer={"readings": "many"}),
                self._heartbeat(devices=["oven"]),
                self._heartbeat(ts=None),
                self._state(),  # a birth message on the heartbeat topic
            ]
        )
        return "heartbeat", json.dumps(wrong).encode()

    def _huge_devices(self) -> list[str]:
        return [f"device-{i:07d}" for i in range(HUGE_STATUS_BYTES // 16)]

    def _state_huge(self) -> Payload:
        """A birth message that passes its schema but is far larger than any real one."""
        return "state", json.dumps(self._state(devices=self._huge_devices())).encode()

    def _heartbeat_huge(self) -> Payload:
        """A heartbeat that passes its schema but is far larger than any real one."""
        devices = dict.fromkeys(self._huge_devices(), "connected")
        return "heartbeat", json.dumps(self._heartbeat(devices=devices)).encode()


async def flood(
    url: str,
    prefix: str,
    garbage: Garbage,
    *,
    seconds: float,
    max_messages: int,
    window: int = 100,
) -> Report:
    """Publish garbage with `window` messages awaiting PUBACK, then one last good batch."""
    topics = Topics(prefix)
    agent = garbage.agent
    topic_of = {"batch": topics.batch(agent), "state": topics.state(agent)}
    topic_of["heartbeat"] = topics.heartbeat(agent)
    settings = MqttSettings(url=url, topic_prefix=prefix, max_inflight=window)
    client = MqttClient(settings, client_id=f"{agent}-neighbour", persistent_session=False)
    await client.connect()
    report = garbage.report
    room = asyncio.Semaphore(window)
    sending: set[asyncio.Task[None]] = set()

    async def send(what: str, kind: str, payload: bytes) -> None:
        try:
            await client.publish(topic_of[kind], payload, qos=1, timeout=30)
            report.sent[what] += 1
        except MqttError:
            report.failed += 1
        finally:
            room.release()

    started = time.monotonic()
    try:
        while garbage.count < max_messages and time.monotonic() - started < seconds:
            await room.acquire()
            what, (kind, payload) = garbage.next()
            task = asyncio.create_task(send(what, kind, payload))
            sending.add(task)
            task.add_done_callback(sending.discard)
        await asyncio.gather(*sending)
        report.seconds = time.monotonic() - started
        # Last, after the broker has taken everything else: once the collector has stored
        # this batch, it has been through all of the garbage.
        sentinel = garbage.good_batch()
        await client.publish(topics.batch(agent), sentinel, qos=1, timeout=30)
        report.sent["batch_sentinel"] += 1
        report.sentinel_seq = garbage.seq
    finally:
        for task in sending:
            task.cancel()
        await client.close()
    return report


def main() -> None:
    """Command line: flood a broker, write the report."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="mqtt://host:port of the broker")
    parser.add_argument("--prefix", required=True, help="topic prefix of the plant")
    parser.add_argument("--agent", default="rogue", help="the neighbour's agent id")
    parser.add_argument("--victim", required=True, help="agent id to impersonate in payloads")
    parser.add_argument("--victim-epoch", type=int, required=True)
    parser.add_argument("--victim-from", type=int, required=True, help="first batch id to spoof")
    parser.add_argument("--payload-limit", type=int, required=True, help="collector's limit")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-messages", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    garbage = Garbage(
        args.agent,
        victim=args.victim,
        victim_epoch=args.victim_epoch,
        victim_from=args.victim_from,
        payload_limit=args.payload_limit,
        seed=args.seed,
    )
    report = asyncio.run(
        flood(args.url, args.prefix, garbage, seconds=args.seconds, max_messages=args.max_messages)
    )
    args.report.write_text(json.dumps(report.as_json()))


if __name__ == "__main__":
    main()
