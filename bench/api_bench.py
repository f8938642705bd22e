"""make bench-api: the collector's HTTP API under a mixed read load, with and without its platform.

Servers: PostgreSQL, Redis and Mosquitto from Debian, on free ports. The database holds
--days days of --tags tags at 1 Hz (7 days of 50 tags: about 30 million readings), made by
PostgreSQL itself into the collector's own schema and daily partitions. The collector runs as
the real `plantwire-collector run` process with API keys, rate limits counted in Redis (with a
limit high enough never to refuse) and metrics. wrk (Debian) sends the workload: in turn,
/api/v1/readings for 5 minutes of a random tag at a random time, /api/v1/agents, one agent,
and one page of tags, each with the key.

In the same run, the same workload goes to a second collector process over the same database
built without the platform (no key check, rate limit or HTTP metrics), and the readings query
alone is timed through psycopg: the platform's cost is the throughput it takes away.
Each side gets a warm-up, then --runs timed runs, alternating; medians are reported.
"""

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import BIN, Children, cpu_seconds, profile, summarise_profile
from collector.api.keys import hash_key, key_prefix, new_key
from collector.partitions import midnight, partition_name
from tests.servers import (
    MosquittoServer,
    PostgresServer,
    RedisServer,
    free_port,
    wait_for_port,
)

AGENTS = 5
DEVICES_PER_AGENT = 2
WINDOW_S = 300
BARE_LAUNCHER = """
import sys
from pathlib import Path
import uvloop
from aiohttp import web
from collector.app import create_app
from collector.config import load_collector_config
config = load_collector_config(Path(sys.argv[1]))
web.run_app(create_app(config, platform=False), host=config.http.host, port=config.http.port,
            print=None, access_log=None, loop=uvloop.new_event_loop())
"""


def tag_names(tags: int) -> list[tuple[str, str, str]]:
    """(agent, device, tag) of each tag: AGENTS agents, two devices each, the rest per device."""
    per_device = max(1, tags // (AGENTS * DEVICES_PER_AGENT))
    names = []
    for a in range(AGENTS):
        for d in range(DEVICES_PER_AGENT):
            for t in range(per_device):
                names.append((f"agent-{a}", f"press-{a}-{d}", f"t{t}"))
    return names[:tags]


def fill(url: str, days: int, tags: int) -> int:
    """Agents, tags and `days` days of 1 Hz readings of each tag, ending now; return the count."""
    names = tag_names(tags)
    today = datetime.now(UTC).date()
    first = today - timedelta(days=days)
    with psycopg.connect(url, autocommit=True) as conn:
        for agent in sorted({a for a, _, _ in names}):
            conn.execute("INSERT INTO agents (agent_id) VALUES (%s)", (agent,))
        for agent, device, name in names:
            conn.execute(
                "INSERT INTO tags (agent_id, device, name, data_type) VALUES (%s, %s, %s,"
                " 'float64')",
                (agent, device, name),
            )
        day = first
        while day <= today:
            _partition(conn, day)
            start = datetime.combine(day, datetime.min.time(), UTC)
            end = min(start + timedelta(days=1), datetime.now(UTC))
            # PostgreSQL makes the rows itself: a value every second of each tag.
            conn.execute(
                "INSERT INTO readings (tag_id, ts, value, quality, seq)"
                " SELECT t.tag_id, g, random() * 100, 0,"
                " extract(epoch FROM g)::bigint * 1000 + t.tag_id"
                " FROM tags t, generate_series(%s::timestamptz, %s::timestamptz - interval"
                " '1 second', interval '1 second') AS g",
                (start, end),
            )
            day += timedelta(days=1)
        conn.execute("VACUUM ANALYZE readings")
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def _partition(conn: psycopg.Connection[tuple[object, ...]], day: date) -> None:
    start = midnight(day)
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF readings FOR VALUES FROM ({}) TO ({})"
        ).format(
            sql.Identifier(partition_name(day)),
            sql.Literal(start),
            sql.Literal(start + timedelta(days=1)),
        )
    )


def add_key(url: str, role: str = "viewer") -> str:
    """A key of the role, stored as the collector stores keys."""
    key, _ = new_key()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_keys (prefix, key_hash, name, role, created_by)"
            " VALUES (%s, %s, 'bench', %s, 'bench')",
            (key_prefix(key), hash_key(key), role),
        )
    return key


def wrk_script(key: str, tags: int, days: int) -> str:
    """A wrk Lua script: the four requests in turn, readings at a random tag and time."""
    names = tag_names(tags)
    now = int(time.time())
    lua_names = ", ".join(f'{{"{a}", "{d}/{t}"}}' for a, d, t in names)
    return textwrap.dedent(
        f"""
        local names = {{ {lua_names} }}
        local headers = {{ ["Authorization"] = "Bearer {key}" }}
        local counter = 0
        local newest = {now - WINDOW_S}
        local oldest = {now - days * 86400}
        function setup(thread) thread:set("id", math.random(1, 1000000)) end
        function init(args) math.randomseed(id) end
        function request()
          counter = counter + 1
          local kind = counter % 4
          local path
          if kind == 0 then
            local pick = names[math.random(1, #names)]
            local start = math.random(oldest, newest)
            local from = os.date("!%Y-%m-%dT%H:%M:%SZ", start)
            local to = os.date("!%Y-%m-%dT%H:%M:%SZ", start + {WINDOW_S})
            path = "/api/v1/readings?agent=" .. pick[1] .. "&tag=" .. pick[2]
              .. "&from=" .. from .. "&to=" .. to
          elseif kind == 1 then
            path = "/api/v1/agents"
          elseif kind == 2 then
            path = "/api/v1/agents/agent-" .. math.random(0, {AGENTS - 1})
          else
            path = "/api/v1/tags?limit=50"
          end
          return wrk.format("GET", path, headers)
        end
        done = function(summary, latency, requests)
          io.write(string.format("STATUS non2xx=%d\\n", summary.errors.status))
          io.write(string.format("LAT p50_us=%d p99_us=%d\\n",
            latency:percentile(50), latency:percentile(99)))
        end
        """
    )


def run_wrk(
    base: str, script: Path, seconds: float, connections: int, pid: int
) -> dict[str, float]:
    """One wrk run: requests/s, p50/p99 ms, non-2xx answers and the collector's CPU %."""
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    out = subprocess.run(
        [
            "wrk",
            *("-t", "2", "-c", str(connections), "-d", f"{seconds:g}s"),
            *("--timeout", "5s", "-s", str(script), base),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    elapsed = time.monotonic() - started
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    latency = re.search(r"LAT p50_us=(\d+) p99_us=(\d+)", out)
    status = re.search(r"STATUS non2xx=(\d+)", out)
    if rate is None or latency is None or status is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return {
        "rps": float(rate.group(1)),
        "p50_ms": int(latency.group(1)) / 1000,
        "p99_ms": int(latency.group(2)) / 1000,
        "non2xx": float(status.group(1)),
        "cpu_pct": 100 * (cpu_seconds(pid) - cpu_before) / elapsed,
    }


def readings_sql_ms(url: str, tags: int, days: int, samples: int) -> float:
    """Median time of the API's readings query alone, for 5 minutes of a random tag."""
    import random

    rng = random.Random(7)
    now = datetime.now(UTC)
    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [row[0] for row in conn.execute("SELECT tag_id FROM tags ORDER BY tag_id")]
        for _ in range(samples):
            start = now - timedelta(seconds=rng.randint(WINDOW_S, days * 86400))
            started = time.perf_counter()
            conn.execute(
                "SELECT ts, value, value_text, quality, server_ts, tag_id, seq FROM readings"
                " WHERE tag_id = ANY(%s) AND ts >= %s AND ts < %s"
                " AND (%s::timestamptz IS NULL OR (ts, seq) > (%s, %s))"
                " ORDER BY ts, seq LIMIT %s",
                (
                    [rng.choice(ids)],
                    start,
                    start + timedelta(seconds=WINDOW_S),
                    None,
                    None,
                    None,
                    100_001,
                ),
            ).fetchall()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


@contextlib.contextmanager
def servers() -> Iterator[tuple[PostgresServer, MosquittoServer, RedisServer]]:
    """PostgreSQL, Mosquitto and Redis, stopped and removed afterwards."""
    postgres = PostgresServer(" -c fsync=off -c shared_buffers=512MB")
    broker, redis = MosquittoServer(), RedisServer()
    try:
        postgres.start()
        broker.start()
        redis.start()
        yield postgres, broker, redis
    finally:
        redis.stop()
        broker.stop()
        postgres.remove()


def collector_config(folder: Path, name: str, url: str, broker: str, redis: str) -> Path:
    """A collector configuration file on a free port."""
    path = folder / f"{name}.yaml"
    path.write_text(
        f"database:\n  url: {url}\n  pool_size: 8\n"
        f"mqtt:\n  url: {broker}\n  client_id: bench-{name}\n"
        f"http:\n  host: 127.0.0.1\n  port: {free_port()}\n"
        "rate_limits:\n  viewer: 100000000/minute\n"
        f"  redis_url: {redis}\n"
        "collector:\n  log_level: WARNING\n"
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7, help="days of data (7)")
    parser.add_argument("--tags", type=int, default=50, help="tags at 1 Hz (50)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per side (3)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="FILE",
        help="also py-spy the collector (with the platform) over an extra run into FILE",
    )
    args = parser.parse_args()
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        print("bench-api: wrk not found: install Debian's `wrk` package", file=sys.stderr)
        return 2
    print(
        f"API load: {args.days} days x {args.tags} tags at 1 Hz; wrk, 2 threads,"
        f" {args.connections} connections, {args.seconds:g} s per run; {os.cpu_count()} cores",
        flush=True,
    )
    with (
        servers() as (postgres, broker, redis),
        Children() as children,
        tempfile.TemporaryDirectory(prefix="plantwire-api-") as tmp,
    ):
        folder = Path(tmp)
        subprocess.run(
            [str(BIN / "plantwire-collector"), "migrate", "--database-url", postgres.url()],
            check=True,
            capture_output=True,
        )
        started = time.monotonic()
        count = fill(postgres.url(), args.days, args.tags)
        print(f"database: {count:,} readings made in {time.monotonic() - started:.0f} s")
        key = add_key(postgres.url())
        script = folder / "mixed.lua"
        script.write_text(wrk_script(key, args.tags, args.days))
        launcher = folder / "bare.py"
        launcher.write_text(BARE_LAUNCHER)
        sides = {}
        for name in ("platform", "bare"):
            config = collector_config(folder, name, postgres.url(), broker.url, redis.url)
            command = [str(BIN / "plantwire-collector"), "run", "--config", str(config)]
            if name == "bare":
                command = [sys.executable, str(launcher), str(config)]
            port = int(re.search(r"port: (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
            log_path = folder / f"{name}.log"
            with log_path.open("wb") as log:
                process = children.start(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for_port(port, timeout=60)
            except TimeoutError:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            sides[name] = (f"http://127.0.0.1:{port}", process.pid)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        for base, pid in sides.values():
            run_wrk(base, script, 5, args.connections, pid)  # warm-up, not counted
        for run in range(args.runs):
            for name, (base, pid) in sides.items():
                figures = run_wrk(base, script, args.seconds, args.connections, pid)
                results[name].append(figures)
                print(
                    f"run {run + 1} {name:<8} {figures['rps']:>8,.0f} requests/s"
                    f"  p50 {figures['p50_ms']:.1f} ms  p99 {figures['p99_ms']:.1f} ms"
                    f"  non-2xx {figures['non2xx']:.0f}  collector CPU {figures['cpu_pct']:.0f} %",
                    flush=True,
                )
        if args.profile is not None:
            base, pid = sides["platform"]
            spy = profile(pid, args.seconds, args.profile)
            run_wrk(base, script, args.seconds, args.connections, pid)
            spy.wait(60)
            print("collector profile under load, own time per function (py-spy):")
            print("\n".join(summarise_profile(args.profile, top=25)), flush=True)
        sql_ms = readings_sql_ms(postgres.url(), args.tags, args.days, 200)
    median = {
        name: {field: statistics.median(r[field] for r in runs) for field in runs[0]}
        for name, runs in results.items()
    }
    platform, bare = median["platform"], median["bare"]
    overhead = 100 * (1 - platform["rps"] / bare["rps"])
    print(
        f"medians: with the platform {platform['rps']:,.0f} requests/s,"
        f" p99 {platform['p99_ms']:.1f} ms; bare {bare['rps']:,.0f} requests/s,"
        f" p99 {bare['p99_ms']:.1f} ms; the platform"
        f" takes {overhead:.1f} % of throughput; the readings query alone {sql_ms:.2f} ms"
    )
    print(
        f"RESULT requests_per_s={platform['rps']:.0f} p99_ms={platform['p99_ms']:.1f}"
        f" bare_requests_per_s={bare['rps']:.0f} overhead_pct={overhead:.1f}"
        f" readings_sql_ms={sql_ms:.2f}"
    )
    failed = platform["non2xx"] + bare["non2xx"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
