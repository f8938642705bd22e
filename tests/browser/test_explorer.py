"""The tag explorer in a real browser against a real collector: a year-long chart asks for as
many points as its plot is wide, zooming asks again for the visible range, and the CSV export
holds the series API's values for that range."""

import csv
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Page, Response, expect

from collector.config import CollectorConfig
from shared.mqtt import MqttClient
from tests.browser.conftest import WAIT_MS, Watched, pretty
from tests.browser.test_dashboard import sign_in
from tests.dashboard_plant import PlantAgent, new_key, put_plant
from tests.harness import eventually, running_collector

pytestmark = [pytest.mark.browser, pytest.mark.integration]
YEAR_S = 365 * 86400
PEAK = 500.0
"""One reading far above the rest, months ago: a year-long chart must still show it."""


def when(stamp: str) -> float:
    """Unix seconds of an RFC 3339 time."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class SeriesCalls:
    """The series requests the page made, with their answers."""

    def __init__(self, page: Page) -> None:
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []
        page.on("response", self._record)

    async def _record(self, response: Response) -> None:
        if "/api/v1/series" in response.url and response.ok:
            query = {k: v[0] for k, v in parse_qs(urlsplit(response.url).query).items()}
            self.calls.append((query, await response.json()))

    async def next_after(self, seen: int) -> tuple[dict[str, str], dict[str, Any]]:
        """The first request made after `seen` had been made."""

        async def arrived() -> bool:
            return len(self.calls) > seen

        await eventually(arrived, timeout=WAIT_MS / 1000, what="a series request")
        return self.calls[seen]

    async def settled(self, page: Page, seen: int) -> tuple[dict[str, str], dict[str, Any]]:
        """The latest request once it asks for the plot's width as it is now (a scroll bar
        appearing narrows the chart, which then asks again)."""

        async def as_wide() -> bool:
            return len(self.calls) > seen and self.calls[-1][0]["max_points"] == str(
                await plot_width(page)
            )

        await eventually(as_wide, timeout=WAIT_MS / 1000, what="a request as wide as the plot")
        return self.calls[-1]


async def plot_width(page: Page) -> int:
    """The chart's plot area, in CSS pixels."""
    return round(await page.locator(".explorer-chart .u-over").evaluate("e => e.clientWidth"))


async def test_a_year_long_chart_asks_for_its_width_and_the_visible_range_on_zoom(
    plant_collector_config: Callable[..., CollectorConfig],
    publisher: MqttClient,
    topic_prefix: str,
    watched: Watched,
) -> None:
    page = watched.page
    series = SeriesCalls(page)
    async with running_collector(plant_collector_config()) as base:
        await put_plant(base)
        viewer = await new_key(base, "viewer")
        agent = PlantAgent(publisher, topic_prefix)
        now = time.time()
        # Every third day of the year, a reading every 3 hours; the last two hours every 10 s.
        history = [
            ("temperature", now - YEAR_S + day * 86400 + hour * 3600, 60.0 + hour)
            for day in range(1, 365, 3)
            for hour in range(0, 24, 3)
        ]
        history.append(("temperature", now - 200 * 86400, PEAK))
        history += [
            ("temperature", now - 7200 + s, 40.0 + (s % 600) / 60) for s in range(0, 7200, 10)
        ]
        for start in range(0, len(history), 500):
            await agent.series("press-1", history[start : start + 500])

        year = {
            "tag": "press-1/temperature",
            "agent": "press-agent",
            "from": f"{datetime.fromtimestamp(now - YEAR_S - 60, UTC).isoformat()}",
            "to": f"{datetime.fromtimestamp(now + 60, UTC).isoformat()}",
            "max_points": "10000",
        }

        async def stored() -> bool:
            answer = await page.request.get(
                f"{base}/api/v1/series",
                params=year,
                headers={"Authorization": f"Bearer {viewer}"},
            )
            return answer.ok and (await answer.json())["count"] == len(history)

        await eventually(stored, timeout=WAIT_MS / 1000, what="every reading stored")
        await sign_in(page, base, viewer)
        link = page.get_by_role("link", name="Tag explorer")
        await link.focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("h1")).to_have_text("Tag explorer")
        assert page.url.endswith("#/explorer")

        await page.get_by_label("Tags", exact=True).select_option(
            label="press-1/temperature (press-agent)"
        )
        await page.get_by_label("Period", exact=True).select_option(label="Last 365 days")
        seen = len(series.calls)
        await page.get_by_role("button", name="Show").click()
        query, answer = await series.settled(page, seen)
        width = await plot_width(page)
        # A year: hourly-grained buckets (from the rollups), as many points as pixels.
        assert query["max_points"] == str(width), (width, query)
        assert query["interval"] == "PT6H", query
        assert query["agg"] == "max", query
        year_from, year_to = when(query["from"]), when(query["to"])
        assert year_from <= now - YEAR_S < year_from + 6 * 3600, query
        assert year_to >= now, query
        assert answer["count"] <= width
        assert PEAK in [b["value"] for b in answer["buckets"]], "the year's peak is lost"
        await expect(page.locator("#explorer-status")).to_contain_text("asked for")

        # Drag across the middle half of the plot: a zoom, and a request for what is visible.
        over = await page.locator(".explorer-chart .u-over").bounding_box()
        assert over is not None
        y = over["y"] + over["height"] / 2
        seen = len(series.calls)
        await page.mouse.move(over["x"] + over["width"] * 0.25, y)
        await page.mouse.down()
        await page.mouse.move(over["x"] + over["width"] * 0.75, y, steps=8)
        await page.mouse.up()
        zoom, zoomed = await series.next_after(seen)
        assert zoom["max_points"] == str(await plot_width(page)), zoom
        shown = when(zoom["to"]) - when(zoom["from"])
        asked = year_to - year_from
        assert 0.45 * asked <= shown <= 0.55 * asked + 2 * 3600, (zoom, asked)
        assert when(zoom["from"]) >= year_from + 0.2 * asked, zoom
        assert zoom["interval"] == "PT1H", zoom  # half a year at 4 buckets a pixel
        assert series.calls[-1][0] == zoom, "a later request than the zoom's"

        # The CSV holds the API's values for the visible range, nothing else.
        async with page.expect_download() as download_info:
            await page.get_by_role("button", name="Export visible range as CSV").click()
        download = await download_info.value
        path = await download.path()
        assert path is not None
        text = path.read_bytes().decode("utf-8")  # line ends as written
        assert text.endswith("\r\n")
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert rows[0] == ["time (UTC)", "press-agent:press-1/temperature (max per PT1H)"]
        by_start = {when(b["start"]): b["value"] for b in zoomed["buckets"]}
        assert len(rows) > 10
        for stamp, value in rows[1:]:
            moment = when(stamp)
            assert moment in by_start, stamp
            assert float(value) == by_start[moment], (stamp, value)
        # Visible only: within the request, at most a bucket's edge either side left out.
        assert len(rows) - 1 >= len(by_start) - 2, (len(rows), len(by_start))

        # A short range is asked for as raw readings, downsampled to the width.
        await page.get_by_label("Period", exact=True).select_option(label="Last hour")
        seen = len(series.calls)
        await page.get_by_role("button", name="Show").click()
        raw, raw_answer = await series.settled(page, seen)
        assert "interval" not in raw, raw
        assert raw["max_points"] == str(await plot_width(page)), raw
        assert raw_answer["readings"], raw_answer

        await page.get_by_label("Period", exact=True).select_option(label="Last 365 days")
        await page.get_by_role("button", name="Show").click()
        await expect(page.locator("#explorer-status")).to_contain_text("PT6H")
        assert await watched.axe() == [], "tag explorer"
        await watched.screenshots("explorer")
        assert await watched.csp_violations() == []
        assert watched.errors == [], pretty(watched.errors)
