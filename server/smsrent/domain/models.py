"""The one domain model both provider adapters map into.

Money is `Decimal` (a decimal string when serialised), phones are E.164, times are aware.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, PlainSerializer

from smsrent.domain.ids import ProviderName


def format_money(amount: Decimal) -> str:
    """`Decimal("1")` as `"1.00"`; more precise amounts keep their digits."""
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        amount = amount.quantize(Decimal("0.01"))
    return format(amount, "f")


Money = Annotated[Decimal, PlainSerializer(format_money, return_type=str)]


class RentalStatus(StrEnum):
    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def ended(self) -> bool:
        return self not in (RentalStatus.ACTIVE, RentalStatus.UNKNOWN)


class _Model(BaseModel):
    # Built on first use, not at import: nothing needs these before the first provider answer.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Plan(_Model):
    """A rentable offer. `price` is None only when the provider does not publish it."""

    plan_id: str
    provider: ProviderName
    service: str
    service_code: str | None = None
    country: str | None = None
    price: Money | None
    renew_price: Money | None = None
    currency: str = "USD"
    duration: str | None = None
    duration_minutes: int | None = None
    billing_type: str | None = None
    auto_renew_supported: bool | None = None
    multiple_sms: bool | None = None


class PublicPrice(_Model):
    """A row of GotSMS's public price list (no plan id: informational)."""

    service: str
    country: str | None
    duration: str | None
    price: Money | None
    renew_price: Money | None
    billing_type: str | None


class ServiceInfo(_Model):
    service_id: str
    name: str


class Rental(_Model):
    """A rented number as the provider last described it; absent fields were not in that answer."""

    rental_id: str
    provider: ProviderName
    phone: str | None = None
    phone_display: str | None = None
    service: str | None = None
    plan_id: str | None = None
    price: Money | None = None
    currency: str = "USD"
    status: RentalStatus = RentalStatus.UNKNOWN
    provider_status: str | None = None
    started_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    wake_from: AwareDatetime | None = None
    wake_till: AwareDatetime | None = None
    can_wake_up: bool | None = None
    auto_renew: bool | None = None
    period: str | None = None


class Message(_Model):
    """One received SMS. `code` is the provider's own parse, when it gives one."""

    message_id: str
    rental_id: str
    sender: str | None = None
    text: str | None = None
    code: str | None = None
    received_at: AwareDatetime | None = None


class Balance(_Model):
    provider: ProviderName
    amount: Money
    currency: str = "USD"


class Receipt(_Model):
    """A provider's answer about one rental: the rental, any messages it carried, the balance if it said."""

    rental: Rental
    messages: tuple[Message, ...] = ()
    balance_after: Money | None = None
    note: str | None = None


class NumberStatus(_Model):
    """GotSMS wake-up state of a rented number."""

    rental_id: str
    status: RentalStatus
    provider_status: str | None = None
    active_from: AwareDatetime | None = None
    active_till: AwareDatetime | None = None
    wake_from: AwareDatetime | None = None
    wake_till: AwareDatetime | None = None
    online_till: AwareDatetime | None = None
    wake_seconds_left: int | None = None
    online_seconds_left: int | None = None
    can_wake_up: bool | None = None
