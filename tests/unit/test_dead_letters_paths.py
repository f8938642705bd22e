"""Dead letter ids from text, and a purge that would delete everything."""

import pytest

from collector.dead_letters import DeadLetterFilter, DeadLetters, valid_id
from collector.pagination import MAX_NUMBER
from collector.pools import new_pool


@pytest.mark.parametrize("raw", ["1", "42", str(MAX_NUMBER)])
def test_a_positive_whole_number_is_an_id(raw: str) -> None:
    assert valid_id(raw) == int(raw)


@pytest.mark.parametrize("raw", ["0", "-1", "1.5", "", "abc", "٣", str(MAX_NUMBER + 1)])
def test_other_text_is_no_id(raw: str) -> None:
    assert valid_id(raw) is None


async def test_a_purge_naming_neither_an_id_nor_a_time_deletes_nothing() -> None:
    # Never opened: reaching the database would raise PoolClosed instead.
    letters = DeadLetters(new_pool("postgresql://nobody@127.0.0.1:1/none", 1))
    with pytest.raises(ValueError, match="purge needs a dead letter id or a time"):
        await letters.purge(DeadLetterFilter(agent="press-1", reason="malformed"))
