"""Tests of what the owner sees: metrics, traces, the report and the dashboard.

Shared here: a scripted flow through the MCP tools (two purchases, a code, a refund, two refused purchases, a
purchase the provider refuses, a provider 500), and readers of the raw ledger to check figures against.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from smsrent.mcp.app import App
from smsrent.mcp.http import http_app
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import sandbox_app
from tests.mcp import fails, local_id, ok, rent_getatext, rent_gotsms, wait_while

TOKEN = "observe-token-5b7e1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAPS = {"max_price": Decimal("5"), "daily_budget": Decimal("10")}
SMS_TEXT = "Your Telegram code is 048213. Do not share it. Call +18005550199 for help."
CODE = "048213"


@dataclass(frozen=True)
class Flow:
    """What the scripted flow did, for tests that look for its traces."""

    phones: list[str]
    codes: list[str]
    texts: list[str]


@asynccontextmanager
async def served(
    data_dir: Path, gotsms: GotSmsSandbox, getatext: GetatextSandbox, **overrides: object
) -> AsyncIterator[tuple[App, str]]:
    """The HTTP server over both sandboxes on loopback, with the owner's token; yields the app and its base URL."""
    app = sandbox_app(data_dir, gotsms, getatext, http_token=TOKEN, **overrides)
    async with serve_loopback(http_app(app, "127.0.0.1")) as base:
        yield app, base


@asynccontextmanager
async def http_client(base: str) -> AsyncIterator[Client]:
    """An MCP client over streamable HTTP carrying the owner's token."""
    async with (
        httpx2.AsyncClient(headers=AUTH) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
    ):
        yield client


async def scripted_flow(client: Client, gotsms: GotSmsSandbox, getatext: GetatextSandbox) -> Flow:
    """Rent on GotSMS and receive a code; rent on Getatext and refund it; two purchases refused by the caps (one
    before any provider is chosen); a GotSMS purchase the provider refuses (balance too low); a GotSMS 500 that a
    retry rides over. Run with `CAPS`."""
    kept = await rent_gotsms(client)
    rent_id = local_id(kept["rental_id"])
    got = await wait_while(client, kept["rental_id"], lambda: gotsms.deliver(rent_id, SMS_TEXT, CODE))
    assert got.structured_content is not None
    assert got.structured_content["code"] == CODE

    given_back = await rent_getatext(client)
    await ok(client, "refund", rental_id=given_back["rental_id"])

    await fails(client, "rent_number", service="Telegram", max_price="6")  # above SMSRENT_MAX_PRICE
    await fails(client, "rent_number", service="Telegram", provider="gotsms", max_price="0.5")  # plan costs 1.00

    balance, gotsms.balance = gotsms.balance, Decimal("0.10")
    await fails(client, "rent_number", service="Telegram", provider="gotsms", max_price="2")
    gotsms.balance = balance

    gotsms.inject("GET", "/api/account", "500")
    await ok(client, "get_balance", provider="gotsms")
    return Flow(
        phones=[kept["phone"], given_back["phone"], "+18005550199"],
        codes=[CODE],
        texts=[SMS_TEXT],
    )


def ledger_rows(data_dir: Path, query: str) -> list[tuple[Any, ...]]:
    """Rows straight from the ledger file, read with plain SQL (not through the code under test)."""
    with closing(sqlite3.connect(data_dir / "ledger.sqlite3")) as db:
        return db.execute(query).fetchall()
