"""Reading resources and hearing `resources/updated`, the same way from an in-memory or an HTTP client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client, MCPDeprecationWarning
from mcp.client.subscriptions import ResourceUpdated
from mcp.types import ResourceUpdatedNotification, ServerNotification, TextResourceContents

Updates = tuple[list[str], Callable[[set[str]], Awaitable[None]]]  # (URIs heard so far, wait until these are)
Connect = Callable[..., AbstractAsyncContextManager[Client]]  # a client, given client options


async def read_json(client: Client, uri: str) -> Any:
    result = await client.read_resource(uri)
    [contents] = result.contents
    assert isinstance(contents, TextResourceContents)
    assert contents.mime_type == "application/json"
    assert str(contents.uri) == uri
    return json.loads(contents.text)


@asynccontextmanager
async def subscribed(connect: Connect, mode: str, uris: list[str]) -> AsyncIterator[tuple[Client, Updates]]:
    """A client made by `connect` subscribed to `uris` the way its era does it (`resources/subscribe`, or
    `subscriptions/listen`, which must honor each URI), and a way to wait for `resources/updated`."""
    received: list[str] = []
    arrived = anyio.Event()

    def note(uri: str) -> None:
        nonlocal arrived
        received.append(uri)
        arrived.set()
        arrived = anyio.Event()

    async def until(wanted: set[str]) -> None:
        with anyio.fail_after(8):
            while not wanted <= set(received):
                await arrived.wait()

    if mode == "legacy":

        async def handler(message: ServerNotification | Exception) -> None:
            if isinstance(message, ResourceUpdatedNotification):
                note(str(message.params.uri))

        async with connect(message_handler=handler) as client:
            assert client.server_capabilities.resources is not None
            assert client.server_capabilities.resources.subscribe is True
            for uri in uris:
                with pytest.warns(MCPDeprecationWarning):
                    await client.subscribe_resource(uri)
            yield client, (received, until)
        return

    async with connect() as client, client.listen(resource_subscriptions=uris) as subscription:
        assert subscription.honored.resource_subscriptions == uris  # any URI is honored, another agent's too

        async def pump() -> None:
            async for event in subscription:
                if isinstance(event, ResourceUpdated):
                    note(event.uri)

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            yield client, (received, until)
            tg.cancel_scope.cancel()
