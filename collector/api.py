"""The HTTP API: readings of a tag over a time range."""

from datetime import UTC, datetime, timedelta

from aiohttp import web

from collector.agents import AgentRecord
from collector.problems import InvalidParam, ProblemError, bad_param
from collector.state import AGENTS, SETTINGS, STORE
from collector.store import StoredReading, TagInfo

routes = web.RouteTableDef()


def parse_time(name: str, raw: str | None, default: datetime) -> datetime:
    """An RFC 3339 timestamp with a time zone, or the default when absent."""
    if raw is None:
        return default
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        reason = f"expected an RFC 3339 timestamp such as 2026-01-31T08:00:00Z, got {raw!r}"
        raise bad_param(name, reason) from None
    if moment.tzinfo is None:
        raise bad_param(name, "timestamp needs a time zone, e.g. a trailing Z for UTC")
    return moment


def parse_limit(raw: str | None, maximum: int) -> int:
    """A positive whole number no larger than `maximum`."""
    if raw is None:
        return maximum
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise bad_param("limit", f"expected a whole number from 1 to {maximum}, got {raw!r}")
    return int(raw)


def format_ts(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds and a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _reading_json(reading: StoredReading, with_type: bool) -> dict[str, object]:
    document: dict[str, object] = {
        "ts": format_ts(reading.ts),
        "value": reading.value,
        "quality": reading.quality.name.lower(),
    }
    if reading.server_ts is not None:
        document["server_ts"] = format_ts(reading.server_ts)
    if with_type:
        document["data_type"] = reading.data_type.value
    return document


async def _resolve_tag(request: web.Request) -> list[TagInfo]:
    """The versions (one per data type it has had) of the tag the request names."""
    raw = request.query.get("tag")
    if not raw:
        raise bad_param("tag", "required: the tag as <device>/<tag>, e.g. press-1/temperature")
    device, slash, name = raw.partition("/")
    if not slash or not device or not name:
        raise bad_param("tag", f"expected <device>/<tag>, got {raw!r}")
    agent = request.query.get("agent")
    matches = await request.app[STORE].find_tags(device, name, agent)
    if not matches:
        raise ProblemError(
            404,
            "Unknown tag",
            f"no tag {raw!r}" + (f" on agent {agent!r}" if agent else ""),
            [InvalidParam("tag", "no such tag")],
        )
    agents = sorted({tag.agent_id for tag in matches})
    if len(agents) > 1:
        raise bad_param(
            "agent", f"tag {raw!r} exists on several agents ({', '.join(agents)}); name one"
        )
    return matches


@routes.get("/api/v1/readings")
async def get_readings(request: web.Request) -> web.Response:
    """Readings of one tag with from <= ts < to, oldest first.

    `data_type` is the tag's current type; when the range holds readings written under
    another type, every reading carries its own `data_type`.
    """
    settings = request.app[SETTINGS]
    now = datetime.now(UTC)
    end = parse_time("to", request.query.get("to"), now)
    start = parse_time("from", request.query.get("from"), end - timedelta(hours=1))
    if start >= end:
        raise bad_param("from", "must be earlier than `to`")
    limit = parse_limit(request.query.get("limit"), settings.http.max_readings)
    versions = await _resolve_tag(request)
    tag = await request.app[STORE].latest(versions)
    rows = await request.app[STORE].readings(versions, start, end, limit + 1)
    mixed = len({reading.data_type for reading in rows[:limit]} | {tag.data_type}) > 1
    return web.json_response(
        {
            "agent": tag.agent_id,
            "device": tag.device,
            "tag": tag.name,
            "data_type": tag.data_type.value,
            "from": format_ts(start),
            "to": format_ts(end),
            "count": min(len(rows), limit),
            "truncated": len(rows) > limit,
            "readings": [_reading_json(reading, mixed) for reading in rows[:limit]],
        }
    )


def _agent_json(record: AgentRecord) -> dict[str, object]:
    return {
        "agent": record.agent_id,
        "status": record.status,
        "status_since": format_ts(record.status_since),
        "first_seen": format_ts(record.first_seen),
        "last_seen": format_ts(record.last_seen),
        "version": record.version,
        "config_hash": record.config_hash,
        "devices": record.devices,
        "epoch": record.epoch,
        "last_heartbeat": record.last_heartbeat,
        "last_heartbeat_at": format_ts(record.last_heartbeat_at)
        if record.last_heartbeat_at
        else None,
    }


@routes.get("/api/v1/agents")
async def list_agents(request: web.Request) -> web.Response:
    """Every agent the collector has heard of, with its status and last heartbeat."""
    records = await request.app[AGENTS].list()
    return web.json_response({"agents": [_agent_json(record) for record in records]})


@routes.get("/api/v1/agents/{agent_id}")
async def get_agent(request: web.Request) -> web.Response:
    """One agent."""
    agent_id = request.match_info["agent_id"]
    records = await request.app[AGENTS].list(agent_id)
    if not records:
        raise ProblemError(
            404,
            "Unknown agent",
            f"no agent {agent_id!r}",
            [InvalidParam("agent_id", "no such agent")],
        )
    return web.json_response(_agent_json(records[0]))
