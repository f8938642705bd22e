"""Playing a scenario over OPC UA: each event's values stamped with the event's scenario time.

Address space (namespace `urn:plantwire:simulator`), for each machine a folder named after it:

    Objects/<machine>/State        s=<machine>.State        UInt16
    Objects/<machine>/ReasonCode   s=<machine>.ReasonCode   UInt16
    Objects/<machine>/GoodCount    s=<machine>.GoodCount    UInt16 or UInt32 (the counter's type)
    Objects/<machine>/ScrapCount   s=<machine>.ScrapCount   UInt16 or UInt32
    Objects/<machine>/Product      s=<machine>.Product      String ("" when none)
    Objects/ScenarioDone           s=ScenarioDone           Boolean, true once every event played

asyncua's server samples nothing: every write notifies each monitored item at once, into a
queue per item (the client's QueueSize, at most 10,000; when full the oldest is dropped) that
the next Publish empties. A write equal to the current value and status notifies nothing.
So the player writes only values that change, and a client whose queue holds more changes than
the scenario has events (`agent_devices_for` asks for that) receives every change.
"""

import asyncio
import contextlib
import logging
from collections import Counter as Tally
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.callback import CallbackType, ServerItemCallback

from protocols.simulator.opcua_server import (
    NAMESPACE_URI,
    OpcUaServerSecurity,
    new_server,
    prepare_server,
    ua_datetime,
)
from protocols.simulator.scenario import Change, Scenario, Value, load_scenario
from shared.clock import Clock, SystemClock
from shared.config import format_duration

log = logging.getLogger(__name__)

BROWSE_NAMES = {
    "state": "State",
    "reason": "ReasonCode",
    "good": "GoodCount",
    "scrap": "ScrapCount",
    "product": "Product",
}
"""OPC UA browse name of each scenario variable."""
DONE = "ScenarioDone"
PUBLISHING_INTERVAL_S = 0.05


def node_id_text(machine: str, variable: str) -> str:
    """The string identifier of a machine variable's node, e.g. press-1.GoodCount."""
    return f"{machine}.{BROWSE_NAMES[variable]}"


def data_type_of(scenario: Scenario, machine: str, variable: str) -> str:
    """The variable's Plantwire data type: uint16, uint32 or string."""
    if variable in ("good", "scrap"):
        counter = getattr(scenario.machines[machine], variable)
        return str(counter.type)
    return "string" if variable == "product" else "uint16"


def uses_products(scenario: Scenario, machine: str) -> bool:
    """Whether the machine has a product at all (initially or from an event)."""
    return scenario.machines[machine].product is not None or any(
        event.machine == machine and event.product is not None for event in scenario.events
    )


_VARIANTS = {
    "uint16": ua.VariantType.UInt16,
    "uint32": ua.VariantType.UInt32,
    "string": ua.VariantType.String,
}


class ScenarioServer:
    """The OPC UA server a scenario's values are written to."""

    def __init__(
        self,
        scenario: Scenario,
        host: str,
        port: int,
        security: OpcUaServerSecurity | None = None,
    ) -> None:
        self.scenario = scenario
        self.endpoint = f"opc.tcp://{host}:{port}/plantwire/sim"
        self._security = security or OpcUaServerSecurity()
        self._server = new_server(self._security)
        self._namespace = 0
        self.monitored: Tally[str] = Tally()
        """Monitored items clients created, by node id string."""
        self.monitoring_changed = asyncio.Event()

    def _node(self, text: str) -> ua.NodeId:
        return ua.NodeId(ua.String(text), ua.Int16(self._namespace))

    def _data_value(self, machine: str, variable: str, value: Value, at: datetime) -> Any:
        variant = ua.Variant(value, _VARIANTS[data_type_of(self.scenario, machine, variable)])
        stamp = ua_datetime(at)
        return ua.DataValue(variant, SourceTimestamp=stamp, ServerTimestamp=stamp)

    async def start(self) -> None:
        """Create every machine's folder and variables at their initial values; listen."""
        server = self._server
        await prepare_server(server, self.endpoint, self._security)
        self._namespace = await server.register_namespace(NAMESPACE_URI)
        server.subscribe_server_callback(CallbackType.ItemSubscriptionCreated, self._created)
        start = self.scenario.start
        for machine, values in self.scenario.initial_values().items():
            folder = await server.nodes.objects.add_folder(
                self._node(machine), ua.QualifiedName(machine, self._namespace)
            )
            for variable, value in values.items():
                variable_node = await folder.add_variable(
                    self._node(node_id_text(machine, variable)),
                    ua.QualifiedName(BROWSE_NAMES[variable], self._namespace),
                    ua.Variant(value, _VARIANTS[data_type_of(self.scenario, machine, variable)]),
                )
                await server.write_attribute_value(
                    variable_node.nodeid, self._data_value(machine, variable, value, start)
                )
        done = await server.nodes.objects.add_variable(
            self._node(DONE), ua.QualifiedName(DONE, self._namespace), False
        )
        await self._write_done(done.nodeid, False, start)
        await server.start()

    async def _created(self, event: ServerItemCallback, dispatcher: Any) -> None:
        """Count the monitored items clients create, per node."""
        requests: list[ua.MonitoredItemCreateRequest] = event.request_params.ItemsToCreate
        results: list[ua.MonitoredItemCreateResult] = event.response_params
        for request, result in zip(requests, results, strict=True):
            node = request.ItemToMonitor.NodeId
            if result.StatusCode.is_good() and node.NamespaceIndex == self._namespace:
                self.monitored[str(node.Identifier)] += 1
        self.monitoring_changed.set()

    async def write(self, change: Change) -> None:
        """Write one change's values, each stamped with the change's scenario time."""
        for variable, value in change.values.items():
            data = self._data_value(change.machine, variable, value, change.at)
            await self._server.write_attribute_value(
                self._node(node_id_text(change.machine, variable)), data
            )

    async def finish(self, at: datetime) -> None:
        """Set ScenarioDone, stamped with the last event's time."""
        await self._write_done(self._node(DONE), True, at)

    async def _write_done(self, node: ua.NodeId, done: bool, at: datetime) -> None:
        stamp = ua_datetime(at)
        data = ua.DataValue(
            ua.Variant(done, ua.VariantType.Boolean), SourceTimestamp=stamp, ServerTimestamp=stamp
        )
        await self._server.write_attribute_value(node, data)

    async def stop(self) -> None:
        """Stop listening and close every session."""
        await self._server.stop()


class ScenarioPlayer:
    """Writes a scenario's changes to its server, paced by `speed` on `clock`.

    With `subscribers` above 0, playing starts once that many monitored items exist on every
    machine's State variable (an agent subscribes to a device's variables in one request).
    """

    def __init__(
        self,
        server: ScenarioServer,
        *,
        speed: float | None = None,
        subscribers: int = 0,
        clock: Clock | None = None,
    ) -> None:
        self.server = server
        self.scenario = server.scenario
        self.speed = speed or self.scenario.speed
        self._subscribers = subscribers
        self._clock = clock or SystemClock()
        self._task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()

    @property
    def endpoint(self) -> str:
        """The OPC UA endpoint the scenario is served on."""
        return self.server.endpoint

    def _subscribed(self) -> bool:
        monitored = self.server.monitored
        return all(
            monitored[node_id_text(machine, "state")] >= self._subscribers
            for machine in self.scenario.machines
        )

    async def run(self) -> None:
        """Wait for the subscribers, then play every change and set ScenarioDone."""
        while not self._subscribed():
            self.server.monitoring_changed.clear()
            await self.server.monitoring_changed.wait()
        self.started.set()
        clock, start = self._clock, self.scenario.start
        began = clock.monotonic()
        for change in self.scenario.timeline():
            due = began + (change.at - start).total_seconds() / self.speed
            delay = due - clock.monotonic()
            if delay > 0:
                await clock.sleep(delay)
            await self.server.write(change)
        await self.server.finish(self.scenario.end)
        log.info("scenario done at %s", self.scenario.end.isoformat())

    def begin(self) -> None:
        """Start playing in a task of its own."""
        self._task = asyncio.create_task(self.run(), name="scenario-player")

    async def done(self, timeout: float | None) -> None:
        """Wait until every event is played; raise TimeoutError after `timeout` seconds."""
        if self._task is None:
            raise RuntimeError("the player was not started")
        await asyncio.wait({self._task}, timeout=timeout)
        if not self._task.done():
            raise TimeoutError(f"the scenario was not done after {timeout}s")
        self._task.result()

    async def stop(self) -> None:
        """Stop playing."""
        if self._task is not None:
            self._task.cancel()
            # Waited for, not awaited: see Simulator.stop (CPython gh-106749).
            await asyncio.wait({self._task})


@contextlib.asynccontextmanager
async def play_scenario(
    scenario: Scenario | Path,
    *,
    port: int,
    host: str = "127.0.0.1",
    speed: float | None = None,
    subscribers: int = 0,
    clock: Clock | None = None,
) -> AsyncIterator[ScenarioPlayer]:
    """Serve a scenario and play it; the server stops when the block ends."""
    if isinstance(scenario, Path):
        scenario = load_scenario(scenario)
    server = ScenarioServer(scenario, host, port)
    await server.start()
    player = ScenarioPlayer(server, speed=speed, subscribers=subscribers, clock=clock)
    try:
        player.begin()
        yield player
    finally:
        await player.stop()
        await server.stop()


def agent_devices_for(
    scenario: Scenario, endpoint: str, *, poll_interval: float = 0.1
) -> list[dict[str, Any]]:
    """Agent device entries subscribing to every machine's variables without losing a change.

    One device per machine, named after it, with tags state, reason, good, scrap and (if
    the machine has products) product. Sampling interval 0 asks for every change, and each
    monitored item's queue holds more changes than the scenario has events.
    """
    devices = []
    for machine in scenario.machines:
        variables = [v for v in BROWSE_NAMES if v != "product" or uses_products(scenario, machine)]
        devices.append(
            {
                "name": machine,
                "type": "opcua",
                "endpoint": endpoint,
                "mode": "subscribe",
                "poll_interval": format_duration(poll_interval),
                "sampling_interval": "0s",
                "publishing_interval": format_duration(PUBLISHING_INTERVAL_S),
                "queue_size": len(scenario.events) + 1,
                "tags": [
                    {
                        "name": variable,
                        "node": f"nsu={NAMESPACE_URI};s={node_id_text(machine, variable)}",
                        "type": data_type_of(scenario, machine, variable),
                    }
                    for variable in variables
                ],
            }
        )
    return devices
