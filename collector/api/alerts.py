"""/api/v1/alert-rules (admin) and /api/v1/alerts (viewer; acknowledged by operators)."""

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field, StrictBool

from collector.alerts.alerts import Alert, AlertFilter, AlreadyAcknowledged
from collector.alerts.rules import NAME, RULE_ID, Condition, Rule
from collector.api.auth import PRINCIPAL
from collector.api.operations import API, Body, Params, Role
from collector.api.pages import key_position, next_link, position
from collector.api.params import QueryBool, QueryTime, Timestamp
from collector.api.problems import InvalidParam, ProblemError, bad_param
from collector.pagination import CURSOR_PATTERN, MAX_NUMBER
from collector.state import ALERT_RULES, ALERTS

RULES_TAG = "alert rules"
ALERTS_TAG = "alerts"
MAX_LIMIT = 1000
SUBJECT = r"^[^\x00-\x1f\x7f]{1,600}$"
RuleName = Field(pattern=NAME, max_length=200, description="What the rule is called.")


class RuleOut(BaseModel):
    """An alert rule as stored."""

    id: str = Field(examples=["ar_3f9a1c07b2d4e6f8a0c2e4f6"])
    name: str
    enabled: bool
    condition: Condition
    evaluated_from: Timestamp = Field(
        description="Readings timestamped from then on are evaluated: when the condition was"
        " made or last changed, or the rule enabled again."
    )
    created_at: Timestamp
    created_by: str = Field(description="The key that made it: key <prefix>.")
    updated_at: Timestamp
    updated_by: str


class RulePage(BaseModel):
    """A page of rules, by id."""

    items: list[RuleOut]
    next: str | None = Field(description="URL of the next page (null: this is the last).")


class NewRule(Body):
    """A rule: its name and its condition (one of the kinds, by `kind`)."""

    name: str = RuleName
    enabled: StrictBool = Field(default=True, description="false: stored, not evaluated.")
    condition: Condition


class RuleChange(Body):
    """What to change; what is absent stays. A new condition, or disabling, resolves the
    rule's open alerts (reason: rule changed or disabled) and starts it afresh."""

    name: str | None = Field(default=None, pattern=NAME, max_length=200)
    enabled: StrictBool | None = None
    condition: Condition | None = None


class RulePath(Params):
    """Which rule."""

    id: str = Field(pattern=RULE_ID, description="The rule's id.")


class RulesQuery(Params):
    """A page of rules."""

    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Page size.")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="From the previous page's `next`."
    )


class AlertOut(BaseModel):
    """One episode of a rule on a subject."""

    id: int
    rule_id: str
    kind: str = Field(description="The rule's kind, e.g. tag_threshold.")
    subject: str = Field(description="What it is about, e.g. agent/device/tag.")
    state: Literal["pending", "firing", "resolved"]
    started_at: Timestamp = Field(description="When the condition began (true time).")
    fired_at: Timestamp | None = Field(description="When it fired (null: it never did, yet).")
    resolved_at: Timestamp | None = Field(description="When it ended (null: it has not).")
    resolved_reason: str | None = Field(
        description="Why it ended other than by its condition clearing, e.g. rule deleted."
    )
    value: float | None = Field(description="The value that started it, where there is one.")
    late: bool = Field(
        description="Recorded or fired from readings older than alerts.late_after: found"
        " after the fact (an outage, a backlog), with its true times."
    )
    acknowledged_at: Timestamp | None
    acknowledged_by: str | None = Field(description="The key: its name and prefix.")
    ack_comment: str | None
    recorded_at: Timestamp = Field(description="When the collector recorded it.")
    updated_at: Timestamp


class AlertPage(BaseModel):
    """A page of alerts, the latest start first."""

    items: list[AlertOut]
    next: str | None = Field(description="URL of the next page (null: this is the last).")


class AlertsQuery(Params):
    """Which alerts, and which page."""

    rule: str | None = Field(default=None, pattern=RULE_ID, description="Only this rule's.")
    state: Literal["pending", "firing", "resolved"] | None = Field(
        default=None, description="Only alerts in this state."
    )
    subject: str | None = Field(
        default=None, pattern=SUBJECT, description="Only about this subject, e.g. press-1."
    )
    since: QueryTime | None = Field(default=None, description="Started at or after.")
    until: QueryTime | None = Field(default=None, description="Started before.")
    late: QueryBool | None = Field(default=None, description="Only late ones, or only not.")
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Page size.")
    cursor: str | None = Field(
        default=None, pattern=CURSOR_PATTERN, description="From the previous page's `next`."
    )


class AlertPath(Params):
    """Which alert."""

    id: int = Field(ge=1, le=MAX_NUMBER, description="The alert's id.")


class Acknowledgement(Body):
    """Who acknowledges is the key; what they say about it."""

    comment: str = Field(
        default="",
        max_length=2000,
        pattern=r"^[^\x00]*$",  # PostgreSQL text holds no NUL
        description="Free text, may be empty.",
    )


def _rule_out(rule: Rule) -> RuleOut:
    return RuleOut(
        id=rule.id,
        name=rule.name,
        enabled=rule.enabled,
        condition=rule.condition,
        evaluated_from=rule.evaluated_from,
        created_at=rule.created_at,
        created_by=rule.created_by,
        updated_at=rule.updated_at,
        updated_by=rule.updated_by,
    )


def _alert_out(alert: Alert) -> AlertOut:
    return AlertOut.model_validate(alert, from_attributes=True)


def _unknown(what: str, value: object) -> ProblemError:
    return ProblemError(
        404, f"Unknown {what}", f"no {what} {value}", [InvalidParam("id", f"no such {what}")]
    )


def _rule(rule: Rule | None, rule_id: str) -> Rule:
    if rule is None:
        raise _unknown("alert rule", rule_id)
    return rule


def _actor(request: web.Request) -> str:
    return f"key {request[PRINCIPAL].prefix}"


@API.operation(
    "POST",
    "/api/v1/alert-rules",
    summary="Add an alert rule",
    tag=RULES_TAG,
    role=Role.ADMIN,
    body=NewRule,
    response=RuleOut,
    status=201,
)
async def create_alert_rule(request: web.Request, _: Params, body: NewRule) -> RuleOut:
    """It evaluates readings timestamped from now on; conditions are checked per kind."""
    made = await request.app[ALERT_RULES].create(
        body.name, body.condition, body.enabled, _actor(request)
    )
    return _rule_out(made)


@API.operation(
    "GET",
    "/api/v1/alert-rules",
    summary="Alert rules, by id",
    tag=RULES_TAG,
    role=Role.ADMIN,
    params=RulesQuery,
    response=RulePage,
)
async def list_alert_rules(request: web.Request, query: RulesQuery) -> RulePage:
    """Every rule, enabled or not; paginated."""
    found = await request.app[ALERT_RULES].listing(key_position(query.cursor), query.limit + 1)
    last = found[query.limit - 1].id if len(found) > query.limit else None
    return RulePage(
        items=[_rule_out(r) for r in found[: query.limit]], next=next_link(request, last)
    )


@API.operation(
    "GET",
    "/api/v1/alert-rules/{id}",
    summary="An alert rule",
    tag=RULES_TAG,
    role=Role.ADMIN,
    params=RulePath,
    response=RuleOut,
    errors=(404,),
)
async def get_alert_rule(request: web.Request, path: RulePath) -> RuleOut:
    """One rule."""
    return _rule_out(_rule(await request.app[ALERT_RULES].get(path.id), path.id))


@API.operation(
    "PATCH",
    "/api/v1/alert-rules/{id}",
    summary="Change an alert rule's name, condition, or whether it is enabled",
    tag=RULES_TAG,
    role=Role.ADMIN,
    params=RulePath,
    body=RuleChange,
    response=RuleOut,
    errors=(404,),
)
async def update_alert_rule(request: web.Request, path: RulePath, body: RuleChange) -> RuleOut:
    """A new condition, or disabling, resolves its open alerts and starts it afresh from now;
    a new name alone changes nothing else."""
    changed = await request.app[ALERT_RULES].update(
        path.id, body.name, body.condition, body.enabled, _actor(request)
    )
    return _rule_out(_rule(changed, path.id))


@API.operation(
    "DELETE",
    "/api/v1/alert-rules/{id}",
    summary="Delete an alert rule",
    tag=RULES_TAG,
    role=Role.ADMIN,
    params=RulePath,
    response=RuleOut,
    errors=(404,),
)
async def delete_alert_rule(request: web.Request, path: RulePath) -> RuleOut:
    """Its open alerts are resolved (reason: rule deleted); its alerts stay listed."""
    return _rule_out(
        _rule(await request.app[ALERT_RULES].delete(path.id, _actor(request)), path.id)
    )


@API.operation(
    "GET",
    "/api/v1/alerts",
    summary="Alerts, the latest start first",
    tag=ALERTS_TAG,
    role=Role.VIEWER,
    params=AlertsQuery,
    response=AlertPage,
)
async def list_alerts(request: web.Request, query: AlertsQuery) -> AlertPage:
    """Filtered by rule, state, subject, start time and lateness; paginated."""
    if query.since is not None and query.until is not None and query.since >= query.until:
        raise bad_param("since", "must be earlier than `until`")
    where = AlertFilter(
        query.rule, query.state, query.subject, query.since, query.until, query.late
    )
    found = await request.app[ALERTS].listing(where, position(query.cursor), query.limit + 1)
    last = found[query.limit - 1] if len(found) > query.limit else None
    return AlertPage(
        items=[_alert_out(a) for a in found[: query.limit]],
        next=next_link(request, None if last is None else (last.started_at, last.id)),
    )


@API.operation(
    "GET",
    "/api/v1/alerts/{id}",
    summary="An alert",
    tag=ALERTS_TAG,
    role=Role.VIEWER,
    params=AlertPath,
    response=AlertOut,
    errors=(404,),
)
async def get_alert(request: web.Request, path: AlertPath) -> AlertOut:
    """One alert, whatever its state."""
    found = await request.app[ALERTS].get(path.id)
    if found is None:
        raise _unknown("alert", path.id)
    return _alert_out(found)


@API.operation(
    "POST",
    "/api/v1/alerts/{id}/acknowledge",
    summary="Acknowledge an alert",
    tag=ALERTS_TAG,
    role=Role.OPERATOR,
    params=AlertPath,
    body=Acknowledgement,
    response=AlertOut,
    errors=(404, 409),
)
async def acknowledge_alert(
    request: web.Request, path: AlertPath, body: Acknowledgement
) -> AlertOut:
    """Once per alert, in any state: who (the key's name and prefix), when and the comment are
    kept, and an alert.acknowledged event goes out. A second acknowledgement answers 409 and
    names the first."""
    key = request[PRINCIPAL]
    try:
        found = await request.app[ALERTS].acknowledge(
            path.id, f"{key.name} (key {key.prefix})", body.comment
        )
    except AlreadyAcknowledged as exc:
        raise ProblemError(
            409,
            "Already acknowledged",
            f"alert {path.id} was {exc}",
            [InvalidParam("id", "acknowledged before")],
        ) from None
    if found is None:
        raise _unknown("alert", path.id)
    return _alert_out(found)
