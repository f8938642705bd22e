"""The batch payload: round trip, and a clear WireError for each kind of bad input."""

import json
import math

import pytest

from shared.errors import WireError
from shared.readings import DataType, Quality, Reading
from shared.wire import Topics, decode_batch, encode_batch

TS = 1_790_000_000_000_000


def sample() -> list[Reading]:
    return [
        Reading("press", "running", DataType.BOOL, TS, True),
        Reading("press", "count", DataType.UINT32, TS + 1, 4_000_000_000),
        Reading("press", "temp", DataType.FLOAT32, TS + 2, 65.0),
        Reading("press", "temp", DataType.FLOAT32, TS + 3, math.nan),
        Reading("press", "program", DataType.STRING, TS + 4, "P-1"),
        Reading("press", "huge", DataType.UINT64, TS + 5, 2**64 - 1),
        Reading("press", "temp", DataType.FLOAT32, TS + 6, None, Quality.BAD),
        Reading("press", "offset", DataType.INT16, TS + 7, -5, Quality.UNCERTAIN, TS + 8),
    ]


def test_round_trip_keeps_values_types_and_order() -> None:
    readings = sample()
    raw = encode_batch("a1", 7, list(range(10, 18)), readings)
    batch = decode_batch(raw, "a1")
    assert (batch.agent, batch.epoch, batch.batch_id) == ("a1", 7, 10)
    assert list(batch.seqs) == list(range(10, 18))
    for sent, received in zip(readings, batch.readings, strict=True):
        assert received.data_type is sent.data_type
        assert received.quality is sent.quality
        assert received.ts_us == sent.ts_us
        assert received.server_ts_us == sent.server_ts_us
        if isinstance(sent.value, float) and math.isnan(sent.value):
            assert isinstance(received.value, float)
            assert math.isnan(received.value)
        else:
            assert received.value == sent.value
            assert type(received.value) is type(sent.value)


def test_tag_dictionary_has_each_tag_once() -> None:
    document = json.loads(encode_batch("a1", 1, list(range(1, 9)), sample()))
    assert len(document["tags"]) == 6
    assert document["t"][2] == document["t"][3] == document["t"][6]


def good() -> dict[str, object]:
    document: dict[str, object] = json.loads(encode_batch("a1", 1, [1, 2], sample()[:2]))
    return document


def mutate(**changes: object) -> bytes:
    document = good()
    document.update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("raw", "reason", "message"),
    [
        (b"\xff\xfe", "not_json", "not JSON"),
        (b"{", "not_json", "not JSON"),
        (mutate(v=2), "version", "unsupported wire version 2"),
        (mutate(epoch="x"), "schema", "payload field epoch"),
        (mutate(extra=1), "schema", "payload field extra"),
        (mutate(agent="other"), "agent_mismatch", "differs from topic agent"),
        (mutate(seq=[], t=[], ts=[], val=[], q=[], batch=1), "schema", "no readings"),
        (mutate(ts=[TS]), "schema", "differ in length"),
        (mutate(batch=2), "schema", "first sequence number"),
        (mutate(seq=[1, 1]), "schema", "must increase"),
        (mutate(t=[0, 5]), "reading", "tag index 5 is outside 0..1"),
        (mutate(ts=[TS, 5]), "timestamp", "outside 2000..2100"),
        (mutate(sts=[None, 5]), "timestamp", "outside 2000..2100"),
        (mutate(sts=[None]), "schema", "differ in length"),
        (mutate(val=[None, 1]), "reading", "needs quality bad"),
        (mutate(val=[True, -1]), "reading", "not a valid uint32"),
        (mutate(val=[1, 2]), "reading", "not a valid bool"),
        (mutate(val=[True, "x"]), "reading", "not a valid uint32"),
        (mutate(q=[0, 9]), "schema", "quality 9 is outside 0..2"),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(raw: bytes, reason: str, message: str) -> None:
    with pytest.raises(WireError, match=message) as caught:
        decode_batch(raw, "a1")
    assert caught.value.reason == reason


def test_integral_json_number_for_a_float_tag_is_a_float() -> None:
    readings = [Reading("d", "t", DataType.FLOAT64, TS, 3.0)]
    document = json.loads(encode_batch("a1", 1, [1], readings))
    document["val"] = [3]
    batch = decode_batch(json.dumps(document).encode(), "a1")
    assert batch.readings[0].value == 3.0
    assert type(batch.readings[0].value) is float


def test_topics() -> None:
    topics = Topics("site/plantwire")
    assert topics.batch("a1") == "site/plantwire/v1/a1/batch"
    assert topics.all_batches() == "site/plantwire/v1/+/batch"
    assert topics.agent_of("site/plantwire/v1/a1/batch") == "a1"
    for topic in ("site/plantwire/v2/a1/batch", "other/plantwire/v1/a1/batch", "site/plantwire/v1"):
        with pytest.raises(WireError, match="is not under"):
            topics.agent_of(topic)
    with pytest.raises(WireError, match="invalid agent id"):
        topics.agent_of("site/plantwire/v1/$bad/batch")
