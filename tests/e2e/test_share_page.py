"""The share page in Debian's chromium at phone width: every button leads where it should and
records a share on its channel, copy and the share sheet work through the page's script (and
copy without it), and a click through a channel's link lands in the funnel under that channel.
Screenshots go to test-output/share/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
from aiohttp import DummyCookieJar
from playwright.async_api import Page, Response, Route, ViewportSize

from tests.helpers import (
    ClientFactory,
    auth,
    chromium,
    free_port,
    make_link,
    make_settings,
    needs_chromium,
    wait_for_clicks,
)
from tracker.web.app import create_app

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "share"
PHONE: ViewportSize = {"width": 390, "height": 844}
SETTINGS: dict[str, Any] = {
    "reward": {"currency": "USD", "rules": [
        {"beneficiary": "referrer", "on": "purchase", "flat": 2000},
        {"beneficiary": "referee", "on": "purchase", "flat": 1000}]},
    "share": {"message": "{name} here: Acme is great, {referee_reward} off for you: {link}"},
}
# Where each button must lead: the channel's own link in the message (or URL) it carries.
TARGETS = {
    "email": r"mailto:\?subject=Acme&body=(?P<text>.+)",
    "sms": r"sms:\?&body=(?P<text>.+)",
    "whatsapp": r"https://wa\.me/\?text=(?P<text>.+)",
    "x": r"https://x\.com/intent/post\?text=(?P<text>.+)",
    "linkedin": r"https://www\.linkedin\.com/sharing/share-offsite/\?url=(?P<url>.+)",
    "facebook": r"https://www\.facebook\.com/sharer/sharer\.php\?u=(?P<url>.+)",
}
STUB = re.compile(r"https://(wa\.me|x\.com|www\.linkedin\.com|www\.facebook\.com|"
                  r"shop\.acme\.test)/.*")


async def stub(route: Route) -> None:
    """The outside sites, answered locally (the test machine has no network)."""
    await route.fulfill(status=200, content_type="text/html", body="<p>elsewhere</p>")


class Presses:
    """Every POST of the share page's form, passed on to the server; what it answered."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, str]] = []

    async def __call__(self, route: Route) -> None:
        if route.request.method != "POST":
            await route.continue_()
            return
        response = await route.fetch(max_redirects=0)
        self.answers.append((response.status, response.headers.get("location", "")))
        await route.fulfill(response=response)

    async def press(self, page: Page, channel: str) -> str:
        """Press a channel's button; the 303 Location the share page answered."""
        before = len(self.answers)
        await page.click(f"button[value={channel}]")
        for _ in range(400):
            if len(self.answers) > before:
                break
            await page.wait_for_timeout(25)
        assert len(self.answers) == before + 1, channel
        status, location = self.answers[-1]
        assert status == 303, channel
        return location


def carried_link(channel: str, location: str) -> str:
    """The link the target carries (the last word of its text, or its URL)."""
    match = re.fullmatch(TARGETS[channel], location)
    assert match is not None, (channel, location)
    query = parse_qs(urlsplit(location.replace("mailto:", "mailto://x/")
                              .replace("sms:", "sms://x/")).query)
    key = "url" if "url" in match.groupdict() and match["url"] else "text"
    value = query.get({"url": "url", "text": "text"}[key]) or query.get("u") \
        or query.get("body")
    assert value is not None, location
    return value[0].split()[-1]


@needs_chromium
async def test_every_button_of_the_share_page_on_a_phone(
        dsn: str, tmp_path: Path, tokens: dict[str, str], conn: asyncpg.Connection,
        aiohttp_client: ClientFactory) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    client = await aiohttp_client(
        create_app(make_settings(tmp_path / "d", dsn, public_url=base)),
        cookie_jar=DummyCookieJar(), server_kwargs={"port": port})
    await make_link(client, tokens, referrer="alice", code="al", settings=SETTINGS)
    resp = await client.post("/api/v1/referrers", headers=auth(tokens["integration"]),
                             json={"program": "acme", "external_id": "alice",
                                   "name": "Dana"})
    share_url = (await resp.json())["share_url"]
    assert share_url.startswith(f"{base}/s/")
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    async with chromium() as browser:
        context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True,
                                            device_scale_factor=2)
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        await context.route(STUB, stub)
        presses = Presses()
        await context.route("**/share", presses)
        page = await context.new_page()
        page.on("console", lambda msg: problems.append(msg.text)
                if "Content Security Policy" in msg.text else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        loaded: list[Response] = []

        def collect(response: Response) -> None:
            loaded.append(response)

        page.on("response", collect)
        await page.goto(share_url)
        await page.wait_for_load_state("load")
        # Light on a phone: the page, its stylesheet and script, all from this server.
        assert {urlsplit(r.url).netloc for r in loaded} == {f"127.0.0.1:{port}"}
        weight = sum([len(await r.body()) for r in loaded])
        print(f"share page: {len(loaded)} requests, {weight} bytes")
        assert len(loaded) == 3 and weight < 16_000
        page.remove_listener("response", collect)
        assert await page.inner_text("#link") == f"{base}/r/al"
        assert "Dana here: Acme is great, 10.00 USD off for you" in \
            await page.input_value("#message")
        # Laid out for the phone: nothing wider than the screen, buttons big enough to tap.
        assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 2
        box = await page.locator("button[value=email]").bounding_box()
        assert box is not None and box["height"] >= 44
        # The stylesheet applied (its integrity checked): the e-mail button's colour.
        assert await page.eval_on_selector(
            "button[value=email]", "b => getComputedStyle(b).backgroundColor") \
            == "rgb(91, 60, 196)"
        # Linux chromium has no share sheet: its button stays hidden.
        has_sheet = await page.evaluate("typeof navigator.share === 'function'")
        assert await page.is_visible("button[value=share_sheet]") == has_sheet
        await page.screenshot(path=str(SHOTS / "share-phone.png"), full_page=True)
        # Keyboard: the first button takes the focus, with a visible outline.
        await page.focus("button[value=copy]")
        await page.keyboard.press("Tab")
        outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline == "solid"

        # Copy: the script records the share and puts the copy channel's message on the
        # clipboard.
        await page.click("button[value=copy]")
        await page.locator("#status", has_text="Copied").wait_for()
        copied = await page.evaluate("navigator.clipboard.readText()")
        await page.screenshot(path=str(SHOTS / "share-copied-phone.png"), full_page=True)

        # Each channel: a 303 to its target, carrying the channel's own link.
        links = {"copy": copied.split()[-1]}
        for channel in TARGETS:
            # A page each: after mailto: or sms: a page is left to the phone's app.
            tab = await context.new_page()
            tab.on("console", lambda msg: problems.append(msg.text)
                   if "Content Security Policy" in msg.text else None)
            await tab.goto(share_url)
            location = await presses.press(tab, channel)
            links[channel] = carried_link(channel, location)
            if location.startswith("https://"):
                await tab.wait_for_url(STUB)  # followed: the page's CSP let the form go there
            await tab.close()
        assert problems == []

        # A share sheet where the browser has one (a stand-in for the phone's).
        sheet_page = await context.new_page()
        await sheet_page.add_init_script(
            "navigator.share = (data) => { window.sharedText = data.text; "
            "return Promise.resolve(); };")
        await sheet_page.goto(share_url)
        assert await sheet_page.is_visible("button[value=share_sheet]")
        await sheet_page.screenshot(path=str(SHOTS / "share-sheet-phone.png"), full_page=True)
        await sheet_page.click("button[value=share_sheet]")
        await sheet_page.locator("#status", has_text="Shared.").wait_for()
        links["share_sheet"] = (await sheet_page.evaluate("window.sharedText")).split()[-1]

        # Without JavaScript every button still works: copy shows the message to copy by hand.
        bare = await browser.new_context(viewport=PHONE, java_script_enabled=False)
        bare_page = await bare.new_page()
        await bare_page.goto(share_url)
        await bare_page.click("button[value=copy]")
        await bare_page.wait_for_url("**copy=1**")
        assert (await bare_page.input_value("#message")).endswith(links["copy"])
        await bare_page.screenshot(path=str(SHOTS / "share-copy-nojs-phone.png"),
                                   full_page=True)
        await bare.close()

        # A friend follows the WhatsApp link: the redirect sends them to the shop (whose
        # answer stands in here: a route does not see a redirect's next request).
        landed: list[str] = []

        async def redirect(route: Route) -> None:
            response = await route.fetch(max_redirects=0)
            landed.append(response.headers.get("location", ""))
            await stub(route)

        # (Headless chromium's own user agent names it: a bot, rightly not counted.)
        friend = await browser.new_context(viewport=PHONE, user_agent=(
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Mobile Safari/537.36"))
        await friend.route("**/r/**", redirect)
        await (await friend.new_page()).goto(links["whatsapp"])
        await friend.close()
        assert landed[0].startswith("https://shop.acme.test/landing?src=ref&rg_cid=")

    # One link per channel, each its own, on the referrer's destination; one share each.
    rows = await conn.fetch("SELECT code, channel, destination FROM links "
                            "WHERE channel IS NOT NULL")
    by_channel = {r["channel"]: r for r in rows}
    assert set(by_channel) == set(links)
    for channel, link in links.items():
        assert link == f"{base}/r/{by_channel[channel]['code']}", channel
        assert by_channel[channel]["destination"] == "https://shop.acme.test/landing?src=ref#top"
    shares = await conn.fetch("SELECT channel, source FROM shares ORDER BY id")
    assert sorted(s["channel"] for s in shares) == sorted(links)
    assert {s["source"] for s in shares} == {"page"}

    # The click lands in the funnel under WhatsApp.
    assert await wait_for_clicks(conn, 1) == 1
    resp = await client.get("/api/v1/reports/funnel?program=acme&by=channel",
                            headers=auth(tokens["viewer"]))
    rows_by = {r["channel"]: r for r in (await resp.json())["rows"]}
    assert rows_by["whatsapp"]["clicks"] == 1 and rows_by["whatsapp"]["shared"] == 1
    assert all(rows_by[c]["clicks"] == 0 for c in links if c != "whatsapp")
