"""What the tools, resources and routes share for the life of the server."""

from __future__ import annotations

from dataclasses import dataclass, field

from smsrent.config import Settings
from smsrent.domain.errors import NotConfigured
from smsrent.domain.ids import ProviderName
from smsrent.domain.models import Rental
from smsrent.mcp.subscriptions import Subscriptions
from smsrent.mcp.views import ProviderProblem, ProviderRef, RentalsResult, RentalView
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

    def asked(self, provider: ProviderName | None) -> list[ProviderRef]:
        """The providers a call consults: the one named, or all configured."""
        names = [provider] if provider else [p.name for p in self.rentals.providers.values()]
        return [self.provider_ref(name) for name in names]

    def rentals_result(
        self, rentals: list[Rental], stale: dict[str, str], provider: ProviderName | None = None
    ) -> RentalsResult:
        return RentalsResult(
            providers=self.asked(provider),
            rentals=[RentalView.of(r, self.provider_ref(r.provider)) for r in rentals],
            count=len(rentals),
            stale=problems(stale),
        )


def problems(failures: dict[str, str]) -> list[ProviderProblem]:
    return [ProviderProblem(provider=name, error=error) for name, error in failures.items()]


@dataclass
class Runtime:
    """Holds the running state for code outside MCP requests (HTTP routes, background notifications)."""

    state: AppState | None = field(default=None)

    def require(self) -> AppState:
        if self.state is None:
            raise NotConfigured("The server is still starting; try again in a moment.")
        return self.state
