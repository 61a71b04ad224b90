"""The ledger's tests: one contract suite on both backends (test_contract.py), each backend alone beside it, and
the records they build."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from smsrent.domain.models import Message, Rental, RentalStatus
from smsrent.service.ledger import Ledger

NOON = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)


def rental(rental_id: str = "gotsms:rent-1", **fields: object) -> Rental:
    base: dict[str, object] = {
        "provider": "gotsms",
        "phone": "+18001234567",
        "phone_display": "+1 800 123 4567",
        "service": "Telegram",
        "plan_id": "gotsms:plan-1",
        "price": Decimal("0.60"),
        "status": RentalStatus.ACTIVE,
        "provider_status": "active",
        "started_at": NOON,
    }
    return Rental.model_validate({"rental_id": rental_id, **base, **fields})


def message(n: int, rental_id: str = "gotsms:rent-1", *, at: datetime | None = NOON) -> Message:
    return Message(
        message_id=f"gotsms:msg-{n}",
        rental_id=rental_id,
        sender="+18001234567",
        text=f"Your code is {n:06d}",
        code=f"{n:06d}",
        received_at=None if at is None else at + timedelta(seconds=n),
    )


async def bought(ledger: Ledger, price: str, *, max_price: str | None = None, rental_id: str | None = None) -> int:
    pid = await ledger.reserve(provider="gotsms", kind="rent", amount=Decimal(max_price or price), plan_id="gotsms:p")
    await ledger.settle(pid, "bought", price=Decimal(price), rental_id=rental_id)
    return pid
