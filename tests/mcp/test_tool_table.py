"""The tool table (`tools.TOOLS`), registration from it, and tools called without an MCP client.

A tool is a module-level function taking a `Context`: a test builds the server state and a context around it
(`tool_context`), then calls the function itself (its domain result, its domain errors) or goes through
`MCPServer.call_tool` (what the SDK sends: lean structured content, the same JSON compact as text).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import cast

import anyio
import pytest
from mcp.server import MCPServer, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.session import ServerSession
from mcp.types import TextContent

from smsrent.domain.errors import UnknownRental
from smsrent.mcp import tools
from smsrent.mcp.state import AppState
from smsrent.mcp.subscriptions import Subscriptions
from smsrent.mcp.tools import TOOLS
from smsrent.mcp.views import BalanceResult, PlansResult
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.delivery import Delivery
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger.sqlite import SqliteLedger
from smsrent.service.rentals import Rentals
from tests.helpers import getatext_adapter, gotsms_adapter, settings
from tests.mcp import local_id

pytestmark = pytest.mark.anyio

NEEDS = {
    "get_balance": "read",
    "list_plans": "read",
    "list_rentals": "read",
    "get_messages": "read",
    "wait_for_code": "read",
    "wake_up": "read",
    "rent_number": "spend",
    "refund": "spend",
    "extend_rental": "spend",
    "set_auto_renew": "spend",
    "finish_rental": "spend",
}


class Session:
    """The part of a session the tools use: progress reports, recorded."""

    def __init__(self) -> None:
        self.progress: list[tuple[float, float | None, str | None]] = []

    async def report_progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        self.progress.append((progress, total, message))


def tool_context(state: AppState, session: Session | None = None) -> Context[AppState]:
    """A tool's context outside any connection: the server state, and a session that records progress."""
    request = ServerRequestContext(
        session=cast(ServerSession, session or Session()),
        lifespan_context=state,
        protocol_version="2026-07-28",
        method="tools/call",
    )
    return Context(request_context=request)


@pytest.fixture
async def state(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> AsyncIterator[AppState]:
    """The state a running server holds: both sandboxes, a ledger, the pollers running."""
    adapters = [gotsms_adapter(gotsms_sandbox), getatext_adapter(getatext_sandbox)]
    ledger = await SqliteLedger.open(tmp_path / "ledger.sqlite3")
    rentals = Rentals(adapters, ledger, MoneyGuard())
    delivery = Delivery(rentals)
    async with anyio.create_task_group() as tg:
        tg.start_soon(delivery.run)
        yield AppState(settings=settings(tmp_path), rentals=rentals, delivery=delivery, subscriptions=Subscriptions())
        tg.cancel_scope.cancel()
    await ledger.close()
    for adapter in adapters:
        await adapter.aclose()


# -- The table --------------------------------------------------------------------------------------------------


def test_the_table_says_what_each_tool_needs() -> None:
    assert {spec.name: spec.needs for spec in TOOLS} == NEEDS


async def test_registration_takes_what_the_filter_allows() -> None:
    """Read-only mode is `allow=reads_only`; any other filter over the table (a scope, say) works the same."""
    reads, one = MCPServer[AppState]("reads"), MCPServer[AppState]("one")
    tools.register(reads, allow=tools.reads_only)
    tools.register(one, allow=lambda spec: spec.name == "get_balance")
    assert {t.name for t in await reads.list_tools()} == {name for name, need in NEEDS.items() if need == "read"}
    assert [t.name for t in await one.list_tools()] == ["get_balance"]


async def test_descriptions_carry_no_source_indentation() -> None:
    every = MCPServer[AppState]("every")
    tools.register(every)
    for tool in await every.list_tools():
        description = tool.description or ""
        assert "  " not in description, tool.name
        assert description.count("\n") == 1, tool.name  # the summary line, then the rest
        assert description == description.strip(), tool.name


# -- Called without a client ------------------------------------------------------------------------------------


async def test_a_tool_function_called_directly(state: AppState) -> None:
    ctx = tool_context(state)
    balance = await tools.get_balance(ctx, provider="getatext")
    assert isinstance(balance, BalanceResult)
    assert [(b.provider, b.amount) for b in balance.balances] == [("getatext", Decimal("20.00"))]
    assert balance.sandbox is True

    plans = await tools.list_plans(ctx, service="telegram", limit=2)
    assert isinstance(plans, PlansResult)
    assert (len(plans.plans), plans.plans[0].plan_id, plans.count) == (2, "getatext:telegram", 8)
    assert "limit=8" in plans.next_step

    with pytest.raises(UnknownRental):  # a function raises the domain error; registration makes it a tool error
        await tools.get_messages(ctx, rental_id="getatext:99999")


async def test_wait_for_code_called_directly_reports_progress(state: AppState, gotsms_sandbox: GotSmsSandbox) -> None:
    plan = await state.rentals.quote(
        max_price=Decimal(2), plan_id=None, service="Telegram", country="USA", provider="gotsms"
    )
    rental_id = (await state.rentals.buy(plan, Decimal(2))).rental.rental_id
    session = Session()
    ctx = tool_context(state, session)
    gotsms_sandbox.deliver(local_id(rental_id), "Your code is 004211", "004211")
    with anyio.fail_after(10):
        result = await tools.wait_for_code(ctx, rental_id=rental_id, timeout_seconds=5)
    assert (result.outcome, result.code, result.rental_status) == ("code_received", "004211", "active")
    assert session.progress  # reported through the context's session


async def test_call_tool_without_a_client_sends_lean_compact_json(state: AppState) -> None:
    """`MCPServer.call_tool` with a context: what the registered tool sends, and its domain errors as tool errors."""
    mcp = MCPServer[AppState]("registry")
    tools.register(mcp)
    result = await mcp.call_tool("get_balance", {"provider": "gotsms"}, context=tool_context(state))
    assert not result.is_error
    [text] = result.content
    assert isinstance(text, TextContent)
    assert text.text == '{"balances":[{"provider":"gotsms","amount":"25.00"}],"currency":"USD","sandbox":true}'
    assert json.loads(text.text) == result.structured_content

    with pytest.raises(ToolError, match="No rental getatext:99999 is known"):
        await mcp.call_tool("refund", {"rental_id": "getatext:99999"}, context=tool_context(state))
