"""Every use of the MCP SDK's private parts, each behind one small named function.

Verified against mcp 2.3.0 (its installed source). After an SDK upgrade this is the one file to check: each
function is exercised by the tests under `tests/mcp/` (subscriptions, client logging, the tool list).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mcp.server import MCPServer, ServerRequestContext
from mcp.server.connection import Connection
from pydantic import BaseModel

JsonSchema = dict[str, Any]
Params = TypeVar("Params", bound=BaseModel)


def add_request_handler(
    server: MCPServer[Any],
    method: str,
    params: type[Params],
    handler: Callable[[ServerRequestContext[Any], Params], Awaitable[BaseModel]],
) -> None:
    """Serve a request `MCPServer` has no public API for (`resources/subscribe`, `logging/setLevel`), on its
    low-level server (`MCPServer._lowlevel_server`)."""
    server._lowlevel_server.add_request_handler(method, params, handler)


def connection(ctx: ServerRequestContext[Any]) -> Connection:
    """The connection a request came on, with its own state and exit stack (`ServerSession._connection`)."""
    return ctx.session._connection


def edit_input_schema(server: MCPServer[Any], tool: str, edit: Callable[[JsonSchema], JsonSchema]) -> None:
    """Replace the input schema `tools/list` shows for `tool` by `edit` of the one derived from its signature
    (`MCPServer._tool_manager`). Arguments are still validated by the model derived from the signature."""
    registered = server._tool_manager.get_tool(tool)
    if registered is None:
        raise KeyError(tool)
    registered.parameters = edit(registered.parameters)
