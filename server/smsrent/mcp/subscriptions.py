"""`resources/updated` for subscribers on both protocol eras the SDK serves.

2026-07-28 clients listen on `subscriptions/listen`: events go through the server's subscription bus.
2025-era clients call `resources/subscribe`: `MCPServer` has no public API for it, so the handlers are
registered on the low-level server (through `compat`) and each connection's subscriptions live in its own
scratch state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from mcp.server import MCPServer, ServerRequestContext
from mcp.server.connection import Connection
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from smsrent.domain.models import Message
from smsrent.mcp import compat

log = logging.getLogger("smsrent.mcp")

ACTIVE_URI = "smsrent://rentals/active"
RECENT_URI = "smsrent://messages/recent"
_KEY = "smsrent.subscriptions"


def rental_uri(rental_id: str) -> str:
    return f"smsrent://rentals/{rental_id}"


class Subscriptions:
    """Who is subscribed to what, and the fan-out when a resource changes."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        self._connections: dict[int, Connection] = {}

    def install(self, server: MCPServer[Any]) -> None:
        """Serve 2025-era `resources/subscribe` and `resources/unsubscribe` (this also advertises `subscribe`)."""
        compat.add_request_handler(server, "resources/subscribe", SubscribeRequestParams, self._subscribe)
        compat.add_request_handler(server, "resources/unsubscribe", UnsubscribeRequestParams, self._unsubscribe)

    async def _subscribe(self, ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        connection = compat.connection(ctx)
        uris: set[str] = connection.state.setdefault(_KEY, set())
        if not uris:
            self._connections[id(connection)] = connection
            connection.exit_stack.callback(self._connections.pop, id(connection), None)
        uris.add(str(params.uri))
        return EmptyResult()

    async def _unsubscribe(self, ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
        compat.connection(ctx).state.get(_KEY, set()).discard(str(params.uri))
        return EmptyResult()

    async def updated(self, uris: Iterable[str]) -> None:
        """Tell every subscriber of each URI that it changed."""
        for uri in dict.fromkeys(uris):
            await self.bus.publish(ResourceUpdated(uri=uri))
            for connection in list(self._connections.values()):
                if uri in connection.state.get(_KEY, ()):
                    try:
                        await connection.send_resource_updated(uri)
                    except Exception as err:  # a vanished client must not stop the others
                        log.info("could not notify a subscriber of %s: %s", uri, type(err).__name__)

    async def messages_arrived(self, messages: Sequence[Message]) -> None:
        await self.updated([*(rental_uri(m.rental_id) for m in messages), RECENT_URI])
