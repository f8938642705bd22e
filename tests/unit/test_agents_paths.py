"""The agent registry's answers to messages it must not store."""

import pytest

from collector.agents import AgentRegistry
from collector.pools import new_pool
from shared.errors import WireError


def registry() -> AgentRegistry:
    # Never opened: any database access would raise PoolClosed and fail the test.
    return AgentRegistry(new_pool("postgresql://nobody@127.0.0.1:1/none", 1))


async def test_a_cleared_retained_state_records_nothing() -> None:
    await registry()("press-1", "state", b"")


async def test_a_topic_kind_that_is_not_a_status_is_refused_as_a_topic_error() -> None:
    with pytest.raises(WireError, match="unexpected topic kind 'batch'") as caught:
        await registry()("press-1", "batch", b"{}")
    assert caught.value.reason == "topic"
