"""Context benchmark: the characters a model reads of the tools, and of one verification flow's results.

    python benchmarks/context.py

Tool definitions: per tool, the compact JSON of `name`, `description` and `inputSchema` (what hosts put in the
model's context); output schemas are counted apart, since hosts do not show them to the model. The flow runs on
the in-process sandbox (get_balance, list_plans for Telegram, rent_number, wait_for_code until the code) and
counts the characters of every text block the tools return.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.types import CallToolResult, TextContent, Tool

from smsrent.config import Settings
from smsrent.mcp.app import create_app

TOOLS_TARGET = 5000  # today's 11 tools together
PER_TOOL_TARGET = 450  # on average, for any count of tools
FLOW_TARGET = 2500


def compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def seen_by_model(tool: Tool) -> str:
    """What a host shows the model of one tool definition."""
    return compact({"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema})


def text_chars(result: CallToolResult) -> int:
    return sum(len(block.text) for block in result.content if isinstance(block, TextContent))


async def flow(client: Client) -> list[tuple[str, int]]:
    """One verification on the sandbox; returns (call, characters of its text blocks) per call."""
    steps: list[tuple[str, int]] = []

    async def call(tool: str, **arguments: Any) -> dict[str, Any]:
        result = await client.call_tool(tool, arguments)
        if result.is_error or result.structured_content is None:
            raise RuntimeError(f"{tool} failed: {result.content}")
        steps.append((tool, text_chars(result)))
        return result.structured_content

    await call("get_balance")
    await call("list_plans", service="telegram")
    rental_id = (await call("rent_number", service="telegram", max_price="1"))["rental"]["rental_id"]
    for _ in range(5):
        if (await call("wait_for_code", rental_id=rental_id, timeout_seconds=30))["outcome"] == "code_received":
            return steps
    raise RuntimeError("the sandbox sent no code")


async def main() -> int:
    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(data_dir=Path(data_dir), sandbox=True)  # type: ignore[call-arg]
        async with Client(create_app(settings).mcp) as client:
            tools = (await client.list_tools()).tools
            steps = await flow(client)

    print("Tool definitions a model sees (compact JSON of name, description, inputSchema; characters)")
    sizes = {tool.name: len(seen_by_model(tool)) for tool in tools}
    outputs = {tool.name: len(compact(tool.output_schema)) for tool in tools}
    print(f"  {'tool':<16}{'seen':>8}{'output schema (not shown)':>28}")
    for name, size in sizes.items():
        print(f"  {name:<16}{size:>8}{outputs[name]:>28}")
    total, average = sum(sizes.values()), sum(sizes.values()) / len(sizes)
    print(f"  {'total':<16}{total:>8}{sum(outputs.values()):>28}")
    print(f"  {'average':<16}{average:>8.0f}")

    print("\nOne verification flow on the sandbox (characters of the text blocks returned)")
    for tool, chars in steps:
        print(f"  {tool:<16}{chars:>8}")
    flow_total = sum(chars for _, chars in steps)
    print(f"  {'total':<16}{flow_total:>8}")

    checks = [
        (f"{len(sizes)} tool definitions <= {TOOLS_TARGET} characters ({total})", total <= TOOLS_TARGET),
        (f"average per tool <= {PER_TOOL_TARGET} characters ({average:.0f})", average <= PER_TOOL_TARGET),
        (f"one flow's text <= {FLOW_TARGET} characters ({flow_total})", flow_total <= FLOW_TARGET),
    ]
    print("\nTargets")
    for label, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(anyio.run(main))
