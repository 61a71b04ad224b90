"""What a client sees in `tools/list` (both eras): titles, descriptions, annotation hints, schemas, read-only mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from mcp.types import Tool

from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import sandbox_app
from tests.mcp import PROTOCOL, fails, ok, posts

pytestmark = pytest.mark.anyio

READ_ONLY_TOOLS = {"get_balance", "list_plans", "list_rentals", "get_messages"}
SPENDING_OR_CHANGING = {"rent_number", "refund", "extend_rental", "set_auto_renew", "finish_rental"}
ALL_TOOLS = READ_ONLY_TOOLS | SPENDING_OR_CHANGING | {"wait_for_code", "wake_up"}


async def listed(client: Client) -> dict[str, Tool]:
    return {tool.name: tool for tool in (await client.list_tools()).tools}


async def test_every_tool_is_listed(client: Client) -> None:
    assert set(await listed(client)) == ALL_TOOLS


async def test_every_tool_has_title_description_and_example(client: Client) -> None:
    for name, tool in (await listed(client)).items():
        assert tool.title, name
        description = tool.description or ""
        assert "Use this" in description or "use this" in description, name
        assert "Example:" in description, name
        assert f"{name}(" in description.split("Example:", 1)[1], name  # the example calls this very tool


async def test_every_tool_sets_all_four_hints(client: Client) -> None:
    for name, tool in (await listed(client)).items():
        hints = tool.annotations
        assert hints is not None, name
        assert hints.read_only_hint is not None, name
        assert hints.destructive_hint is not None, name
        assert hints.idempotent_hint is not None, name
        assert hints.open_world_hint is not None, name


async def test_hint_values_follow_the_product_table(client: Client) -> None:
    tools = await listed(client)
    for name, tool in tools.items():
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is (name in READ_ONLY_TOOLS), name
        assert tool.annotations.open_world_hint is True, name  # every tool talks to a provider
        if name in READ_ONLY_TOOLS:
            assert tool.annotations.destructive_hint is False, name
    refund = tools["refund"].annotations
    assert refund is not None
    assert refund.destructive_hint is True
    rent = tools["rent_number"].annotations
    assert rent is not None
    assert rent.read_only_hint is False
    assert rent.idempotent_hint is False
    wait = tools["wait_for_code"].annotations
    assert wait is not None
    assert wait.read_only_hint is False  # it may wake a number


async def test_every_tool_has_an_object_output_schema(client: Client) -> None:
    for name, tool in (await listed(client)).items():
        assert tool.output_schema is not None, name
        assert tool.output_schema.get("type") == "object", name
        assert tool.output_schema.get("properties"), name


async def test_every_input_property_is_described(client: Client) -> None:
    for name, tool in (await listed(client)).items():
        assert tool.input_schema.get("type") == "object", name
        for prop, schema in tool.input_schema.get("properties", {}).items():
            assert schema.get("description"), f"{name}.{prop}"
        assert "ctx" not in tool.input_schema.get("properties", {}), name


async def test_input_schemas_carry_the_bounds(client: Client) -> None:
    tools = await listed(client)
    wait = tools["wait_for_code"].input_schema
    assert wait["required"] == ["rental_id"]
    assert wait["properties"]["timeout_seconds"]["minimum"] == 1
    assert wait["properties"]["timeout_seconds"]["maximum"] == 50
    rent = tools["rent_number"].input_schema
    assert "max_price" in rent["required"]
    assert set(rent["properties"]) == {"max_price", "plan_id", "service", "country", "provider"}  # no resolver params


async def test_output_schema_marks_sms_text_as_untrusted(client: Client) -> None:
    schema = (await listed(client))["wait_for_code"].output_schema
    assert schema is not None
    assert "untrusted" in str(schema).casefold()


async def test_server_identifies_itself(client: Client, mode: str) -> None:
    assert client.protocol_version == PROTOCOL[mode]
    assert client.server_info is not None
    assert client.server_info.name == "smsrent"
    assert client.instructions
    assert "untrusted" in client.instructions


async def test_read_only_mode_registers_no_spending_or_changing_tool(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox, mode: str
) -> None:
    app = sandbox_app(tmp_path, gotsms_sandbox, getatext_sandbox, read_only=True)
    async with Client(app.mcp, mode=mode) as client:
        names = set(await listed(client))
        assert names.isdisjoint(SPENDING_OR_CHANGING)
        assert names >= READ_ONLY_TOOLS
        error = await fails(client, "rent_number", plan_id="getatext:whatsapp", max_price="1")
        assert "Unknown tool" in error
        assert (await ok(client, "list_plans", service="whatsapp"))["count"] > 0
    assert posts(gotsms_sandbox) == []
    assert posts(getatext_sandbox) == []
