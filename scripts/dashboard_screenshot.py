"""Take the README's dashboard screenshot: the HTTP server on loopback over the built-in sandbox, a few rentals
through the MCP tools (codes arrive, one refund, one refusal), then Debian's headless chromium opens /dashboard,
enters the token, reveals one code and saves a PNG.

    python scripts/dashboard_screenshot.py                 # writes docs/dashboard.png
    python scripts/dashboard_screenshot.py --out /tmp/d.png

Needs `chromium` (apt-get install -y chromium) and the test extra (playwright). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from playwright.async_api import BrowserContext, Playwright, async_playwright, expect

from smsrent.config import Settings
from smsrent.mcp.app import create_app
from smsrent.mcp.http import http_app
from smsrent.sandbox import serve_loopback

TOKEN = "screenshot-token"
CHROMIUM_FLAGS = [  # headless as root, and no attempts to reach hosts this machine cannot reach
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def open_chromium(playwright: Playwright, chromium: str, profile: Path) -> BrowserContext:
    """Debian's chromium (never a browser `playwright install` downloads), headless, with a fresh user-data dir."""
    return await playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=chromium,
        headless=True,
        args=CHROMIUM_FLAGS,
        viewport={"width": 1100, "height": 860},
    )


async def call(client: Client, tool: str, **arguments: object) -> dict[str, object]:
    result = await client.call_tool(tool, arguments)
    return result.structured_content or {}


async def rentals(base: str) -> None:
    """Codes on a GotSMS and a Getatext number, a GotSMS number still waiting, a refund, a refused purchase."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
    ):
        for arguments in ({"plan_id": "getatext:whatsapp"}, {"service": "Telegram", "provider": "gotsms"}):
            rented = await call(client, "rent_number", max_price="2", **arguments)
            rental_id = rented["rental"]["rental_id"]  # type: ignore[index]
            await call(client, "wait_for_code", rental_id=rental_id, timeout_seconds=30)
        await call(client, "rent_number", service="Google", provider="gotsms", max_price="2")
        given_back = await call(client, "rent_number", service="Discord", provider="gotsms", max_price="2")
        await call(client, "refund", rental_id=given_back["rental"]["rental_id"])  # type: ignore[index]
        await call(client, "rent_number", service="Telegram", max_price="9")  # refused: above SMSRENT_MAX_PRICE


async def main(out: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("install Debian's chromium first: apt-get install -y chromium")
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(
            data_dir=Path(scratch), sandbox=True, http_token=TOKEN, max_price=Decimal(5), daily_budget=Decimal(10)
        )  # type: ignore[call-arg]
        app = create_app(settings)
        async with serve_loopback(http_app(app, "127.0.0.1")) as base, async_playwright() as playwright:
            await rentals(base)
            browser = await open_chromium(playwright, chromium, Path(scratch) / "profile")
            page = await browser.new_page()
            await page.goto(f"{base}/dashboard")
            await page.fill("#token", TOKEN)
            await page.click("#login button[type=submit]")
            await expect(page.locator("#messages tbody tr").first).to_be_visible()
            await page.locator("#messages button.reveal").first.click()
            shot = await page.screenshot(path=str(out), full_page=True)
            await browser.close()
    print(f"wrote {out} ({len(shot)} bytes)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "dashboard.png")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    anyio.run(main, args.out)
