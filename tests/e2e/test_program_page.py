"""The review page's program page in Debian's chromium: a viewer signs in, the charts render
(their marks present, the stylesheet's colours applied), nothing trips the CSP, and the page
fits a phone and a laptop. Screenshots go to test-output/program/."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from aiohttp import DummyCookieJar
from playwright.async_api import Page, ViewportSize

from tests import program_fixture
from tests.helpers import ClientFactory, chromium, free_port, make_settings, needs_chromium
from tracker.web.app import create_app

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "program"
PHONE: ViewportSize = {"width": 390, "height": 844}
LAPTOP: ViewportSize = {"width": 1366, "height": 900}
# chart id -> (mark selector, at least how many)
MARKS = {"money": ("rect.bar", 6), "roi": ("circle.point", 3), "funnel": ("rect.bar", 6),
         "experiment": ("line.ci", 6), "experiment-roi": ("circle.point", 2),
         "heat": ("rect.cell", 7 * 24)}


async def check_charts(page: Page, width: int) -> None:
    for chart, (mark, at_least) in MARKS.items():
        svg = page.locator(f"svg#chart-{chart}")
        assert await svg.is_visible(), chart
        assert await svg.get_attribute("role") == "img"
        assert await page.locator(f"svg#chart-{chart} > title").text_content()
        assert await page.locator(f"svg#chart-{chart} {mark}").count() >= at_least, chart
        box = await svg.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 60, (chart, box)
    # The stylesheet's colours reached the SVG (no inline style anywhere).
    fill = await page.eval_on_selector("svg#chart-money rect.bar.s1",
                                       "r => getComputedStyle(r).fill")
    assert fill == "rgb(31, 95, 191)"
    busiest = await page.locator("svg#chart-heat rect.cell.q5").count()
    assert busiest == 1  # Wednesday 20:00, 7 clicks
    # The March ROI is drawn below zero, in the negative colour.
    assert await page.locator("svg#chart-roi circle.point.neg").count() == 1
    # The variant named like markup is text: no element made of it.
    assert "<script>" in (await page.locator("svg#chart-experiment").text_content() or "")
    assert await page.evaluate("document.querySelectorAll('svg script').length") == 0
    assert await page.evaluate("document.querySelectorAll('script').length") == 1
    # Nothing wider than the screen (the heatmap scrolls inside its box).
    assert await page.evaluate("document.documentElement.scrollWidth") <= width + 2


@needs_chromium
async def test_the_program_page_draws_its_charts(
        dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
        aiohttp_client: ClientFactory) -> None:
    await program_fixture.build(conn)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    await aiohttp_client(create_app(make_settings(tmp_path / "d", dsn, public_url=base)),
                         cookie_jar=DummyCookieJar(), server_kwargs={"port": port})
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    async with chromium() as browser:
        for name, viewport, mobile in (("phone", PHONE, True), ("laptop", LAPTOP, False)):
            context = await browser.new_context(viewport=viewport, is_mobile=mobile,
                                                has_touch=mobile, device_scale_factor=2)
            page = await context.new_page()
            page.on("console", lambda msg: problems.append(msg.text)
                    if msg.type in ("error", "warning") else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            await page.goto(f"{base}/review/login")
            await page.fill("#token", tokens["viewer"])
            await page.click("form.card button")
            await page.wait_for_url(f"{base}/review/programs")
            await page.click("a[href='/review/programs/acme']")
            await page.wait_for_url(f"{base}/review/programs/acme")
            await page.wait_for_load_state("load")
            await check_charts(page, viewport["width"])
            await page.screenshot(path=str(SHOTS / f"program-{name}.png"), full_page=True)
            # Each chart's numbers are one tap away.
            await page.click("#funnel details summary")
            assert await page.is_visible("#funnel details table")
            await page.locator("#heat").screenshot(path=str(SHOTS / f"heat-{name}.png"))
            await context.close()
    assert problems == [], problems
