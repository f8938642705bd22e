"""A reproducible profile of the site roll-up KPI request (make bench-analytics' site_rollup).

Builds only what the question needs, with bench/analytics_bench.py's own code: its plant's
machines (20 by default) over --days (8) days, and of the 1 Hz filler tags one tag over the
same days (make_history with --tags 1 --year-days --days); the real `plantwire-collector run`
derives them. Then, through the HTTP API (a warm-up, then --samples sequential requests):
site_rollup (every machine, 7 production days, group_by=day) and oee (one machine, --days
production days, group_by=shift), exactly as analytics_bench.questions() asks them. Last, the
collector-side work of site_rollup in this process (kpi_report and the API's JSON body) timed
and profiled with cProfile. The API figures are taken twice: right after the deriver, whose
backfill leaves machine_intervals and machine_counts with dead rows and no statistics, and
after VACUUM ANALYZE of both (what autovacuum does within a minute; make bench-analytics asks
site_rollup last, minutes after the backfill).

--keep leaves the PostgreSQL cluster running and prints its URL; --url reuses such a
database (already derived) and skips building it.
"""

import argparse
import asyncio
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.analytics_bench import (
    ROLES,
    SITE,
    Question,
    _one,
    derived_collector,
    make_history,
    plant_machines,
    questions,
    tag_ids,
    time_api,
)
from bench.api_bench import add_key
from bench.ingest_bench import migrate
from bench.processes import Children
from collector.analytics.equipment_store import EquipmentStore
from collector.analytics.histories import snapshot
from collector.analytics.reports import Scope, kpi_report
from collector.api.kpis import KpiQuery, report_out
from collector.pools import new_pool
from tests.servers import MosquittoServer, PostgresServer, RedisServer


def options() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=8, help="days of the machines' history (8)")
    parser.add_argument("--machines", type=int, default=20, help="machines (20)")
    parser.add_argument("--samples", type=int, default=15, help="timed API requests each (15)")
    parser.add_argument("--runs", type=int, default=10, help="in-process runs profiled (10)")
    parser.add_argument("--top", type=int, default=30, help="profile lines shown (30)")
    parser.add_argument("--keep", action="store_true", help="leave PostgreSQL running")
    parser.add_argument("--url", default=None, help="an already derived database to reuse")
    args = parser.parse_args()
    # make_history's shape: one filler tag and one year tag over the same days as the machines.
    args.tags, args.year_days, args.slow_samples = 1, args.days, 1
    return args


async def in_process(url: str, question: Question, runs: int, top: int) -> tuple[list[float], str]:
    """`runs` timed, then `runs` profiled reports of `question`, as the handler computes them:
    their times (ms) and the profile's figures."""
    query = KpiQuery.model_validate(question.params)
    assert query.start is not None
    assert query.end is not None
    pool = new_pool(url, max_size=2)  # the collector's: autocommit, in UTC
    await pool.open()
    try:
        store = EquipmentStore(pool)
        stored = await store.site(SITE)
        assert stored is not None
        machines = [m for m in await store.machines(SITE) if query.machine in (None, m.id)]
        now = query.end  # a finished window: `now` changes nothing in it
        scope = Scope(SITE, stored.site, machines, query.start, query.end, now)

        async def once() -> bytes:
            async with pool.connection() as conn, snapshot(conn):
                report = await kpi_report(
                    conn, scope, query.group_by, query.model, query.by_machine, 10_000
                )
            return report_out(scope, query, report).model_dump_json(by_alias=True).encode()

        await once()  # warm-up
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            await once()
            times.append((time.perf_counter() - started) * 1000)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(runs):
            await once()
        profiler.disable()
    finally:
        await pool.close()
    return times, _figures(profiler, top)


def _figures(profiler: cProfile.Profile, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


async def over_http(base: str, key: str, asked: list[Question], samples: int) -> list[str]:
    """Each question through the API: median and p90."""
    lines = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as session:
        for q in asked:
            timing, _ = await time_api(session, base + q.path, q.params, samples)
            lines.append(
                f"{q.name}: API median {timing.median:.1f} ms, p90 {timing.p90:.1f} ms"
                f" ({len(timing.runs)} runs)"
            )
    return lines


def main() -> int:
    args = options()
    machines = plant_machines(args.machines)
    postgres = None
    broker, redis = MosquittoServer(), RedisServer()
    with Children() as children, tempfile.TemporaryDirectory(prefix="plantwire-kpi-") as tmp:
        try:
            if args.url is None:
                postgres = PostgresServer(" -c fsync=off -c shared_buffers=512MB")
                postgres.start()
                url = postgres.url()
                migrate(url)
                for line in make_history(url, args, machines):
                    print(line, flush=True)
            else:
                url = args.url
            broker.start()
            redis.start()
            folder = Path(tmp)
            key = add_key(url)
            per_day = args.tags + 1 + len(machines) * len(ROLES)
            process, port, seconds = derived_collector(
                children,
                folder,
                "kpi-profile",
                (url, broker.url, redis.url),
                machines,
                per_day,
                3600,
            )
            print(f"derived in {seconds:.0f} s", flush=True)
            ids = tag_ids(url, machines)
            with psycopg.connect(url) as conn:
                year_tag = _one(conn, "SELECT tag_id FROM tags WHERE name = 'year'")
                day_tag = _one(conn, "SELECT min(tag_id) FROM tags")
                spans = _one(conn, "SELECT count(*) FROM machine_intervals")
            print(f"{spans:,} machine_intervals rows", flush=True)
            by_name = {q.name: q for q in questions(args, machines, ids, year_tag, day_tag)}
            asked = [by_name["site_rollup"], by_name["oee_14d"]]
            base = f"http://127.0.0.1:{port}"
            lines = ["right after the deriver (its tables hold dead rows and no statistics):"]
            lines += asyncio.run(over_http(base, key, asked, args.samples))
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE machine_intervals, machine_counts")
            lines.append("after VACUUM ANALYZE of them (autovacuum's work a minute later):")
            lines += asyncio.run(over_http(base, key, asked, args.samples))
            children.stop(process)
            times, figures = asyncio.run(in_process(url, asked[0], args.runs, args.top))
        finally:
            redis.stop()
            broker.stop()
            if postgres is not None and not args.keep:
                postgres.remove()
    print(figures)
    print(f"oee asks for {args.days} production days of one machine (analytics_bench: --days)")
    print("\n".join(lines))
    print(
        f"site_rollup in process (kpi_report + JSON body): median {statistics.median(times):.1f}"
        f" ms of {len(times)} runs"
    )
    if postgres is not None and args.keep:
        print(f"kept: --url {url} (stop: pg_ctl -D {postgres.data} stop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
