"""Every purchase the money guard refuses is recorded in the ledger once (for the metrics, the report and the
audit), with its provider (None before one was chosen) and the most it could have cost; an unknown outcome is
not a refusal."""

from __future__ import annotations

from decimal import Decimal

import pytest

from smsrent.domain.errors import BudgetExceeded, PurchaseUnsettled
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.sandbox.gotsms import GotSmsSandbox
from smsrent.service.guard import MoneyGuard
from smsrent.service.ledger import Ledger
from smsrent.service.rentals import Rentals

pytestmark = pytest.mark.anyio

D = Decimal


async def refusals(ledger: Ledger) -> list[tuple[str | None, Decimal]]:
    return [(r.provider, r.amount) for r in await ledger.refusals()]


async def test_each_refusal_is_recorded_once_with_its_provider_and_amount(
    ledger: Ledger, gotsms: GotSmsProvider, getatext: GetatextProvider
) -> None:
    rentals = Rentals([gotsms, getatext], ledger, MoneyGuard(max_price=D("3"), daily_budget=D("1.50")))
    with pytest.raises(BudgetExceeded, match="SMSRENT_MAX_PRICE"):  # before any provider is chosen
        await rentals.quote(max_price=D("4"), service="Discord")
    with pytest.raises(BudgetExceeded, match="above max_price"):  # the plan costs more than the caller allows
        await rentals.quote(max_price=D("0.50"), service="Discord", provider="gotsms")
    plan = await rentals.quote(max_price=D("1"), service="Discord", provider="gotsms")
    bought = await rentals.buy(plan, D("1"))
    with pytest.raises(BudgetExceeded, match="daily budget"):  # 1.00 reserved + 1.00 > 1.50
        await rentals.buy(plan, D("1"))
    weekly = next(
        p for p in await rentals.catalogue.plans(service="Discord", provider="gotsms") if p.duration == "1 week"
    )
    with pytest.raises(BudgetExceeded, match="above max_price"):  # inside the extension's own quote: once
        await rentals.extension(bought.rental.rental_id, D("2"), weekly.plan_id)
    with pytest.raises(BudgetExceeded, match="SMSRENT_MAX_PRICE"):
        await rentals.extension(bought.rental.rental_id, D("3.50"), weekly.plan_id)
    assert await refusals(ledger) == [
        (None, D("4")),
        ("gotsms", D("0.50")),
        ("gotsms", D("1")),
        ("gotsms", D("2")),
        ("gotsms", D("3.50")),
    ]
    assert [c.state for c in await ledger.charges()] == ["bought"]  # a refusal reserves nothing


async def test_a_purchase_refused_for_an_unsettled_one_is_recorded_but_not_the_unsettled_one(
    ledger: Ledger, gotsms: GotSmsProvider, gotsms_sandbox: GotSmsSandbox
) -> None:
    rentals = Rentals([gotsms], ledger, MoneyGuard(), settle_after=3600)
    plan = await rentals.quote(max_price=D("1"), service="Discord", provider="gotsms")
    gotsms_sandbox.inject("POST", "/api/rents", "500")  # the answer is a 500: bought or not, nobody knows yet
    with pytest.raises(PurchaseUnsettled, match="may or may not have gone through"):
        await rentals.buy(plan, D("1"))
    with pytest.raises(PurchaseUnsettled, match="Refused: an earlier purchase"):
        await rentals.buy(plan, D("1"))
    assert await refusals(ledger) == [("gotsms", D("1"))]
    assert [c.state for c in await ledger.charges()] == ["uncertain"]
