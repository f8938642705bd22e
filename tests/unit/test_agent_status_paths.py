"""Birth, death and heartbeat messages that do not parse are wire errors with their reason."""

import pytest

from shared.agent_status import decode_heartbeat, decode_state
from shared.errors import WireError


@pytest.mark.parametrize("raw", [b"not json", b'{"v": 1, "status": "asleep"}'])
def test_a_bad_state_message_is_a_wire_error(raw: bytes) -> None:
    with pytest.raises(WireError, match="invalid state message") as caught:
        decode_state(raw)
    assert caught.value.reason == "state"


@pytest.mark.parametrize("raw", [b"\xff", b'{"v": 1, "ts": 1}'])
def test_a_bad_heartbeat_is_a_wire_error(raw: bytes) -> None:
    with pytest.raises(WireError, match="invalid heartbeat") as caught:
        decode_heartbeat(raw)
    assert caught.value.reason == "heartbeat"
