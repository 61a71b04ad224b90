"""The exact `tools/list` a client gets (both eras), against a snapshot stored in the repository, and the budget
of what a model reads of it.

A change to a tool's name, title, description, input schema or hints fails here until the snapshot is updated
on purpose, and the diff of `tests/mcp/snapshots/tools_list.json` shows it in review:

    UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/mcp/test_tools_snapshot.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.types import Tool

pytestmark = pytest.mark.anyio

SNAPSHOT = Path(__file__).parent / "snapshots" / "tools_list.json"
TOTAL_BUDGET = 5000  # characters a model reads of today's 11 tool definitions
PER_TOOL_BUDGET = 450  # on average, however many tools there are


def wire(tool: Tool) -> dict[str, Any]:
    """A tool as `tools/list` sends it, but its output schema (which hosts do not show the model)."""
    sent = tool.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {key: sent[key] for key in ("name", "title", "description", "inputSchema", "annotations")}


def seen_by_model(tool: Tool) -> int:
    """Characters of what a host puts in the model's context: the compact JSON of name, description, schema."""
    shown = {"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema}
    return len(json.dumps(shown, separators=(",", ":"), ensure_ascii=False))


async def test_tools_list_matches_the_snapshot(client: Client) -> None:
    listed = [wire(tool) for tool in (await client.list_tools()).tools]
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(listed, indent=2, ensure_ascii=False) + "\n")
    assert listed == json.loads(SNAPSHOT.read_text())


async def test_what_a_model_reads_of_the_tools_stays_within_budget(client: Client) -> None:
    sizes = {tool.name: seen_by_model(tool) for tool in (await client.list_tools()).tools}
    assert sum(sizes.values()) <= min(TOTAL_BUDGET, PER_TOOL_BUDGET * len(sizes)), sizes
