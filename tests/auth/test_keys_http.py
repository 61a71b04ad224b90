"""Agent keys over real HTTP on loopback, on both protocol eras: what a key's scopes let it list and call, sessions
bound to the agent that opened them, the owner's routes, the caller as the tools see it, and the agents file
changing under a running server."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context
from mcp.types import ElicitResult, InputRequiredResult

from smsrent import agents
from smsrent.agents import CHECK_EVERY
from smsrent.mcp.app import App
from smsrent.mcp.auth import principal
from smsrent.mcp.http import http_app
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.auth import ADMIN_KEY, ALL_TOOLS, READ_TOOLS, READER_KEY, SPENDER_KEY, agents_toml, bearer, two_agents_file
from tests.helpers import sandbox_app
from tests.mcp import fails, ok, posts, rent_gotsms, text_of
from tests.mcp.served import INITIALIZE, MCP_HEADERS, TOKEN, authorized, open_session, served

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

LIMITS = {"agent_daily_budget": Decimal("10"), "agent_max_price": Decimal("2")}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 5, "method": "tools/list"}


@pytest.fixture
def agents_path(tmp_path: Path) -> Path:
    return two_agents_file(tmp_path / "agents.toml")


@pytest.fixture
def keyed_app(
    tmp_path: Path, agents_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> App:
    """The owner token and the agents file, with default agent limits."""
    return sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox, http_token=TOKEN, agents_file=agents_path, **LIMITS)


async def test_a_read_key_lists_and_calls_only_the_read_tools(
    keyed_app: App, mode: str, gotsms_sandbox: GotSmsSandbox
) -> None:
    async with served(keyed_app) as base:
        async with authorized(base, mode, READER_KEY) as reader:
            assert {tool.name for tool in (await reader.list_tools()).tools} == READ_TOOLS
            refused = await fails(reader, "rent_number", service="Telegram", provider="gotsms", max_price="2")
            assert refused == (
                "Refused: rent_number needs the spend scope, which this credential does not have: ask the owner for"
                " a key or token with spend."
            )
            assert gotsms_sandbox.requests == []  # refused before the plan was even looked up
            for tool in ("refund", "extend_rental", "set_auto_renew", "finish_rental"):
                assert "needs the spend scope" in await fails(reader, tool, rental_id="gotsms:abc", max_price="1")
            balance = await ok(reader, "get_balance", provider="gotsms")
            assert balance["balances"][0]["provider"] == "gotsms"
        assert posts(gotsms_sandbox) == []
        async with authorized(base, mode, SPENDER_KEY) as spender:
            assert {tool.name for tool in (await spender.list_tools()).tools} == ALL_TOOLS
            await rent_gotsms(spender)
        assert posts(gotsms_sandbox) == ["/api/rents"]


async def test_read_only_mode_hides_spend_tools_from_every_credential(
    tmp_path: Path, agents_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    app = sandbox_app(
        tmp_path, gotsms_sandbox, getatext_sandbox, http_token=TOKEN, agents_file=agents_path, read_only=True
    )
    async with served(app) as base:
        for key in (SPENDER_KEY, TOKEN):
            async with authorized(base, "legacy", key) as client:
                assert {tool.name for tool in (await client.list_tools()).tools} == READ_TOOLS
                assert "Unknown tool: rent_number" in await fails(client, "rent_number", service="x", max_price="1")


async def test_a_session_answers_only_the_agent_that_opened_it(keyed_app: App) -> None:
    async with served(keyed_app) as base, httpx.AsyncClient() as http:
        session = await open_session(http, base, bearer(READER_KEY))
        answers = {
            name: (await http.post(f"{base}/mcp", json=TOOLS_LIST, headers={**session, **bearer(key)})).status_code
            for name, key in (("spender", SPENDER_KEY), ("admin", ADMIN_KEY), ("owner", TOKEN), ("reader", READER_KEY))
        }
        stolen_delete = await http.delete(f"{base}/mcp", headers={**session, **bearer(SPENDER_KEY)})
        after = await http.post(f"{base}/mcp", json=TOOLS_LIST, headers={**session, **bearer(READER_KEY)})
    assert answers == {"spender": 404, "admin": 404, "owner": 404, "reader": 200}
    assert stolen_delete.status_code == 404
    assert after.status_code == 200  # the other agents' attempts ended nothing


async def test_the_tools_see_the_caller_with_its_scopes_and_limits(keyed_app: App) -> None:
    """The seam for per-agent money and isolation: `principal(ctx)` in a handler."""

    @keyed_app.mcp.tool()
    async def whoami(ctx: Context) -> str:
        who = principal(ctx)
        return json.dumps(
            {
                "name": who.name,
                "scopes": sorted(who.scopes),
                "daily_budget": str(who.daily_budget),
                "max_price": str(who.max_price),
                "owner": who.is_owner,
                "admin": who.is_admin,
            }
        )

    seen: dict[str, Any] = {}
    async with served(keyed_app) as base:
        for name, key in (("reader", READER_KEY), ("spender", SPENDER_KEY), ("boss", ADMIN_KEY), ("owner", TOKEN)):
            for mode in ("auto", "legacy"):
                async with authorized(base, mode, key) as client:
                    seen[f"{name} {mode}"] = json.loads(text_of(await client.call_tool("whoami", {})))
    for mode in ("auto", "legacy"):
        assert seen[f"reader {mode}"] == {
            "name": "reader",
            "scopes": ["read"],
            "daily_budget": "3.00",  # its entry's
            "max_price": "2",  # SMSRENT_AGENT_MAX_PRICE
            "owner": False,
            "admin": False,
        }
        assert seen[f"spender {mode}"]["scopes"] == ["read", "spend"]
        assert seen[f"spender {mode}"]["daily_budget"] == "10"
        assert seen[f"boss {mode}"]["scopes"] == ["admin", "read"]  # admin implies read, not spend
        assert seen[f"boss {mode}"]["admin"] is True
        assert seen[f"owner {mode}"] == {
            "name": "owner",
            "scopes": ["admin", "read", "spend"],
            "daily_budget": "None",
            "max_price": "None",
            "owner": True,
            "admin": True,
        }


async def test_the_owner_routes_take_the_owner_or_an_admin_key(keyed_app: App) -> None:
    async with served(keyed_app) as base, httpx.AsyncClient(base_url=base) as http:
        answers: dict[str, dict[str, int]] = {}
        for route in ("/metrics", "/dashboard/data"):
            answers[route] = {
                name: (await http.get(route, headers=headers)).status_code
                for name, headers in (
                    ("none", {}),
                    ("wrong", bearer("smsrent_nope")),
                    ("reader", bearer(READER_KEY)),
                    ("spender", bearer(SPENDER_KEY)),
                    ("admin", bearer(ADMIN_KEY)),
                    ("owner", bearer(TOKEN)),
                )
            }
        forbidden = await http.get("/metrics", headers=bearer(SPENDER_KEY))
        anonymous = await http.get("/metrics")
        health = {
            name: (await http.get("/healthz", headers=h)).json()
            for name, h in (("none", {}), ("reader", bearer(READER_KEY)))
        }
    expected = {"none": 401, "wrong": 401, "reader": 403, "spender": 403, "admin": 200, "owner": 200}
    assert answers == {"/metrics": expected, "/dashboard/data": expected}
    assert forbidden.json()["detail"] == (
        "/metrics needs the owner's credential or an agent's with the admin scope; spender has neither."
    )
    assert anonymous.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert health["none"] == {"status": "ok"}
    assert health["reader"]["providers"] == {"gotsms": {"sandbox": True}, "getatext": {"sandbox": True}}


async def test_an_agent_key_in_the_query_string_is_refused(keyed_app: App) -> None:
    async with served(keyed_app) as base, httpx.AsyncClient(base_url=base) as http:
        answers = [
            (await http.get("/healthz", params={"k": key}, headers=bearer(key))).status_code
            for key in (READER_KEY, SPENDER_KEY, TOKEN)
        ]
    assert answers == [400, 400, 400]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20"])
def test_a_non_loopback_bind_accepts_an_agents_file_or_an_issuer_as_its_credential(
    tmp_path: Path, agents_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, host: str
) -> None:
    hosts = ("smsrent.example.org",)
    for credential in (
        {"agents_file": agents_path},
        {"oauth_issuer": "https://auth.example.org", "public_url": "https://smsrent.example.org"},
    ):
        app = sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox, http_allowed_hosts=hosts, **credential)
        assert callable(http_app(app, host))


# -- The agents file changing under a running server ----------------------------------------------------------


async def status_until(http: httpx.AsyncClient, base: str, key: str, wanted: int, seconds: float) -> int:
    """Send `initialize` with `key` until the answer is `wanted` or `seconds` passed; returns the last status."""
    status = 0
    with anyio.move_on_after(seconds):
        while (status := await initialize_status(http, base, key)) != wanted:
            await anyio.sleep(0.2)
    return status


async def initialize_status(http: httpx.AsyncClient, base: str, key: str) -> int:
    answer = await http.post(f"{base}/mcp", json=INITIALIZE, headers={**MCP_HEADERS, **bearer(key)})
    return answer.status_code


async def test_a_removed_key_stops_working_within_seconds(keyed_app: App, agents_path: Path) -> None:
    async with served(keyed_app) as base, httpx.AsyncClient() as http:
        assert await initialize_status(http, base, READER_KEY) == 200
        agents.remove(agents_path, "reader")
        assert await status_until(http, base, READER_KEY, 401, 5 * CHECK_EVERY) == 401
        assert await initialize_status(http, base, SPENDER_KEY) == 200
        with agents_path.open("a") as file:  # and a key added by hand works as soon
            file.write(
                agents_toml({"name": "late", "key_sha256": agents.key_digest("smsrent_late"), "scopes": ["read"]})
            )
        assert await status_until(http, base, "smsrent_late", 200, 5 * CHECK_EVERY) == 200


async def test_a_bad_change_while_running_keeps_the_last_good_file_and_is_logged(
    keyed_app: App, agents_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(keyed_app) as base, httpx.AsyncClient() as http:
        file = anyio.Path(agents_path)
        await file.write_text((await file.read_text()).replace('"spend"]', '"spend"'))  # a syntax error
        with caplog.at_level(logging.WARNING, logger="smsrent"), anyio.move_on_after(5 * CHECK_EVERY):
            while not any("keeping the last good version" in r.getMessage() for r in caplog.records):
                assert await initialize_status(http, base, SPENDER_KEY) == 200
                await anyio.sleep(0.2)
        warnings = [r.getMessage() for r in caplog.records if "keeping the last good version" in r.getMessage()]
        assert len(warnings) == 1
        assert "TOML syntax error" in warnings[0]
        assert "(3 agents)" in warnings[0]
        assert await initialize_status(http, base, READER_KEY) == 200
        assert await initialize_status(http, base, ADMIN_KEY) == 200


@asynccontextmanager
async def asking_client(base: str, credential: str) -> AsyncIterator[Client]:
    """A 2026-era client that says it can elicit (the test answers by hand, through `session.call_tool`)."""

    async def unused(_ctx: object, _params: object) -> ElicitResult:
        raise AssertionError("the test answers input requests itself")

    async with (
        httpx2.AsyncClient(headers=bearer(credential)) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http), elicitation_callback=unused) as client,
    ):
        yield client


async def test_a_sealed_request_state_answers_only_the_agent_it_was_sealed_for(
    tmp_path: Path, agents_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """A 2026-era purchase above SMSRENT_CONFIRM_ABOVE asks the human through an `InputRequiredResult`; its sealed
    `requestState`, replayed by another credential with an approval, buys nothing; the agent that got it can
    complete the purchase."""
    caps = {"confirm_above": Decimal("0.5")}
    app = sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox, http_token=TOKEN, agents_file=agents_path, **caps)
    rent = {"service": "Telegram", "country": "USA", "provider": "gotsms", "max_price": "2"}
    async with served(app) as base, asking_client(base, SPENDER_KEY) as spender:
        asked = await spender.session.call_tool("rent_number", rent, allow_input_required=True)
        assert isinstance(asked, InputRequiredResult), asked
        (request_id,) = asked.input_requests or {}
        approve = {request_id: ElicitResult(action="accept", content={"approve": True})}
        async with asking_client(base, TOKEN) as owner:
            with pytest.raises(MCPError) as stolen:
                await owner.session.call_tool(
                    "rent_number", rent, input_responses=approve, request_state=asked.request_state
                )
        assert posts(gotsms_sandbox) == []
        bought = await spender.session.call_tool(
            "rent_number", rent, input_responses=approve, request_state=asked.request_state
        )
    assert stolen.value.error.data == {"reason": "invalid_request_state"}
    assert not bought.is_error, text_of(bought)
    assert posts(gotsms_sandbox) == ["/api/rents"]
