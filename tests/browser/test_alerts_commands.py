"""The alerts and commands pages in a real browser against a real collector, PostgreSQL,
Mosquitto and (for commands) a real agent polling the simulator: an alert made by a real rule
from readings over MQTT appears live and is acknowledged with a comment, a viewer cannot
acknowledge, an admin manages rules, and a command is applied and refused with the agent's
answer. Screenshots go to tests/browser/artifacts/."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Page, expect

from agent.config import AgentConfig, CommandSettings
from agent.service import AgentService
from collector.config import CollectorConfig
from protocols.simulator.runner import Simulator
from shared.mqtt import MqttClient
from tests.browser.conftest import Watched, pretty
from tests.browser.test_dashboard import sign_in, site_clock
from tests.dashboard_plant import AGENT, HOSTILE, PlantAgent, new_key, put_plant
from tests.harness import (
    AUTH,
    agent_config,
    eventually,
    modbus_device,
    running_agent,
    running_collector,
)
from tests.servers import MosquittoServer

pytestmark = [pytest.mark.browser, pytest.mark.integration]
ALERTS_FAST = {"alerts": {"interval": "100ms", "lock_retry": "200ms"}}
COMMANDS_FAST = {"commands": {"check_interval": "200ms", "grace": "30s"}}


async def api(method: str, url: str, body: Any = None) -> Any:
    """An API call with the admin test key; its JSON answer, which must be a success."""
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.request(method, url, json=body) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json()


async def hot_rule(base: str, device: str) -> dict[str, Any]:
    """A rule: the device's temperature above 80 fires at once."""
    condition = {
        "kind": "tag_threshold",
        "agent": AGENT,
        "device": device,
        "tag": "temperature",
        "direction": "above",
        "threshold": 80,
    }
    made: dict[str, Any] = await api(
        "POST", f"{base}/api/v1/alert-rules", {"name": f"{device} hot", "condition": condition}
    )
    return made


async def checked(watched: Watched, name: str) -> None:
    """No serious accessibility violation, nothing refused or run, and screenshots saved."""
    assert await watched.axe() == [], name
    assert await watched.csp_violations() == []
    assert watched.dialogs == [], "a name ran as a script"
    assert watched.errors == [], pretty(watched.errors)
    await watched.screenshots(name)


async def test_an_operator_sees_alerts_fire_live_and_acknowledges_one(
    plant_collector_config: Callable[..., CollectorConfig],
    publisher: MqttClient,
    topic_prefix: str,
    watched: Watched,
) -> None:
    page = watched.page
    async with running_collector(plant_collector_config(sections=ALERTS_FAST)) as base:
        await put_plant(base)
        operator = await new_key(base, "operator")
        agent = PlantAgent(publisher, topic_prefix)
        await agent.born()
        await agent.readings("press-1", time.time(), temperature=20.0)
        await hot_rule(base, "press-1")

        await sign_in(page, base, operator)
        panel = page.locator(".active-alerts")
        await expect(panel).to_have_text("No alert is pending or firing.")
        # Reading -> MQTT -> collector -> rule -> alert -> stream -> the overview's panel.
        await page.evaluate("window.__sameDocument = true")
        await agent.readings("press-1", time.time(), temperature=95.5)
        line = panel.locator('li[data-state="firing"]')
        await expect(line.locator(".alert-subject")).to_have_text(f"{AGENT}/press-1/temperature")
        await expect(line.locator(".alert-state-word")).to_have_text("Firing")
        assert await line.locator(".late").count() == 0
        assert await page.evaluate("window.__sameDocument") is True
        await checked(watched, "overview-alerts")

        await page.get_by_role("link", name="Alerts", exact=True).click()
        await expect(page.locator("h1")).to_have_text("Alerts")
        card = page.locator('.alert-card[data-state="firing"]')
        await expect(card).to_have_count(1)
        (listed,) = (await api("GET", f"{base}/api/v1/alerts?state=firing"))["items"]
        await expect(card.locator(".alert-value")).to_have_text("95.5")
        # The true start, on the site's clock (Berlin), not the browser's (Chicago).
        await expect(card).to_contain_text(site_clock(listed["started_at"]))

        # A second alert appears on the page live.
        await hot_rule(base, "press-2")
        await agent.readings("press-2", time.time(), temperature=120.0)
        await expect(page.locator(".alert-card")).to_have_count(2)
        await expect(page.locator(".alert-card .alert-subject").first).to_have_text(
            f"{AGENT}/press-2/temperature"
        )
        await checked(watched, "alerts")

        # Acknowledged with the keyboard, the comment shown as text.
        first = page.locator(f'.alert-card[data-alert-id="{listed["id"]}"]')
        await first.get_by_label("Comment").fill(HOSTILE)
        await first.get_by_label("Comment").press("Enter")
        await expect(first.locator(".acknowledged")).to_contain_text(f"“{HOSTILE}”")
        await expect(first.locator(".acknowledged")).to_contain_text("Acknowledged by operator key")
        assert await page.locator("main img").count() == 0
        stored = await api("GET", f"{base}/api/v1/alerts/{listed['id']}")
        assert stored["ack_comment"] == HOSTILE
        assert stored["acknowledged_by"].startswith("operator key (key ")
        assert await page.locator(".ack-form").count() == 1  # the other one's

        # Resolved: it leaves the active ones and the recent table says so.
        await agent.readings("press-1", time.time(), temperature=30.0)
        await expect(page.locator(".alert-card")).to_have_count(1)
        row = page.locator(f'tr[data-alert-id="{listed["id"]}"]')
        await expect(row).to_have_attribute("data-state", "resolved")
        await expect(row.locator(".alert-state-word")).to_have_text("Resolved")
        await checked(watched, "alerts-resolved")


async def test_a_viewer_sees_a_late_alert_but_cannot_acknowledge_nor_send_commands(
    plant_collector_config: Callable[..., CollectorConfig],
    publisher: MqttClient,
    topic_prefix: str,
    watched: Watched,
) -> None:
    page = watched.page
    # Every reading is evaluated more than a millisecond after its time: each alert is late.
    late = {"alerts": {**ALERTS_FAST["alerts"], "late_after": "1ms"}}
    async with running_collector(plant_collector_config(sections=late)) as base:
        await put_plant(base)
        viewer = await new_key(base, "viewer")
        agent = PlantAgent(publisher, topic_prefix)
        await agent.readings("press-1", time.time(), temperature=20.0)
        await hot_rule(base, "press-1")
        await agent.readings("press-1", time.time(), temperature=90.0)

        await sign_in(page, base, viewer)
        assert await page.get_by_role("link", name="Commands").count() == 0
        await page.get_by_role("link", name="Alerts", exact=True).click()
        card = page.locator('.alert-card[data-state="firing"]')
        await expect(card).to_have_count(1)
        await expect(card.locator(".late")).to_have_text("⏱ late")
        button = card.get_by_role("button", name="Acknowledge")
        await expect(button).to_be_disabled()
        await expect(button).to_have_accessible_description(
            "Acknowledging needs an operator or admin key; this key is a viewer's."
        )
        assert await page.locator(".ack-form").count() == 0
        assert await page.get_by_role("heading", name="Alert rules").count() == 0
        await checked(watched, "alerts-viewer")

        await page.goto(f"{base}/#/commands")
        await expect(page.locator("main")).to_contain_text(
            "Commands and their audit need an operator or admin key"
        )
        assert await page.locator("form").count() == 0


async def test_an_admin_adds_disables_and_deletes_a_rule(
    plant_collector_config: Callable[..., CollectorConfig], watched: Watched
) -> None:
    page = watched.page
    async with running_collector(plant_collector_config(sections=ALERTS_FAST)) as base:
        await put_plant(base)
        admin = await new_key(base, "admin")
        await sign_in(page, base, admin)
        await page.goto(f"{base}/#/alerts")
        await expect(page.get_by_role("heading", name="Alert rules")).to_be_visible()
        await expect(page.locator("table.rules tbody")).to_have_text("No rule yet.")

        # A field the form cannot read is named before anything is sent.
        await page.get_by_label("Name", exact=True).fill(HOSTILE)
        await page.get_by_label("Device", exact=True).fill("press-1")
        await page.get_by_label("Tag", exact=True).fill("temperature")
        await page.get_by_label("Threshold", exact=True).fill("hot")
        await page.get_by_role("button", name="Add rule").click()
        await expect(page.locator("#rule-error")).to_have_text('threshold: "hot" is not a number')

        await page.get_by_label("Threshold", exact=True).fill("80")
        await page.get_by_label("Clears at (empty: the threshold)").fill("75")
        await page.get_by_label("Held for (seconds)").fill("5")
        await page.get_by_role("button", name="Add rule").click()
        row = page.locator("table.rules tbody tr")
        await expect(row.locator("th")).to_have_text(HOSTILE)
        await expect(row.locator("td").first).to_have_text(
            "any agent/press-1/temperature above 80, clears at 75, held 5 s"
        )
        (rule,) = (await api("GET", f"{base}/api/v1/alert-rules"))["items"]
        assert rule["condition"]["clear_threshold"] == 75
        assert rule["condition"]["hold_seconds"] == 5
        await checked(watched, "alerts-admin")

        await row.get_by_role("button", name=f"Disable rule {HOSTILE}").click()
        await expect(row.locator("td").nth(1)).to_have_text("○ disabled")
        assert (await api("GET", f"{base}/api/v1/alert-rules/{rule['id']}"))["enabled"] is False
        await row.get_by_role("button", name=f"Enable rule {HOSTILE}").click()
        await expect(row.locator("td").nth(1)).to_have_text("✓ enabled")
        await row.get_by_role("button", name=f"Delete rule {HOSTILE}").click()
        await expect(page.locator("table.rules tbody")).to_have_text("No rule yet.")
        assert (await api("GET", f"{base}/api/v1/alert-rules"))["items"] == []
        assert watched.errors == [], pretty(watched.errors)


def command_agent(
    simulator: Simulator, mosquitto: MosquittoServer, prefix: str, tmp_path: Path
) -> AgentConfig:
    """An agent of the simulator's Modbus device, its speed_setpoint writable (0..20000) and
    allowed within 1000..15000."""
    port = simulator.modbus_port
    assert port is not None, "the simulator serves Modbus"
    device = modbus_device(port)
    for tag in device["tags"]:
        if tag["name"] == "speed_setpoint":
            tag.update(writable=True, min=0, max=20000)
    config = agent_config(
        agent_id=AGENT,
        buffer=tmp_path / "buffer.sqlite",
        mqtt_url=mosquitto.url,
        prefix=prefix,
        devices=[device],
    )
    allow = [{"device": "sim-*", "tag": "speed_setpoint", "min": 1000, "max": 15000}]
    settings = CommandSettings.model_validate({"enabled": True, "allow": allow})
    mqtt = config.mqtt.model_copy(update={"client_id": f"{prefix}-agent"})
    return config.model_copy(update={"commands": settings, "mqtt": mqtt})


async def connected(service: AgentService) -> None:
    """The agent is connected to the broker and to its device."""

    async def up() -> bool:
        snapshot = await service.health.snapshot(service.mqtt.connected)
        return snapshot.connected and snapshot.devices["sim-modbus"] == "connected"

    await eventually(up, timeout=20, what="the agent connected to the broker and the simulator")


async def send(page: Page, value: str) -> None:
    """Fill the command form for the simulator's speed setpoint and send it."""
    await page.get_by_label("Agent", exact=True).fill(AGENT)
    await page.get_by_label("Device", exact=True).fill("sim-modbus")
    await page.get_by_label("Tag", exact=True).fill("speed_setpoint")
    await page.get_by_label("Value type").select_option("number")
    await page.get_by_label("Value", exact=True).fill(value)
    await page.get_by_role("button", name="Send command").click()


async def test_an_operator_sends_a_command_and_sees_it_applied_then_refused(
    plant_collector_config: Callable[..., CollectorConfig],
    simulator: Simulator,
    mosquitto: MosquittoServer,
    topic_prefix: str,
    tmp_path: Path,
    watched: Watched,
) -> None:
    page = watched.page
    async with (
        running_collector(plant_collector_config(sections=COMMANDS_FAST)) as base,
        running_agent(command_agent(simulator, mosquitto, topic_prefix, tmp_path)) as service,
    ):
        await put_plant(base)
        operator = await new_key(base, "operator")
        await connected(service)
        await sign_in(page, base, operator)
        await page.get_by_role("link", name="Commands").click()
        await expect(page.locator("h1")).to_have_text("Commands")
        await expect(page.locator("table.commands tbody")).to_have_text("No command yet.")

        await send(page, "7000")
        answer = page.locator("#command-answer .command-answer")
        await expect(answer).to_have_attribute("data-status", "applied")
        await expect(answer.locator(".command-word")).to_have_text("Applied")
        await expect(answer.locator(".command-detail")).to_have_text(
            "sim-modbus/speed_setpoint was 12000, now reads 7000."
        )
        assert simulator.machine.values["speed_setpoint"] == 7000

        await send(page, "16000")
        await expect(answer).to_have_attribute("data-status", "refused")
        await expect(answer.locator(".command-detail")).to_have_text(
            "The agent refused: sim-modbus/speed_setpoint: 16000 is above"
            " commands.allow[0].max 15000"
        )
        rows = page.locator("table.commands tbody tr")
        await expect(rows).to_have_count(2)
        await expect(rows.first).to_have_attribute("data-status", "refused")
        await expect(rows.nth(1)).to_have_attribute("data-status", "applied")
        await expect(rows.nth(1)).to_contain_text("12000 → 7000")
        audit = (await api("GET", f"{base}/api/v1/commands"))["items"]
        assert [c["status"] for c in audit] == ["refused", "applied"]
        assert all(c["requested_by_name"] == "operator key" for c in audit)

        # A value that is not of its type is named before anything is sent.
        await page.get_by_label("Value", exact=True).fill("fast")
        await page.get_by_role("button", name="Send command").click()
        await expect(page.locator("#command-error")).to_have_text('value: "fast" is not a number')
        await checked(watched, "commands")
