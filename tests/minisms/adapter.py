"""The MiniSMS adapter (`minisms-api.txt`), and its registry entry: everything smsrent needs to know of a provider.

What it declares: its rental list shows every rental (a lost purchase is settled from it); messages are read per
rental; a refund shows as `refunded`. It has none of the optional changes (extensions, auto-renewal, finishing,
sleeping numbers), so the service refuses those for its rentals.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from pydantic import SecretStr

from smsrent.config import Settings
from smsrent.domain.errors import CancelNotAllowed, ProviderError
from smsrent.domain.ids import IdSyntax, Ref
from smsrent.domain.models import Balance, Message, Plan, Receipt, Rental, RentalStatus
from smsrent.domain.values import to_datetime, to_e164, to_int, to_money, to_text
from smsrent.providers.base import DEFAULT_RETRY, DEFAULT_TIMEOUT, Capabilities, HttpProvider, RetryPolicy, parse_each
from smsrent.providers.observed import Routes
from smsrent.providers.registry import ProviderEntry, register, unregister
from tests.minisms.server import API_KEY

NAME = "minisms"
STATUS_MAP = {"active": RentalStatus.ACTIVE, "refunded": RentalStatus.REFUNDED, "expired": RentalStatus.EXPIRED}


class MiniSmsProvider(HttpProvider):
    name = NAME
    display_name = "MiniSMS"
    credential_env = "MINISMS_API_KEY"
    ids = IdSyntax(plan=re.compile(r"[a-z0-9_]{1,32}"), rental=re.compile(r"r-[0-9]{1,12}"))
    capabilities = Capabilities(refund_status=RentalStatus.REFUNDED)
    routes = Routes(("/v1/balance", "/v1/plans", "/v1/rentals", "/v1/rentals/{id}", "/v1/rentals/{id}/refund"))

    def __init__(
        self,
        api_key: SecretStr,
        *,
        base_url: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        secret = api_key.get_secret_value()
        super().__init__(
            base_url=base_url,
            headers={"X-Api-Key": secret},
            secrets=(secret,),
            transport=transport,
            timeout=timeout,
            retry=retry,
        )

    # -- The Provider protocol ------------------------------------------------------------------------

    async def get_balance(self) -> Balance:
        payload = await self._call("GET", "/v1/balance", safe=True)
        return self._parse(_to_balance, payload)

    async def list_plans(self) -> list[Plan]:
        payload = await self._call("GET", "/v1/plans", safe=True)
        return parse_each(_to_plan, self._parse(_listed("plans"), payload))

    async def rent(self, plan: Ref) -> Receipt:
        payload = await self._call("POST", "/v1/rentals", safe=False, json_body={"plan": plan.local_id})
        return Receipt(rental=self._parse(_to_rental, _field(payload, "rental")))

    async def get_rental(self, rental: Ref) -> Receipt:
        return await self._rental(rental, retry=True)

    async def get_messages(self, rental: Ref) -> list[Message]:
        return list((await self._rental(rental, retry=True)).messages)

    async def poll(self, rental: Ref) -> Receipt:
        return await self._rental(rental, retry=False)

    async def refund(self, rental: Ref) -> Receipt:
        payload = await self._call("POST", f"/v1/rentals/{rental.local_id}/refund", safe=False)
        return Receipt(rental=self._parse(_to_rental, _field(payload, "rental")))

    # -- RentListing ----------------------------------------------------------------------------------

    async def rent_listing(self) -> list[Rental]:
        payload = await self._call("GET", "/v1/rentals", safe=True)
        return parse_each(_to_rental, self._parse(_listed("rentals"), payload))

    def listed(self, ref: Ref) -> bool:
        return True  # every rental of the account

    # -- Plumbing -------------------------------------------------------------------------------------

    async def _rental(self, rental: Ref, *, retry: bool) -> Receipt:
        payload = await self._call("GET", f"/v1/rentals/{rental.local_id}", safe=True, retry=retry)
        to_message = functools.partial(_to_message, rental_id=str(rental))
        messages = parse_each(to_message, self._parse(_listed("messages"), payload))
        return Receipt(rental=self._parse(_to_rental, _field(payload, "rental")), messages=tuple(messages))

    def _classify(self, detail: str) -> type[ProviderError] | None:
        if "refund not allowed" in detail.lower():
            return CancelNotAllowed
        return super()._classify(detail)


def entry(base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> ProviderEntry:
    """MiniSMS at `base_url` for the provider registry (its key is the test account's)."""

    def build(settings: Settings, timeout: httpx.Timeout) -> MiniSmsProvider:
        return MiniSmsProvider(SecretStr(API_KEY), base_url=base_url, transport=transport, timeout=timeout)

    return ProviderEntry(MiniSmsProvider, build)


@contextmanager
def registered(base_url: str, transport: httpx.AsyncBaseTransport | None = None) -> Iterator[ProviderEntry]:
    """MiniSMS in the provider registry while the block runs: its ids parse, and settings build it."""
    added = entry(base_url, transport)
    register(added)
    try:
        yield added
    finally:
        unregister(NAME)


# -- Pure parsers -------------------------------------------------------------------------------------------


def _field(payload: Any, key: str) -> Any:
    return payload.get(key) if isinstance(payload, dict) else None


def _listed(key: str) -> Any:
    def items(payload: Any) -> list[Any]:
        found = _field(payload, key)
        if not isinstance(found, list):
            raise ValueError(f"an answer without its {key} list")
        return found

    return items


def _to_balance(payload: Any) -> Balance:
    amount = to_money(_field(payload, "balance"), zero=True)
    if amount is None:
        raise ValueError("a balance answer without a balance")
    return Balance(provider=NAME, amount=amount)


def _to_plan(item: Any) -> Plan:
    code = to_text(_field(item, "code"))
    if code is None:
        raise ValueError("a plan without a code")
    minutes = to_int(item.get("minutes"))
    return Plan(
        plan_id=f"{NAME}:{code}",
        provider=NAME,
        service=to_text(item.get("service")) or code,
        service_code=code,
        country=to_text(item.get("country")),
        price=to_money(item.get("price")),
        duration=f"{minutes} min" if minutes is not None else None,
        duration_minutes=minutes,
        billing_type="one_time",
    )


def _to_rental(item: Any) -> Rental:
    rental_id = to_text(_field(item, "id"))
    if rental_id is None:
        raise ValueError("a rental without an id")
    status = to_text(item.get("status"))
    plan = to_text(item.get("plan"))
    return Rental(
        rental_id=f"{NAME}:{rental_id}",
        provider=NAME,
        phone=to_e164(item.get("phone")),
        phone_display=to_text(item.get("phone")),
        service=to_text(item.get("service")),
        plan_id=f"{NAME}:{plan}" if plan else None,
        price=to_money(item.get("price")),
        status=STATUS_MAP.get(status or "", RentalStatus.UNKNOWN),
        provider_status=status,
        started_at=to_datetime(item.get("started_at")),
        ends_at=to_datetime(item.get("ends_at")),
    )


def _to_message(item: Any, rental_id: str) -> Message:
    message_id = to_text(_field(item, "id"))
    if message_id is None:
        raise ValueError("a message without an id")
    return Message(
        message_id=f"{NAME}:{message_id}",
        rental_id=rental_id,
        sender=to_text(item.get("from")),
        text=to_text(item.get("text")),
        code=to_text(item.get("code")),
        received_at=to_datetime(item.get("received_at")),
    )
