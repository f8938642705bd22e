"""Headless Chromium (Debian's, never a downloaded one) driven by Playwright, against a real
collector serving the built dashboard; axe-core from the dashboard's npm packages."""

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright

from collector.web.dashboard import Dashboard

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ROOT = Path(__file__).parents[2]
AXE = ROOT / "dashboard" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(__file__).parent / "artifacts"
WAIT_MS = 20_000
"""What any one wait in the browser may take (Playwright's default is 30 s; be explicit)."""
VIEWPORTS = {"1280x800": (1280, 800), "800x1280": (800, 1280)}
BROWSER_ZONE = "America/Chicago"
"""Not the site's zone: times on the page must follow the site, not the browser."""
# Records what a page's policy refused; the page's own scripts cannot see this one.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
});
window.__dialogs = 0;
"""


@pytest.fixture(scope="session", autouse=True)
def _dashboard_built() -> None:
    assert Dashboard().built, "the dashboard is not built: run `make dashboard` first"
    assert Path(CHROMIUM).exists(), (
        "Debian's chromium is missing: bash scripts/need-debs.sh chromium"
    )
    assert AXE.exists(), "axe-core is missing: run `make dashboard` (npm ci) first"
    ARTIFACTS.mkdir(exist_ok=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A fresh headless Chromium for one test."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=WAIT_MS
        )
        try:
            yield launched
        finally:
            await launched.close()


class Watched:
    """A page, and what went wrong on it: console errors, refused content, dialogs."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    async def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        await dialog.dismiss()

    async def csp_violations(self) -> list[str]:
        """What the Content-Security-Policy refused on the page so far."""
        return list(await self.page.evaluate("window.__cspViolations"))

    async def axe(self) -> list[dict[str, Any]]:
        """axe-core's serious and critical violations on the page as it is now.

        Evaluated through the DevTools protocol, which the page's policy does not govern (a
        <script> tag would be refused, as it should be).
        """
        await self.page.evaluate(AXE.read_text() + "\n;undefined")
        result = await self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        )
        return [
            {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
            for v in result
            if v["impact"] in ("serious", "critical")
        ]

    async def screenshots(self, name: str) -> list[Path]:
        """The page at each viewport, saved as artifacts; the viewport is left at the first."""
        saved = []
        for size, (width, height) in VIEWPORTS.items():
            await self.page.set_viewport_size({"width": width, "height": height})
            # Readable at this size: nothing wider than the screen (tables scroll in a box).
            await self.page.wait_for_function(
                "document.documentElement.scrollWidth <= window.innerWidth", timeout=WAIT_MS
            )
            path = ARTIFACTS / f"{name}-{size}.png"
            await self.page.screenshot(path=str(path), full_page=True, timeout=WAIT_MS)
            saved.append(path)
        first = next(iter(VIEWPORTS.values()))
        await self.page.set_viewport_size({"width": first[0], "height": first[1]})
        return saved


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A browser context as a control-room screen: 1280x800, in another zone than the site."""
    created = await browser.new_context(
        viewport={"width": 1280, "height": 800}, timezone_id=BROWSER_ZONE, locale="en-GB"
    )
    created.set_default_timeout(WAIT_MS)
    await created.add_init_script(WATCH_CSP)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def watched(context: BrowserContext) -> Watched:
    """A new page of the context, watched."""
    return Watched(await context.new_page())


def pretty(value: Any) -> str:
    """A value as a failure message shows it."""
    return json.dumps(value, indent=1, default=str)
