"""Alert rules: what each kind watches, validated per kind, and the alert_rules table."""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from collector.alerts.alerts import resolve_open
from collector.alerts.machine import Threshold
from collector.analytics.equipment import ID_PATTERN
from collector.pools import Pool
from shared.invariants import required
from shared.wire import AGENT_ID_PATTERN

RULE_ID = r"^ar_[0-9a-f]{24}$"
MAX_SECONDS = 7 * 86400.0
NAME = r"^[^\x00-\x1f\x7f]{1,200}$"
"""Device and tag names as agents report them: any printable text."""


class _Condition(BaseModel):
    # Strict: JSON true is not a number, nor "5" (the contract says number).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TagThresholdCondition(_Condition):
    """A tag's value beyond a threshold for at least `hold_seconds`; cleared back past
    `clear_threshold` (hysteresis)."""

    kind: Literal["tag_threshold"]
    agent: str | None = Field(
        default=None,
        pattern=AGENT_ID_PATTERN,
        description="Only this agent's tag (null: the tag of every agent, each a subject).",
    )
    device: str = Field(pattern=NAME, description="The device the tag belongs to.")
    tag: str = Field(pattern=NAME, description="The tag's name.")
    direction: Literal["above", "below"] = Field(
        description="above: fires over the threshold; below: under it."
    )
    threshold: float = Field(allow_inf_nan=False, ge=-1e300, le=1e300)
    clear_threshold: float | None = Field(
        default=None,
        allow_inf_nan=False,
        ge=-1e300,
        le=1e300,
        description="Where it clears (null: the threshold); at or below it for above, at or"
        " above it for below.",
    )
    hold_seconds: float = Field(
        default=0.0,
        ge=0,
        le=MAX_SECONDS,
        description="The condition lasts this long before the alert fires (pending meanwhile).",
    )

    @model_validator(mode="after")
    def _clear_side(self) -> "TagThresholdCondition":
        clear = self.clear_threshold
        if clear is not None:
            if self.direction == "above" and clear > self.threshold:
                raise ValueError("clear_threshold must not be above threshold for direction above")
            if self.direction == "below" and clear < self.threshold:
                raise ValueError("clear_threshold must not be below threshold for direction below")
        return self

    def machine(self) -> Threshold:
        """The state machine's view of it."""
        clear = self.threshold if self.clear_threshold is None else self.clear_threshold
        return Threshold(
            self.direction == "above", self.threshold, clear, timedelta(seconds=self.hold_seconds)
        )


def _for_seconds(what: str) -> Any:
    return Field(gt=0, le=MAX_SECONDS, description=f"{what} at least this long before it fires.")


class AgentOfflineCondition(_Condition):
    """An agent offline (its death message, or silent for agents.offline_after) for at least
    `for_seconds`; over when it is online again."""

    kind: Literal["agent_offline"]
    agent: str | None = Field(
        default=None, pattern=AGENT_ID_PATTERN, description="Only this agent (null: every one)."
    )
    for_seconds: float = _for_seconds("Offline")


class TagStaleCondition(_Condition):
    """No reading of a tag has arrived for `for_seconds` (by arrival, not by the readings'
    timestamps); over when one arrives."""

    kind: Literal["tag_stale"]
    agent: str | None = Field(
        default=None,
        pattern=AGENT_ID_PATTERN,
        description="Only this agent's tag (null: the tag of every agent, each a subject).",
    )
    device: str = Field(pattern=NAME, description="The device the tag belongs to.")
    tag: str = Field(pattern=NAME, description="The tag's name.")
    for_seconds: float = _for_seconds("Silent")


class MachineStateCondition(_Condition):
    """A machine in one of the named states (its site's loss mapping) for at least
    `for_seconds`; over when it is in another."""

    kind: Literal["machine_state"]
    site: str = Field(pattern=ID_PATTERN, max_length=64, description="The site's id.")
    machine: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        max_length=64,
        description="Only this machine (null: every machine of the site, each a subject).",
    )
    states: list[Annotated[str, Field(pattern=ID_PATTERN, max_length=64)]] = Field(
        min_length=1, max_length=50, description="State names, e.g. down."
    )
    for_seconds: float = _for_seconds("In them")


class KpiCondition(_Condition):
    """A KPI of the shift running now below a target, for a machine or a whole site; judged
    every alerts.kpi_interval once the shift has enough planned busy time behind it. Over when
    the KPI is back at the target, or when the shift ends."""

    kind: Literal["kpi"]
    site: str = Field(pattern=ID_PATTERN, max_length=64, description="The site's id.")
    machine: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        max_length=64,
        description="Only this machine (null: the site's machines together, their time and"
        " quantities summed).",
    )
    kpi: Literal["oee", "availability", "performance", "quality"] = Field(
        description="Which ratio (ISO 22400-2; performance is effectiveness)."
    )
    target: float = Field(ge=0, le=1, allow_inf_nan=False, description="Fires below this.")
    model: Literal["iso22400", "tpm"] = Field(
        default="iso22400", description="Where minor stoppages count (docs/analytics.md)."
    )
    min_planned_seconds: float = Field(
        default=900.0,
        ge=0,
        le=MAX_SECONDS,
        description="Not judged before the shift has this much planned busy time behind it"
        " (a KPI of a few minutes says little).",
    )


Condition = Annotated[
    TagThresholdCondition
    | AgentOfflineCondition
    | TagStaleCondition
    | MachineStateCondition
    | KpiCondition,
    Field(discriminator="kind"),
]
CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)


@dataclass(frozen=True, slots=True)
class Rule:
    """An alert rule as stored."""

    id: str
    name: str
    kind: str
    condition: Condition
    enabled: bool
    evaluated_from: datetime
    """Readings from this time on are evaluated: set when the condition was made or changed,
    or the rule enabled again."""
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


_COLUMNS = sql.SQL(
    "id, name, kind, params, enabled, evaluated_from, created_at, created_by, updated_at,"
    " updated_by"
)


def rule_from_row(row: Sequence[Any]) -> Rule:
    """A rule from a row of _COLUMNS."""
    return Rule(row[0], row[1], row[2], CONDITION.validate_python(row[3]), row[4], *row[5:])


async def enabled_rules(conn: AsyncConnection[TupleRow]) -> list[Rule]:
    """Every enabled rule, share-locked to the caller's transaction: the API's changes to a
    rule wait for the evaluation that reads it, and the evaluation for them."""
    cursor = await conn.execute(
        sql.SQL("SELECT {c} FROM alert_rules WHERE enabled ORDER BY id FOR SHARE").format(
            c=_COLUMNS
        )
    )
    return [rule_from_row(row) for row in await cursor.fetchall()]


def new_rule_id() -> str:
    """A fresh rule id: ar_ and 96 random bits in hex."""
    return f"ar_{secrets.token_hex(12)}"


class AlertRules:
    """The alert_rules table, as the API changes it."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def create(self, name: str, condition: Condition, enabled: bool, by: str) -> Rule:
        """Store a new rule; it evaluates what is written from now on."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL(
                    "INSERT INTO alert_rules (id, name, kind, params, enabled, created_by,"
                    " updated_by) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {c}"
                ).format(c=_COLUMNS),
                (new_rule_id(), name, condition.kind, _params(condition), enabled, by, by),
            )
            return rule_from_row(required(await cursor.fetchone(), "the new rule"))

    async def listing(self, after: str | None, limit: int) -> list[Rule]:
        """Rules by id, after `after`."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL("SELECT {c} FROM alert_rules WHERE id > %s ORDER BY id LIMIT %s").format(
                    c=_COLUMNS
                ),
                (after or "", limit),
            )
            return [rule_from_row(row) for row in await cursor.fetchall()]

    async def get(self, rule_id: str) -> Rule | None:
        """One rule, or None."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.SQL("SELECT {c} FROM alert_rules WHERE id = %s").format(c=_COLUMNS),
                (rule_id,),
            )
            row = await cursor.fetchone()
        return None if row is None else rule_from_row(row)

    async def update(
        self,
        rule_id: str,
        name: str | None,
        condition: Condition | None,
        enabled: bool | None,
        by: str,
    ) -> Rule | None:
        """Change what is given (None: unchanged). A new condition, or disabling, resolves the
        rule's open alerts and forgets its evaluation: it starts afresh from now."""
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                sql.SQL("SELECT {c} FROM alert_rules WHERE id = %s FOR UPDATE").format(c=_COLUMNS),
                (rule_id,),
            )
            row = await cursor.fetchone()
            if row is None:
                return None
            before = rule_from_row(row)
            cursor = await conn.execute(
                sql.SQL(
                    "UPDATE alert_rules SET name = coalesce(%s, name),"
                    " kind = coalesce(%s, kind), params = coalesce(%s, params),"
                    " enabled = coalesce(%s, enabled), updated_at = now(), updated_by = %s"
                    " WHERE id = %s RETURNING {c}"
                ).format(c=_COLUMNS),
                (
                    name,
                    None if condition is None else condition.kind,
                    None if condition is None else _params(condition),
                    enabled,
                    by,
                    rule_id,
                ),
            )
            after = rule_from_row(required(await cursor.fetchone(), "the changed rule"))
            changed = after.condition != before.condition
            if changed or before.enabled != after.enabled:
                if changed or not after.enabled:
                    reason = "rule disabled" if not after.enabled else "rule changed"
                    await resolve_open(conn, rule_id, f"{reason} by {by}")
                await conn.execute("DELETE FROM alert_state WHERE rule_id = %s", (rule_id,))
                cursor = await conn.execute(
                    sql.SQL(
                        "UPDATE alert_rules SET evaluated_from = now() WHERE id = %s RETURNING {c}"
                    ).format(c=_COLUMNS),
                    (rule_id,),
                )
                after = rule_from_row(required(await cursor.fetchone(), "the changed rule"))
            return after

    async def delete(self, rule_id: str, by: str) -> Rule | None:
        """Delete a rule; its open alerts are resolved (reason: rule deleted), the rest kept."""
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                sql.SQL("DELETE FROM alert_rules WHERE id = %s RETURNING {c}").format(c=_COLUMNS),
                (rule_id,),
            )
            row = await cursor.fetchone()
            if row is None:
                return None
            await resolve_open(conn, rule_id, f"rule deleted by {by}")
            return rule_from_row(row)


def _params(condition: Condition) -> Jsonb:
    return Jsonb(condition.model_dump(mode="json"))
