"""make bench-wire: the batch payload as JSON against the binary format, on the same readings.

Both carry the same columns (tag index, sequence, timestamp, value, quality) and the same tag
dictionary, and both are checked as strictly. Measured per reading, medians of --runs:
  - size on the wire;
  - agent side: encoding from Reading objects;
  - collector side: decoding and checking, ending with numpy columns ready for COPY.
JSON is parsed two ways (by a pydantic model, as the first JSON format was, and by the
standard library), then turned into the same numpy columns and put through the same checks
as the binary format. The binary format is decoded with and without its dictionary cache.
Version 3 (keys `v3_*`) carries the same readings as polls: blocks of one pass over all tags;
its sizes are with the dictionary only named unless the key says `inline`, compressed unless
it says `plain`, and with one timestamp per block unless it says `rts` (the readings above,
whose timestamps all differ). Its encoding is split as the agent does it: blocks once, when
buffered (`v3_block_encode_ns`), then a batch from blocks per send (`v3_encode_ns`).
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.batches import Batch, BatchDecoder, TagTable, check_batch  # noqa: E402
from shared.blocks import Block, encode_block  # noqa: E402
from shared.readings import DataType, Quality, Reading  # noqa: E402
from shared.wire import TagDictionary, encode_batch  # noqa: E402
from shared.wire_v3 import dictionary_bytes, dictionary_hash, encode_batch_v3  # noqa: E402

TS = 1_795_627_950_000_000


class JsonBatch(BaseModel):
    """The JSON format's schema, checked per element by pydantic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    epoch: int
    batch: int
    tags: TagDictionary
    t: list[int]
    seq: list[int]
    ts: list[int]
    val: list[float | None]
    q: list[int]


def sample(count: int, tags: int) -> list[Reading]:
    """Float readings cycling over `tags` tags, one per millisecond."""
    return [
        Reading("press-1", f"t{i % tags:05d}", DataType.FLOAT64, TS + i * 1000, i * 0.37)
        for i in range(count)
    ]


def polled(count: int, tags: int) -> list[Reading]:
    """The same readings, but each pass over the tags is one poll sharing one timestamp."""
    return [
        Reading("press-1", f"t{i % tags:05d}", DataType.FLOAT64, TS + i // tags * 1000, i * 0.37)
        for i in range(count)
    ]


class V3:
    """Readings as version 3 blocks of one poll each, with the agent's dictionary."""

    def __init__(self, readings: list[Reading], tags: int) -> None:
        keys = sorted({(r.device, r.tag, r.data_type.value) for r in readings})
        self.index = {key[1]: i for i, key in enumerate(keys)}
        self.dictionary = dictionary_bytes(keys)
        self.hash = dictionary_hash(self.dictionary)
        self.polls = [readings[i : i + tags] for i in range(0, len(readings), tags)]
        self.blocks = self.encode_blocks()

    def encode_blocks(self) -> list[Block]:
        index = self.index
        return [
            encode_block(1 + i * len(self.polls[0]), poll, lambda r: index[r.tag])
            for i, poll in enumerate(self.polls)
        ]

    def batch(self, *, inline: bool = False, compress: bool = True) -> bytes:
        return encode_batch_v3(
            "a1",
            1,
            self.blocks,
            dict_hash=self.hash,
            dictionary=self.dictionary if inline else None,
            compress=compress,
        )


def encode_json(agent: str, epoch: int, seqs: list[int], readings: list[Reading]) -> bytes:
    """The same batch as columnar JSON with a sorted tag dictionary."""
    keys = sorted({(r.device, r.tag, r.data_type.value) for r in readings})
    index = {key: i for i, key in enumerate(keys)}
    document = {
        "agent": agent,
        "epoch": epoch,
        "batch": seqs[0],
        "tags": {
            "device": [k[0] for k in keys],
            "name": [k[1] for k in keys],
            "type": [k[2] for k in keys],
        },
        "t": [index[(r.device, r.tag, r.data_type.value)] for r in readings],
        "seq": seqs,
        "ts": [r.ts_us for r in readings],
        "val": [r.value for r in readings],
        "q": [int(r.quality) for r in readings],
    }
    return json.dumps(document, separators=(",", ":")).encode()


def decode_json(raw: bytes, *, pydantic: bool) -> Batch:
    """Parse JSON, then build and check the same columns as the binary decoder."""
    if pydantic:
        parsed = JsonBatch.model_validate_json(raw)
        document = parsed.model_dump()
        tags = parsed.tags
    else:
        document = json.loads(raw)
        tags = TagDictionary.model_validate(document["tags"])
    values = document["val"]
    batch = Batch(
        document["agent"],
        document["epoch"],
        document["batch"],
        TagTable.build(b"", tags),
        np.array(document["t"], np.uint32),
        np.array(document["seq"], np.int64),
        np.array(document["ts"], np.int64),
        np.array([0.0 if v is None else v for v in values], np.float64),
        np.array([v is None for v in values], np.uint8),
        np.array(document["q"], np.uint8),
        [],
    )
    check_batch(batch)
    return batch


def per_reading_ns(action: Callable[[], object], readings: int, runs: int) -> float:
    """Median nanoseconds per reading of `action` over `runs` timed repetitions."""
    action()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) / readings * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=5000, help="readings per batch")
    parser.add_argument("--tags", type=int, default=2000, help="distinct tags per batch")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    n = args.readings
    readings = sample(n, args.tags)
    seqs = list(range(1, n + 1))
    as_json = encode_json("a1", 1, seqs, readings)
    as_binary = encode_batch("a1", 1, seqs, readings)
    decoder = BatchDecoder()
    assert readings[0].quality is Quality.GOOD
    v3 = V3(polled(n, args.tags), args.tags)
    v3_rts = V3(readings, args.tags)
    v3_named, v3_plain = v3.batch(), v3.batch(compress=False)
    decoder.decode(v3.batch(inline=True), "a1")  # learns the dictionary, as from a first batch
    for payload in (v3_named, v3_plain, v3_rts.batch()):
        assert len(decoder.decode(payload, "a1")) == n, "every reading decodes and passes"
    figures = {
        "json_bytes_per_reading": len(as_json) / n,
        "binary_bytes_per_reading": len(as_binary) / n,
        "json_encode_ns": per_reading_ns(
            lambda: encode_json("a1", 1, seqs, readings), n, args.runs
        ),
        "binary_encode_ns": per_reading_ns(
            lambda: encode_batch("a1", 1, seqs, readings), n, args.runs
        ),
        "json_pydantic_decode_ns": per_reading_ns(
            lambda: decode_json(as_json, pydantic=True), n, args.runs
        ),
        "json_stdlib_decode_ns": per_reading_ns(
            lambda: decode_json(as_json, pydantic=False), n, args.runs
        ),
        "binary_decode_uncached_ns": per_reading_ns(
            lambda: BatchDecoder(cache_size=0).decode(as_binary, "a1"), n, args.runs
        ),
        "binary_decode_ns": per_reading_ns(lambda: decoder.decode(as_binary, "a1"), n, args.runs),
        "v3_bytes_per_reading": len(v3_named) / n,
        "v3_plain_bytes_per_reading": len(v3_plain) / n,
        "v3_inline_bytes_per_reading": len(v3.batch(inline=True)) / n,
        "v3_rts_bytes_per_reading": len(v3_rts.batch()) / n,
        "v3_block_encode_ns": per_reading_ns(v3.encode_blocks, n, args.runs),
        "v3_encode_ns": per_reading_ns(v3.batch, n, args.runs),
        "v3_plain_encode_ns": per_reading_ns(lambda: v3.batch(compress=False), n, args.runs),
        "v3_decode_ns": per_reading_ns(lambda: decoder.decode(v3_named, "a1"), n, args.runs),
        "v3_plain_decode_ns": per_reading_ns(lambda: decoder.decode(v3_plain, "a1"), n, args.runs),
    }
    print(f"one batch of {n} float64 readings over {args.tags} tags; medians of {args.runs} runs")
    for key, value in figures.items():
        print(f"  {key.replace('_', ' ')}: {value:,.1f}")
    print("RESULT " + " ".join(f"{key}={value:.1f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
