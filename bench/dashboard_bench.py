"""make bench-dashboard: the dashboard in a real browser on 14 days of a plant and a year of 1 Hz.

The database is make bench-analytics' (bench/analytics_bench.py: make_history), smaller where
the dashboard does not look: --machines (6) machines of site plant-1 with --days (14) days of
states, reasons, counts and products; --tags (2) float tags at 1 Hz for those days; and one
float tag, archive/year (agent `plant`), at 1 Hz for a year plus today (about 31.6 million
readings). The real `plantwire-collector run` derives it (rollups, the machines' intervals and
counts) before anything is timed, and serves the dashboard it has built in.

Measured in Debian's chromium driven by Playwright, with the page's own Performance API marks:
  machine_page  from the start of a navigation to a machine's page (a full load: the page
                signs in again from the key in its session) to its `machine:usable` mark,
                set when every section has drawn (shifts, hours, timeline, Pareto, stops, chart);
  zoom          on the tag explorer's chart of archive/year over 365 days, from the zoom
                gesture (uPlot's setScale, `explorer:zoom-start`) to the chart drawn with the
                data the series API answered for the new range (`explorer:zoom`): 13 drags,
                each halving the range, from a year down to about an hour, so that every
                kind of request is timed (6-hour, hourly, 15-, 5-, 1-minute buckets, raw).
Medians of --runs (7) machine page loads and of the 13 zoom steps. Targets: machine page under
1 s, zoom step under 200 ms.
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg
from playwright.async_api import Page, async_playwright

sys.path.insert(0, str(Path(__file__).parents[1]))

from bench.analytics_bench import (
    ROLES,
    SITE,
    derived_collector,
    make_history,
    plant_machines,
)
from bench.api_bench import add_key, servers
from bench.ingest_bench import migrate
from bench.processes import Children
from collector.web.dashboard import Dashboard

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 60_000
TARGETS = {"machine_page_ms": 1000.0, "zoom_ms": 200.0}
ZOOM_STEPS = 13
"""Halvings from a year to about an hour: every kind of request (6-hour, hourly, 15-, 5- and
1-minute buckets, raw readings) is timed."""


def options() -> argparse.Namespace:
    """The command line; --quick shrinks the history for a trial run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14, help="days of the plant (14)")
    parser.add_argument("--tags", type=int, default=2, help="other tags at 1 Hz (2)")
    parser.add_argument("--year-days", type=int, default=365, help="days of archive/year (365)")
    parser.add_argument("--machines", type=int, default=6, help="machines (6)")
    parser.add_argument("--runs", type=int, default=7, help="timed machine page loads (7)")
    parser.add_argument(
        "--backfill-timeout", type=float, default=3600, help="longest wait for the deriver, s"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a trial: 2 days, 30 year days, 2 machines, 3 runs"
    )
    args = parser.parse_args()
    if args.quick:
        args.days, args.year_days, args.machines, args.runs = 2, 30, 2, 3
    return args


async def until(page: Page, condition: str) -> Any:
    """The value of a JavaScript expression once it is truthy, checked every frame.

    Evaluated through the DevTools protocol: the page's policy refuses eval, which Playwright's
    wait_for_function uses to poll.
    """
    poll = (
        "new Promise((resolve) => { const step = () => { const v = (" + condition + ");"
        " if (v) resolve(v); else requestAnimationFrame(step); }; step(); })"
    )
    return await asyncio.wait_for(page.evaluate(poll), WAIT_MS / 1000)


async def sign_in(page: Page, base: str, key: str) -> None:
    """Sign in through the form, as a person would."""
    await page.goto(f"{base}/dashboard/", timeout=WAIT_MS)
    await page.get_by_label("API key").fill(key)
    await page.keyboard.press("Enter")
    await page.locator('#live[data-status="live"]').wait_for(timeout=WAIT_MS)


async def machine_page_ms(page: Page, base: str, machine: str) -> float:
    """One full load of a machine's page, to its `machine:usable` mark."""
    await page.goto(f"{base}/dashboard/#/machine/{SITE}/{machine}", timeout=WAIT_MS)
    await page.reload(timeout=WAIT_MS)
    return float(await until(page, "performance.getEntriesByName('machine:usable')[0]?.startTime"))


async def zoom_steps(page: Page, base: str) -> list[tuple[float, str]]:
    """The explorer's year-long chart zoomed in by halves down to an hour (a drag across the
    middle half of the plot each time), after one zoom in and out unmeasured: each step's
    milliseconds and what it showed."""
    await page.goto(f"{base}/dashboard/#/explorer", timeout=WAIT_MS)
    await page.get_by_label("Tags", exact=True).select_option(label="archive/year (plant)")
    await page.get_by_label("Period", exact=True).select_option(label="Last 365 days")
    await page.get_by_role("button", name="Show").click()
    status = page.locator("#explorer-status")
    await status.filter(has_text="asked for").wait_for(timeout=WAIT_MS)
    over = await page.locator(".explorer-chart .u-over").bounding_box()
    assert over is not None
    y = over["y"] + over["height"] / 2
    zooms = "performance.getEntriesByName('explorer:zoom')"

    async def step(gesture: str) -> float:
        # Settled first: the chart asks once more when its axis has taken its labels' width.
        await until(
            page,
            "document.querySelector('.explorer-chart').dataset.maxPoints =="
            " String(document.querySelector('.explorer-chart .u-over').clientWidth)"
            " && !document.querySelector('#explorer-status').textContent.startsWith('Loading')",
        )
        before = await page.evaluate(f"{zooms}.length")
        if gesture == "in":
            await page.mouse.move(over["x"] + over["width"] * 0.25, y)
            await page.mouse.down()
            await page.mouse.move(over["x"] + over["width"] * 0.75, y, steps=4)
            await page.mouse.up()
        else:
            await page.get_by_role("button", name="Zoom out").click()
        return float(await until(page, f"{zooms}.length > {before} && {zooms}.at(-1).duration"))

    await step("in")
    await step("out")
    steps = []
    for number in range(1, ZOOM_STEPS + 1):
        took = await step("in")
        shown = await status.text_content() or ""
        steps.append((took, shown))
        print(f"  zoom {number}: {took:.0f} ms; {shown}", flush=True)
    return steps


async def measure(base: str, key: str, machine: str, runs: int) -> dict[str, list[float]]:
    """Both figures' runs in one headless chromium."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            await sign_in(page, base, key)
            await machine_page_ms(page, base, machine)  # a warm-up: the browser's caches
            pages = []
            for run in range(runs):
                pages.append(await machine_page_ms(page, base, machine))
                print(f"  machine page {run + 1}: {pages[-1]:.0f} ms", flush=True)
            zooms = await zoom_steps(page, base)
            return {"machine_page_ms": pages, "zoom_ms": [took for took, _ in zooms]}
        finally:
            await browser.close()


def main() -> int:
    args = options()
    if not Dashboard().built:
        print("the dashboard is not built: make dashboard", file=sys.stderr)
        return 2
    machines = plant_machines(args.machines)
    with (
        servers() as (postgres, broker, redis),
        Children() as children,
        tempfile.TemporaryDirectory(prefix="plantwire-dashboard-") as tmp,
    ):
        url = postgres.url()
        migrate(url)
        print("database:", flush=True)
        for line in make_history(url, args, machines):
            print(line, flush=True)
        key = add_key(url, "viewer")
        per_day = args.tags + 1 + len(machines) * len(ROLES)
        _, port, backfill = derived_collector(
            children,
            Path(tmp),
            "dashboard",
            (url, broker.url, redis.url),
            machines,
            per_day,
            args.backfill_timeout,
        )
        print(f"derived in {backfill:.0f} s", flush=True)
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM readings").fetchone()
        print(f"{row[0] if row else 0:,} readings", flush=True)
        runs = asyncio.run(measure(f"http://127.0.0.1:{port}", key, machines[0].name, args.runs))
    figures: dict[str, Any] = {name: statistics.median(values) for name, values in runs.items()}
    for name, values in runs.items():
        target = TARGETS[name]
        verdict = "ok" if figures[name] < target else "MISSED"
        print(
            f"{name}: median {figures[name]:.0f} ms of {len(values)} runs"
            f" (min {min(values):.0f}, max {max(values):.0f}); target < {target:.0f} ms: {verdict}"
        )
    page_ms, zoom_ms = figures["machine_page_ms"], figures["zoom_ms"]
    print(f"RESULT machine_page_ms={page_ms:.0f} zoom_ms={zoom_ms:.0f}")
    return 0 if all(figures[n] < t for n, t in TARGETS.items()) else 1


if __name__ == "__main__":
    sys.exit(main())
