"""The figures the metrics, the report and the dashboard share, computed from ledger reads only."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from smsrent.domain.models import RentalStatus, format_money
from smsrent.service.ledger import Charge, PurchaseState, Refusal, RentalRecord

ANY_PROVIDER = "any"  # a refusal before any provider was chosen (a cap checked first)
SETTLED_OUTCOMES: tuple[PurchaseState | str, ...] = ("bought", "failed", "not_bought", "refused")
UNSETTLED_STATES: tuple[PurchaseState, ...] = ("reserved", "uncertain")
RENTAL_OUTCOMES = ("code_received", "refunded", "expired_without_code", "active")


@dataclass(frozen=True)
class Spend:
    spent: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)

    @property
    def net(self) -> Decimal:
        return self.spent - self.refunded

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.spent + other.spent, self.refunded + other.refunded)

    def formatted(self) -> dict[str, str]:
        """spent, refunded and net as decimal strings (`"1.50"`)."""
        return {
            "spent": format_money(self.spent),
            "refunded": format_money(self.refunded),
            "net": format_money(self.net),
        }


def spend_by(charges: Iterable[Charge]) -> dict[tuple[str, str], Spend]:
    """Money charged and refunded per (provider, agent)."""
    totals: dict[tuple[str, str], Spend] = {}
    for charge in charges:
        key = (charge.provider, charge.agent)
        totals[key] = totals.get(key, Spend()) + Spend(charge.charged, charge.refunded)
    return totals


def outcomes(charges: Iterable[Charge], refusals: Iterable[Refusal]) -> Counter[tuple[str, str, str]]:
    """Purchases per (provider, agent, outcome): the ledger's purchase states plus `refused`."""
    counted = Counter((c.provider, c.agent, str(c.state)) for c in charges)
    counted.update((r.provider or ANY_PROVIDER, r.agent, "refused") for r in refusals)
    return counted


def rental_outcome(record: RentalRecord) -> str:
    """`code_received` (it got an SMS), `refunded` (given back), `expired_without_code` (ended otherwise), or
    `active` (still running, no SMS yet)."""
    if record.messages:
        return "code_received"
    if record.rental.status in (RentalStatus.REFUNDED, RentalStatus.CANCELLED):
        return "refunded"
    return "expired_without_code" if record.rental.status.ended else "active"


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (`share` 0.5 for p50): the smallest value with at least that share of the
    values at or below it; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]
