"""The admin pages in a real browser against a real collector: agents in detail, dead letters,
and API keys (a new key shown once and usable, revoking one); hidden from other roles."""

import time
from collections.abc import Callable

import pytest
from playwright.async_api import expect

from collector.config import CollectorConfig
from shared.mqtt import MqttClient
from tests.browser.conftest import WAIT_MS, Watched, pretty
from tests.browser.test_dashboard import sign_in
from tests.dashboard_plant import AGENT, HOSTILE, PlantAgent, new_key, put_plant
from tests.harness import TEST_KEY, eventually, running_collector

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def bearer(key: str) -> dict[str, str]:
    """The header a request with `key` carries."""
    return {"Authorization": f"Bearer {key}"}


async def test_an_admin_sees_agents_dead_letters_and_manages_keys(
    plant_collector_config: Callable[..., CollectorConfig],
    publisher: MqttClient,
    topic_prefix: str,
    watched: Watched,
) -> None:
    page = watched.page
    async with running_collector(plant_collector_config()) as base:
        await put_plant(base)
        operator = await new_key(base, "operator")
        agent = PlantAgent(publisher, topic_prefix)
        await agent.born()
        await agent.heartbeat(buffered=1200, oldest_s=75, dropped=2)
        await agent.readings("press-1", time.time(), state=1)
        # A batch the collector cannot read: kept as a dead letter.
        await publisher.publish(agent.topics.batch(AGENT), HOSTILE.encode(), timeout=10)

        async def letter_kept() -> bool:
            answer = await page.request.get(f"{base}/api/v1/dead-letters", headers=bearer(TEST_KEY))
            return answer.ok and len((await answer.json())["items"]) == 1

        await eventually(letter_kept, timeout=WAIT_MS / 1000, what="the dead letter")

        # An operator is shown no admin link, and the pages say they need an admin key.
        await sign_in(page, base, operator)
        await expect(page.get_by_role("link", name="Admin")).to_have_count(0)
        await page.goto(f"{base}/#/admin/keys")
        await expect(page.locator("main")).to_contain_text("These pages need an admin key.")
        await page.locator("#sign-out").click()

        await sign_in(page, base, TEST_KEY)
        admin = page.get_by_role("link", name="Admin", exact=True)
        await admin.focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("h1")).to_have_text("Agents")
        card = page.locator(f'[data-agent="{AGENT}"]')
        await expect(card.locator(".agent-status")).to_contain_text("Online")
        await expect(card.locator("dl")).to_contain_text("Buffered readings1,200")
        await expect(card.locator("dl")).to_contain_text("Oldest unsent1 min 15 s")
        assert await watched.axe() == [], "admin: agents"
        await watched.screenshots("admin-agents")

        await page.get_by_role("link", name="Dead letters").click()
        await expect(page.locator("h1")).to_have_text("Dead letters")
        letter = page.locator("table.letters tbody tr")
        await expect(letter).to_have_count(1)
        await expect(letter).to_contain_text("batch")
        await expect(letter).to_contain_text("Held")
        assert await watched.axe() == [], "admin: dead letters"
        await watched.screenshots("admin-dead-letters")

        await page.get_by_role("link", name="API keys").click()
        await expect(page.locator("h1")).to_have_text("API keys")
        rows = page.locator("table.keys tbody tr")
        await expect(rows).to_have_count(2)  # the test's admin key and the operator's
        await page.get_by_label("Name").fill(HOSTILE)
        await page.get_by_label("Role").select_option("viewer")
        await page.get_by_label("Expires after (days)").fill("30")
        await page.get_by_role("button", name="Create key").click()
        shown = page.locator("#new-key-value")
        await expect(shown).to_be_focused()
        made = await shown.input_value()
        assert made.startswith("pwk_"), made
        await expect(rows).to_have_count(3)
        new_row = page.locator(f'tr[data-prefix="{made.split("_")[1]}"]')
        await expect(new_row.locator(".key-name")).to_have_text(HOSTILE)
        await expect(new_row.locator(".key-state")).to_have_text("✓ Active")
        # The new key works, and is a viewer's.
        me = await page.request.get(
            f"{base}/api/v1/me", headers={"Authorization": f"Bearer {made}"}
        )
        assert me.ok
        assert (await me.json())["role"] == "viewer"
        assert await watched.axe() == [], "admin: keys"
        await watched.screenshots("admin-keys")
        # Shown once: on the next visit it is gone from the page.
        await page.get_by_role("link", name="Dead letters").click()
        await page.get_by_role("link", name="API keys").click()
        await expect(rows).to_have_count(3)
        await expect(page.locator("#new-key-value")).to_have_count(0)
        assert made not in await page.content()

        # Revoking takes two presses; the admin's own key has none.
        own = page.locator(f'tr[data-prefix="{TEST_KEY.split("_")[1]}"]')
        await expect(own).to_contain_text("This key")
        await expect(own.get_by_role("button")).to_have_count(0)
        revoke = new_row.get_by_role("button")
        await revoke.click()
        await expect(revoke).to_have_text("Press again to revoke")
        await revoke.click()
        await expect(page.locator("#admin-status")).to_have_text(
            f"Key {made.split('_')[1]} revoked."
        )
        await expect(new_row.locator(".key-state")).to_have_text("✕ Revoked")
        me = await page.request.get(
            f"{base}/api/v1/me", headers={"Authorization": f"Bearer {made}"}
        )
        assert me.status == 401
        assert watched.dialogs == []
        assert await watched.csp_violations() == []
        assert watched.errors == [], pretty(watched.errors)
