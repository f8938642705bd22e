"""The simulated machine's behaviour: state, part counters and moving process values."""

import random
import struct
from dataclasses import dataclass
from enum import IntEnum

from shared.readings import DataType, Value


class MachineState(IntEnum):
    """Machine state as the PLC reports it."""

    RUNNING = 1
    IDLE = 2
    DOWN = 3


DOWNTIME_REASONS = {
    0: "none",
    1: "material shortage",
    2: "tool change",
    3: "jam",
    4: "maintenance",
    5: "no operator",
    6: "disabled remotely",
}
BULK_TYPES = (
    DataType.UINT16,
    DataType.INT16,
    DataType.FLOAT32,
    DataType.UINT32,
    DataType.INT32,
    DataType.FLOAT64,
)
BULK_ADDRESS = 1000


@dataclass(frozen=True, slots=True)
class SimTag:
    """A value the simulator serves, and where each protocol serves it."""

    name: str
    data_type: DataType
    modbus_table: str | None
    modbus_address: int
    opcua_name: str
    string_length: int = 0
    writable: bool = False


TAGS: tuple[SimTag, ...] = (
    SimTag("running", DataType.BOOL, "coil", 0, "Running"),
    SimTag("door_closed", DataType.BOOL, "discrete_input", 0, "DoorClosed"),
    SimTag("state", DataType.UINT16, "holding_register", 0, "State"),
    SimTag("reason_code", DataType.UINT16, "holding_register", 1, "ReasonCode"),
    SimTag("good_count", DataType.UINT32, "holding_register", 2, "GoodCount"),
    SimTag("scrap_count", DataType.UINT32, "holding_register", 4, "ScrapCount"),
    SimTag("spindle_speed", DataType.INT32, "holding_register", 6, "SpindleSpeed"),
    SimTag("axis_offset", DataType.INT16, "holding_register", 8, "AxisOffset"),
    SimTag("temperature", DataType.FLOAT32, "input_register", 0, "Temperature"),
    SimTag("pressure", DataType.FLOAT64, "input_register", 2, "Pressure"),
    SimTag("program", DataType.STRING, "holding_register", 10, "Program", string_length=8),
    SimTag(
        "speed_setpoint", DataType.UINT16, "holding_register", 20, "SpeedSetpoint", writable=True
    ),
    SimTag("enable", DataType.BOOL, "coil", 1, "Enable", writable=True),
)


def bulk_tags(count: int) -> tuple[SimTag, ...]:
    """Synthetic tags for load tests, packed from holding register 1000 in repeating types."""
    tags = []
    address = BULK_ADDRESS
    for index in range(count):
        data_type = BULK_TYPES[index % len(BULK_TYPES)]
        name = f"bulk{index:05d}"
        tags.append(SimTag(name, data_type, "holding_register", address, f"Bulk.{name}"))
        address += 4 if data_type is DataType.FLOAT64 else 2 if "32" in data_type.value else 1
    return tuple(tags)


class Machine:
    """A machine that runs, idles and breaks down, counting parts while it runs.

    `step` advances it by a time delta; the model is deterministic for a given seed.
    Every change bumps `version` and sets `updated_us`, the source timestamp servers publish.
    """

    def __init__(
        self,
        *,
        seed: int = 1,
        cycle_time_s: float = 2.0,
        start_us: int = 0,
        bulk: tuple[SimTag, ...] = (),
    ) -> None:
        self._random = random.Random(seed)  # noqa: S311 - simulated process noise
        self._bulk = bulk
        self._bulk_second = -1
        self._elapsed_s = 0.0
        self._cycle_time_s = cycle_time_s
        self._cycle_progress = 0.0
        self._state_left_s = 30.0
        self.paused = False
        self.version = 1
        self.updated_us = start_us
        self.values: dict[str, Value] = {
            "running": True,
            "door_closed": True,
            "state": int(MachineState.RUNNING),
            "reason_code": 0,
            "good_count": 0,
            "scrap_count": 0,
            "spindle_speed": 12000,
            "axis_offset": 0,
            "temperature": 25.0,
            "pressure": 6.0,
            "program": "P-1001",
            "speed_setpoint": 12000,
            "enable": True,
        }
        self._update_bulk(0)

    def set(self, now_us: int, **values: Value) -> None:
        """Set values directly (tests use this with `paused`); counts as one change."""
        for name, value in values.items():
            if name not in self.values:
                raise KeyError(f"the simulator has no tag {name!r}")
            self.values[name] = value
        self._changed(now_us)

    def step(self, dt_s: float, now_us: int) -> None:
        """Advance the machine by dt_s seconds; does nothing while paused."""
        if self.paused or dt_s <= 0:
            return
        rnd = self._random
        values = self.values
        self._elapsed_s += dt_s
        self._update_bulk(int(self._elapsed_s))
        self._state_left_s -= dt_s
        if not values["enable"]:
            values["state"], values["reason_code"] = int(MachineState.IDLE), 6
        elif values["reason_code"] == 6 or self._state_left_s <= 0:
            self._next_state()
        running = values["state"] == MachineState.RUNNING
        if running:
            self._cycle_progress += dt_s / self._cycle_time_s
            while self._cycle_progress >= 1.0:
                self._cycle_progress -= 1.0
                key = "scrap_count" if rnd.random() < 0.03 else "good_count"
                values[key] = (int(values[key]) + 1) % 2**32
        target = 65.0 if running else 25.0
        temperature = float(values["temperature"])
        temperature += (target - temperature) * min(1.0, dt_s / 60.0) + rnd.gauss(0, 0.05)
        values["temperature"] = _float32(temperature)
        values["pressure"] = round(6.0 + rnd.gauss(0, 0.08), 4) if running else 0.0
        setpoint = int(values["speed_setpoint"])
        values["spindle_speed"] = max(0, setpoint + int(rnd.gauss(0, 25))) if running else 0
        offset = int(values["axis_offset"]) + rnd.randint(-5, 5)
        values["axis_offset"] = max(-500, min(500, offset))
        values["running"] = running
        values["door_closed"] = values["state"] != MachineState.DOWN
        self._changed(now_us)

    def _next_state(self) -> None:
        rnd = self._random
        roll = rnd.random()
        if roll < 0.7:
            state, reason, duration = MachineState.RUNNING, 0, rnd.uniform(60, 300)
        elif roll < 0.85:
            state, reason, duration = MachineState.IDLE, 5, rnd.uniform(10, 60)
        else:
            state, reason, duration = MachineState.DOWN, rnd.randint(1, 4), rnd.uniform(20, 120)
        self.values["state"] = int(state)
        self.values["reason_code"] = reason
        self._state_left_s = duration

    def _update_bulk(self, second: int) -> None:
        """Bulk tags change once a second: cheap enough for tens of thousands of them."""
        if second == self._bulk_second:
            return
        self._bulk_second = second
        values = self.values
        for index, tag in enumerate(self._bulk):
            step = (second + index) % 1000
            values[tag.name] = float(step) / 4 if tag.data_type.value.startswith("float") else step

    def _changed(self, now_us: int) -> None:
        self.version += 1
        self.updated_us = now_us


def _float32(value: float) -> float:
    """Round a float to the nearest float32, as a PLC's REAL would store it."""
    packed: float = struct.unpack(">f", struct.pack(">f", value))[0]
    return packed
