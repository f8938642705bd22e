"""Scenario scripts: a known production timeline of states, reasons, counts and products.

A scenario file names its machines with their initial values and lists time-ordered events;
`Scenario.timeline` turns it into the values each machine's variables take and when, which
the player serves over OPC UA (protocols/simulator/scenario_player.py).
"""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from shared.config import StrictModel, load_config

# Each event changes a variable at most once, plus its initial value: a subscription queue
# this long never drops a change. asyncua's server grants at most 10,000 per monitored item.
MAX_EVENTS = 9_999
_OFFSET = re.compile(r"^\+(?P<h>\d{1,4}):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?$")
COUNTERS = ("good", "scrap")
VARIABLES = ("state", "reason", "good", "scrap", "product")
"""The variables of a scenario machine, in the order they are served."""

Value = int | str


class Counter(StrictModel):
    """A part counter as a PLC keeps it: a running total that wraps at its type's size."""

    type: Literal["uint16", "uint32"] = Field(
        default="uint32", description="PLC data type; the total wraps at 2^16 or 2^32."
    )
    initial: int = Field(default=0, ge=0, description="Its value when the scenario starts.")

    @property
    def modulus(self) -> int:
        """The value at which the counter wraps to 0."""
        return 2**16 if self.type == "uint16" else 2**32

    @model_validator(mode="after")
    def _initial_fits(self) -> "Counter":
        if self.initial >= self.modulus:
            raise ValueError(f"initial {self.initial} does not fit {self.type}")
        return self


class ScenarioMachine(StrictModel):
    """A machine of the scenario and its values when the scenario starts."""

    state: int = Field(default=0, ge=0, le=65535, description="Initial state code (UInt16).")
    reason: int = Field(default=0, ge=0, le=65535, description="Initial reason code (UInt16).")
    good: Counter = Field(default_factory=Counter, description="Good parts counter.")
    scrap: Counter = Field(default_factory=Counter, description="Scrap parts counter.")
    product: str | None = Field(
        default=None, description="Initial product; none is served as the empty string."
    )


class ScenarioEvent(StrictModel):
    """What happens to one machine at one moment."""

    at: datetime | timedelta = Field(
        description="ISO 8601 time with its UTC offset, or `+HH:MM[:SS]` after `start`."
    )
    machine: str = Field(description="A machine of `machines`.")
    state: int | None = Field(default=None, ge=0, le=65535, description="New state code.")
    reason: int | None = Field(default=None, ge=0, le=65535, description="New reason code.")
    good: int | None = Field(default=None, ge=0, description="Good parts to add (wrapping).")
    scrap: int | None = Field(default=None, ge=0, description="Scrap parts to add (wrapping).")
    reset: list[Literal["good", "scrap"]] = Field(
        default_factory=list, description="Counters set to 0 before adding."
    )
    product: str | None = Field(default=None, description="New product.")

    @field_validator("at", mode="before")
    @classmethod
    def _parse_at(cls, raw: object) -> object:
        if isinstance(raw, str) and raw.startswith("+"):
            match = _OFFSET.match(raw)
            if match is None:
                raise ValueError("expected an offset +HH:MM or +HH:MM:SS")
            return timedelta(
                hours=int(match["h"]), minutes=int(match["m"]), seconds=int(match["s"] or 0)
            )
        if isinstance(raw, int):
            raise ValueError("quote offsets, e.g. '+01:30' (YAML reads +1:30 as a number)")
        return _aware(raw)

    @field_validator("reset")
    @classmethod
    def _unique_reset(cls, reset: list[str]) -> list[str]:
        if len(set(reset)) != len(reset):
            raise ValueError("a counter is listed twice")
        return reset

    @model_validator(mode="after")
    def _does_something(self) -> "ScenarioEvent":
        if not self.reset and all(getattr(self, key) is None for key in VARIABLES):
            raise ValueError(f"an event sets at least one of {', '.join(VARIABLES)} or reset")
        return self


def _aware(raw: object) -> datetime:
    """An ISO 8601 time (text or datetime) that must carry its UTC offset."""
    if isinstance(raw, str):
        raw = datetime.fromisoformat(raw)
    if not isinstance(raw, datetime):
        raise ValueError("expected an ISO 8601 time with its UTC offset")
    moment = raw
    if moment.tzinfo is None:
        raise ValueError("give the time's UTC offset, e.g. 2026-03-29T06:00:00+02:00")
    return moment


@dataclass(frozen=True, slots=True)
class Change:
    """New values of one machine's variables, all stamped with one scenario time."""

    at: datetime
    machine: str
    values: dict[str, Value]


class Scenario(StrictModel):
    """A scenario file: when it starts, how fast it plays, its machines and its events."""

    start: datetime = Field(description="Scenario time of the initial values, with UTC offset.")
    speed: float = Field(
        default=1.0, gt=0, description="Scenario seconds played per real second, e.g. 3600."
    )
    machines: dict[str, ScenarioMachine] = Field(
        min_length=1, description="Machines by name (letters, digits, `_`, `-`)."
    )
    events: list[ScenarioEvent] = Field(
        min_length=1,
        max_length=MAX_EVENTS,
        description="Events in time order; the last one ends the scenario.",
    )

    @field_validator("start", mode="before")
    @classmethod
    def _start_aware(cls, raw: object) -> datetime:
        return _aware(raw)

    @field_validator("machines")
    @classmethod
    def _machine_names(cls, machines: dict[str, ScenarioMachine]) -> dict[str, ScenarioMachine]:
        for name in machines:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                raise ValueError(f"machine name {name!r}: use letters, digits, _ and - only")
        return machines

    @model_validator(mode="after")
    def _check_events(self) -> "Scenario":
        errors: list[InitErrorDetails] = []

        def error(index: int, key: str, message: str, given: object) -> None:
            errors.append(
                InitErrorDetails(
                    type=PydanticCustomError("scenario", message),
                    loc=("events", index, key),
                    input=given,
                )
            )

        previous = self.start
        seen: set[tuple[str, datetime]] = set()
        for index, event in enumerate(self.events):
            at = self.time_of(event)
            if event.machine not in self.machines:
                error(index, "machine", f"no machine named {event.machine}", event.machine)
            if at <= self.start:
                error(index, "at", "must be after start (the initial values carry it)", str(at))
            elif at < previous:
                error(index, "at", f"before the previous event ({previous.isoformat()})", str(at))
            elif (event.machine, at) in seen:
                error(index, "at", f"{event.machine} already has an event then", str(at))
            previous = max(previous, at)
            seen.add((event.machine, at))
        if errors:
            raise ValidationError.from_exception_data("Scenario", errors)
        return self

    def time_of(self, event: ScenarioEvent) -> datetime:
        """An event's scenario time."""
        return self.start + event.at if isinstance(event.at, timedelta) else event.at

    @property
    def end(self) -> datetime:
        """The last event's time, when the scenario is done."""
        return self.time_of(self.events[-1])

    def initial_values(self) -> dict[str, dict[str, Value]]:
        """Every machine's variables at `start`."""
        return {
            name: {
                "state": machine.state,
                "reason": machine.reason,
                "good": machine.good.initial,
                "scrap": machine.scrap.initial,
                "product": machine.product or "",
            }
            for name, machine in self.machines.items()
        }

    def timeline(self) -> list[Change]:
        """The events as changes of values, one per event, holding only values that changed.

        An event that changes nothing (a state set to the state it is in) still gives a
        Change, with no values: it marks a moment, for example the end of the scenario.
        """
        current = self.initial_values()
        changes = []
        for event in self.events:
            values = current[event.machine]
            new = dict(values)
            for key in ("state", "reason", "product"):
                given = getattr(event, key)
                if given is not None:
                    new[key] = given
            for key in COUNTERS:
                counter: Counter = getattr(self.machines[event.machine], key)
                total = 0 if key in event.reset else int(values[key])
                new[key] = (total + (getattr(event, key) or 0)) % counter.modulus
            changed = {key: value for key, value in new.items() if values[key] != value}
            values.update(changed)
            changes.append(Change(self.time_of(event), event.machine, changed))
        return changes


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; raise ConfigError naming the keys at fault."""
    return load_config(path, Scenario, {})
