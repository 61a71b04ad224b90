"""GotSMS adapter: every endpoint of the GotSMS REST API (`Authorization: Bearer`), and its pure parsers.

What it declares: its rent list shows every rent (a lost purchase is settled from it); all messages come in one
account-wide list; numbers sleep and wake; a rent is extended by moving it to a longer plan; auto-renewal can only
be flipped; a refund shows as `refunded`, or as finished before the rent's time.

Paths are appended to `GOTSMS_BASE_URL` (default `https://app.gotsms.org/api`). Lists paginated with
`meta.current_page/last_page` are followed to the last page; a number's messages follow `before_id`.
"""

from __future__ import annotations

import functools
from typing import Any

import httpx
from pydantic import SecretStr

from smsrent.domain.errors import CancelNotAllowed, ProviderError, ProviderNotFound
from smsrent.domain.ids import GOTSMS_IDS, Ref
from smsrent.domain.models import (
    Balance,
    Message,
    NumberStatus,
    Plan,
    PublicPrice,
    Receipt,
    Rental,
    RentalStatus,
    ServiceInfo,
)
from smsrent.domain.values import to_bool, to_datetime, to_e164, to_int, to_money, to_text
from smsrent.providers.base import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    Capabilities,
    ExtensionStyle,
    HttpProvider,
    RetryPolicy,
    fingerprint,
    parse_each,
)
from smsrent.providers.observed import Routes

DEFAULT_BASE_URL = "https://app.gotsms.org/api"
MAX_PAGES = 200

STATUS_MAP = {
    "active": RentalStatus.ACTIVE,
    "finished": RentalStatus.COMPLETED,
    "completed": RentalStatus.COMPLETED,
    "expired": RentalStatus.EXPIRED,
    "refunded": RentalStatus.REFUNDED,
    "cancelled": RentalStatus.CANCELLED,
    "canceled": RentalStatus.CANCELLED,
}


class GotSmsProvider(HttpProvider):
    """One GotSMS account."""

    name = "gotsms"
    display_name = "GotSMS"
    credential_env = "GOTSMS_API_TOKEN"
    ids = GOTSMS_IDS
    capabilities = Capabilities(refund_status=RentalStatus.REFUNDED, refund_ends_early=True)
    auto_renewing = "monthly rents"
    routes = Routes(
        (
            "/pricelist",
            "/account",
            "/services",
            "/rents",
            "/rents/plans",
            "/rents/{id}/transition",
            "/rents/{id}/renewal/toggle",
            "/rents/{id}/refund",
            "/messages",
            "/messages/unread",
            "/numbers/{id}/wake-up",
            "/numbers/{id}/messages",
            "/numbers/{id}/status",
        )
    )

    def __init__(
        self,
        token: SecretStr,
        *,
        base_url: str = DEFAULT_BASE_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        sandbox: bool = False,
    ) -> None:
        secret = token.get_secret_value()
        super().__init__(
            base_url=base_url,
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            secrets=(secret,),
            transport=transport,
            timeout=timeout,
            retry=retry,
            sandbox=sandbox,
        )

    # -- Pricelist, account, services -------------------------------------------------------------

    async def pricelist(self) -> list[PublicPrice]:
        """GET /pricelist: the public price list, grouped by service."""
        groups = self._parse(_listed, await self._call("GET", "/pricelist", safe=True))
        return parse_each(_to_public_price, (plan for group in groups for plan in _items(group.get("plans"))))

    async def account(self) -> Balance:
        """GET /account: the account balance."""
        return self._parse(_to_balance, _data(await self._call("GET", "/account", safe=True)))

    async def services(self) -> list[ServiceInfo]:
        """GET /services, every page."""
        return parse_each(_to_service, await self._collect("/services"))

    # -- Rents ------------------------------------------------------------------------------------

    async def rent_plans(self) -> list[Plan]:
        """GET /rents/plans, every page."""
        return parse_each(_to_plan, await self._collect("/rents/plans"))

    async def rents(self) -> list[Rental]:
        """GET /rents, every page: this account's rents."""
        return parse_each(_to_rental, await self._collect("/rents"))

    async def create_rent(self, plan_uuid: str) -> Receipt:
        """POST /rents: rent a number on a plan. Spends money; never retried once it may have been sent."""
        payload = await self._call("POST", "/rents", safe=False, json_body={"plan_id": plan_uuid})
        return Receipt(rental=self._parse(_to_rental, _data(payload)), note=_message(payload))

    async def transition(self, rent_uuid: str, plan_uuid: str) -> Receipt:
        """POST /rents/{id}/transition: move a daily rent to a longer plan. Spends money."""
        payload = await self._call(
            "POST", f"/rents/{rent_uuid}/transition", safe=False, json_body={"plan_id": plan_uuid}
        )
        return Receipt(rental=self._parse(_to_rental, _data(payload)), note=_message(payload))

    async def toggle_renewal(self, rent_uuid: str) -> bool:
        """POST /rents/{id}/renewal/toggle: flip auto-renewal; returns the new state."""
        payload = await self._call("POST", f"/rents/{rent_uuid}/renewal/toggle", safe=False)
        data = _data(payload)
        state = to_bool(data.get("is_included_for_next_renewal")) if isinstance(data, dict) else None
        if state is None:
            raise self._unavailable(200, "did not say whether auto-renewal is now on")
        return state

    async def refund_rent(self, rent_uuid: str) -> Receipt:
        """POST /rents/{id}/refund."""
        payload = await self._call("POST", f"/rents/{rent_uuid}/refund", safe=False)
        return Receipt(rental=self._parse(_to_rental, _data(payload)), note=_message(payload))

    # -- Messages ---------------------------------------------------------------------------------

    async def messages(self) -> list[Message]:
        """GET /messages, every page: all SMS across rents, newest first."""
        return parse_each(_to_message, await self._collect("/messages"))

    async def unread_messages(self) -> list[Message]:
        """GET /messages/unread until nothing new shows. May be the only sighting of a message: store what it
        returns. Listing may mark messages read and move later ones up, so page 1 is read again while it brings
        new messages, then any further pages in order."""
        found: dict[str, dict[str, Any]] = {}
        page = 1
        for _ in range(MAX_PAGES):
            items, more = await self._page("/messages/unread", page)
            fresh = {_item_key(item): item for item in items if _item_key(item) not in found}
            found.update(fresh)
            if fresh and page == 1:
                continue
            if not more:
                break
            page += 1
        return parse_each(_to_message, found.values())

    async def message_page(self, page: int) -> tuple[list[Message], bool]:
        """GET /messages?page=N, newest first, and whether older pages follow: a poller stops at a known message.
        Not retried: a poller has its own schedule and must feel a 429 at once."""
        items, more = await self._page("/messages", page, retry=False)
        return parse_each(_to_message, items), more

    # -- Numbers ----------------------------------------------------------------------------------

    async def wake_up(self, rent_uuid: str) -> str:
        """POST /numbers/{id}/wake-up: ask for the number to come online; returns the provider's note."""
        payload = await self._call("POST", f"/numbers/{rent_uuid}/wake-up", safe=False)
        return _message(payload) or "Wake up request sent."

    async def number_messages(self, rent_uuid: str) -> list[Message]:
        """GET /numbers/{id}/messages, following `meta.next_before_id` to the oldest message."""
        found: list[Message] = []
        before: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params = {"before_id": before} if before else None
            payload = await self._call("GET", f"/numbers/{rent_uuid}/messages", safe=True, params=params)
            page = self._parse(_listed, payload)
            found.extend(parse_each(functools.partial(_to_message, rent_uuid=rent_uuid), page))
            following = to_text(_meta(payload).get("next_before_id"))
            if not page or following is None or following in seen:
                break  # the end, or a cursor already followed (a repeat or a cycle)
            seen.add(following)
            before = following
        return found

    async def number_status(self, rent_uuid: str) -> NumberStatus:
        """GET /numbers/{id}/status: queue, wake-up and online windows."""
        data = _data(await self._call("GET", f"/numbers/{rent_uuid}/status", safe=True))
        return self._parse(functools.partial(_to_number_status, rent_uuid=rent_uuid), data)

    # -- Domain operations (the Provider protocol) ------------------------------------------------

    async def get_balance(self) -> Balance:
        return await self.account()

    async def list_plans(self) -> list[Plan]:
        return await self.rent_plans()

    async def rent(self, plan: Ref) -> Receipt:
        return await self.create_rent(plan.local_id)

    async def get_rental(self, rental: Ref) -> Receipt:
        """GotSMS has no single-rent endpoint: find it in the rent list."""
        for found in await self.rents():
            if found.rental_id == str(rental):
                return Receipt(rental=found)
        raise ProviderNotFound(
            f"GotSMS has no rent {rental} on this account; check the id with list_rentals.",
            provider=self.name,
            status_code=404,
        )

    async def get_messages(self, rental: Ref) -> list[Message]:
        """Oldest first (the endpoint lists newest first)."""
        return list(reversed(await self.number_messages(rental.local_id)))

    async def poll(self, rental: Ref) -> Receipt:
        messages = tuple(await self.get_messages(rental))
        return Receipt(rental=Rental(rental_id=str(rental), provider=self.name), messages=messages)

    async def refund(self, rental: Ref) -> Receipt:
        return await self.refund_rent(rental.local_id)

    # -- Optional features (the protocols in `base`) ----------------------------------------------

    async def rent_listing(self) -> list[Rental]:
        return await self.rents()

    def listed(self, ref: Ref) -> bool:
        return True  # every rent, whatever its plan

    async def number_state(self, rental: Ref) -> NumberStatus:
        return await self.number_status(rental.local_id)

    async def wake_number(self, rental: Ref) -> None:
        await self.wake_up(rental.local_id)

    def extension(self, rental: Ref) -> ExtensionStyle:
        return "longer_plan"

    async def extend(self, rental: Ref, plan: Ref | None) -> Receipt:
        assert plan is not None, "a longer_plan extension names its plan"
        return await self.transition(rental.local_id, plan.local_id)

    def auto_renews(self, rental: Ref) -> bool:
        return True  # the provider refuses rents whose plan does not renew

    async def flip_auto_renew(self, rental: Ref) -> bool:
        return await self.toggle_renewal(rental.local_id)

    # -- Plumbing ---------------------------------------------------------------------------------

    async def _page(self, path: str, page: int, *, retry: bool = True) -> tuple[list[dict[str, Any]], bool]:
        """One page of a `meta.current_page/last_page` list, and whether a later page exists."""
        payload = await self._call("GET", path, safe=True, params={"page": page}, retry=retry)
        meta = _meta(payload)
        current, last = to_int(meta.get("current_page")) or page, to_int(meta.get("last_page")) or page
        # The page asked for counts too: a server that keeps saying "page 1 of 3" must not be read 200 times.
        return self._parse(_listed, payload), max(current, page) < last

    async def _collect(self, path: str) -> list[dict[str, Any]]:
        """Every item of a paginated list, following pages to the last one."""
        items: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            found, more = await self._page(path, page)
            items.extend(found)
            if not more:
                break
        return items

    def _check_payload(self, payload: Any) -> None:
        if isinstance(payload, dict) and to_bool(payload.get("success")) is False:
            raise self._error_for(200, self._error_text(payload) or "request failed")

    def _classify(self, detail: str) -> type[ProviderError] | None:
        if "refund not available" in detail.lower():
            return CancelNotAllowed
        return super()._classify(detail)


# -- Pure parsers -------------------------------------------------------------------------------------


def _data(payload: Any) -> Any:
    return payload.get("data") if isinstance(payload, dict) and "data" in payload else payload


def _meta(payload: Any) -> dict[str, Any]:
    meta = payload.get("meta") if isinstance(payload, dict) else None
    return meta if isinstance(meta, dict) else {}


def _listed(payload: Any) -> list[dict[str, Any]]:
    """The items of a list answer. One without its list is unreadable, not empty: an empty list proves that no
    rent was made, and a purchase would be settled as not bought on it."""
    data = _data(payload)
    if not isinstance(data, list):
        raise ValueError("a list answer without its list")
    return _items(data)


def _items(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _item_key(item: dict[str, Any]) -> str:
    return to_text(item.get("id")) or fingerprint(item.get("rent_id"), item.get("received_at"), item.get("body"))


def _message(payload: Any) -> str | None:
    return to_text(payload.get("message")) if isinstance(payload, dict) else None


def _name(value: Any) -> str | None:
    return to_text(value.get("name")) if isinstance(value, dict) else to_text(value)


def _status(raw: Any) -> RentalStatus:
    text = to_text(raw)
    return STATUS_MAP.get(text.lower(), RentalStatus.UNKNOWN) if text else RentalStatus.UNKNOWN


def _to_balance(data: Any) -> Balance:
    amount = to_money(data.get("balance"), zero=True) if isinstance(data, dict) else None
    if amount is None:
        raise ValueError("an account answer without a balance")
    return Balance(provider="gotsms", amount=amount)


def _to_public_price(item: dict[str, Any]) -> PublicPrice:
    return PublicPrice(
        service=to_text(item.get("service_name")) or "unknown",
        country=to_text(item.get("country")),
        duration=to_text(item.get("duration_translation")),
        price=to_money(item.get("price")),
        renew_price=to_money(item.get("renew_price")),
        billing_type=to_text(item.get("billing_type")),
    )


def _to_service(item: dict[str, Any]) -> ServiceInfo:
    return ServiceInfo(service_id=to_text(item.get("id")) or "", name=to_text(item.get("name")) or "unknown")


def _to_plan(item: dict[str, Any]) -> Plan:
    service = item.get("service")
    return Plan(
        plan_id=f"gotsms:{to_text(item.get('id'))}",
        provider="gotsms",
        service=_name(service) or "unknown",
        service_code=to_text(service.get("id")) if isinstance(service, dict) else None,
        country=_name(item.get("country")),
        price=to_money(item.get("price")),
        renew_price=to_money(item.get("renew_price")),
        duration=to_text(item.get("duration_translation")),
        duration_minutes=to_int(item.get("duration_in_minutes")),
        billing_type=to_text(item.get("billing_type")),
        auto_renew_supported=to_text(item.get("duration_type")) == "month",
    )


def _to_rental(item: Any) -> Rental:
    if not isinstance(item, dict) or to_text(item.get("id")) is None:
        raise ValueError("a rent without an id")
    plan = item.get("plan")
    plan = plan if isinstance(plan, dict) else {}
    plan_id = to_text(plan.get("id"))
    return Rental(
        rental_id=f"gotsms:{to_text(item.get('id'))}",
        provider="gotsms",
        phone=to_e164(item.get("phone")),
        phone_display=to_text(item.get("phone")),
        service=_name(item.get("service")),
        plan_id=f"gotsms:{plan_id}" if plan_id else None,
        price=to_money(item.get("price")),
        status=_status(item.get("status")),
        provider_status=to_text(item.get("status")),
        started_at=to_datetime(item.get("active_from")),
        ends_at=to_datetime(item.get("active_till")),
        wake_from=to_datetime(item.get("wake_from")),
        wake_till=to_datetime(item.get("wake_till")),
        can_wake_up=to_bool(item.get("can_wake_up")),
        auto_renew=to_bool(item.get("is_included_for_next_renewal")),
        period=to_text(plan.get("duration_translation")),
    )


def _to_message(item: dict[str, Any], rent_uuid: str | None = None) -> Message:
    rent = to_text(item.get("rent_id")) or rent_uuid
    if rent is None:
        raise ValueError("a message without a rent id")
    message_id = to_text(item.get("id")) or fingerprint(rent, item.get("received_at"), item.get("body"))
    return Message(
        message_id=f"gotsms:{message_id}",
        rental_id=f"gotsms:{rent}",
        sender=to_text(item.get("from")),
        text=to_text(item.get("body")),
        code=to_text(item.get("code")),
        received_at=to_datetime(item.get("received_at")),
    )


def _to_number_status(item: Any, rent_uuid: str) -> NumberStatus:
    if not isinstance(item, dict):
        raise ValueError("a number status that is not an object")
    data: dict[str, Any] = item
    return NumberStatus(
        rental_id=f"gotsms:{to_text(data.get('rent_id')) or rent_uuid}",
        status=_status(data.get("status")),
        provider_status=to_text(data.get("status")),
        active_from=to_datetime(data.get("active_from")),
        active_till=to_datetime(data.get("active_till")),
        wake_from=to_datetime(data.get("wake_from")),
        wake_till=to_datetime(data.get("wake_till")),
        online_till=to_datetime(data.get("online_till")),
        wake_seconds_left=to_int(data.get("wakeup_time_left_seconds")),
        online_seconds_left=to_int(data.get("online_time_left_seconds")),
        can_wake_up=to_bool(data.get("can_wake_up")),
    )
