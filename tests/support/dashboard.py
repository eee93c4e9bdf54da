"""The dashboard in a real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = os.environ.get("PROMPTPULSE_CHROMIUM", "/usr/bin/chromium")


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            await browser.close()


async def text(page: Page, selector: str) -> str:
    return (await page.locator(selector).inner_text()).strip()


async def signed_in(browser: Browser, url: str, read_key: str) -> tuple[Page, list[str]]:
    """A page of the dashboard served at ``url``, signed in with ``read_key``, the deployment
    ``demo`` listed; and the list its page errors (uncaught script exceptions) are collected in."""
    page = await (await browser.new_context(viewport={"width": 1440, "height": 900})).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(f"{url}/")
    await page.fill("#read-key", read_key)
    await page.click("#signin button[type=submit]")
    await page.wait_for_selector("#deployments tr[data-deployment=demo]")
    return page, errors
