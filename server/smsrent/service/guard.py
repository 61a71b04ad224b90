"""The money guard: the owner's limits, checked in the server before anything is sent to a provider.

Every refusal names the limit, the amounts, and the variable that changes it. An agent's own limits (its
`daily_budget` and `max_price`: its agents file entry's, else SMSRENT_AGENT_DAILY_BUDGET / _MAX_PRICE) apply
under the server-wide ones; a refusal says whose limit it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from smsrent.domain.errors import BudgetExceeded, PurchaseUnsettled
from smsrent.domain.models import format_money
from smsrent.domain.principal import OWNER, Principal
from smsrent.service.ledger import Check

_CAP = "SMSRENT_MAX_PRICE, which caps each rental, extension, renewal and re-rent"
_AGENT_SETTING = "in the agents file (SMSRENT_AGENTS_FILE), else SMSRENT_AGENT_{}"


@dataclass(frozen=True)
class MoneyGuard:
    max_price: Decimal | None = None
    daily_budget: Decimal | None = None
    confirm_above: Decimal | None = None
    allow_auto_renew: bool = False

    def check_cap(self, max_price: Decimal, caller: Principal = OWNER) -> None:
        """The caller's `max_price` must fit the owner's per-purchase cap and the caller's own (checked before
        anything is asked)."""
        if self.max_price is not None and max_price > self.max_price:
            raise BudgetExceeded(
                f"Refused: max_price {_usd(max_price)} is above the per-purchase cap of {_usd(self.max_price)}"
                f" ({_CAP}); nothing was bought. Lower max_price or raise SMSRENT_MAX_PRICE."
            )
        if caller.max_price is not None and max_price > caller.max_price:
            raise BudgetExceeded(
                f"Refused: max_price {_usd(max_price)} is above agent {caller.name}'s per-purchase cap of"
                f" {_usd(caller.max_price)} (its max_price {_AGENT_SETTING.format('MAX_PRICE')}); nothing was"
                " bought. Lower max_price or ask the owner to raise that agent's max_price."
            )

    def check_price(self, price: Decimal, max_price: Decimal, what: str, caller: Principal = OWNER) -> None:
        """`what` (a plan, an extension) costs `price`: it must fit the caller's `max_price`, the owner's cap and
        the caller's own cap."""
        self.check_cap(max_price, caller)
        if self.max_price is not None and price > self.max_price:
            raise BudgetExceeded(
                f"Refused: {what} costs {_usd(price)}, above the per-purchase cap of {_usd(self.max_price)} ({_CAP});"
                " nothing was bought. Choose a cheaper plan with list_plans, or ask the owner to raise"
                " SMSRENT_MAX_PRICE."
            )
        if price > max_price:
            raise BudgetExceeded(
                f"Refused: {what} costs {_usd(price)}, above max_price {_usd(max_price)}; nothing was bought."
                " Raise max_price or choose a cheaper plan with list_plans."
            )

    def daily_check(self, amount: Decimal, provider: str, caller: Principal = OWNER) -> Check:
        """The check the ledger runs atomically with the reservation of `caller`'s purchase: the uncertain purchases,
        the caller's own daily budget (against what it committed), then the server's (against what all did)."""

        def check(committed: Decimal, uncertain: int, by_caller: Decimal) -> None:
            if uncertain:
                raise PurchaseUnsettled(
                    f"Refused: an earlier purchase on {provider} has an unknown outcome and counts as spent until it"
                    " is settled; nothing was bought. Call list_rentals to check whether it went through.",
                    provider=provider,
                )
            if caller.daily_budget is not None and by_caller + amount > caller.daily_budget:
                raise BudgetExceeded(
                    f"Refused: this purchase may cost up to {_usd(amount)}, and {_usd(by_caller)} of agent"
                    f" {caller.name}'s {_usd(caller.daily_budget)} daily budget (its daily_budget"
                    f" {_AGENT_SETTING.format('DAILY_BUDGET')}; rolling 24 h) is already spent or reserved; nothing"
                    " was bought. Ask the owner to raise that agent's daily_budget, or wait for earlier purchases to"
                    " age out."
                )
            if self.daily_budget is not None and committed + amount > self.daily_budget:
                raise BudgetExceeded(
                    f"Refused: this purchase may cost up to {_usd(amount)}, and {_usd(committed)} of the"
                    f" {_usd(self.daily_budget)} daily budget (SMSRENT_DAILY_BUDGET, rolling 24 h) is already spent"
                    " or reserved; nothing was bought. Raise SMSRENT_DAILY_BUDGET or wait for earlier purchases to"
                    " age out."
                )

        return check

    def remaining(self, committed: Decimal, by_caller: Decimal, caller: Principal = OWNER) -> Decimal | None:
        """What the caller may still commit in the rolling 24 h under both daily budgets; None without either."""
        left = [
            limit - spent
            for limit, spent in ((self.daily_budget, committed), (caller.daily_budget, by_caller))
            if limit is not None
        ]
        return max(Decimal(0), min(left)) if left else None

    def needs_confirmation(self, price: Decimal) -> bool:
        return self.confirm_above is not None and price > self.confirm_above

    def check_auto_renew(self, caller: Principal = OWNER) -> None:
        """Renewals are charged by the provider, outside every daily budget: refused under one (the server's or the
        caller's own) unless the owner allows them."""
        if self.allow_auto_renew:
            return
        if self.daily_budget is not None:
            raise BudgetExceeded(
                f"Refused: renewals would be charged by the provider outside the {_usd(self.daily_budget)} daily"
                " budget (SMSRENT_DAILY_BUDGET); nothing was changed. Set SMSRENT_ALLOW_AUTO_RENEW=1 to allow"
                " auto-renew."
            )
        if caller.daily_budget is not None:
            raise BudgetExceeded(
                f"Refused: renewals would be charged by the provider outside agent {caller.name}'s"
                f" {_usd(caller.daily_budget)} daily budget; nothing was changed. Ask the owner to set"
                " SMSRENT_ALLOW_AUTO_RENEW=1 to allow auto-renew."
            )


def _usd(amount: Decimal) -> str:
    return f"{format_money(amount)} USD"
