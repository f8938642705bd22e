"""The dashboard in a real browser against a real collector, PostgreSQL and Mosquitto: sign-in,
the overview live from the stream, names shown as text, the policy, accessibility, and the
stale indicator across a collector restart. Screenshots go to tests/browser/artifacts/."""

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, Response, expect

from collector.config import CollectorConfig
from collector.web.dashboard import CSP
from shared.mqtt import MqttClient
from tests.browser.conftest import WAIT_MS, Watched, pretty
from tests.dashboard_plant import HOSTILE, SITE, PlantAgent, new_key, put_plant
from tests.harness import eventually, running_collector

pytestmark = [pytest.mark.browser, pytest.mark.integration]
DERIVE_FAST = {"analytics": {"derive_interval": "200ms"}}
SITE_ZONE = ZoneInfo("Europe/Berlin")


def percent(ratio: float | None) -> str:
    """A ratio as the page must show it."""
    return "\u2013" if ratio is None else f"{ratio * 100:.1f} %"


def site_clock(stamp: str) -> str:
    """A time as the site's wall clock reads it."""
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return at.astimezone(SITE_ZONE).strftime("%H:%M:%S")


async def sign_in(page: Page, base: str, key: str) -> Response:
    """Open the dashboard and sign in with the keyboard alone; the page's response."""
    response = await page.goto(f"{base}/", timeout=WAIT_MS)
    assert response is not None
    await expect(page.get_by_label("API key")).to_be_focused()
    await page.keyboard.type(key)
    await page.keyboard.press("Enter")
    await expect(page.locator("#live")).to_have_attribute("data-status", "live")
    return response


async def test_a_viewer_signs_in_and_watches_the_plant_live(
    plant_collector_config: Callable[..., CollectorConfig],
    publisher: MqttClient,
    topic_prefix: str,
    watched: Watched,
) -> None:
    page = watched.page
    kpi_answers: list[dict[str, Any]] = []

    async def record(response: Response) -> None:
        if "/api/v1/kpis" in response.url and response.ok:
            kpi_answers.append(await response.json())

    page.on("response", record)
    async with running_collector(plant_collector_config(sections=DERIVE_FAST)) as base:
        await put_plant(base, {"press-1": "Press one"})
        viewer = await new_key(base, "viewer")
        agent = PlantAgent(publisher, topic_prefix)
        await agent.born()
        await agent.heartbeat(buffered=12, oldest_s=3.5, dropped=2)
        start = time.time() - 120
        await agent.readings("press-1", start, state=1, good=10)
        await agent.readings("press-1", start + 60, good=40)
        await agent.readings("press-2", start, state=3, reason=5, good=0)

        await page.goto(f"{base}/", timeout=WAIT_MS)
        await watched.screenshots("signin")
        assert await watched.axe() == [], "sign-in page"
        # A key the collector does not know is refused, and not kept.
        await page.get_by_label("API key").fill("pwk_00000000_" + "x" * 32)
        await page.keyboard.press("Enter")
        await expect(page.locator("#signin-error")).to_have_text(
            "That key is unknown, revoked or expired."
        )
        assert await page.evaluate("sessionStorage.length") == 0
        watched.errors.clear()  # the browser logs the refused request (401) as an error
        response = await sign_in(page, base, viewer)
        assert response.headers["content-security-policy"] == CSP
        assert viewer not in page.url
        assert await page.evaluate("sessionStorage.length") == 1
        assert await page.evaluate("localStorage.length") == 0
        await expect(page.locator(".who")).to_contain_text("(viewer)")

        tile_1 = page.locator('[data-machine="plant-1/press-1"]')
        tile_2 = page.locator('[data-machine="plant-1/press-2"]')
        await expect(tile_1.locator(".machine-name")).to_have_text("Press one")
        await expect(tile_1.locator(".state-name")).to_have_text("running")
        await expect(tile_1.locator(".state-word")).to_have_text("Producing")
        await expect(tile_2.locator(".state-name")).to_have_text("down")
        await expect(tile_2.locator(".state-word")).to_have_text("Stopped")
        # The reason's name is markup-shaped: shown as text, never made an element.
        await expect(tile_2.locator(".reason-name")).to_have_text(HOSTILE)
        assert await page.locator("main img").count() == 0
        agent_row = page.locator('tr[data-agent="press-agent"]')
        await expect(agent_row.locator(".agent-status")).to_have_text("Online")
        await expect(agent_row.locator("td.num")).to_have_text(["12", "3 s", "2"])

        # The tile shows the KPI API's own figures for the current shift, as last answered.
        await expect(tile_1.locator(".oee-value")).not_to_have_text("")
        await check_tile_kpis(page, kpi_answers)
        # Times are the site's (Berlin), not the browser's (Chicago).
        states = await api_states(page, base, viewer)
        since = states["press-1"]["since"]
        await expect(tile_1.locator(".since")).to_contain_text(f"(since {site_clock(since)})")

        assert await watched.axe() == [], "overview"
        await watched.screenshots("overview")

        # A state change travels reading -> MQTT -> collector -> deriver -> stream -> tile,
        # with no reload of the page.
        await page.evaluate("window.__sameDocument = true")
        await agent.readings("press-1", time.time(), state=3, reason=5)
        await expect(tile_1.locator(".state-name")).to_have_text("down")
        await expect(tile_1.locator(".reason-name")).to_have_text(HOSTILE)
        await expect(tile_1).to_have_attribute("data-tone", "tone-stop")
        assert await page.evaluate("window.__sameDocument") is True
        await check_tile_kpis(page, kpi_answers)

        # An agent going offline reaches the table from the stream too.
        await agent.born("offline")
        await expect(agent_row.locator(".agent-status")).to_have_text("Offline")

        assert watched.dialogs == [], "a name ran as a script"
        assert await watched.csp_violations() == []
        assert watched.errors == [], pretty(watched.errors)

        # Keyboard: the skip link comes first, and signing out forgets the key.
        await page.keyboard.press("Tab")
        await expect(page.locator("a.skip")).to_be_focused()
        await page.locator("#sign-out").focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_label("API key")).to_be_visible()
        assert await page.evaluate("sessionStorage.length") == 0


async def check_tile_kpis(page: Page, answers: list[dict[str, Any]]) -> None:
    """Each tile comes to show exactly the latest KPI answer the page received, for its machine.

    Polled: the page's responses are read by handlers of their own, and a refresh may bring a
    newer answer meanwhile.
    """

    async def shows_the_latest() -> bool:
        if not answers:
            return False
        latest = answers[-1]
        assert latest["group_by"] == "none"
        for part in latest["total"]["machines"]:
            tile = page.locator(f'[data-machine="{SITE}/{part["machine"]}"]')
            kpis = part["kpis"]
            for cls, key in [
                ("oee", "oee"),
                ("availability", "availability"),
                ("effectiveness", "effectiveness"),
                ("quality", "quality_ratio"),
            ]:
                if await tile.locator(f".{cls}-value").text_content() != percent(kpis[key]):
                    return False
        return True

    await eventually(shows_the_latest, timeout=WAIT_MS / 1000, what="tiles showing the KPI answer")


async def api_states(page: Page, base: str, key: str) -> dict[str, Any]:
    """The machine states, as the API answers them now."""
    answer = await page.request.get(
        f"{base}/api/v1/machine-states?site={SITE}", headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.ok
    return {m["machine"]: m for m in (await answer.json())["machines"]}


async def test_the_page_says_its_data_is_stale_while_the_collector_is_away(
    plant_collector_config: Callable[..., CollectorConfig], watched: Watched
) -> None:
    page = watched.page
    config = plant_collector_config()
    async with running_collector(config) as base:
        await put_plant(base)
        viewer = await new_key(base, "viewer")
        await sign_in(page, base, viewer)
        await expect(page.locator('[data-machine="plant-1/press-1"]')).to_be_visible()
    live = page.locator("#live")
    await expect(live).to_have_attribute("data-status", "reconnecting")
    await expect(live).to_contain_text("stale")
    await expect(page.locator("body")).to_have_attribute("data-stale", "true")
    await watched.screenshots("overview-stale")
    # The same collector again, on the same port and database: the page recovers by itself.
    async with running_collector(config):
        await expect(live).to_have_attribute("data-status", "live", timeout=WAIT_MS)
        await expect(live).to_have_text("● Live")
        await expect(page.locator("body")).not_to_have_attribute("data-stale", "true")
        await expect(page.locator("#problems")).to_be_empty()
        assert await page.evaluate("sessionStorage.length") == 1
    assert await watched.csp_violations() == []


async def test_the_accessibility_check_finds_what_it_should(watched: Watched) -> None:
    # The check the pages pass must be able to fail: an unlabelled field and an image without
    # text are serious violations.
    await watched.page.set_content(
        '<html><body><input type="text"><img src="data:,"></body></html>'
    )
    found = {violation["id"] for violation in await watched.axe()}
    assert {"label", "image-alt"} <= found


async def test_a_machine_page_shows_the_apis_figures_and_a_chart_as_wide_as_its_request(
    plant_collector_config: Callable[..., CollectorConfig],
    publisher: MqttClient,
    topic_prefix: str,
    watched: Watched,
) -> None:
    page = watched.page
    answers: dict[str, dict[str, Any]] = {}
    series_asked: list[str] = []

    async def record(response: Response) -> None:
        url = response.url
        shift = "window=current_shift" in url or "window=previous_shift" in url
        if "/api/v1/kpis" in url and "machine=press-1" in url and shift and response.ok:
            window = "current" if "window=current_shift" in url else "previous"
            answers[window] = await response.json()
        elif "/api/v1/series" in url:
            series_asked.append(url)

    page.on("response", record)
    async with running_collector(plant_collector_config(sections=DERIVE_FAST)) as base:
        await put_plant(base, {"press-1": "Press one"})
        viewer = await new_key(base, "viewer")
        agent = PlantAgent(publisher, topic_prefix)
        now = time.time()
        await agent.readings("press-1", now - 600, state=1, good=0)
        await agent.readings("press-1", now - 300, state=3, reason=5, good=120)
        await agent.readings("press-1", now - 240, state=1, good=120)
        await agent.series(
            "press-1", [("temperature", now - 600 + s, 60 + (s % 50) / 10) for s in range(590)]
        )
        await sign_in(page, base, viewer)
        link = page.locator('[data-machine="plant-1/press-1"] a.machine-name')
        await expect(link).to_have_text("Press one")
        await link.focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("h1")).to_have_text("Press one")
        assert page.url.endswith("#/machine/plant-1/press-1")

        await expect(page.locator(".now .state-name")).to_have_text("running")
        # OEE, its factors and the counts are the KPI API's own, for both shifts.
        await expect(page.locator("td.oee-value.shift-0")).not_to_have_text("")

        async def both_answered() -> bool:
            return set(answers) == {"current", "previous"}

        # The page's responses are read by handlers of their own, maybe after the page drew.
        await eventually(both_answered, timeout=WAIT_MS / 1000, what="both shifts' KPI answers")
        for column, window in enumerate(("current", "previous")):
            total = answers[window]["total"]
            kpis, elements = total["kpis"], total["working"]["elements"]
            cells = {
                "oee": percent(kpis["oee"]),
                "availability": percent(kpis["availability"]),
                "effectiveness": percent(kpis["effectiveness"]),
                "quality": percent(kpis["quality_ratio"]),
                "good": f"{round(elements['gq']):,}",
                "scrap": f"{round(elements['sq']):,}",
            }
            for name, text in cells.items():
                await expect(page.locator(f"td.{name}-value.shift-{column}")).to_have_text(text)
        assert answers["current"]["total"]["working"]["elements"]["gq"] == 120
        # The working is shown, not recomputed: PBT as the API gave it.
        await page.locator("details.working summary").first.click()
        await expect(page.locator("details.working").first).to_contain_text("PBT")

        await expect(page.locator(".timeline .span")).to_have_count(3)
        pareto = page.locator(".pareto li")
        await expect(pareto).to_have_count(1)
        await expect(pareto.locator(".pareto-label")).to_have_text(HOSTILE)

        chart = page.locator(".chart .uplot")
        await expect(chart).to_be_visible()
        width = await chart.evaluate("element => element.getBoundingClientRect().width")
        assert series_asked, "the chart asked for no series"
        assert f"max_points={round(width)}" in series_asked[-1], (width, series_asked[-1])
        assert "temperature" in series_asked[-1]

        # On a tablet the chart is narrower, and asks again for as many points as it is wide.
        await page.set_viewport_size({"width": 800, "height": 1280})

        async def asked_for_its_new_width() -> bool:
            now_wide = await chart.evaluate("element => element.getBoundingClientRect().width")
            return now_wide < width and f"max_points={round(now_wide)}" in series_asked[-1]

        await eventually(asked_for_its_new_width, timeout=WAIT_MS / 1000, what="a narrower chart")
        await page.set_viewport_size({"width": 1280, "height": 800})
        assert await watched.axe() == [], "machine page"
        await watched.screenshots("machine")

        await agent.readings("press-1", time.time(), state=3, reason=5)
        await expect(page.locator(".now .state-name")).to_have_text("down")
        await expect(page.locator(".timeline .span")).to_have_count(4)
        assert watched.dialogs == []
        assert await watched.csp_violations() == []
        assert watched.errors == [], pretty(watched.errors)
