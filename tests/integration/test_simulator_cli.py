"""plantwire-sim serving OPC UA and a serial line only, as its start-up line says."""

import asyncio
import os
from collections.abc import Iterator

import pytest

from protocols.simulator import cli as sim_cli
from tests.servers import free_port, wait_for_port

pytestmark = pytest.mark.integration


@pytest.fixture
def pty_name() -> Iterator[str]:
    """A pseudo-terminal the simulator can serve Modbus RTU on."""
    controller, terminal = os.openpty()
    try:
        yield os.ttyname(terminal)
    finally:
        os.close(terminal)
        os.close(controller)


async def test_serves_opc_ua_and_a_serial_line_without_modbus_tcp(
    pty_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    args = sim_cli.build_parser().parse_args(
        ["--opcua-port", str(port), "--modbus-port", "0", "--serial", pty_name]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sim_cli.serve(args, stop))
    await asyncio.to_thread(wait_for_port, port)
    stop.set()
    await asyncio.wait_for(task, timeout=30)
    line = capsys.readouterr().out.strip()
    assert line == (
        f"plantwire-sim serving OPC UA opc.tcp://127.0.0.1:{port}/plantwire/sim,"
        f" Modbus RTU {pty_name}"
    )
