"""What the documents' example answers parse into: one expected object per example, asserted by both the parser
tests (the pure `_to_*` functions) and the adapter tests (the same answer served over a transport)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from smsrent.domain.models import Message, Plan, Receipt, Rental, RentalStatus

NOON = datetime(2026, 3, 11, 12, 0, tzinfo=UTC)  # GotSMS's example time
EDT = timezone(timedelta(hours=-4))  # Getatext's example times are naive, read in its default zone
END = datetime(2025, 7, 6, 15, 43, 37, tzinfo=EDT)

# -- GotSMS (gotsms-api.txt) -------------------------------------------------------------------------------------

GOTSMS_PLAN = Plan(  # rents_plans
    plan_id="gotsms:uuid",
    provider="gotsms",
    service="Telegram",
    service_code="uuid",
    country="USA",
    price=Decimal("1"),
    renew_price=Decimal("1"),
    duration="1 day",
    duration_minutes=1440,
    billing_type="duration",
    auto_renew_supported=False,
)
GOTSMS_RENT = Rental(  # rents, rent_created
    rental_id="gotsms:uuid",
    provider="gotsms",
    phone="+18001234567",
    phone_display="+1 800 123 4567",
    service="Telegram",
    plan_id="gotsms:uuid",
    price=Decimal("1"),
    status=RentalStatus.ACTIVE,
    provider_status="active",
    started_at=NOON,
    ends_at=datetime(2026, 3, 12, 12, 0, tzinfo=UTC),
    can_wake_up=True,
    auto_renew=False,
    period="1 day",
)
GOTSMS_TRANSITIONED = Rental(  # transition_200: the id and status alone
    rental_id="gotsms:uuid", provider="gotsms", status=RentalStatus.ACTIVE, provider_status="active"
)
GOTSMS_MESSAGE = Message(  # messages, messages_unread
    message_id="gotsms:uuid",
    rental_id="gotsms:uuid",
    sender="+18001234567",
    text="Your verification code is 123456",
    code="123456",
    received_at=NOON,
)

# -- Getatext (getatext-api.txt) ---------------------------------------------------------------------------------

GETATEXT_RENTED = Receipt(  # rent_a_number, for the plan getatext:whatsapp
    rental=Rental(
        rental_id="getatext:12345",
        provider="getatext",
        phone="+11234567890",
        phone_display="1234567890",
        service="Whatsapp",
        plan_id="getatext:whatsapp",
        price=Decimal("0.55"),
        status=RentalStatus.ACTIVE,
        provider_status="success",
        ends_at=END,
    ),
    balance_after=Decimal("113.32"),
    note="Number rented successfully.",
)
GETATEXT_COMPLETED = Receipt(  # rental_completed
    rental=Rental(
        rental_id="getatext:12345",
        provider="getatext",
        phone="+11234567890",
        phone_display="1234567890",
        service="Whatsapp",
        price=Decimal("0.1"),
        status=RentalStatus.COMPLETED,
        provider_status="completed",
        ends_at=datetime(2025, 8, 12, 0, 19, 30, tzinfo=EDT),
    ),
    balance_after=Decimal("9.9"),
    note="Rental marked as completed successfully.",
)
GETATEXT_WHATSAPP = Plan(  # prices_info
    plan_id="getatext:whatsapp",
    provider="getatext",
    service="Whatsapp",
    service_code="whatsapp",
    country="USA",
    price=Decimal("0.55"),
    duration="5 min",
    duration_minutes=5,
    billing_type="one_time",
    multiple_sms=True,
)
GETATEXT_LONG_RENTAL = Rental(  # long_rentals, long_rental_created, long_rental_updated
    rental_id="getatext:long:1",
    provider="getatext",
    phone="+11234567890",
    phone_display="1234567890",
    plan_id="getatext:long:1w",
    price=Decimal("10.55"),
    status=RentalStatus.ACTIVE,
    provider_status="Active",
    started_at=datetime(2025, 7, 1, tzinfo=EDT),
    ends_at=datetime(2025, 7, 6, tzinfo=EDT),
    auto_renew=True,
    period="1 Week",
)
