"""The dashboard in a real browser: Debian's headless chromium, driven by Playwright, against the HTTP server on
loopback over the sandboxes. It asks for the token once, shows spend and a rental appear after a purchase made
through the MCP tools, counts the rental down, shows an SMS whose text is an HTML payload as text without running
it, masks codes until clicked, and the data routes refuse requests without the header or with a credential in the
query string.

Playwright's Python package drives the system browser (`executable_path`); `playwright install` (its own browser
download) is never used. CI installs chromium; elsewhere the test is skipped when it is missing.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, async_playwright, expect
from scripts.dashboard_screenshot import open_chromium

from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.mcp import local_id, ok, rent_gotsms
from tests.observe import AUTH, CAPS, TOKEN, http_client, served

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.browser]

PAYLOAD = "<img src=x onerror=\"window.__pwned=1;fetch('/pwned')\"> code 731904"
CODE = "731904"
SEEN = 15_000  # ms for the page's next refresh (every 3 s) to show a change


async def test_dashboard_in_chromium(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    requests: list[str] = []
    problems: list[str] = []
    async with (
        served(tmp_path, gotsms_sandbox, getatext_sandbox, **CAPS) as (_, base),
        async_playwright() as playwright,
    ):
        assert CHROMIUM is not None, "install Debian's chromium: apt-get install -y chromium"
        browser = await open_chromium(playwright, CHROMIUM, tmp_path / "profile")
        page = await browser.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.on("console", lambda message: _console(message, problems))
        page.on("pageerror", lambda error: problems.append(str(error)))

        # The token is asked for once, then kept for the tab.
        await page.goto(f"{base}/dashboard")
        await expect(page.locator("#login")).to_be_visible()
        await page.fill("#token", TOKEN)
        await page.click("#login button[type=submit]")
        await expect(page.locator("#board")).to_be_visible()
        await expect(page.locator("#spend-net")).to_have_text("0.00")
        await expect(page.locator("#active-empty")).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('smsrent.token')") == TOKEN
        await page.reload()
        await expect(page.locator("#board")).to_be_visible()
        await expect(page.locator("#login")).to_be_hidden()

        # A purchase through the MCP tools: the spend and the rental appear, and the rental counts down.
        async with http_client(base) as client:
            rental = await rent_gotsms(client)
            row = page.locator("#active tbody tr", has_text=rental["rental_id"])
            await expect(row).to_be_visible(timeout=SEEN)
            await expect(page.locator("#spend-net")).to_have_text("1.00", timeout=SEEN)
            await expect(page.locator("#spend-budget")).to_contain_text("1.00 of 10.00 USD daily budget")
            await expect(row.locator("td.phone")).to_have_text(rental["phone"])
            await expect(row.locator("td").nth(1)).to_have_text("owner")  # whose it is
            countdown = await row.locator("td.countdown").inner_text()
            assert re.fullmatch(r"\d+h \d\dm \d\ds", countdown), countdown
            await expect(row.locator("td.countdown")).not_to_have_text(countdown, timeout=5_000)
            assert await page.locator("#spend-chart path.spend").count() == 1
            assert await page.locator("#spend-chart line.budget").count() == 1

            # An SMS whose text is HTML with a script in it: shown as text, nothing runs, the code is masked.
            gotsms_sandbox.deliver(local_id(rental["rental_id"]), PAYLOAD, CODE)
            await ok(client, "wait_for_code", rental_id=rental["rental_id"], timeout_seconds=10)
        message = page.locator("#messages tbody tr", has_text=rental["rental_id"])
        await expect(message).to_be_visible(timeout=SEEN)
        reveal = message.locator("button.reveal")
        await expect(reveal).to_have_text("••••••")
        await expect(message.locator("td.sms")).to_have_text("hidden until shown")
        assert CODE not in await page.locator("#messages").inner_text()
        await reveal.click()
        await expect(reveal).to_have_text(CODE)
        await expect(message.locator("td.sms")).to_have_text(PAYLOAD)
        await page.wait_for_timeout(3_500)  # a refresh redraws the table: the code stays shown, the text inert
        await expect(message.locator("td.sms")).to_have_text(PAYLOAD)
        assert await page.locator("#messages img").count() == 0
        assert await page.evaluate("window.__pwned") is None
        await expect(page.locator("#delivered")).to_have_text("1")
        await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

        # The data routes refuse a request without the header, or with a credential in the query string.
        refused = {}
        for route in ("/dashboard/data", "/metrics"):
            for query, headers in (("", {}), (f"?token={TOKEN}", {}), (f"?token={TOKEN}", AUTH), ("", AUTH)):
                answer = await page.request.get(base + route + query, headers=headers)
                refused[f"{route}{query} {'header' if headers else 'none'}"] = answer.status
        await browser.close()

    assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    assert refused == {
        "/dashboard/data none": 401,
        f"/dashboard/data?token={TOKEN} none": 400,
        f"/dashboard/data?token={TOKEN} header": 400,
        "/dashboard/data header": 200,
        "/metrics none": 401,
        f"/metrics?token={TOKEN} none": 400,
        f"/metrics?token={TOKEN} header": 400,
        "/metrics header": 200,
    }
    assert not [url for url in requests if "pwned" in url or url.rstrip("/").endswith("/x")]
    assert not [url for url in requests if TOKEN in url]
    assert problems == []


def _console(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type == "error":
        problems.append(message.text)
