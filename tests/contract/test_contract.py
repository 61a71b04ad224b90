"""One set of domain-level expectations every provider adapter meets, over its sandbox.

Parametrized over the adapters (GotSMS, Getatext, and MiniSMS, the provider that exists only in the tests) and
both transports (in-process ASGI and real HTTP on loopback), so the service layer can rely on the `Provider`
protocol alone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import anyio
import httpx
import pytest
from pydantic import SecretStr

from smsrent.domain.errors import CancelNotAllowed, ProviderNotFound, SmsRentError
from smsrent.domain.ids import Ref, parse_plan_id, parse_rental_id
from smsrent.domain.models import Plan, Receipt, RentalStatus
from smsrent.providers.base import Provider
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.base import SandboxTiming
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import FAST_RETRY, getatext_adapter, gotsms_adapter
from tests.minisms.adapter import MiniSmsProvider, registered
from tests.minisms.server import API_KEY, MiniSms

pytestmark = pytest.mark.anyio
BOUND = 20.0

E164 = re.compile(r"\+[1-9]\d{6,14}")
CANCEL_AFTER = 0.3  # Getatext refuses a cancellation this soon after renting (the document's minute, scaled)
UNKNOWN = {"gotsms": f"gotsms:{uuid.UUID(int=7)}", "getatext": "getatext:999999999", "minisms": "minisms:r-999999"}


@pytest.fixture(autouse=True)
async def bounded() -> AsyncIterator[None]:
    """Every test here, with its fixtures, ends within BOUND seconds (the runner task holds the scope)."""
    with anyio.fail_after(BOUND):
        yield


@pytest.fixture
def timing() -> SandboxTiming:
    """Test timings, with Getatext's cancel rule in force (the shared fixture turns it off)."""
    return SandboxTiming(
        wake_queue=0.05, online_window=30.0, code_delay=0.05, cancel_after=CANCEL_AFTER, auto_code=False
    )


@dataclass
class Subject:
    """One adapter over its sandbox, and how to make the sandbox's number receive a code."""

    provider: Provider
    send_code: Callable[[Ref, str], None]

    @property
    def name(self) -> str:
        return self.provider.name

    async def cheapest(self) -> Plan:
        plans = [p for p in await self.provider.list_plans() if p.price is not None]
        return min(plans, key=lambda p: (p.price or Decimal(0), p.plan_id))

    async def rent(self) -> tuple[Plan, Receipt]:
        plan = await self.cheapest()
        return plan, await self.provider.rent(parse_plan_id(plan.plan_id))

    async def refundable(self) -> None:
        """Wait until the provider's own rule allows a refund of a rental made just now."""
        if self.name == "getatext":
            await anyio.sleep(CANCEL_AFTER + 0.05)


@pytest.fixture(
    params=[
        ("gotsms", "in-process"),
        ("gotsms", "loopback"),
        ("getatext", "in-process"),
        ("getatext", "loopback"),
        ("minisms", "in-process"),
        ("minisms", "loopback"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
async def subject(
    request: pytest.FixtureRequest, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> AsyncIterator[Subject]:
    name, transport = request.param
    minisms = MiniSms()
    app = {"gotsms": gotsms_sandbox.app, "getatext": getatext_sandbox.app, "minisms": minisms.app}[name]

    def send_gotsms(rental: Ref, code: str) -> None:
        gotsms_sandbox.deliver(rental.local_id, f"Your verification code is {code}", code)

    def send_getatext(rental: Ref, code: str) -> None:
        getatext_sandbox.deliver(int(rental.local_id), code)

    def send_minisms(rental: Ref, code: str) -> None:
        minisms.deliver(rental.local_id, code)

    async with AsyncExitStack() as stack:
        base = await stack.enter_async_context(serve_loopback(app)) if transport == "loopback" else None
        provider: Provider
        if name == "gotsms":
            provider = gotsms_adapter(gotsms_sandbox, base_url=f"{base}/api" if base else None)
            send = send_gotsms
        elif name == "getatext":
            provider = getatext_adapter(getatext_sandbox, base_url=base)
            send = send_getatext
        else:
            stack.enter_context(registered(base or "http://minisms.test"))
            asgi = None if base else httpx.ASGITransport(app=app)
            provider = MiniSmsProvider(
                SecretStr(API_KEY), base_url=base or "http://minisms.test", transport=asgi, retry=FAST_RETRY
            )
            send = send_minisms
        stack.push_async_callback(provider.aclose)
        yield Subject(provider, send)


async def test_balance_is_a_positive_decimal_in_usd(subject: Subject) -> None:
    balance = await subject.provider.get_balance()
    assert balance.provider == subject.name
    assert isinstance(balance.amount, Decimal)
    assert balance.amount > 0
    assert balance.currency == "USD"


async def test_plans_have_parseable_ids_and_decimal_prices(subject: Subject) -> None:
    plans = await subject.provider.list_plans()
    assert plans
    assert len({p.plan_id for p in plans}) == len(plans)
    for plan in plans:
        ref = parse_plan_id(plan.plan_id)
        assert ref.provider == subject.name == plan.provider
        assert str(ref) == plan.plan_id
        assert isinstance(plan.price, Decimal)
        assert plan.price > 0
        assert plan.currency == "USD"
        assert plan.service


async def test_rent_returns_an_active_rental_and_charges_the_price(subject: Subject) -> None:
    before = (await subject.provider.get_balance()).amount
    plan, receipt = await subject.rent()
    rental = receipt.rental
    assert parse_rental_id(rental.rental_id).provider == subject.name
    assert rental.provider == subject.name
    assert rental.status is RentalStatus.ACTIVE
    assert rental.phone is not None
    assert E164.fullmatch(rental.phone)
    assert rental.ends_at is not None
    assert rental.ends_at.tzinfo is not None
    assert rental.ends_at.utcoffset() is not None
    assert rental.ends_at > datetime.now(UTC)
    assert rental.price == plan.price
    assert receipt.messages == ()
    assert plan.price is not None
    assert (await subject.provider.get_balance()).amount == before - plan.price


async def test_get_rental_finds_the_rental(subject: Subject) -> None:
    _, receipt = await subject.rent()
    found = await subject.provider.get_rental(parse_rental_id(receipt.rental.rental_id))
    assert found.rental.rental_id == receipt.rental.rental_id
    assert found.rental.phone == receipt.rental.phone
    assert found.rental.status is RentalStatus.ACTIVE
    assert found.rental.ends_at is not None
    assert abs((found.rental.ends_at - (receipt.rental.ends_at or found.rental.ends_at)).total_seconds()) < 1


async def test_messages_are_empty_before_and_hold_the_code_after_delivery(subject: Subject) -> None:
    _, receipt = await subject.rent()
    ref = parse_rental_id(receipt.rental.rental_id)
    assert await subject.provider.get_messages(ref) == []
    subject.send_code(ref, "004521")
    messages = await subject.provider.get_messages(ref)
    assert len(messages) == 1
    [message] = messages
    assert message.rental_id == receipt.rental.rental_id
    assert message.code == "004521"  # a string, leading zeros kept
    assert isinstance(message.code, str)
    assert message.message_id
    assert message.message_id == (await subject.provider.get_messages(ref))[0].message_id  # stable id


async def test_refund_of_an_unused_rental_credits_the_balance(subject: Subject) -> None:
    before = (await subject.provider.get_balance()).amount
    _, receipt = await subject.rent()
    await subject.refundable()
    refunded = await subject.provider.refund(parse_rental_id(receipt.rental.rental_id))
    assert refunded.rental.rental_id == receipt.rental.rental_id
    assert refunded.rental.status.ended
    assert (await subject.provider.get_balance()).amount == before


async def test_refund_after_a_code_is_refused_without_credit(subject: Subject) -> None:
    _, receipt = await subject.rent()
    ref = parse_rental_id(receipt.rental.rental_id)
    await subject.refundable()
    subject.send_code(ref, "123456")
    charged = (await subject.provider.get_balance()).amount
    with pytest.raises(CancelNotAllowed) as caught:
        await subject.provider.refund(ref)
    assert caught.value.provider == subject.name
    assert (await subject.provider.get_balance()).amount == charged


async def test_unknown_rental_raises_provider_not_found_everywhere(subject: Subject) -> None:
    ref = parse_rental_id(UNKNOWN[subject.name])
    before = (await subject.provider.get_balance()).amount
    for call in (subject.provider.get_rental, subject.provider.get_messages, subject.provider.refund):
        with pytest.raises(ProviderNotFound) as caught:
            await call(ref)
        assert isinstance(caught.value, SmsRentError)
        assert caught.value.provider == subject.name
        assert "list_rentals" in caught.value.message  # the next move is named
    assert (await subject.provider.get_balance()).amount == before
