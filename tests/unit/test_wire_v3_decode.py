"""Version 3 batches on the collector: round trips, the block table, dictionaries, bad input."""

import json
import math
import time
import tracemalloc
import zlib
from array import array
from collections.abc import Sequence

import pytest

from collector.batches import Batch, BatchDecoder, TimeWindow, UnknownDictionary, decode_batch
from shared.acks import Refusal, decode_ack, encode_ack
from shared.errors import WireError
from shared.readings import DataType, Reading
from shared.wire import MAGIC, PREAMBLE, batch_identity, encode_batch
from shared.wire_v3 import WIRE_V3, dictionary_hash
from tests.payloads import join_v3, mixed_readings, v3_batch

TS = 1_790_000_000_000_000
HASH = "0123456789abcdef0123456789abcdef"


def same_time(count: int, at: int, device: str = "oven") -> list[Reading]:
    """One poll: readings sharing their timestamp, so their block carries no ts column."""
    return [Reading(device, f"t{i}", DataType.FLOAT64, at, i * 0.5) for i in range(count)]


def assert_same(received: Sequence[Reading], sent: Sequence[Reading]) -> None:
    assert len(received) == len(sent)
    for got, want in zip(received, sent, strict=True):
        if isinstance(want.value, float) and math.isnan(want.value):
            assert isinstance(got.value, float)
            assert math.isnan(got.value)
            assert got._replace(value=None) == want._replace(value=None)
        else:
            assert got == want
            assert type(got.value) is type(want.value)


RUNS = {
    # Blocks with gaps between their sequence ranges, as when other polls went elsewhere.
    "rts and sts": [
        (10, mixed_readings()[:3]),
        (20, mixed_readings()[3:7]),
        (100, mixed_readings()[7:]),
    ],
    "one timestamp per block": [(5, same_time(3, TS)), (9, same_time(2, TS + 5))],
    "mixed blocks": [(1, same_time(4, TS)), (5, mixed_readings()), (40, same_time(1, TS + 99))],
}


@pytest.mark.parametrize("compress", [True, False], ids=["zlib", "plain"])
@pytest.mark.parametrize("name", list(RUNS))
def test_round_trip_gives_back_the_readings_and_their_sequence_numbers(
    name: str, compress: bool
) -> None:
    runs = RUNS[name]
    payload = v3_batch("a1", 7, runs, compress=compress).payload
    batch = decode_batch(payload, "a1")
    sent = [r for _, readings in runs for r in readings]
    assert (batch.agent, batch.epoch, batch.batch_id) == ("a1", 7, runs[0][0])
    assert batch.refused is None
    assert_same(batch.readings, sent)
    seqs = [first + i for first, readings in runs for i in range(len(readings))]
    assert batch.seqs.tolist() == seqs
    assert batch.last_seq == seqs[-1]
    assert batch_identity(payload) == ("a1", 7, runs[0][0], len(sent))
    has_sts = any(r.server_ts_us is not None for r in sent)
    assert (batch.server_ts is not None) == has_sts


def test_a_batch_naming_its_dictionary_needs_one_sent_or_learned_before() -> None:
    first = v3_batch("a1", 1, [(1, mixed_readings())])
    named = v3_batch("a1", 1, [(11, mixed_readings())], inline=False)
    assert named.hash == first.hash
    assert len(named.payload) < len(first.payload)
    decoder = BatchDecoder()
    decoder.decode(first.payload, "a1")
    assert decoder.knows("a1", first.hash)
    batch = decoder.decode(named.payload, "a1")
    assert batch.dictionary == first.hash
    assert batch.tags.raw == first.dictionary, "kept without padding, as it is hashed"
    assert_same(batch.readings, mixed_readings())

    replica = BatchDecoder()
    with pytest.raises(UnknownDictionary) as raised:
        replica.decode(named.payload, "a1")
    missing = raised.value
    assert (missing.agent, missing.hash, missing.epoch, missing.batch_id) == (
        "a1",
        named.hash,
        1,
        11,
    )
    assert missing.reason == "dictionary"
    with pytest.raises(WireError, match="another hash"):
        replica.learn("a1", named.hash, first.dictionary + b"x")
    replica.learn("a1", named.hash, first.dictionary)
    assert_same(replica.decode(named.payload, "a1").readings, mixed_readings())


def test_dictionaries_are_per_agent() -> None:
    decoder = BatchDecoder()
    decoder.decode(v3_batch("a1", 1, [(1, mixed_readings())]).payload, "a1")
    other = v3_batch("a2", 1, [(1, mixed_readings())], inline=False).payload
    with pytest.raises(UnknownDictionary):
        decoder.decode(other, "a2")


async def test_resolve_learns_what_the_loader_finds() -> None:
    sent = v3_batch("a1", 1, [(1, mixed_readings())], inline=False)
    asked: list[tuple[str, str]] = []

    async def load(agent: str, dict_hash: str) -> bytes | None:
        asked.append((agent, dict_hash))
        return sent.dictionary if agent == "a1" else None

    decoder = BatchDecoder()
    with pytest.raises(UnknownDictionary) as raised:
        decoder.decode(sent.payload, "a1")
    assert await decoder.resolve(raised.value, load)
    assert len(decoder.decode(sent.payload, "a1")) == len(mixed_readings())
    other = v3_batch("a2", 1, [(1, mixed_readings())], inline=False).payload
    with pytest.raises(UnknownDictionary) as raised:
        decoder.decode(other, "a2")
    assert not await decoder.resolve(raised.value, load)
    assert asked == [("a1", sent.hash), ("a2", sent.hash)]


def table_body(first_seqs: list[int], counts: list[int], n: int) -> bytes:
    """A body with this block table and `n` readings of float64 values 0 at tag index 0."""
    blocks = len(first_seqs)
    return b"".join(
        [
            array("q", first_seqs).tobytes(),
            array("q", [TS] * blocks).tobytes(),
            array("I", counts).tobytes(),
            array("d", [0.0] * n).tobytes(),
            array("I", [0] * n).tobytes(),
            bytes(n),  # quality good
            bytes(n),  # kind number
        ]
    )


ONE_TAG = b'{"device":["d"],"name":["x"],"type":["float64"]}'


def crafted(first_seqs: list[int], counts: list[int], n: int, **header: object) -> bytes:
    """A version 3 payload with this block table, carrying a one-tag dictionary inline."""
    fields: dict[str, object] = {
        "agent": "a1",
        "epoch": 1,
        "batch": first_seqs[0],
        "n": n,
        "blocks": len(first_seqs),
        "tags": dictionary_hash(ONE_TAG),
        **header,
    }
    return join_v3(fields, ONE_TAG + table_body(first_seqs, counts, n), len(ONE_TAG))


def test_a_well_formed_crafted_batch_decodes() -> None:
    batch = decode_batch(crafted([5, 9], [2, 1], 3), "a1")
    assert batch.seqs.tolist() == [5, 6, 9]
    assert batch.ts.tolist() == [TS] * 3


def bad_payloads() -> list[tuple[bytes, str, str]]:
    good = v3_batch("a1", 1, [(1, mixed_readings()[:4]), (10, mixed_readings()[4:])]).payload
    plain = v3_batch(
        "a1", 1, [(1, mixed_readings()[:4]), (10, mixed_readings()[4:])], compress=False
    ).payload
    named = v3_batch("a1", 1, [(1, mixed_readings())], compress=False)
    # The header names the dictionary's hash; another hash of the same length keeps the
    # lengths right, so only the hash check can catch it.
    wrong_hash = named.payload.replace(named.hash.encode(), HASH.encode())
    return [
        (crafted([5, 9], [3, 0], 3), "schema", "block 1 holds no readings"),
        (crafted([5, 9], [1, 1], 3), "schema", "the blocks hold 2 readings; the header says 3"),
        (crafted([5, 9], [2, 1], 3, batch=4), "schema", "first block's first sequence number"),
        (crafted([5, 6], [2, 1], 3), "schema", "block 1 starts inside the sequence range"),
        (crafted([5, 3], [2, 1], 3), "schema", "block 1 starts inside the sequence range"),
        (crafted([5, -9], [2, 1], 3), "schema", "sequence numbers start at 1"),
        (crafted([2**63 - 2, 2**62], [1, 4], 5), "schema", "starts inside"),
        (crafted([2**63 - 3], [5], 5), "schema", "run past 2**63 - 1"),
        (crafted([1], [2], 2, blocks=3), "schema", "3 blocks cannot hold 2 readings"),
        (plain[:-1], "schema", "the header implies"),
        (plain + b"\0", "schema", "the header implies"),
        (good[:-6], "schema", "do not end"),
        (good[:-4] + bytes(4), "malformed", "do not inflate"),  # a wrong checksum
        (wrong_hash, "schema", "does not match its hash"),
        (good, "agent_mismatch", "differs from topic agent"),
    ]


@pytest.mark.parametrize(("raw", "reason", "message"), bad_payloads())
def test_bad_payloads_are_rejected_with_a_reason(raw: bytes, reason: str, message: str) -> None:
    agent = "a2" if reason == "agent_mismatch" else "a1"
    with pytest.raises(WireError) as raised:
        decode_batch(raw, agent)
    assert raised.value.reason == reason
    assert message in str(raised.value)


def zlib_bomb(readings: int) -> bytes:
    """A payload announcing `readings` readings whose zlib stream inflates to 256 MiB."""
    deflater = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    bomb = b"".join(deflater.compress(chunk) for _ in range(256)) + deflater.flush()
    header = {"agent": "a1", "epoch": 1, "batch": 1, "n": readings, "blocks": 1}
    head = json.dumps({**header, "tags": HASH, "z": True}).encode()
    return PREAMBLE.pack(MAGIC, WIRE_V3, len(head), 0) + head + bomb


@pytest.mark.parametrize(
    ("readings", "limit", "reason", "message"),
    [
        (1, None, "schema", "inflate to more than the 34 bytes"),
        # A header may announce a lot; the decoder's bound applies before inflating.
        (50_000_000, 1 << 24, "too_large", "at most 16777216 are allowed"),
    ],
)
def test_a_zlib_bomb_is_refused_quickly_without_inflating_it(
    readings: int, limit: int | None, reason: str, message: str
) -> None:
    payload = zlib_bomb(readings)
    assert len(payload) < 300_000
    decoder = BatchDecoder(max_inflated_bytes=limit)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(WireError, match=message) as raised:
            decoder.decode(payload, "a1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert raised.value.reason == reason
    assert time.perf_counter() - started < 1.0
    assert peak < 4 << 20, f"{peak} bytes allocated for a bomb of 256 MiB"


def test_readings_are_refused_one_by_one_as_in_version_2() -> None:
    readings = mixed_readings()
    window = TimeWindow(TS + 1, TS + 9)  # refuses readings 0, 8 and 9
    v2 = BatchDecoder(window=window).decode(
        encode_batch("a1", 1, list(range(1, 11)), readings), "a1"
    )
    v3 = BatchDecoder(window=window).decode(
        v3_batch("a1", 1, [(1, readings[:5]), (6, readings[5:])]).payload, "a1"
    )
    assert v2.refused is not None
    assert v3.refused is not None
    assert v3.refused == v2.refused
    assert v3.refused.idx == [0, 8, 9]
    assert v3.refused.counts() == {"timestamp": 3}
    assert_same(v3.readings, v2.readings)
    assert v3.last_seq == 10, "the ledger still records the batch's whole range"
    gapped = BatchDecoder(window=window).decode(
        v3_batch("a1", 1, [(1, readings[:5]), (60, readings[5:])]).payload, "a1"
    )
    assert gapped.refused is not None
    assert gapped.refused.seqs == [1, 63, 64]


def test_a_bad_value_in_a_block_is_refused_alone() -> None:
    readings = same_time(3, TS)
    bad = Reading("oven", "count", DataType.UINT16, TS, 70_000)
    batch: Batch = decode_batch(v3_batch("a1", 1, [(1, [*readings, bad])]).payload, "a1")
    assert batch.refused is not None
    assert batch.refused.reasons == ["reading"]
    assert "70000.0 is not valid for a uint16 tag" in batch.refused.errors[0]
    assert_same(batch.readings, readings)


def test_ack_lists_batches_to_send_again_with_their_dictionary_only_when_there_are_some() -> None:
    assert encode_ack(5, [1], refused=[Refusal(batch=1, readings={"timestamp": 1})]) == (
        b'{"v":2,"epoch":5,"stored":[1],"rejected":[],'
        b'"refused":[{"batch":1,"readings":{"timestamp":1}}]}'
    )
    assert encode_ack(5, [1], version=1) == b'{"v":1,"epoch":5,"stored":[1],"rejected":[]}'
    asking = encode_ack(5, [], dictionary=[11, 21])
    assert decode_ack(asking).dictionary == [11, 21]
    assert b'"dictionary":[11,21]' in asking
    assert b"dictionary" not in encode_ack(5, [], dictionary=[11], version=1)
    with pytest.raises(WireError, match="v1 carries no"):
        decode_ack(b'{"v":1,"epoch":5,"dictionary":[11]}')
