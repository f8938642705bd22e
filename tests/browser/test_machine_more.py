"""The machine page's OEE by hour, its timeline from the day to a week, and reclassifying a
stop's reason (operators only), in a real browser against a real collector."""

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Response, expect

from collector.config import CollectorConfig
from shared.mqtt import MqttClient
from tests.browser.conftest import WAIT_MS, Watched, pretty
from tests.browser.test_dashboard import DERIVE_FAST, percent, sign_in
from tests.dashboard_plant import HOSTILE, SHORTAGE, SITE, PlantAgent, new_key, put_plant
from tests.harness import eventually, running_collector

pytestmark = [pytest.mark.browser, pytest.mark.integration]
PAGE = f"#/machine/{SITE}/press-1"


def when(stamp: str) -> float:
    """Unix seconds of an RFC 3339 time."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def test_hourly_oee_a_weeks_timeline_and_an_operator_reclassifying_a_stop(
    plant_collector_config: Callable[..., CollectorConfig],
    publisher: MqttClient,
    topic_prefix: str,
    watched: Watched,
) -> None:
    page = watched.page
    hourly: list[dict[str, Any]] = []
    timelines: list[dict[str, str]] = []

    async def record(response: Response) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(response.url).query).items()}
        if "/api/v1/kpis" in response.url and query.get("group_by") == "hour" and response.ok:
            hourly.append(await response.json())
        elif "/api/v1/machine-states/timeline" in response.url:
            timelines.append(query)

    page.on("response", record)
    async with running_collector(plant_collector_config(sections=DERIVE_FAST)) as base:
        await put_plant(base, {"press-1": "Press one"})
        viewer = await new_key(base, "viewer")
        operator = await new_key(base, "operator")
        agent = PlantAgent(publisher, topic_prefix)
        now = time.time()
        await agent.readings("press-1", now - 600, state=1, good=0)
        await agent.readings("press-1", now - 300, state=3, reason=5, good=100)
        await agent.readings("press-1", now - 240, state=1, good=100)

        # A viewer sees OEE by hour and the stops, but no way to change a reason.
        await sign_in(page, base, viewer)
        await page.goto(f"{base}/{PAGE}")
        await expect(page.locator("h1")).to_have_text("Press one")
        stop_row = page.locator("table.stops tbody tr")
        await expect(stop_row).to_have_count(1)
        await expect(stop_row.locator(".stop-reason")).to_have_text(HOSTILE)
        await expect(page.get_by_role("button", name="Change reason")).to_have_count(0)

        async def answered() -> bool:
            return bool(hourly)

        await eventually(answered, timeout=WAIT_MS / 1000, what="the hourly KPI answer")
        groups = hourly[-1]["groups"]
        rows = page.locator("table.hourly tbody tr")
        await expect(rows).to_have_count(len(groups))
        await expect(rows.locator(".hour-oee")).to_have_text(
            [percent(g["kpis"]["oee"]) for g in groups]
        )
        assert groups, "no hour of today"

        # The timeline, from today to the week before.
        await expect(page.get_by_role("button", name="Today")).to_have_attribute(
            "aria-pressed", "true"
        )
        day = page.locator(".timeline .span")
        await expect(day).to_have_count(3)
        await page.get_by_role("button", name="Last 7 days").click()
        await expect(page.get_by_role("button", name="Last 7 days")).to_have_attribute(
            "aria-pressed", "true"
        )

        async def asked_for_a_week() -> bool:
            return any("from" in t for t in timelines)

        await eventually(asked_for_a_week, timeout=WAIT_MS / 1000, what="a week's timeline")
        week = next(t for t in timelines if "from" in t)
        span = when(week["to"]) - when(week["from"])
        assert 6 * 86400 < span <= 7 * 86400 + 3600, week
        # The spans are the same three, now a small part of a wider bar.
        await expect(day).to_have_count(3)
        await expect(page.locator("#timeline-range")).to_contain_text(
            datetime.fromtimestamp(when(week["from"]), UTC).strftime("%Y-")
        )
        assert await watched.axe() == [], "machine page, viewer"
        await page.locator("#sign-out").click()

        # An operator gives the stop another reason; the change is kept with who made it.
        await sign_in(page, base, operator)
        await page.goto(f"{base}/{PAGE}")
        button = page.get_by_role("button", name="Change reason")
        await expect(button).to_have_count(1)
        await button.click()
        reason = page.get_by_label("Reason", exact=True)
        await expect(reason).to_be_focused()
        await expect(reason.locator("option")).to_have_text([HOSTILE, SHORTAGE])
        await reason.select_option(label=SHORTAGE)
        await page.get_by_label("Note").fill("=cmd() checked on the floor")
        assert await watched.axe() == [], "reclassify form"
        await watched.screenshots("machine-reclassify")
        await page.get_by_role("button", name="Save reason").click()
        await expect(page.locator("#stops-status")).to_contain_text(
            f"now has the reason {SHORTAGE}"
        )
        await expect(page.locator("#stops-status")).to_be_focused()
        await expect(stop_row.locator(".stop-reason")).to_have_text(SHORTAGE)
        await expect(stop_row).to_contain_text("by operator key")
        await expect(page.locator(".pareto-label")).to_have_text(SHORTAGE)
        answer = await page.request.get(
            f"{base}/api/v1/downtime/reclassifications?site={SITE}",
            headers={"Authorization": f"Bearer {viewer}"},
        )
        assert answer.ok
        changes = (await answer.json())["items"]
        assert [(c["reason"], c["note"], c["by_name"]) for c in changes] == [
            (7, "=cmd() checked on the floor", "operator key")
        ], changes
        await watched.screenshots("machine-operator")
        assert watched.dialogs == []
        assert await watched.csp_violations() == []
        assert watched.errors == [], pretty(watched.errors)
