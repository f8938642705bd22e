"""make bench-analytics: the analytics API on a realistic plant's history, beside bare SQL.

Servers: PostgreSQL, Mosquitto and Redis as make bench-api starts them (bench/api_bench.py:
servers(), fsync off, which changes nothing for reads), and for the ingest figure a second,
durable PostgreSQL as make bench-ingest runs (fsync on) with a Mosquitto per side.

The database, made by PostgreSQL itself (set-based INSERT ... SELECT generate_series into the
daily partitions), ending now:
  - --tags (50) float tags at 1 Hz for --days (14) days plus today so far (api_bench.fill):
    about 50 x 86,400 x 14.5 = 62.6 million readings;
  - one float tag (archive/year, agent `plant`) at 1 Hz for --year-days (365) days plus today:
    about 31.6 million readings;
  - --machines (20) machines (site plant-1, Europe/Berlin, early 06-14 and late 14-22 Monday
    to Friday with a 30-minute break each, night 22-06 Monday to Thursday; two lines), each
    with tags state, reason, good, scrap (cumulative, good wrapping at 2^16) and product
    (text), for --days + 1 days, as an agent subscribed to changes sends them: a state and a
    reason reading at every change, a counter reading per unit made (a cycle of 20-40 s per
    machine, 3 % scrap) while running, a product reading at each daily product change.
    States: running most of the time; per 6-minute slot a 30 % chance of a stop (60 % jams
    of 15-105 s, minor stoppages; else a material shortage of 2-3.7 min); per hour a 12 %
    chance of a long stop of 15-40 min (a tool change, no operator, a material shortage, or
    idle without orders). Draws are hashes of (machine, slot), so every run makes the same
    history: about 4,000 state changes and 35,000 counter readings per machine and 14 days.
Then one derive_log row per tag per day (oldest day first), as ingest would have written, and
the real `plantwire-collector run` process (API keys, rate limits in Redis set never to refuse,
analytics.derive on, a pass of the deriver taking about a day of tags) derives the rollups and
the machines' intervals and counts: backfill_s is its time until derive_log is empty.

Figures, each through the HTTP API with a viewer key (aiohttp, sequential requests, a warm-up
then --samples timed runs: median and p90), beside the bare SQL of the same question asked of
the raw readings (psycopg, same run, fewer samples for the slow ones):
  year_chart   /api/v1/series: a year of archive/year, PT1H buckets, max, max_points=1000;
  day_minutes  /api/v1/series: yesterday (UTC) of one 1 Hz tag, PT1M buckets, avg;
  oee_14d      /api/v1/kpis: one machine, --days production days, group_by=shift;
  site_rollup  /api/v1/kpis: all machines, 7 production days, group_by=day.
The bare OEE SQL takes the calendar's planned windows (shift less breaks, made in Python as
the collector makes them) and computes from raw readings with window functions: time in the
running state per window (lead over state readings), counter increments (lag, with the 2^16
wrap), the product in force at each unit (carried forward), ideal time per product.
The API's elements (PBT, APT, GQ, PQ) are compared with the bare SQL's.

Ingest: bench/ingest_bench.py's end-to-end phase (its 2,000,000 readings, batches of 5000 from
4 agents of 2000 tags, 8 batches in flight each) against two fresh databases, one collector with
analytics.derive true (20 machines mapped onto the ingested tags) and one with false,
alternating, --runs times. With derive on a run ends when every batch is acknowledged, its
collector has rolled up what it held (no claim older than the running minute is left) and
the deriver has taken up every logged write older than the running minute. ingest_ratio =
median rate on / off; the CPU seconds of the collector and of PostgreSQL per run are printed
beside it. --ingest-only runs this comparison alone.
"""

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import psycopg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api_bench import _partition, add_key, collector_config, fill, servers, tag_names
from bench.ingest_bench import (
    DURABLE,
    E2E_READINGS,
    TOPICS,
    Agents,
    TagValue,
    empty,
    end_to_end,
    make_batches,
    migrate,
)
from bench.processes import BIN, Children, cpu_seconds, profile, summarise_profile, tree_cpu
from shared.mqtt import MqttClient, MqttSettings
from shared.readings import DataType, Value
from tests.servers import MosquittoServer, PostgresServer, wait_for_port

SITE = "plant-1"
ZONE = "Europe/Berlin"
DAY_START = clock_time(6)
AGENT = "plant"
ROLES = ("state", "reason", "good", "scrap", "product")
ROLE_TYPES = {"state": "uint16", "reason": "uint16", "good": "uint32", "scrap": "uint32"}
ROLE_TYPES["product"] = "string"
GOOD_START, GOOD_WRAP = 60_000, 65_536  # the good counter wraps at 2^16 within a day or two
PRODUCTS = {"P-1": 0.80, "P-2": 0.90, "P-3": 0.85}  # ideal cycle time / machine cycle
# (name, start, end, days, break) in the site's local time; an end before the start is the
# next day.
SHIFTS = [
    ("early", "06:00", "14:00", ("mon", "tue", "wed", "thu", "fri"), ("10:00", "10:30")),
    ("late", "14:00", "22:00", ("mon", "tue", "wed", "thu", "fri"), ("18:00", "18:30")),
    ("night", "22:00", "06:00", ("mon", "tue", "wed", "thu"), None),
]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TARGETS = {  # figure: (target, True when higher is better)
    "year_chart_ms": (100.0, False),
    "day_minutes_ms": (20.0, False),
    "oee_14d_ms": (100.0, False),
    "site_rollup_ms": (300.0, False),
    "ingest_ratio": (0.8, True),
}
# Ingest shape: make bench-ingest's defaults (bench/ingest_bench.py main()).
INGEST_BATCH, INGEST_AGENTS, INGEST_TAGS, INGEST_WINDOW = 5000, 4, 2000, 8


# --- the plant -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MachineTags:
    """A machine and where its tags come from: agent, and <device>/<tag> per role."""

    name: str
    line: str
    agent: str
    tags: dict[str, str]
    cycle_s: int


def cycle_s(number: int) -> int:
    """Machine `number`'s cycle: one unit every 20 to 40 s."""
    return 20 + (number * 7) % 21


def plant_machines(count: int) -> list[MachineTags]:
    """The bench plant's machines, half on each of two lines, tags of agent `plant`."""
    out = []
    for n in range(1, count + 1):
        name = f"m-{n:02d}"
        line = "line-1" if n <= (count + 1) // 2 else "line-2"
        tags = {role: f"{name}/{role}" for role in ROLES}
        out.append(MachineTags(name, line, AGENT, tags, cycle_s(n)))
    return out


def ingest_machines(count: int, agents: int) -> list[MachineTags]:
    """Machines over the ingest bench's own tags (device `machine`, tags t00000...)."""
    out = []
    for n in range(count):
        first = (n // agents) * len(ROLES)
        tags = {role: f"machine/t{first + i:05d}" for i, role in enumerate(ROLES)}
        line = "line-1" if n % 2 == 0 else "line-2"
        out.append(MachineTags(f"m-{n + 1:02d}", line, f"bench{n % agents}", tags, cycle_s(n)))
    return out


STOP_EVERY_S, STOP_S = 360, 60
"""In the ingest comparison a machine stops (down, a jam) for a minute in every six."""


def _role_value(role: str, number: int, cycle: int) -> TagValue:
    """A machine tag's readings as a plant's: states that hold for minutes, counters that count."""
    offset = number * 37  # machines do not all stop at once

    def value(_index: int, ts_us: int) -> tuple[DataType, Value]:
        seconds = ts_us // 1_000_000
        stopped = (seconds + offset) % STOP_EVERY_S < STOP_S
        if role == "state":
            return DataType.UINT16, 3 if stopped else 1
        if role == "reason":
            return DataType.UINT16, 3 if stopped else 0
        if role == "good":
            return DataType.UINT32, (GOOD_START + seconds // cycle) % GOOD_WRAP
        if role == "scrap":
            return DataType.UINT32, seconds // (cycle * 33)
        return DataType.STRING, "P-1"

    return value


def plant_shaped(machines: Sequence[MachineTags], agent: str) -> dict[int, TagValue]:
    """The agent's machine tags (by index in the ingest bench's tags) with a plant's values."""
    shaped = {}
    for number, machine in enumerate(machines):
        if machine.agent == agent:
            for role, tag in machine.tags.items():
                index = int(tag.removeprefix("machine/t"))
                shaped[index] = _role_value(role, number, machine.cycle_s)
    return shaped


def ideal_cycles(machine: MachineTags) -> dict[str, float]:
    """Each product's ideal cycle time on this machine, s."""
    return {product: round(machine.cycle_s * share, 2) for product, share in PRODUCTS.items()}


def equipment(machines: Sequence[MachineTags]) -> dict[str, Any]:
    """The equipment file: one site in Berlin, three shifts with breaks, a loss mapping."""
    shifts = []
    for name, start, end, days, pause in SHIFTS:
        shift: dict[str, Any] = {"name": name, "start": start, "end": end, "days": list(days)}
        if pause is not None:
            shift["breaks"] = [{"start": pause[0], "end": pause[1]}]
        shifts.append(shift)

    def machine(m: MachineTags) -> dict[str, Any]:
        def tag(role: str, **extra: Any) -> dict[str, Any]:
            return {"tag": m.tags[role], "agent": m.agent, **extra}

        return {
            "id": m.name,
            "area": "assembly",
            "line": m.line,
            "state": tag("state"),
            "reason": tag("reason"),
            "good": tag("good", kind="cumulative", rollover=GOOD_WRAP),
            "scrap": tag("scrap", kind="cumulative"),
            "product": tag("product"),
            "products": [
                {"product": p, "ideal_cycle_time_s": s} for p, s in ideal_cycles(m).items()
            ],
        }

    return {
        "enterprise": "Bench",
        "sites": [
            {
                "id": SITE,
                "time_zone": ZONE,
                "production_day_start": DAY_START.strftime("%H:%M"),
                "areas": [{"id": "assembly", "lines": [{"id": "line-1"}, {"id": "line-2"}]}],
                "calendar": {"shifts": shifts},
                "loss_mapping": {
                    "microstop_threshold_s": 120,
                    "states": [
                        {"name": "stopped", "values": [0], "element": "planned_downtime"},
                        {"name": "running", "values": [1], "element": "production"},
                        {"name": "idle", "values": [2], "element": "no_orders"},
                        {"name": "down", "values": [3], "element": "delay"},
                        {"name": "setup", "values": [4], "element": "setup"},
                    ],
                    "reasons": [
                        {"value": 1, "name": "Material shortage", "element": "delay"},
                        {
                            "value": 2,
                            "name": "Tool change",
                            "element": "setup",
                            "states": ["down"],
                        },
                        {"value": 3, "name": "Jam", "element": "delay", "tpm": "minor_stop"},
                        {"value": 5, "name": "No operator", "element": "delay"},
                    ],
                },
                "machines": [machine(m) for m in machines],
            }
        ],
    }


# --- the calendar, as the bare SQL needs it ------------------------------------------------


def _at(day: date, hhmm: str, zone: ZoneInfo) -> datetime:
    hours, minutes = hhmm.split(":")
    return datetime.combine(day, clock_time(int(hours), int(minutes)), zone).astimezone(UTC)


def planned_segments(
    start: datetime, end: datetime, zone: ZoneInfo
) -> list[tuple[str, str, datetime, datetime]]:
    """Planned time in [start, end): (shift key, production day, from, to) of every shift
    less its break, keyed as /api/v1/kpis keys its groups (`2026-03-02/early`)."""
    out = []
    day = start.astimezone(zone).date() - timedelta(days=1)
    while day <= end.astimezone(zone).date():
        for name, first, last, days, pause in SHIFTS:
            if WEEKDAYS[day.weekday()] not in days:
                continue
            lo = _at(day, first, zone)
            hi = _at(day + timedelta(days=1) if last <= first else day, last, zone)
            pieces = [(lo, hi)]
            if pause is not None:
                pieces = [(lo, _at(day, pause[0], zone)), (_at(day, pause[1], zone), hi)]
            for a, b in pieces:
                a, b = max(a, start), min(b, end)
                if a < b:
                    out.append((f"{day.isoformat()}/{name}", day.isoformat(), a, b))
        day += timedelta(days=1)
    return out


def production_days(now: datetime, days: int, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The last `days` whole production days (starting at 06:00 local) before `now`."""
    local = now.astimezone(zone)
    today = (local - timedelta(hours=DAY_START.hour)).date()
    end = datetime.combine(today, DAY_START, zone)
    start = datetime.combine(today - timedelta(days=days), DAY_START, zone)
    return start.astimezone(UTC), end.astimezone(UTC)


# --- making the history --------------------------------------------------------------------

# u(machine, k, salt): a uniform draw in [0, 1) from a hash: the same history every run.
_HASH = """
CREATE FUNCTION pg_temp.u(m int, k bigint, salt text) RETURNS float8 LANGUAGE sql IMMUTABLE
AS $$ SELECT (hashtextextended(m || ':' || k || ':' || salt, 0) & 1048575) / 1048576.0 $$
"""
# Stops in epoch seconds [start_s, end_s): long ones (per hour, within it) and short ones (per
# 6-minute slot, within it, none in an hour's long stop).
_STOPS = """
CREATE TEMP TABLE bench_stops AS
WITH machines AS (SELECT generate_series(1, %(machines)s) AS m),
long AS (
    SELECT m, h, h * 3600 + 600 + floor(pg_temp.u(m, h, 'o') * 600)::bigint AS s,
        900 + floor(pg_temp.u(m, h, 'd') * 1500)::bigint AS d, pg_temp.u(m, h, 'k') AS k
    FROM machines, generate_series(%(t0)s::bigint / 3600, %(t1)s::bigint / 3600) AS h
    WHERE pg_temp.u(m, h, 'L') < 0.12
),
short AS (
    SELECT m, sl, sl * 360 + floor(pg_temp.u(m, sl, 'o') * 120)::bigint AS s,
        pg_temp.u(m, sl, 'r') AS r, pg_temp.u(m, sl, 'd') AS d
    FROM machines, generate_series(%(t0)s::bigint / 360, %(t1)s::bigint / 360) AS sl
    WHERE pg_temp.u(m, sl, 's') < 0.3
)
SELECT * FROM (
SELECT m, s AS start_s, s + d AS end_s,
    CASE WHEN k < 0.9 THEN 3 ELSE 2 END AS state,
    CASE WHEN k < 0.35 THEN 2 WHEN k < 0.6 THEN 5 WHEN k < 0.9 THEN 1 ELSE 0 END AS reason
FROM long
UNION ALL
SELECT m, s, s + CASE WHEN r < 0.6 THEN 15 + floor(d * 90) ELSE 120 + floor(d * 100) END,
    3, CASE WHEN r < 0.6 THEN 3 ELSE 1 END
FROM short
WHERE NOT EXISTS (
    SELECT 1 FROM long
    WHERE long.m = short.m AND long.h = short.sl / 10
        AND short.sl * 360 < long.s + long.d AND short.sl * 360 + 360 > long.s
)) AS stops WHERE start_s > %(t0)s::bigint
"""
# Tags of machine m: ids passed in role order per machine (state, reason, good, scrap, product).
_TAGS = "unnest(%(ms)s::int[], %(state)s::int[], %(reason)s::int[], %(good)s::int[],"
_TAGS += " %(scrap)s::int[], %(product)s::int[], %(cycle)s::int[])"
_TAGS += " AS t(m, state, reason, good, scrap, product, cycle)"
_STATE_READINGS = f"""
INSERT INTO readings (tag_id, ts, value, quality, seq)
SELECT tag, to_timestamp(s), v, 0, s * 1000 + tag FROM (
    SELECT t.state AS tag, %(t0)s::bigint AS s, 1 AS v FROM {_TAGS}
    UNION ALL SELECT t.reason, %(t0)s::bigint, 0 FROM {_TAGS}
    UNION ALL SELECT t.good, %(t0)s::bigint, {GOOD_START} FROM {_TAGS}
    UNION ALL SELECT t.scrap, %(t0)s::bigint, 0 FROM {_TAGS}
    UNION ALL SELECT t.state, b.start_s, b.state FROM {_TAGS} JOIN bench_stops b USING (m)
    UNION ALL SELECT t.reason, b.start_s, b.reason FROM {_TAGS} JOIN bench_stops b USING (m)
    UNION ALL SELECT t.state, b.end_s, 1 FROM {_TAGS} JOIN bench_stops b USING (m)
    UNION ALL SELECT t.reason, b.end_s, 0 FROM {_TAGS} JOIN bench_stops b USING (m)
) AS x WHERE s < %(t1)s::bigint
"""  # noqa: S608 - constants only
# One product per machine and day, changed at 05:00 UTC.
_PRODUCT_READINGS = f"""
INSERT INTO readings (tag_id, ts, value_text, quality, seq)
SELECT t.product, to_timestamp(s), 'P-' || (1 + (t.m + s / 86400) %% 3), 0,
    s * 1000 + t.product
FROM {_TAGS}, generate_series(%(t0)s::bigint, %(t1)s::bigint - 1, 86400) AS d,
    LATERAL (SELECT CASE WHEN d = %(t0)s::bigint THEN d ELSE d + 5 * 3600 END AS s) AS x
WHERE s < %(t1)s::bigint
"""  # noqa: S608 - constants only
# A counter reading per unit made: every cycle while running (not within a stop), 3 % scrap.
_UNIT_READINGS = f"""
INSERT INTO readings (tag_id, ts, value, quality, seq)
SELECT CASE WHEN q.lost THEN t.scrap ELSE t.good END, to_timestamp(u.s),
    CASE WHEN q.lost THEN count(*) FILTER (WHERE q.lost) OVER w
        ELSE ({GOOD_START} + count(*) FILTER (WHERE NOT q.lost) OVER w) %% {GOOD_WRAP} END,
    0, u.s * 1000 + CASE WHEN q.lost THEN t.scrap ELSE t.good END
FROM {_TAGS}
CROSS JOIN LATERAL generate_series(%(t0)s::bigint + t.cycle, %(t1)s::bigint - 1, t.cycle) AS u(s)
CROSS JOIN LATERAL (SELECT pg_temp.u(t.m, u.s, 'q') < 0.03 AS lost) AS q
WHERE coalesce((
    SELECT b.end_s <= u.s FROM bench_stops b WHERE b.m = t.m AND b.start_s <= u.s
    ORDER BY b.start_s DESC LIMIT 1
), true)
WINDOW w AS (PARTITION BY t.m ORDER BY u.s)
"""  # noqa: S608 - constants only


def midnight_utc(day: date) -> datetime:
    """00:00 UTC of `day`."""
    return datetime.combine(day, clock_time(), UTC)


def days_between(first: date, last: date) -> list[date]:
    """Every day from `first` to `last`, both included."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def make_history(url: str, args: argparse.Namespace, machines: list[MachineTags]) -> list[str]:
    """Fill the database; return printable lines of what it holds."""
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date()
    lines = []
    started = time.monotonic()
    count = fill(url, args.days, args.tags)
    lines.append(
        f"  {args.tags} tags at 1 Hz, {args.days} days + today: {count:,} readings"
        f" ({time.monotonic() - started:.0f} s)"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO agents (agent_id) VALUES (%s)", [AGENT])
        year_tag = _tag(conn, AGENT, "archive/year", "float64")
        started, year_count = time.monotonic(), 0
        for day in days_between(today - timedelta(days=args.year_days), today):
            _partition(conn, day)
            lo = midnight_utc(day)
            hi = min(lo + timedelta(days=1), now)
            # A daily wave with noise and a rare spike: peaks a chart has to keep.
            year_count += conn.execute(
                "INSERT INTO readings (tag_id, ts, value, quality, seq)"
                " SELECT %s, g, 50 + 30 * sin(2 * pi() * extract(epoch FROM g) / 86400)"
                " + random() * 10 + CASE WHEN random() < 0.00002 THEN 100 ELSE 0 END, 0,"
                " extract(epoch FROM g)::bigint * 1000 + %s"
                " FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 second',"
                " interval '1 second') AS g",
                (year_tag, year_tag, lo, hi),
            ).rowcount
        lines.append(
            f"  archive/year at 1 Hz, {args.year_days} days + today: {year_count:,} readings"
            f" ({time.monotonic() - started:.0f} s)"
        )
        started = time.monotonic()
        first = today - timedelta(days=args.days + 1)
        _partition(conn, first)
        ids = {
            m.name: {r: _tag(conn, AGENT, m.tags[r], ROLE_TYPES[r]) for r in ROLES}
            for m in machines
        }
        params: dict[str, Any] = {
            "machines": len(machines),
            "t0": int(midnight_utc(first).timestamp()),
            "t1": int(now.timestamp()),
            "ms": list(range(1, len(machines) + 1)),
            "cycle": [m.cycle_s for m in machines],
        }
        for role in ROLES:
            params[role] = [ids[m.name][role] for m in machines]
        conn.execute(_HASH)
        conn.execute(_STOPS, params)
        conn.execute("CREATE INDEX ON bench_stops (m, start_s)")
        conn.execute("ANALYZE bench_stops")
        stops = _one(conn, "SELECT count(*) FROM bench_stops")
        changes = conn.execute(_STATE_READINGS, params).rowcount
        products = conn.execute(_PRODUCT_READINGS, params).rowcount
        units = conn.execute(_UNIT_READINGS, params).rowcount
        lines.append(
            f"  {len(machines)} machines, {args.days + 1} days + today: {stops:,} stops,"
            f" {changes:,} state/reason/initial readings, {units:,} counter readings,"
            f" {products:,} product readings ({time.monotonic() - started:.0f} s)"
        )
        started = time.monotonic()
        conn.execute("VACUUM ANALYZE readings")
        total = count + year_count + changes + products + units
        lines.append(f"  {total:,} readings in all (VACUUM {time.monotonic() - started:.0f} s)")
        # What ingest would have logged: a write per tag and day, oldest day first.
        fill_first = today - timedelta(days=args.days)
        logged = []
        for day in days_between(today - timedelta(days=args.year_days), today):
            tags = [year_tag]
            if day >= fill_first:
                tags = [*range(1, args.tags + 1), *tags]
            if day >= first:
                tags += [ids[m.name][r] for m in machines for r in ROLES]
            lo = midnight_utc(day)
            hi = min(lo + timedelta(days=1) - timedelta(microseconds=1), now)
            logged += [([tag], lo, hi) for tag in sorted(tags)]
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO derive_log (tag_ids, lo, hi) VALUES (%s, %s, %s)", logged
            )
        lines.append(f"  {len(logged):,} derive_log rows (a write per tag and day)")
    return lines


def _tag(conn: psycopg.Connection[tuple[Any, ...]], agent: str, tag: str, data_type: str) -> int:
    device, name = tag.split("/")
    row = conn.execute(
        "INSERT INTO tags (agent_id, device, name, data_type) VALUES (%s, %s, %s, %s)"
        " RETURNING tag_id",
        (agent, device, name, data_type),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _one(conn: psycopg.Connection[tuple[Any, ...]], query: str) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


# --- the bare SQL of each question, asked of the raw readings ------------------------------

YEAR_SQL = """
SELECT date_bin('1 hour', ts, timestamptz '2000-01-01 00:00Z') AS bucket, max(value)
FROM readings WHERE tag_id = %(tag)s AND ts >= %(from)s AND ts < %(to)s
GROUP BY 1 ORDER BY 1
"""
DAY_SQL = """
SELECT date_bin('1 minute', ts, timestamptz '2000-01-01 00:00Z') AS bucket, avg(value)
FROM readings WHERE tag_id = %(tag)s AND ts >= %(from)s AND ts < %(to)s
GROUP BY 1 ORDER BY 1
"""
# The readings of a tag in [from, to), and the last one before `from` (what is in force then).
# Where they start is found first, once per tag: as a correlated condition of the scan it
# would be found again for each of the ~380 daily partitions. OFFSET 0 keeps the scan a
# per-tag index probe of the partitions from there on.
_SINCE = """
    SELECT ts, seq, value, value_text FROM (
        SELECT coalesce(max(ts), %(from)s) AS since FROM readings
        WHERE tag_id = {tag} AND ts < %(from)s
    ) AS b
    CROSS JOIN LATERAL (
        SELECT ts, seq, value, value_text FROM readings
        WHERE tag_id = {tag} AND ts >= b.since AND ts < %(to)s OFFSET 0
    ) AS x
"""
OEE_SQL = f"""
WITH m AS (
    SELECT * FROM unnest(%(names)s::text[], %(state)s::int[], %(good)s::int[],
        %(scrap)s::int[], %(product)s::int[]) AS m(machine, state_tag, good_tag, scrap_tag,
        product_tag)
),
seg AS (
    SELECT * FROM unnest(%(keys)s::text[], %(los)s::timestamptz[], %(his)s::timestamptz[])
        AS s(key, lo, hi)
),
ideal AS (
    SELECT * FROM unnest(%(ideal_m)s::text[], %(ideal_p)s::text[], %(ideal_s)s::float8[])
        AS i(machine, product, ideal_s)
),
-- State intervals: each state reading lasts until the machine's next one.
st AS (
    SELECT m.machine, r.ts AS lo, r.value AS state,
        coalesce(lead(r.ts) OVER (PARTITION BY m.machine ORDER BY r.ts, r.seq), %(to)s) AS hi
    FROM m CROSS JOIN LATERAL ({_SINCE.format(tag="m.state_tag")}) AS r
),
times AS (
    SELECT seg.key,
        sum(extract(epoch FROM least(st.hi, seg.hi) - greatest(st.lo, seg.lo)))
            FILTER (WHERE st.state = 1) AS apt,
        sum(extract(epoch FROM least(st.hi, seg.hi) - greatest(st.lo, seg.lo)))
            FILTER (WHERE st.state = 0) AS pdot
    FROM seg JOIN st ON st.lo < seg.hi AND st.hi > seg.lo
    GROUP BY seg.key
),
-- Counter increments: the rise since the counter's previous reading; good wraps at 2^16 (a
-- drop that is a small rise once wrapped), any other drop is a reset.
ctr AS (
    SELECT m.machine, c.tag = m.good_tag AS good, r.ts, r.seq, r.value,
        lag(r.value) OVER (PARTITION BY c.tag ORDER BY r.ts, r.seq) AS prev
    FROM m CROSS JOIN LATERAL unnest(ARRAY[m.good_tag, m.scrap_tag]) AS c(tag)
    CROSS JOIN LATERAL ({_SINCE.format(tag="c.tag")}) AS r
),
inc AS (
    SELECT machine, good, ts, seq,
        CASE WHEN value >= prev THEN value - prev
            WHEN good AND value + {GOOD_WRAP} - prev <= {GOOD_WRAP // 4}
                THEN value + {GOOD_WRAP} - prev
            ELSE value END AS n
    FROM ctr WHERE prev IS NOT NULL AND ts >= %(from)s
),
-- The product in force at each increment: product readings and increments in one stream,
-- the product carried forward (a unit counted at a change's own time is the old product's).
stream AS (
    SELECT machine, ts, 0 AS kind, seq, good, n, NULL::text AS product FROM inc
    UNION ALL
    SELECT m.machine, r.ts, 1, r.seq, NULL, NULL, r.value_text
    FROM m CROSS JOIN LATERAL ({_SINCE.format(tag="m.product_tag")}) AS r
),
runs AS (
    SELECT *, count(product) OVER (PARTITION BY machine ORDER BY ts, kind, seq) AS run
    FROM stream
),
tagged AS (
    SELECT machine, ts, good, n, max(product) OVER (PARTITION BY machine, run) AS product
    FROM runs
),
quantities AS (
    SELECT seg.key, sum(t.n) FILTER (WHERE t.good) AS gq, sum(t.n) FILTER (WHERE NOT t.good) AS sq,
        sum(t.n * i.ideal_s) AS ideal
    FROM tagged t
    JOIN seg ON t.ts >= seg.lo AND t.ts < seg.hi
    LEFT JOIN ideal i ON (i.machine, i.product) = (t.machine, t.product)
    WHERE t.n IS NOT NULL
    GROUP BY seg.key
),
planned AS (
    SELECT key, sum(extract(epoch FROM hi - lo)) * (SELECT count(*) FROM m) AS pot
    FROM seg GROUP BY key
),
elements AS (
    SELECT p.key, p.pot - coalesce(t.pdot, 0) AS pbt, coalesce(t.apt, 0) AS apt,
        coalesce(q.gq, 0) AS gq, coalesce(q.sq, 0) AS sq, q.ideal
    FROM planned p LEFT JOIN times t USING (key) LEFT JOIN quantities q USING (key)
)
SELECT key, pbt, apt, gq, gq + sq AS pq, ideal,
    apt / nullif(pbt, 0) AS availability,
    ideal / nullif(apt, 0) AS effectiveness,
    gq / nullif(gq + sq, 0) AS quality,
    apt / nullif(pbt, 0) * ideal / nullif(apt, 0) * gq / nullif(gq + sq, 0) AS oee
FROM elements ORDER BY key
"""  # noqa: S608 - constants only


def oee_params(
    machines: Sequence[MachineTags],
    ids: dict[str, dict[str, int]],
    segments: Sequence[tuple[str, datetime, datetime]],
    window: tuple[datetime, datetime],
) -> dict[str, Any]:
    """OEE_SQL's parameters: the machines' tag ids, the planned segments by group key."""
    params: dict[str, Any] = {"names": [m.name for m in machines]}
    for role in ROLES:
        params[role] = [ids[m.name][role] for m in machines]
    params["keys"] = [key for key, _, _ in segments]
    params["los"] = [lo for _, lo, _ in segments]
    params["his"] = [hi for _, _, hi in segments]
    cycles = [(m.name, p, s) for m in machines for p, s in ideal_cycles(m).items()]
    params["ideal_m"] = [c[0] for c in cycles]
    params["ideal_p"] = [c[1] for c in cycles]
    params["ideal_s"] = [c[2] for c in cycles]
    params["from"], params["to"] = window
    return params


# --- timing --------------------------------------------------------------------------------


def percentile(values: Sequence[float], share: float) -> float:
    """The value at `share` (0 to 1) of the sorted values, linearly interpolated."""
    ordered = sorted(values)
    at = share * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


@dataclass(frozen=True, slots=True)
class Timing:
    """Milliseconds of timed runs."""

    runs: list[float]

    @property
    def median(self) -> float:
        """The median, ms."""
        return statistics.median(self.runs)

    @property
    def p90(self) -> float:
        """The 90th percentile, ms."""
        return percentile(self.runs, 0.9)


async def time_api(
    session: aiohttp.ClientSession, url: str, params: dict[str, str], samples: int
) -> tuple[Timing, Any]:
    """A warm-up then `samples` sequential GETs: their times and the last answer's body."""
    body: Any = None
    times = []
    for run in range(samples + 1):
        started = time.perf_counter()
        async with session.get(url, params=params) as response:
            raw = await response.read()
            status = response.status
        elapsed = (time.perf_counter() - started) * 1000
        if status != 200:
            raise RuntimeError(f"GET {url} {params}: {status} {raw[:500]!r}")
        if run:
            times.append(elapsed)
        body = json.loads(raw)
    return Timing(times), body


def time_sql(
    url: str, query: str, params: dict[str, Any], samples: int, index_only: bool = False
) -> tuple[Timing, list[tuple[Any, ...]]]:
    """A warm-up then `samples` runs of one query: their times and its rows.

    `index_only`: no sequential scans. OEE_SQL names its tags through a lateral parameter,
    so the planner costs each partition by its average tag; the year tag's partitions hold
    one tag, every row, and it scans them whole unless told to probe the (tag_id, ts) index
    as it would for a known tag.
    """
    times = []
    rows: list[tuple[Any, ...]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        if index_only:
            conn.execute("SET enable_seqscan = off")
        for run in range(samples + 1):
            started = time.perf_counter()
            rows = conn.execute(query, params).fetchall()
            if run:
                times.append((time.perf_counter() - started) * 1000)
    return Timing(times), rows


# --- the collector -------------------------------------------------------------------------


def bench_config(
    folder: Path, name: str, urls: tuple[str, str, str], sections: dict[str, dict[str, Any]]
) -> tuple[Path, int]:
    """api_bench's collector config (database, broker, Redis limits) with more sections."""
    database, broker, redis = urls
    path = collector_config(folder, name, database, broker, redis)
    document = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        document.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(document))
    return path, int(document["http"]["port"])


def start_collector(
    children: Children, config: Path, port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    """The real `plantwire-collector run`, its output in `log_path`, once it listens."""
    with log_path.open("wb") as log:
        process = children.start(
            [str(BIN / "plantwire-collector"), "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout=120)
    except TimeoutError:
        print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    return process


def derived_collector(
    children: Children,
    folder: Path,
    name: str,
    urls: tuple[str, str, str],
    machines: Sequence[MachineTags],
    per_pass: int,
    timeout: float,
) -> tuple[subprocess.Popen[bytes], int, float]:
    """A collector deriving the history in the database (urls: PostgreSQL, broker, Redis):
    its process, its API port, and the seconds until it had taken up every logged write."""
    equipment_file = folder / "equipment.yaml"
    equipment_file.write_text(yaml.safe_dump(equipment(machines)))
    config, port = bench_config(
        folder,
        name,
        urls,
        {
            "equipment": {"file": str(equipment_file)},
            "analytics": {"derive": True, "derive_interval": "1s"}
            | {"derive_max_log_rows": per_pass},
        },
    )
    log = folder / f"{name}.log"
    started = time.monotonic()
    process = start_collector(children, config, port, log)
    return process, port, wait_derived(urls[0], process, started, timeout, log)


def wait_derived(
    url: str, process: subprocess.Popen[bytes], started: float, timeout: float, log: Path
) -> float:
    """Seconds from `started` until derive_log is empty (progress printed each minute)."""
    shown = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            left = _one(conn, "SELECT count(*) FROM derive_log")
            now = time.monotonic()
            if not left:
                return now - started
            if process.poll() is not None:
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise RuntimeError("the collector exited while deriving")
            if now - started > timeout:
                raise TimeoutError(f"derive_log still holds {left} rows after {timeout:g} s")
            if now - shown >= 60:
                print(f"  ... {left:,} derive_log rows left at {now - started:.0f} s", flush=True)
                shown = now
            time.sleep(0.5)


def tag_ids(url: str, machines: Sequence[MachineTags]) -> dict[str, dict[str, int]]:
    """Each machine's tag id per role."""
    with psycopg.connect(url) as conn:
        found = {
            (agent, f"{device}/{name}"): tag_id
            for agent, device, name, tag_id in conn.execute(
                "SELECT agent_id, device, name, tag_id FROM tags"
            )
        }
    return {m.name: {r: found[(m.agent, m.tags[r])] for r in ROLES} for m in machines}


# --- the figures ---------------------------------------------------------------------------


def z(moment: datetime) -> str:
    """A time as the API takes it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Question:
    """One figure: the API request, the bare SQL of the same question, how to check both."""

    name: str
    path: str
    params: dict[str, str]
    sql: str
    sql_params: dict[str, Any]
    sql_samples: int
    check: Callable[[Any, list[tuple[Any, ...]]], list[str]]


def check_chart(most: int, source: str) -> Callable[[Any, list[tuple[Any, ...]]], list[str]]:
    """A series answer: at most `most` points, from `source`, the raw maximum kept."""

    def check(body: Any, rows: list[tuple[Any, ...]]) -> list[str]:
        values = [b["value"] for b in body["buckets"] if b["value"] is not None]
        raw_max = max(row[1] for row in rows)
        assert 0 < body["count"] <= most, body["count"]
        assert body["source"] == source, body["source"]
        assert abs(max(values) - raw_max) < 1e-9 * max(1.0, abs(raw_max)), (max(values), raw_max)
        return [
            f"{body['count']} points (bare SQL {len(rows)} buckets) from {body['source']},"
            f" downsampled {body['downsampled']}; max {max(values):.3f} (raw {raw_max:.3f})"
        ]

    return check


def check_kpis(body: Any, rows: list[tuple[Any, ...]]) -> list[str]:
    """A KPI answer: ratios within 0 and 1, elements beside the bare SQL's sums."""
    total = body["total"]
    availability = total["kpis"]["availability"]
    assert availability is not None, "no availability"
    assert 0 <= availability <= 1, availability
    assert body["groups"], "no groups"
    elements = total["working"]["elements"]
    sums = {
        "pbt_s": sum(float(r[1]) for r in rows),
        "apt_s": sum(float(r[2]) for r in rows),
        "gq": sum(float(r[3]) for r in rows),
        "pq": sum(float(r[4]) for r in rows),
    }
    apart = ", ".join(
        f"{name} {elements[name]:,.0f} (SQL {value:,.0f})" for name, value in sums.items()
    )
    sql_oee = {str(r[0]): r[9] for r in rows}
    api_oee = {g["key"]: g["kpis"]["oee"] for g in body["groups"]}
    diffs = [
        abs(api_oee[k] - float(v)) for k, v in sql_oee.items() if v is not None and api_oee.get(k)
    ]
    worst = max(diffs, default=float("nan"))
    return [
        f"{len(body['groups'])} groups (bare SQL {len(rows)}), OEE {total['kpis']['oee']:.3f},"
        f" availability {availability:.3f}; {apart}; largest OEE gap per group {worst:.4f}"
    ]


async def ask(
    base: str, key: str, questions: list[Question], url: str, samples: int
) -> tuple[dict[str, Timing], dict[str, Timing], list[str]]:
    """Each question through the API and as bare SQL: timings and what each answered."""
    api: dict[str, Timing] = {}
    bare: dict[str, Timing] = {}
    lines = []
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for q in questions:
            api[q.name], body = await time_api(session, base + q.path, q.params, samples)
            bare[q.name], rows = await asyncio.to_thread(
                time_sql, url, q.sql, q.sql_params, q.sql_samples, q.sql is OEE_SQL
            )
            lines += [f"  {q.name}: {line}" for line in q.check(body, rows)]
            print(
                f"{q.name}: API median {api[q.name].median:.1f} ms, p90 {api[q.name].p90:.1f} ms;"
                f" bare SQL median {bare[q.name].median:.1f} ms",
                flush=True,
            )
    return api, bare, lines


async def profile_misses(
    base: str, key: str, questions: list[Question], api: dict[str, Timing], pid: int, out: Path
) -> list[str]:
    """py-spy over repeated requests of each figure that misses its target."""
    lines: list[str] = []
    if not (BIN / "py-spy").exists():
        return lines
    headers = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for q in questions:
            target, _ = TARGETS[f"{q.name}_ms"]
            if api[q.name].median <= target:
                continue
            seconds = 10.0
            spy = profile(pid, seconds, out)
            ends = time.monotonic() + seconds
            while time.monotonic() < ends:
                async with session.get(base + q.path, params=q.params) as response:
                    await response.read()
            await asyncio.to_thread(spy.wait, 60)
            if await asyncio.to_thread(out.exists):
                lines.append(f"{q.name}: collector profile, own time per function (py-spy):")
                lines += summarise_profile(out, top=15)
    return lines


# --- ingest with and without derivation ----------------------------------------------------


def clear(url: str) -> None:
    """ingest_bench's empty tables, and the derived ones too."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE derive_log, rollup_claims, rollups_1m, rollups_1h,"
            " machine_intervals, machine_counts"
        )
    empty(url)


async def caught_up(url: str, timeout: float) -> None:
    """Wait until no write older than the running minute waits for the deriver, or for the
    collector that holds its readings to roll them up."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            cursor = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM derive_log WHERE lo < date_trunc('minute', now()))"
                " OR EXISTS (SELECT 1 FROM rollup_claims WHERE lo < date_trunc('minute', now()))"
            )
            row = await cursor.fetchone()
            if row is not None and not row[0]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the deriver did not catch up within {timeout:g} s")
            await asyncio.sleep(0.01)  # the run ends within 10 ms of catching up


@dataclass(slots=True)
class Side:
    """One collector of the ingest comparison, its database and its simulated agents."""

    name: str
    url: str
    derive: bool
    client: MqttClient
    agents: Agents
    listener: "asyncio.Future[None]"
    collector_pid: int
    postgres_pid: int
    acked: list[float] = field(default_factory=list)
    """Seconds until the last batch was acknowledged, per run."""
    seconds: list[float] = field(default_factory=list)
    """Seconds until the run counted as done (the deriver caught up, when on), per run."""
    cpu: list[tuple[float, float]] = field(default_factory=list)
    """CPU seconds of the collector and of PostgreSQL (all its processes) per run."""


async def ingest_run(side: Side, work: dict[str, list[tuple[int, bytes]]], total: int) -> float:
    """Readings per second of one end-to-end run (with the deriver caught up, when on)."""
    clear(side.url)
    cpu = cpu_seconds(side.collector_pid), tree_cpu(side.postgres_pid)
    started = time.perf_counter()
    acked = await end_to_end(side.agents, work, INGEST_WINDOW)
    if side.derive:
        await caught_up(side.url, 600)
    seconds = time.perf_counter() - started
    side.cpu.append(
        (cpu_seconds(side.collector_pid) - cpu[0], tree_cpu(side.postgres_pid) - cpu[1])
    )
    side.acked.append(acked)
    side.seconds.append(seconds)
    with psycopg.connect(side.url) as conn:
        stored = _one(conn, "SELECT count(*) FROM readings")
    if stored != total:
        raise RuntimeError(f"{side.name}: the collector stored {stored} readings of {total}")
    return total / seconds


async def ingest_ratio(
    args: argparse.Namespace, folder: Path, children: Children, redis_url: str
) -> tuple[dict[str, float], list[str]]:
    """Median end-to-end readings/s with derivation on and off, alternating runs."""
    pg = PostgresServer(options=DURABLE)
    brokers = {"on": MosquittoServer(), "off": MosquittoServer()}
    sides: list[Side] = []
    collectors: list[subprocess.Popen[bytes]] = []
    lines = []
    try:
        pg.start()
        equipment_file = folder / "ingest-equipment.yaml"
        machines = ingest_machines(args.machines, INGEST_AGENTS)
        equipment_file.write_text(yaml.safe_dump(equipment(machines)))
        for name, broker in brokers.items():
            broker.start()
            with psycopg.connect(pg.url(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE derive_{name}")
            url = pg.url(f"derive_{name}")
            await asyncio.to_thread(migrate, url)
            config, port = bench_config(
                folder,
                f"ingest-{name}",
                (url, broker.url, redis_url),
                {
                    "equipment": {"file": str(equipment_file)},
                    "analytics": {"derive": name == "on"},
                },
            )
            log = folder / f"ingest-{name}.log"
            collector = start_collector(children, config, port, log)
            collectors.append(collector)
            client = MqttClient(
                MqttSettings(url=broker.url, max_inflight=1000),
                client_id=f"bench-agents-{name}",
                persistent_session=False,
                receive_queue=10_000,
            )
            await client.connect()
            agents = Agents(client)
            listener = asyncio.ensure_future(agents.listen())
            sides.append(
                Side(name, url, name == "on", client, agents, listener, collector.pid, pg.pid())
            )
            await client.subscribe(TOPICS.all_of("ack"))
        start_us = int(time.time() * 1e6) - 600_000_000
        per_agent = args.readings // INGEST_AGENTS // INGEST_BATCH
        work = {
            agent: make_batches(
                agent,
                per_agent,
                INGEST_BATCH,
                INGEST_TAGS,
                start_us,
                None if args.churn else plant_shaped(machines, agent),
            )
            for agent in (f"bench{i}" for i in range(INGEST_AGENTS))
        }
        total = per_agent * INGEST_AGENTS * INGEST_BATCH
        for side in sides:  # a warm-up pass each, not counted
            await ingest_run(side, work, total)
        rates: dict[str, list[float]] = {side.name: [] for side in sides}
        for run in range(args.runs):
            for side in sides if run % 2 == 0 else sides[::-1]:
                rates[side.name].append(await ingest_run(side, work, total))
            print(
                f"ingest run {run + 1}: derive on {rates['on'][-1]:,.0f} readings/s,"
                f" off {rates['off'][-1]:,.0f} readings/s",
                flush=True,
            )
        shape = (
            "a new value at every reading (--churn)"
            if args.churn
            else f"a plant's values (a {STOP_S} s stop in every {STOP_EVERY_S} s)"
        )
        lines.append(
            f"  ingest: {total:,} readings in batches of {INGEST_BATCH} from {INGEST_AGENTS}"
            f" agents, {args.runs} runs per side; the {len(machines)} machines' tags carry"
            f" {shape}"
        )
        for side in sides[:1]:  # derive on: where its time goes
            acked, done = statistics.median(side.acked), statistics.median(side.seconds)
            lines.append(
                f"  ingest, derive on: last batch acknowledged after {acked:.2f} s (median),"
                f" the deriver caught up after {done:.2f} s"
            )
        for side in sides:
            collector_cpu = statistics.median(c for c, _ in side.cpu)
            postgres_cpu = statistics.median(p for _, p in side.cpu)
            lines.append(
                f"  ingest, derive {side.name}: CPU seconds per run (median): collector"
                f" {collector_cpu:.2f}, PostgreSQL {postgres_cpu:.2f}"
            )
    finally:
        for side in sides:
            side.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await side.listener
            await side.client.close()
        for process in collectors:
            children.stop(process)
        for broker in brokers.values():
            broker.stop()
        pg.remove()
    medians = {name: statistics.median(values) for name, values in rates.items()}
    return medians, lines


# --- the report ----------------------------------------------------------------------------


def verdict(name: str, value: float) -> str:
    """`ok` or `MISSED` against the figure's target."""
    target, higher = TARGETS[name]
    met = value >= target if higher else value < target
    return "ok" if met else "MISSED"


def table(figures: dict[str, float], bare: dict[str, float]) -> Iterator[str]:
    """The figures beside their targets and the bare SQL's time."""
    yield f"{'figure':<16}{'value':>12}  {'target':<12}{'bare SQL':>12}  verdict"
    for name, value in figures.items():
        if name not in TARGETS:
            continue
        target, higher = TARGETS[name]
        sign = ">=" if higher else "<"
        plain = f"{bare[name]:,.1f}" if name in bare else "-"
        yield f"{name:<16}{value:>12,.2f}  {sign} {target:<9g}{plain:>12}  {verdict(name, value)}"


def result_line(figures: dict[str, float]) -> str:
    """The one RESULT line, plain numbers."""
    names = [name for name in [*TARGETS, "backfill_s"] if name in figures]
    return "RESULT " + " ".join(
        f"{name}={figures[name]:.3f}" if name == "ingest_ratio" else f"{name}={figures[name]:.1f}"
        for name in names
    )


def questions(
    args: argparse.Namespace,
    machines: list[MachineTags],
    ids: dict[str, dict[str, int]],
    year_tag: int,
    day_tag: int,
) -> list[Question]:
    """The four questions, asked at the current time."""
    now = datetime.now(UTC)
    zone = ZoneInfo(ZONE)
    hour = now.replace(minute=0, second=0, microsecond=0)
    year = (hour - timedelta(days=args.year_days), hour)
    today = midnight_utc(now.date())
    day = (today - timedelta(days=1), today)
    agent, device, name = tag_names(args.tags)[0]
    oee_window = production_days(now, args.days, zone)
    site_window = production_days(now, min(7, args.days), zone)
    one = [m for m in machines if m.name == machines[0].name]
    shifts = [(k, lo, hi) for k, _, lo, hi in planned_segments(*oee_window, zone)]
    days = [(d, lo, hi) for _, d, lo, hi in planned_segments(*site_window, zone)]
    return [
        Question(
            "year_chart",
            "/api/v1/series",
            {"agent": AGENT, "tag": "archive/year", "from": z(year[0]), "to": z(year[1])}
            | {"interval": "PT1H", "agg": "max", "max_points": "1000"},
            YEAR_SQL,
            {"tag": year_tag, "from": year[0], "to": year[1]},
            args.slow_samples,
            check_chart(1000, "rollups_1h"),
        ),
        Question(
            "day_minutes",
            "/api/v1/series",
            {"agent": agent, "tag": f"{device}/{name}", "from": z(day[0]), "to": z(day[1])}
            | {"interval": "PT1M", "agg": "avg"},
            DAY_SQL,
            {"tag": day_tag, "from": day[0], "to": day[1]},
            args.samples,
            check_chart(1440, "rollups_1m"),
        ),
        Question(
            "oee_14d",
            "/api/v1/kpis",
            {"site": SITE, "machine": one[0].name, "from": z(oee_window[0])}
            | {"to": z(oee_window[1]), "group_by": "shift"},
            OEE_SQL,
            oee_params(one, ids, shifts, oee_window),
            args.slow_samples,
            check_kpis,
        ),
        Question(
            "site_rollup",
            "/api/v1/kpis",
            {"site": SITE, "from": z(site_window[0]), "to": z(site_window[1]), "group_by": "day"},
            OEE_SQL,
            oee_params(machines, ids, days, site_window),
            args.slow_samples,
            check_kpis,
        ),
    ]


def options() -> argparse.Namespace:
    """The command line; --quick shrinks everything for a trial run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14, help="days of the 1 Hz tags (14)")
    parser.add_argument("--tags", type=int, default=50, help="tags at 1 Hz (50)")
    parser.add_argument("--year-days", type=int, default=365, help="days of the year tag")
    parser.add_argument("--machines", type=int, default=20, help="machines (20)")
    parser.add_argument("--runs", type=int, default=5, help="ingest runs per side (5)")
    parser.add_argument(
        "--readings",
        type=int,
        default=E2E_READINGS,
        help="readings per ingest run (as make bench-ingest's end-to-end runs)",
    )
    parser.add_argument("--samples", type=int, default=20, help="timed API requests (20)")
    parser.add_argument(
        "--slow-samples", type=int, default=3, help="timed runs of the slow bare SQL (3)"
    )
    parser.add_argument(
        "--backfill-timeout", type=float, default=3600, help="longest wait for the deriver, s"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small trial: 2 days, 10 tags, 10 year days, 4 machines, 200k readings, 1 run",
    )
    parser.add_argument(
        "--churn",
        action="store_true",
        help="in the ingest comparison, machine tags change value at every reading (a stress"
        " shape: a new machine state every 2 s) instead of holding a plant's states",
    )
    parser.add_argument(
        "--ingest-only",
        action="store_true",
        help="only the ingest comparison (ingest_ratio), for work on the ingest path",
    )
    args = parser.parse_args()
    if args.quick:
        args.days, args.tags, args.year_days, args.machines = 2, 10, 10, 4
        args.readings, args.runs, args.samples = 200_000, 1, 5
    if args.days < 1 or args.year_days < args.days or args.machines < 1:
        parser.error("needs --days >= 1, --year-days >= --days and --machines >= 1")
    return args


def ingest_only(args: argparse.Namespace) -> int:
    """The ingest comparison alone: its figures and a RESULT line of ingest_ratio."""
    with (
        servers() as (_, _, redis),
        Children() as children,
        tempfile.TemporaryDirectory(prefix="plantwire-analytics-") as tmp,
    ):
        rates, lines = asyncio.run(ingest_ratio(args, Path(tmp), children, redis.url))
    ratio = rates["on"] / rates["off"]
    print("\n".join(lines))
    print(f"ingest end to end: derive on {rates['on']:,.0f}, off {rates['off']:,.0f} readings/s")
    print(result_line({"ingest_ratio": ratio}))
    return 0 if verdict("ingest_ratio", ratio) == "ok" else 1


def main() -> int:
    args = options()
    if args.ingest_only:
        return ingest_only(args)
    machines = plant_machines(args.machines)
    figures: dict[str, float] = {}
    with (
        servers() as (postgres, broker, redis),
        Children() as children,
        tempfile.TemporaryDirectory(prefix="plantwire-analytics-") as tmp,
    ):
        folder = Path(tmp)
        url = postgres.url()
        migrate(url)
        print("database:", flush=True)
        for line in make_history(url, args, machines):
            print(line, flush=True)
        key = add_key(url)
        per_day = args.tags + 1 + len(machines) * len(ROLES)
        process, port, figures["backfill_s"] = derived_collector(
            children,
            folder,
            "analytics",
            (url, broker.url, redis.url),
            machines,
            per_day,
            args.backfill_timeout,
        )
        print(
            f"backfill: the deriver took up every write in {figures['backfill_s']:.0f} s"
            f" ({per_day} logged writes, a day of every tag, per pass)",
            flush=True,
        )
        ids = tag_ids(url, machines)
        with psycopg.connect(url) as conn:
            year_tag = _one(conn, "SELECT tag_id FROM tags WHERE name = 'year'")
            day_tag = _one(conn, "SELECT min(tag_id) FROM tags")
        asked = questions(args, machines, ids, year_tag, day_tag)
        base = f"http://127.0.0.1:{port}"
        api, bare, lines = asyncio.run(ask(base, key, asked, url, args.samples))
        profiles = asyncio.run(
            profile_misses(base, key, asked, api, process.pid, folder / "api.profile")
        )
        children.stop(process)
        rates, ingest_lines = asyncio.run(ingest_ratio(args, folder, children, redis.url))
    for name, timing in api.items():
        figures[f"{name}_ms"] = timing.median
    figures["ingest_ratio"] = rates["on"] / rates["off"]
    print("answers:")
    print("\n".join(lines + ingest_lines))
    if profiles:
        print("\n".join(profiles))
    print(
        f"ingest end to end: derive on {rates['on']:,.0f} readings/s,"
        f" off {rates['off']:,.0f} readings/s (medians)"
    )
    for name, timing in api.items():
        print(
            f"{name}: API median {timing.median:.1f} ms, p90 {timing.p90:.1f} ms"
            f" ({len(timing.runs)} runs); bare SQL median {bare[name].median:.1f} ms"
            f" ({len(bare[name].runs)} runs)"
        )
    print("\n".join(table(figures, {f"{n}_ms": t.median for n, t in bare.items()})))
    print(result_line(figures))
    return 0 if all(verdict(n, figures[n]) == "ok" for n in TARGETS) else 1


if __name__ == "__main__":
    sys.exit(main())
