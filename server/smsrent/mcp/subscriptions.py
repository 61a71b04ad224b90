"""`resources/updated` for subscribers on both protocol eras the SDK serves.

2026-07-28 clients listen on `subscriptions/listen`: events go through the server's subscription bus.
2025-era clients call `resources/subscribe`: `MCPServer` has no public API for it, so the handlers are
registered on the low-level server (through `compat`) and each connection's subscriptions live in its own
scratch state.

Every event is about a rental, so about its agent: a subscriber hears only of its own rentals (an admin, of all).
A subscription to another agent's rental is accepted and never fires, exactly as one to an unknown rental.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from contextvars import ContextVar
from typing import Any

from mcp.server import MCPServer, ServerRequestContext
from mcp.server.connection import Connection
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated, ServerEvent
from mcp.types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from smsrent.domain.models import Message
from smsrent.domain.principal import OWNER, Principal
from smsrent.mcp import compat
from smsrent.mcp.auth import current_caller, principal

log = logging.getLogger("smsrent.mcp")

ACTIVE_URI = "smsrent://rentals/active"
RECENT_URI = "smsrent://messages/recent"
_KEY = "smsrent.subscriptions"
_WHO = "smsrent.subscriber"
_ABOUT: ContextVar[str | None] = ContextVar("smsrent_about", default=None)  # whose rental an event is about
Owners = Callable[[Collection[str]], Awaitable[dict[str, str]]]


def rental_uri(rental_id: str) -> str:
    return f"smsrent://rentals/{rental_id}"


def sees(caller: Principal, agent: str | None) -> bool:
    """Whether `caller` may hear of a rental of `agent` (None: of no agent's rental in particular)."""
    return agent is None or caller.is_admin or agent == caller.name


class AgentBus(InMemorySubscriptionBus):
    """The subscription bus for `subscriptions/listen`, told whose rental each event is about (`publish_about`): a
    stream hears only of what its opener `sees`."""

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        caller = current_caller()  # who opens the listen stream

        def heard(event: ServerEvent) -> None:
            if sees(caller, _ABOUT.get()):
                listener(event)

        return super().subscribe(heard)

    async def publish_about(self, event: ServerEvent, agent: str) -> None:
        token = _ABOUT.set(agent)
        try:
            await self.publish(event)
        finally:
            _ABOUT.reset(token)


class Subscriptions:
    """Who is subscribed to what, and the fan-out when a resource changes."""

    def __init__(self) -> None:
        self.bus = AgentBus()
        self.owners: Owners | None = None  # the ledger's `agents`, once it is open
        self._connections: dict[int, Connection] = {}

    def install(self, server: MCPServer[Any]) -> None:
        """Serve 2025-era `resources/subscribe` and `resources/unsubscribe` (this also advertises `subscribe`)."""
        compat.add_request_handler(server, "resources/subscribe", SubscribeRequestParams, self._subscribe)
        compat.add_request_handler(server, "resources/unsubscribe", UnsubscribeRequestParams, self._unsubscribe)

    async def _subscribe(self, ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        connection = compat.connection(ctx)
        uris: set[str] = connection.state.setdefault(_KEY, set())
        connection.state[_WHO] = principal(ctx)
        if not uris:
            self._connections[id(connection)] = connection
            connection.exit_stack.callback(self._connections.pop, id(connection), None)
        uris.add(str(params.uri))
        return EmptyResult()

    async def _unsubscribe(self, ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
        compat.connection(ctx).state.get(_KEY, set()).discard(str(params.uri))
        return EmptyResult()

    async def updated(self, uris: Iterable[str], agent: str) -> None:
        """Tell every subscriber of each URI, changed by a change to a rental of `agent`, that it changed."""
        for uri in dict.fromkeys(uris):
            await self.bus.publish_about(ResourceUpdated(uri=uri), agent)
            for connection in list(self._connections.values()):
                if uri in connection.state.get(_KEY, ()) and sees(connection.state.get(_WHO, OWNER), agent):
                    try:
                        await connection.send_resource_updated(uri)
                    except Exception as err:  # a vanished client must not stop the others
                        log.info("could not notify a subscriber of %s: %s", uri, type(err).__name__)

    async def messages_arrived(self, messages: Sequence[Message]) -> None:
        rental_ids = {m.rental_id for m in messages}
        owners = {} if self.owners is None else await self.owners(rental_ids)
        for rental_id in sorted(rental_ids):
            await self.updated([rental_uri(rental_id), RECENT_URI], owners.get(rental_id, OWNER.name))
