"""Wire versions 2 and 3: each splitter refuses the other's payloads and short headers."""

import pytest

from shared.errors import WireError
from shared.readings import DataType, Reading
from shared.wire import PREAMBLE, encode_batch, split_payload
from shared.wire_v3 import split_v3
from tests.payloads import mixed_readings, v3_batch

TS = 1_790_000_000_000_000
POLL = [Reading("oven", f"t{i}", DataType.FLOAT64, TS, i * 0.5) for i in range(3)]


def test_the_version_2_splitter_refuses_a_version_3_payload() -> None:
    raw = v3_batch("a1", 1, [(1, POLL)]).payload
    with pytest.raises(WireError, match="expected wire version 2, not 3") as caught:
        split_payload(raw)
    assert caught.value.reason == "version"


def test_the_version_3_splitter_refuses_a_version_2_payload() -> None:
    raw = encode_batch("a1", 1, [1, 2], mixed_readings()[:2])
    with pytest.raises(WireError, match="expected wire version 3, not 2") as caught:
        split_v3(raw)
    assert caught.value.reason == "version"


def test_a_version_3_header_cut_short_is_malformed() -> None:
    raw = v3_batch("a1", 1, [(1, POLL)]).payload
    header_length = PREAMBLE.unpack_from(raw)[2]
    with pytest.raises(WireError, match="header runs past the end") as caught:
        split_v3(raw[: PREAMBLE.size + header_length - 1])
    assert caught.value.reason == "malformed"


def test_an_uncompressed_batch_naming_its_dictionary_pads_its_header_to_align_the_body() -> None:
    raw = v3_batch("a1", 1, [(1, POLL)], inline=False, compress=False).payload
    header_length = PREAMBLE.unpack_from(raw)[2]
    assert (PREAMBLE.size + header_length) % 8 == 0
    sections = split_v3(raw)
    assert sections.dictionary == b""
    assert sections.header.n == len(POLL)
    assert sections.body.nbytes == sections.header.body_bytes()
