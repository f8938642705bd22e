"""The equipment model (ISA-95): sites, their areas and lines, and their machines.

A site carries what every KPI of its machines depends on: its IANA time zone, the start of
its production day, its shift calendar and its loss mapping (state and reason codes to
ISO 22400-2 time elements and to the TPM six big losses). A machine names the tags that carry
its state, its downtime reason, its counts and its product, and its ideal cycle times.
Everything is validated here, so the config file and the API refuse the same mistakes, each
naming the field it is about. docs/equipment.md describes the model.
"""

import datetime as dt
from collections.abc import Iterable, Iterator
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from collector.analytics.buckets import find_zone
from shared.config import load_config, require_unique
from shared.errors import ConfigError
from shared.wire import AGENT_ID_PATTERN

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TAG_PATTERN = r"^[^/\x00-\x1f]+/[^\x00-\x1f]+$"
MINUTES_PER_DAY = 1440
MINUTES_PER_WEEK = 7 * MINUTES_PER_DAY
DAY_S = 86_400.0


class EquipmentModel(BaseModel):
    """Base of every part of the model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Ident = Annotated[
    str,
    Field(
        pattern=ID_PATTERN,
        description="Identifier: letters, digits, _ . - (at most 64).",
        examples=["press-1"],
    ),
]
DisplayName = Annotated[
    str | None,
    Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f]*$", description="Display name."),
]
TimeOfDay = Annotated[
    str,
    Field(
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="Local wall-clock time, HH:MM (24-hour).",
        examples=["06:00"],
    ),
]
Seconds = Annotated[float, Strict(), Field(gt=0, le=DAY_S, description="Seconds.")]
Code = Annotated[
    StrictBool | StrictInt | StrictStr,
    Field(description="A value the tag takes: a number, a boolean or a string.", examples=[1]),
]


def minute_of_day(time: str) -> int:
    """Minutes since local midnight of an HH:MM time."""
    hours, minutes = time.split(":")
    return int(hours) * 60 + int(minutes)


def code_key(value: bool | int | float | str) -> tuple[str, bool | int | float | str]:
    """How a code is compared: True is not 1, and a float reading 2.0 is the code 2."""
    if isinstance(value, bool):
        return "bool", value
    if isinstance(value, float) and value.is_integer():
        return "number", int(value)
    if isinstance(value, int | float):
        return "number", value
    return "text", value


def _unique_codes(values: Iterable[bool | int | str], what: str) -> None:
    keys = [code_key(value) for value in values]
    require_unique([f"{value!r}" for _, value in keys], what)


# --- machines ----------------------------------------------------------------------------


class TagRef(EquipmentModel):
    """A tag, named as /api/v1/readings names it."""

    tag: str = Field(
        min_length=3,
        max_length=401,
        pattern=TAG_PATTERN,
        description="<device>/<tag>.",
        examples=["press-1/state"],
    )
    agent: str = Field(pattern=AGENT_ID_PATTERN, description="The agent that reads it.")

    @property
    def device(self) -> str:
        """The device part of `tag`."""
        return self.tag.partition("/")[0]

    @property
    def name(self) -> str:
        """The tag's own name, after the device."""
        return self.tag.partition("/")[2]


class CounterKind(StrEnum):
    """How a counter counts."""

    CUMULATIVE = "cumulative"
    """A running total: the increase is the difference of readings (resets detected)."""
    DELTA = "delta"
    """Each reading is the count since the one before."""


class Counter(TagRef):
    """A counter of units."""

    kind: CounterKind = Field(default=CounterKind.CUMULATIVE, description="How it counts.")
    rollover: Literal[65536, 4294967296] | None = Field(
        default=None,
        description="A cumulative counter that wraps at 2^16 or 2^32 (null: it never wraps;"
        " a drop is then a reset).",
    )

    @field_validator("rollover")
    @classmethod
    def _rollover_is_cumulative(cls, rollover: int | None, info: ValidationInfo) -> int | None:
        if rollover is not None and info.data.get("kind") is CounterKind.DELTA:
            raise ValueError("only a cumulative counter rolls over; a delta counter has none")
        return rollover


class ProductCycle(EquipmentModel):
    """The ideal cycle time of one product on this machine."""

    product: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="The value the product tag takes for it.",
        examples=["RECIPE42"],
    )
    ideal_cycle_time_s: Seconds = Field(description="Planned run time per unit, in seconds.")


class Machine(EquipmentModel):
    """A machine (ISA-95 work unit): where it is, and the tags that tell what it does."""

    name: DisplayName
    area: Ident = Field(description="Its area, one of its site's.")
    line: Ident = Field(description="Its line, one of that area's.")
    state: TagRef = Field(description="The tag whose value is the machine's state code.")
    reason: TagRef | None = Field(default=None, description="The downtime reason code's tag.")
    good: Counter = Field(description="Good units.")
    scrap: Counter | None = Field(default=None, description="Scrapped units.")
    product: TagRef | None = Field(
        default=None, description="The tag naming the product or order being made."
    )
    ideal_cycle_time_s: Seconds | None = Field(
        default=None,
        description="Planned run time per unit, in seconds, for products not listed in"
        " `products` (null: none; effectiveness is then unknown).",
    )
    products: list[ProductCycle] = Field(
        default_factory=list, max_length=500, description="Ideal cycle time per product."
    )

    @field_validator("scrap")
    @classmethod
    def _scrap_is_not_good(cls, scrap: Counter | None, info: ValidationInfo) -> Counter | None:
        good = info.data.get("good")
        if scrap is not None and good is not None and _same_tag(scrap, good):
            raise ValueError(f"is the good counter's tag {good.tag} of {good.agent}")
        return scrap

    @field_validator("products")
    @classmethod
    def _products_need_a_tag(
        cls, products: list[ProductCycle], info: ValidationInfo
    ) -> list[ProductCycle]:
        if products and info.data.get("product") is None:
            raise ValueError("listing products needs the `product` tag that names them")
        require_unique((entry.product for entry in products), "products")
        return products

    def tags(self) -> Iterator[tuple[str, TagRef]]:
        """(role, tag) of every tag the machine reads."""
        for role in ("state", "reason", "good", "scrap", "product"):
            tag = getattr(self, role)
            if tag is not None:
                yield role, tag


def _same_tag(one: TagRef, other: TagRef) -> bool:
    return (one.tag, one.agent) == (other.tag, other.agent)


class MachineEntry(Machine):
    """A machine as the equipment file lists it: with its id."""

    id: Ident = Field(description="Unique within its site.")


# --- sites: structure and calendar -------------------------------------------------------


class Line(EquipmentModel):
    """A production line (ISA-95 work center)."""

    id: Ident
    name: DisplayName


class Area(EquipmentModel):
    """An area of a site, holding lines."""

    id: Ident
    name: DisplayName
    lines: list[Line] = Field(min_length=1, max_length=200)

    @field_validator("lines")
    @classmethod
    def _unique_lines(cls, lines: list[Line]) -> list[Line]:
        require_unique((line.id for line in lines), "line ids")
        return lines


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _span(start: str, end: str) -> tuple[int, int]:
    """(start, length) in minutes of a local time window; one that ends before it starts
    ends the next day."""
    first = minute_of_day(start)
    return first, (minute_of_day(end) - first) % MINUTES_PER_DAY


class Window(EquipmentModel):
    """A span of local time within a day, or across midnight when `end` is before `start`."""

    start: TimeOfDay
    end: TimeOfDay

    @field_validator("end")
    @classmethod
    def _not_empty(cls, end: str, info: ValidationInfo) -> str:
        if end == info.data.get("start"):
            raise ValueError("equals start: a window needs a length (at most 23:59)")
        return end


class Break(Window):
    """A planned pause within a shift (not planned busy time)."""

    name: DisplayName


class Weekly(Window):
    """A window that recurs on some days of the week."""

    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS[:5]),
        min_length=1,
        max_length=7,
        description="Days it starts on (default mon to fri).",
    )

    @field_validator("days")
    @classmethod
    def _unique_days(cls, days: list[Weekday]) -> list[Weekday]:
        require_unique(days, "days")
        return days

    def minutes_of_week(self) -> Iterator[tuple[int, int]]:
        """(start, end) in minutes since Monday 00:00, split where it wraps past Sunday."""
        first, length = _span(self.start, self.end)
        for day in self.days:
            start = WEEKDAYS.index(day) * MINUTES_PER_DAY + first
            end = start + length
            if end > MINUTES_PER_WEEK:
                yield start, MINUTES_PER_WEEK
                yield 0, end - MINUTES_PER_WEEK
            else:
                yield start, end


class Shift(Weekly):
    """A shift: worked on its days from start to end, less its breaks."""

    name: Ident = Field(description="Unique within the site.", examples=["early"])
    breaks: list[Break] = Field(default_factory=list, max_length=20)

    @field_validator("breaks")
    @classmethod
    def _breaks_inside(cls, breaks: list[Break], info: ValidationInfo) -> list[Break]:
        start, end = info.data.get("start"), info.data.get("end")
        if start is None or end is None or start == end:
            return breaks  # the shift's own times are already refused
        first, length = _span(start, end)
        taken: list[tuple[int, int, int]] = []
        for index, pause in enumerate(breaks):
            offset = (minute_of_day(pause.start) - first) % MINUTES_PER_DAY
            pause_length = _span(pause.start, pause.end)[1]
            if offset + pause_length > length:
                raise ValueError(f"[{index}] {pause.start}-{pause.end} is not within {start}-{end}")
            taken.append((offset, offset + pause_length, index))
        taken.sort()
        for (_, end_a, a), (start_b, _, b) in pairwise(taken):
            if start_b < end_a:
                raise ValueError(f"[{b}] overlaps [{a}]")
        return breaks


class Calendar(EquipmentModel):
    """When a site plans to produce: shifts, planned downtime, days off."""

    shifts: list[Shift] = Field(
        max_length=50, description="Shifts (none: no planned time; every KPI is then null)."
    )
    planned_downtime: list[Weekly] = Field(
        default_factory=list,
        max_length=100,
        description="Recurring planned downtime (PDOT), such as weekly maintenance.",
    )
    days_off: list[dt.date] = Field(
        default_factory=list,
        max_length=1000,
        description="Dates (local) with no shift, such as holidays; a shift belongs to the date"
        " it starts on.",
    )

    @field_validator("shifts")
    @classmethod
    def _shifts_apart(cls, shifts: list[Shift]) -> list[Shift]:
        require_unique((shift.name for shift in shifts), "shift names")
        spans = sorted(
            (start, end, shift.name) for shift in shifts for start, end in shift.minutes_of_week()
        )
        for (_, end_a, a), (start_b, _, b) in pairwise(spans):
            if start_b < end_a:
                day = WEEKDAYS[start_b // MINUTES_PER_DAY]
                raise ValueError(f"{b} overlaps {a} on {day}")
        return shifts

    @field_validator("days_off")
    @classmethod
    def _unique_days_off(cls, days: list[dt.date]) -> list[dt.date]:
        require_unique((day.isoformat() for day in days), "days_off")
        return days


# --- sites: loss mapping -----------------------------------------------------------------


class TimeElement(StrEnum):
    """Where a state's time goes among the ISO 22400-2 time elements."""

    PRODUCTION = "production"
    """APT, actual production time."""
    SETUP = "setup"
    """ASUT, actual unit setup time."""
    DELAY = "delay"
    """ADET, actual unit delay time: breakdowns and minor stoppages."""
    NO_ORDERS = "no_orders"
    """ADOT, actual unit down time: ready but without an order."""
    PLANNED_DOWNTIME = "planned_downtime"
    """PDOT, planned down time: outside planned busy time."""


ISO_22400_ELEMENT = {
    TimeElement.PRODUCTION: "APT",
    TimeElement.SETUP: "ASUT",
    TimeElement.DELAY: "ADET",
    TimeElement.NO_ORDERS: "ADOT",
    TimeElement.PLANNED_DOWNTIME: "PDOT",
}


class TpmLoss(StrEnum):
    """The TPM six big losses (Nakajima)."""

    BREAKDOWN = "breakdown"
    SETUP_ADJUSTMENT = "setup_adjustment"
    MINOR_STOP = "minor_stop"
    REDUCED_SPEED = "reduced_speed"
    STARTUP_REJECTS = "startup_rejects"
    PRODUCTION_REJECTS = "production_rejects"


TPM_ALLOWED: dict[TimeElement, tuple[TpmLoss, ...]] = {
    TimeElement.PRODUCTION: (),
    TimeElement.SETUP: (TpmLoss.SETUP_ADJUSTMENT,),
    TimeElement.DELAY: (TpmLoss.BREAKDOWN, TpmLoss.MINOR_STOP),
    TimeElement.NO_ORDERS: (),
    TimeElement.PLANNED_DOWNTIME: (),
}
"""The time losses a time element may carry. Speed and reject losses come from the counts and
cycle times, not from states; no-order and planned time are not losses of the equipment."""
TPM_DEFAULT = {TimeElement.SETUP: TpmLoss.SETUP_ADJUSTMENT, TimeElement.DELAY: TpmLoss.BREAKDOWN}


def _tpm_fits(tpm: TpmLoss | None, info: ValidationInfo) -> TpmLoss | None:
    element = info.data.get("element")
    if tpm is not None and element is not None and tpm not in TPM_ALLOWED[element]:
        allowed = ", ".join(TPM_ALLOWED[element]) or "none"
        raise ValueError(f"{tpm.value} is not a loss of {element.value} time (allowed: {allowed})")
    return tpm


class StateMapping(EquipmentModel):
    """What the state tag's values mean."""

    name: Ident = Field(description="The state's name (the equipment_status gauge's status).")
    values: list[Code] = Field(min_length=1, max_length=100, description="Codes meaning it.")
    element: TimeElement = Field(description="Where its time goes (ISO 22400-2).")
    tpm: TpmLoss | None = Field(
        default=None,
        description="Its TPM loss (default: setup_adjustment for setup, breakdown for delay).",
    )

    @field_validator("tpm")
    @classmethod
    def _tpm_of_state(cls, tpm: TpmLoss | None, info: ValidationInfo) -> TpmLoss | None:
        return _tpm_fits(tpm, info)


class ReasonMapping(EquipmentModel):
    """What a downtime reason code means; it classifies the time of the states it applies to."""

    value: Code
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")
    element: TimeElement = Field(description="Where the time goes while this reason holds.")
    tpm: TpmLoss | None = Field(default=None, description="Its TPM loss (default as for states).")
    states: list[Ident] | None = Field(
        default=None,
        max_length=100,
        description="Names of the states it applies to (null: every state that is not production).",
    )

    @field_validator("element")
    @classmethod
    def _a_stop(cls, element: TimeElement) -> TimeElement:
        if element is TimeElement.PRODUCTION:
            raise ValueError("a reason classifies a stop: production is not one")
        return element

    @field_validator("tpm")
    @classmethod
    def _tpm_of_reason(cls, tpm: TpmLoss | None, info: ValidationInfo) -> TpmLoss | None:
        return _tpm_fits(tpm, info)


class LossMapping(EquipmentModel):
    """A site's state and reason codes, mapped to ISO 22400-2 time elements and TPM losses."""

    microstop_threshold_s: Annotated[float, Strict()] = Field(
        default=120.0,
        ge=0,
        le=DAY_S,
        description="A delay shorter than this is a minor stoppage, in seconds (0: none is).",
    )
    states: list[StateMapping] = Field(min_length=1, max_length=200)
    reasons: list[ReasonMapping] = Field(default_factory=list, max_length=500)

    @field_validator("states")
    @classmethod
    def _states_distinct(cls, states: list[StateMapping]) -> list[StateMapping]:
        require_unique((state.name for state in states), "state names")
        _unique_codes((value for state in states for value in state.values), "state values")
        if not any(state.element is TimeElement.PRODUCTION for state in states):
            raise ValueError("none is production: a machine must have a state that produces")
        return states

    @field_validator("reasons")
    @classmethod
    def _reasons_known(
        cls, reasons: list[ReasonMapping], info: ValidationInfo
    ) -> list[ReasonMapping]:
        _unique_codes((reason.value for reason in reasons), "reason values")
        states: list[StateMapping] | None = info.data.get("states")
        if states is None:
            return reasons  # the states are refused already
        stops = {state.name for state in states if state.element is not TimeElement.PRODUCTION}
        producing = {state.name for state in states} - stops
        for index, reason in enumerate(reasons):
            for name in reason.states or ():
                if name in producing:
                    raise ValueError(f"[{index}].states: {name} is production, not a stop")
                if name not in stops:
                    raise ValueError(f"[{index}].states: no state named {name}")
        return reasons

    def state_of(self, value: bool | int | float | str | None) -> str | None:
        """The name of the state a value of the state tag means (None: not mapped)."""
        if value is None:
            return None
        key = code_key(value)
        for state in self.states:
            if any(code_key(code) == key for code in state.values):
                return state.name
        return None


# --- sites -------------------------------------------------------------------------------


class Site(EquipmentModel):
    """A site: its structure, time zone, production day, calendar and loss mapping."""

    name: DisplayName
    time_zone: str = Field(
        min_length=1,
        max_length=100,
        description="IANA time zone of its calendar and reports.",
        examples=["Europe/Berlin"],
    )
    production_day_start: TimeOfDay = Field(
        default="00:00", description="Local time its production day starts."
    )
    areas: list[Area] = Field(min_length=1, max_length=200)
    calendar: Calendar
    loss_mapping: LossMapping

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            find_zone(zone)  # the same zones as the series endpoint's `tz`
        except ValueError:
            raise ValueError(f"{zone!r} is not an IANA time zone such as Europe/Berlin") from None
        return zone

    @field_validator("areas")
    @classmethod
    def _unique_areas(cls, areas: list[Area]) -> list[Area]:
        require_unique((area.id for area in areas), "area ids")
        return areas

    def has_line(self, area: str, line: str) -> bool:
        """Whether the site has this line in this area."""
        return any(a.id == area and any(li.id == line for li in a.lines) for a in self.areas)


class SiteEntry(Site):
    """A site as the equipment file lists it: with its id and its machines."""

    id: Ident
    machines: list[MachineEntry] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _machines_placed(self) -> "SiteEntry":
        require_unique((machine.id for machine in self.machines), "machine ids")
        for index, machine in enumerate(self.machines):
            if not self.has_line(machine.area, machine.line):
                raise ValueError(
                    f"machines[{index}] ({machine.id}): {machine.area}/{machine.line} is not a"
                    " line of this site's areas"
                )
        return self

    def site(self) -> Site:
        """The site without its id and machines (as the API stores it)."""
        return Site.model_validate(self.model_dump(exclude={"id", "machines"}))


class Plant(EquipmentModel):
    """The whole model: an enterprise and its sites (what an equipment file holds)."""

    enterprise: str = Field(
        default="enterprise",
        min_length=1,
        max_length=200,
        pattern=r"^[^\x00-\x1f]+$",
        description="The enterprise's name (the root of the tree).",
    )
    sites: list[SiteEntry] = Field(default_factory=list, max_length=1000)

    @field_validator("sites")
    @classmethod
    def _unique_sites(cls, sites: list[SiteEntry]) -> list[SiteEntry]:
        require_unique((site.id for site in sites), "site ids")
        return sites


def load_plant(path: Path) -> Plant:
    """Read and validate an equipment file; ValueError naming the file and each bad key."""
    try:
        return load_config(path, Plant, {})
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
