"""What the tools, resources and routes share for the life of the server."""

from __future__ import annotations

from dataclasses import dataclass, field

from smsrent.config import Settings
from smsrent.domain.errors import NotConfigured
from smsrent.domain.ids import ProviderName
from smsrent.mcp.subscriptions import Subscriptions
from smsrent.mcp.views import ProviderRef
from smsrent.service.delivery import Delivery
from smsrent.service.rentals import Rentals


@dataclass
class AppState:
    settings: Settings
    rentals: Rentals
    delivery: Delivery
    subscriptions: Subscriptions

    def provider_ref(self, name: ProviderName) -> ProviderRef:
        return ProviderRef(name=name, sandbox=self.rentals.provider(name).sandbox)


@dataclass
class Runtime:
    """Holds the running state for code outside MCP requests (HTTP routes, background notifications)."""

    state: AppState | None = field(default=None)

    def require(self) -> AppState:
        if self.state is None:
            raise NotConfigured("The server is still starting; try again in a moment.")
        return self.state
