"""The plan catalogue: every configured provider's plans, filtered and sorted cheapest first, from a short cache for
browsing and fresh for a price about to be paid."""

from __future__ import annotations

import itertools
import time
from decimal import Decimal

from smsrent.domain.errors import InvalidInput
from smsrent.domain.ids import ProviderName, parse_plan_id
from smsrent.domain.models import Plan
from smsrent.providers.base import Provider
from smsrent.service.accounts import Accounts

PLAN_CACHE_SECONDS = 30.0
_COUNTRY_ALIASES = {
    "us": "usa",
    "united states": "usa",
    "united states of america": "usa",
    "america": "usa",
    "uk": "united kingdom",
    "gb": "united kingdom",
    "great britain": "united kingdom",
    "de": "germany",
    "deutschland": "germany",
}


class Catalogue:
    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self._plans: dict[str, tuple[float, list[Plan]]] = {}

    async def offers(
        self,
        *,
        service: str | None = None,
        country: str | None = None,
        provider: ProviderName | None = None,
        max_price: Decimal | None = None,
    ) -> tuple[list[Plan], dict[str, str]]:
        """Every plan of the selected providers that matches, cheapest first (unknown prices last), and the
        providers that could not list theirs."""
        lists, failures = await self.accounts.each(provider, self.listed)
        matches = [
            plan
            for plan in itertools.chain.from_iterable(lists)
            if _service_matches(plan, service)
            and _country_matches(plan, country)
            and (max_price is None or (plan.price is not None and plan.price <= max_price))
        ]
        ordered = sorted(matches, key=lambda p: (p.price is None, p.price or 0, p.provider, p.service, p.plan_id))
        return ordered, failures

    async def plans(
        self,
        *,
        service: str | None = None,
        country: str | None = None,
        provider: ProviderName | None = None,
        max_price: Decimal | None = None,
    ) -> list[Plan]:
        """The matching plans of `offers`, without the report of providers that failed."""
        found, _ = await self.offers(service=service, country=country, provider=provider, max_price=max_price)
        return found

    async def listed(self, provider: Provider, *, fresh: bool = False) -> list[Plan]:
        """The provider's plans, from a short cache for browsing; `fresh` for a price about to be paid."""
        cached = self._plans.get(provider.name)
        if cached and not fresh and time.monotonic() - cached[0] < PLAN_CACHE_SECONDS:
            return cached[1]
        plans = await provider.list_plans()
        self._plans[provider.name] = (time.monotonic(), plans)
        return plans

    async def offered(self, plan_id: str) -> Plan:
        """The plan as its provider lists it right now; refused if it is no longer offered."""
        ref = parse_plan_id(plan_id)
        listed = await self.listed(self.accounts.require(ref.provider), fresh=True)
        plan = next((p for p in listed if p.plan_id == plan_id), None)
        if plan is None:
            raise InvalidInput(f"No plan {plan_id} is offered now; call list_plans for the current plans.")
        return plan

    async def cheapest(
        self, service: str, country: str | None, provider: ProviderName | None, max_price: Decimal
    ) -> Plan:
        """The cheapest priced plan of `service` within `max_price` at today's prices (or the cheapest of all, for
        the guard to refuse with its price)."""
        for p in self.accounts.selected(provider):
            self._plans.pop(p.name, None)  # a purchase pays today's price, not a cached one
        matches = await self.plans(service=service, country=country, provider=provider)
        priced = [p for p in matches if p.price is not None]
        if not priced:
            where = f" in {country}" if country else ""
            raise InvalidInput(f"No plan matches service {service!r}{where}; call list_plans to see what is offered.")
        return next((p for p in priced if p.price is not None and p.price <= max_price), priced[0])


def _service_matches(plan: Plan, wanted: str | None) -> bool:
    if not wanted:
        return True
    want = wanted.strip().casefold()
    names = [n.casefold() for n in (plan.service, plan.service_code) if n]
    return any(want == n for n in names) or want in plan.service.casefold()


def _country_matches(plan: Plan, wanted: str | None) -> bool:
    if not wanted:
        return True
    if plan.country is None:
        return False

    def norm(text: str) -> str:
        key = text.strip().casefold()
        return _COUNTRY_ALIASES.get(key, key)

    return norm(plan.country) == norm(wanted)
