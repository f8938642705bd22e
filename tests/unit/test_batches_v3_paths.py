"""named_dictionary: which payloads a dead letter's reader must fetch a tag dictionary for."""

import pytest

from collector.batches_v3 import named_dictionary
from shared.readings import DataType, Reading
from shared.wire import encode_batch
from tests.payloads import join_v3, v3_batch

READINGS = [Reading("press", "speed", DataType.FLOAT64, 1_790_000_000_000_000, 1.5)]


def test_a_version_3_batch_that_only_names_its_dictionary_says_whose_it_is() -> None:
    sent = v3_batch("press-1", 3, [(1, READINGS)], inline=False)
    assert named_dictionary(sent.payload) == ("press-1", sent.hash)


def test_a_batch_carrying_its_dictionary_needs_no_other() -> None:
    assert named_dictionary(v3_batch("press-1", 3, [(1, READINGS)]).payload) is None


@pytest.mark.parametrize(
    "payload",
    [
        encode_batch("press-1", 3, [1], READINGS),  # version 1: tag names inline
        b"not a batch at all",
        join_v3({"agent": "press-1"}, b""),  # a version 3 header missing its fields
    ],
    ids=["version-1", "garbage", "bad-header"],
)
def test_other_payloads_name_no_dictionary(payload: bytes) -> None:
    assert named_dictionary(payload) is None
