"""The batch payload: round trip, and a clear WireError for each kind of bad input."""

import math

import pytest

from collector.batches import BatchDecoder, TimeWindow, decode_batch
from shared.errors import WireError
from shared.readings import DataType
from shared.wire import Topics, batch_identity, encode_batch
from tests.payloads import join, mixed_readings, mutate, split

TS = 1_790_000_000_000_000


def test_round_trip_keeps_values_types_and_order() -> None:
    readings = mixed_readings()
    raw = encode_batch("a1", 7, list(range(10, 20)), readings)
    batch = decode_batch(raw, "a1")
    assert (batch.agent, batch.epoch, batch.batch_id, len(batch)) == ("a1", 7, 10, 10)
    assert list(batch.seqs) == list(range(10, 20))
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


def test_layout_tag_dictionary_texts_and_alignment() -> None:
    raw = encode_batch("a1", 1, list(range(1, 11)), mixed_readings())
    header, dictionary, columns = split(raw)
    assert dictionary["name"] == sorted(dictionary["name"]), "sorted, so it repeats exactly"
    assert len(dictionary["device"]) == len(dictionary["type"]) == 8
    assert columns["t"][2] == columns["t"][3] == columns["t"][6]
    assert dictionary["name"][columns["t"][2]] == "temp"
    assert header["texts"] == ["P-1", str(2**64 - 1), str(-(2**63)), "ünïcode"]
    assert columns["kind"] == [0, 0, 0, 0, 2, 2, 1, 0, 2, 2]
    assert (len(raw) - 10 * 38) % 8 == 0, "the body starts 8-byte aligned"
    assert batch_identity(raw) == ("a1", 1, 1, 10)
    assert batch_identity(b"nonsense") is None


def test_server_timestamp_column_only_when_needed() -> None:
    without = encode_batch("a1", 1, [1], mixed_readings()[:1])
    assert "sts" not in split(without)[2]
    assert decode_batch(without, "a1").server_ts is None


def good() -> bytes:
    return encode_batch("a1", 1, [1, 2], mixed_readings()[:2])


def test_same_tags_give_the_same_dictionary_bytes() -> None:
    first = encode_batch("a1", 1, [1, 2], mixed_readings()[:2])
    second = encode_batch("a1", 1, [3, 4], list(reversed(mixed_readings()[:2])))
    assert split(first)[1] == split(second)[1]
    decoder = BatchDecoder()
    one, two = decoder.decode(first, "a1"), decoder.decode(second, "a1")
    assert one.tags is two.tags, "parsed once"
    assert [r.tag for r in two.readings] == ["count", "running"]


def bad_messages() -> list[tuple[bytes, str, str]]:
    """Payloads that cannot be read as a batch at all: quarantined whole."""
    header, dictionary, columns = split(good())
    return [
        (b"\xff\xfe", "malformed", "bad magic"),
        (b"{}", "malformed", "bad magic"),
        (join(header, dictionary, columns, version=1), "version", "unsupported wire version 1"),
        (good()[:12] + b"{", "malformed", "past the end"),
        (join({**header, "junk": 1}, dictionary, columns), "schema", "header field junk"),
        (join({**header, "epoch": "x"}, dictionary, columns), "schema", "header field epoch"),
        (join({**header, "n": 0}, dictionary, columns), "schema", "header field n"),
        (mutate(good(), name=["x"]), "schema", "dictionary: Value error, device, name and type"),
        (mutate(good(), type=["bool", "int128"]), "schema", "dictionary field type.1"),
        (mutate(good(), device=["", "d"]), "schema", "dictionary field device.0"),
        (mutate(good(), device=["a\x00", "d"]), "schema", "dictionary field device.0"),
        (good()[:-1], "schema", "body has"),
        (mutate(good(), agent="other"), "agent_mismatch", "differs from topic agent"),
        (mutate(good(), batch=2), "schema", "first sequence number"),
        (mutate(good(), seq=[1, 1]), "schema", "reading 0: sequence numbers must increase"),
        (mutate(good(), kind=[0, 2]), "schema", "1 readings say their value is text"),
    ]


@pytest.mark.parametrize(("raw", "reason", "message"), bad_messages())
def test_bad_payloads_are_rejected_with_a_reason(raw: bytes, reason: str, message: str) -> None:
    with pytest.raises(WireError, match=message) as caught:
        decode_batch(raw, "a1")
    assert caught.value.reason == reason


def bad_readings() -> list[tuple[bytes, int, str, str]]:
    """Batches with one bad reading (its index given): only that reading is refused."""
    with_sts = encode_batch("a1", 1, [1, 2], [mixed_readings()[0], mixed_readings()[7]])
    string_tag = encode_batch("a1", 1, [1, 2], [mixed_readings()[4], mixed_readings()[0]])
    wide_tag = encode_batch("a1", 1, [1, 2], [mixed_readings()[5], mixed_readings()[0]])
    year_1601 = -11_644_473_600_000_000
    return [
        (mutate(good(), t=[0, 5]), 1, "reading", "reading 1: tag index 5 outside"),
        (
            mutate(good(), ts=[TS, year_1601]),
            1,
            "timestamp",
            "reading 1: timestamp 1601-01-01T00:00:00Z outside 2000-01-01T00:00:00Z..",
        ),
        (mutate(good(), ts=[2**62, TS]), 0, "timestamp", "reading 0: timestamp 4611686"),
        (mutate(with_sts, sts=[0, 5]), 1, "timestamp", "reading 1: server timestamp 1970"),
        (mutate(good(), kind=[1, 0]), 0, "reading", "reading 0: a missing value needs quality"),
        (mutate(good(), kind=[0, 7]), 1, "reading", "reading 1: value kind 7"),
        (mutate(good(), val=[1.0, -1.0]), 1, "reading", "reading 1: value -1.0 is not valid"),
        (mutate(good(), val=[2.0, 1.0]), 0, "reading", "reading 0: value 2.0 is not valid"),
        (mutate(good(), val=[1.0, 1.5]), 1, "reading", "reading 1: value 1.5 is not valid"),
        (mutate(good(), val=[1.0, math.nan]), 1, "reading", "reading 1: value nan is not valid"),
        (mutate(good(), q=[0, 9]), 1, "reading", "reading 1: quality 9"),
        (mutate(good(), kind=[0, 2], texts=["5"]), 1, "reading", "'5' is not a valid uint32"),
        (mutate(string_tag, kind=[0, 0], texts=[]), 0, "reading", "value 0.0 is not valid"),
        (mutate(string_tag, texts=["a\x00b"]), 0, "reading", "is not a valid string"),
        (mutate(wide_tag, texts=["1e3"]), 0, "reading", "not a valid uint64"),
        (mutate(wide_tag, texts=[str(2**64)]), 0, "reading", "not a valid uint64"),
        (
            mutate(wide_tag, kind=[0, 0], val=[2.0**60, 1.0], texts=[]),
            0,
            "reading",
            "is not valid for a uint64 tag",
        ),
    ]


@pytest.mark.parametrize(("raw", "index", "reason", "message"), bad_readings())
def test_a_bad_reading_is_refused_alone(raw: bytes, index: int, reason: str, message: str) -> None:
    batch = decode_batch(raw, "a1")
    assert batch.refused is not None
    assert batch.refused.idx == [index]
    assert batch.refused.seqs == [index + 1]
    assert batch.refused.reasons == [reason]
    assert message in batch.refused.errors[0]
    assert len(batch) == 1, "the other reading is kept"
    assert list(batch.seqs) == [2 - index]
    assert batch.last_seq == 2, "the ledger still records the batch's whole range"
    assert batch.readings[0].ts_us != -11_644_473_600_000_000


def test_refusals_keep_texts_aligned_and_count_by_reason() -> None:
    readings = mixed_readings()
    raw = encode_batch("a1", 1, list(range(1, 11)), readings)
    _, _, columns = split(raw)
    ts = list(columns["ts"])
    ts[4] = ts[9] = 5  # both text readings of string tags: refused
    ts[0] = 7
    batch = decode_batch(mutate(raw, ts=ts), "a1")
    assert batch.refused is not None
    assert batch.refused.counts() == {"timestamp": 3}
    assert batch.refused.idx == [0, 4, 9]
    assert len(batch) == 7
    kept = batch.readings
    assert [r.value for r in kept if r.data_type is DataType.UINT64] == [2**64 - 1]
    assert [r.value for r in kept if r.data_type is DataType.INT64] == [-(2**63)]
    assert not [r for r in kept if r.data_type is DataType.STRING]


def test_the_timestamp_window_is_configurable() -> None:
    decoder = BatchDecoder(window=TimeWindow(TS + 1, TS + 2))
    batch = decoder.decode(good(), "a1")
    assert batch.refused is not None
    assert batch.refused.idx == [0]
    assert "outside 2026-" in batch.refused.errors[0]


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
