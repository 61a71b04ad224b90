"""What the tools, resources and routes share for the life of the server."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from smsrent.config import Settings
from smsrent.domain.errors import NotConfigured
from smsrent.domain.models import Rental
from smsrent.domain.principal import Principal
from smsrent.mcp.subscriptions import Subscriptions
from smsrent.mcp.views import ProviderProblem, RentalsResult, RentalView
from smsrent.service.delivery import Delivery
from smsrent.service.rentals import Rentals


@dataclass
class AppState:
    settings: Settings
    rentals: Rentals
    delivery: Delivery
    subscriptions: Subscriptions

    @property
    def sandbox(self) -> bool:
        """Whether the answers come from the built-in simulation (a server never mixes it with real providers;
        if one did, its answers would all say sandbox rather than let a simulated one pass for real)."""
        return any(p.sandbox for p in self.rentals.providers.values())

    async def views(self, rentals: Sequence[Rental], caller: Principal) -> list[RentalView]:
        """Rentals as the caller sees them: to an admin, each says whose it is when it is not the admin's own."""
        agents = await self.rentals.ledger.agents([r.rental_id for r in rentals]) if caller.is_admin else {}
        return [
            RentalView.of(r).model_copy(
                update={"agent": agent if (agent := agents.get(r.rental_id)) != caller.name else None}
            )
            for r in rentals
        ]

    async def view(self, rental: Rental, caller: Principal) -> RentalView:
        (view,) = await self.views([rental], caller)
        return view

    async def rentals_result(self, rentals: list[Rental], stale: dict[str, str], caller: Principal) -> RentalsResult:
        return RentalsResult(
            rentals=await self.views(rentals, caller), count=len(rentals), stale=problems(stale), sandbox=self.sandbox
        )


def problems(failures: dict[str, str]) -> list[ProviderProblem] | None:
    """The providers that failed, or None (left out of the result) when none did."""
    return [ProviderProblem(provider=name, error=error) for name, error in failures.items()] or None


@dataclass
class Runtime:
    """Holds the running state for code outside MCP requests (HTTP routes, background notifications)."""

    state: AppState | None = field(default=None)

    def require(self) -> AppState:
        if self.state is None:
            raise NotConfigured("The server is still starting; try again in a moment.")
        return self.state
