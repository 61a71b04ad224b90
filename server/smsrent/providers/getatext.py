"""Getatext adapter: every endpoint of the Getatext API (`Auth` header), the `/stubs/handler_api` GET
variant for hosts that cannot POST, the webhook payload, and their pure parsers.

The document's examples are not valid JSON as printed and its values are loose (prices as strings,
`"errors": "null"`, a webhook code as a JSON number), so every reader here is tolerant. Naive times
(`YYYY-MM-DD HH:MM:SS`) are read in the configured provider time zone.

What it declares: only long rentals are listed, so a lost one-time purchase (or renewal) is settled from the balance
and purchases run one at a time; messages are read per rental; a one-time rental is extended by renting its number
again, a long one by renewing it; long rentals set auto-renewal; one-time rentals can be marked completed; a refund
shows as `cancelled`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from datetime import timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, Literal

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict, SecretStr

from smsrent.domain.errors import (
    CancelNotAllowed,
    InsufficientBalance,
    NoNumbersAvailable,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
)
from smsrent.domain.ids import GETATEXT_IDS, LONG_PERIODS, LongPeriod, Ref
from smsrent.domain.models import Balance, Message, Plan, Receipt, Rental, RentalStatus
from smsrent.domain.values import to_bool, to_datetime, to_e164, to_int, to_money, to_text
from smsrent.providers.base import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    Capabilities,
    ExtensionStyle,
    HttpProvider,
    RetryPolicy,
    fingerprint,
    flatten_errors,
    parse_each,
)
from smsrent.providers.observed import Routes

DEFAULT_BASE_URL = "https://getatext.com"
DEFAULT_TIMEZONE: tzinfo = timezone(timedelta(hours=-4))
WEBHOOK_SENDER = "104.198.170.54"
# The document's numbers are 10-digit North American numbers; its plans name no country.
COUNTRY = "USA"

LongAction = Literal["renew", "cancel", "auto_renew"]

STATUS_MAP = {
    "success": RentalStatus.ACTIVE,
    "active": RentalStatus.ACTIVE,
    "pending": RentalStatus.ACTIVE,
    "waiting": RentalStatus.ACTIVE,
    "completed": RentalStatus.COMPLETED,
    "finished": RentalStatus.COMPLETED,
    "cancelled": RentalStatus.CANCELLED,
    "canceled": RentalStatus.CANCELLED,
    "refunded": RentalStatus.REFUNDED,
    "expired": RentalStatus.EXPIRED,
    "timeout": RentalStatus.EXPIRED,
}
PERIOD_NAMES: dict[LongPeriod, str] = {"1w": "1 Week", "2w": "2 Weeks", "1m": "1 Month", "1y": "1 Year"}
PERIODS: dict[str, LongPeriod] = {name.lower(): period for period, name in PERIOD_NAMES.items()}

# Classic SMS-Activate answers a handler-API clone may send instead of JSON (split at the first colon).
_HANDLER_ERRORS: dict[str, type[ProviderError]] = {
    "NO_NUMBERS": NoNumbersAvailable,
    "NO_BALANCE": InsufficientBalance,
    "BAD_KEY": ProviderAuthError,
    "BANNED": ProviderAuthError,
    "EARLY_CANCEL_DENIED": CancelNotAllowed,
    "NO_ACTIVATION": ProviderNotFound,
    "WRONG_ACTIVATION_ID": ProviderNotFound,
    "BAD_ACTION": ProviderRejected,
    "BAD_SERVICE": ProviderRejected,
}
_API_KEY_IN_URL = re.compile(r"(api_key=)[^&\s'\"]+")


class WebhookCode(BaseModel):
    """A code Getatext pushed to our webhook. `code` lost its leading zeros if it came as a JSON number."""

    model_config = ConfigDict(frozen=True)

    rental_id: str
    code: str
    code_was_number: bool
    received_at: AwareDatetime | None
    phone: str | None
    service: str | None


class GetatextProvider(HttpProvider):
    """One Getatext account. `use_handler_api` sends the five calls it covers as GETs to `/stubs/handler_api`."""

    name = "getatext"
    display_name = "Getatext"
    credential_env = "GETATEXT_API_KEY"
    ids = GETATEXT_IDS
    capabilities = Capabilities(
        settle_from_balance=True, serialized_purchases=True, refund_status=RentalStatus.CANCELLED
    )
    auto_renewing = "long rentals"
    finishing = "one-time rentals"
    routes = Routes(
        (
            "/api/v1/balance",
            "/api/v1/prices-info",
            "/api/v1/rent-a-number",
            "/api/v1/cancel-rental",
            "/api/v1/re-rent",
            "/api/v1/rental-status",
            "/api/v1/rental-status/{id}/completed",
            "/api/v1/long-rentals",
            "/api/v1/long-rentals/{id}/update",
            "/api/v1/long-rentals/{id}/messages",
            "/stubs/handler_api",
        )
    )

    def __init__(
        self,
        api_key: SecretStr,
        *,
        base_url: str = DEFAULT_BASE_URL,
        use_handler_api: bool = False,
        tz: tzinfo = DEFAULT_TIMEZONE,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        long_prices: Mapping[str, Decimal] | None = None,
        sandbox: bool = False,
    ) -> None:
        secret = api_key.get_secret_value()
        super().__init__(
            base_url=base_url,
            headers={"Auth": secret, "Content-Type": "application/json"},
            secrets=(secret,),
            transport=transport,
            timeout=timeout,
            retry=retry,
            sandbox=sandbox,
        )
        self.use_handler_api = use_handler_api
        self.tz = tz
        self.long_prices = dict(long_prices or {})
        self._api_key = api_key
        if use_handler_api:
            _mask_keys_in_httpx_logs()

    # -- One-time rentals -------------------------------------------------------------------------

    async def rent_a_number(self, service: str) -> Receipt:
        """POST /api/v1/rent-a-number (or handler `getNumber`). Spends money; never retried once sent."""
        if self.use_handler_api:
            payload = await self._handler("getNumber", safe=False, service=service)
        else:
            payload = await self._call("POST", "/api/v1/rent-a-number", safe=False, json_body={"service": service})
        return self._parse(functools.partial(_to_receipt, tz=self.tz, service_code=service), payload)

    async def cancel_rental(self, rental_id: str) -> Receipt:
        """POST /api/v1/cancel-rental (or handler `cancelRental`); allowed one minute after renting. A 2xx answer
        that does not show the rental cancelled leaves the outcome unknown."""
        if self.use_handler_api:
            payload = await self._handler("cancelRental", safe=False, rental_id=rental_id)
        else:
            payload = await self._call("POST", "/api/v1/cancel-rental", safe=False, json_body={"id": int(rental_id)})
        receipt = self._parse(functools.partial(_to_receipt, tz=self.tz, fallback_id=rental_id), payload)
        if receipt.rental.status is not RentalStatus.CANCELLED:
            raise self._unavailable(200, "did not confirm the cancellation")
        return receipt

    async def rental_status(self, rental_id: str, *, retry: bool = True) -> Receipt:
        """POST /api/v1/rental-status (or handler `getRentalStatus`): the rental and its code, if one came."""
        if self.use_handler_api:
            payload = await self._handler("getRentalStatus", safe=True, rental_id=rental_id, retry=retry)
        else:
            payload = await self._call(
                "POST", "/api/v1/rental-status", safe=True, json_body={"id": int(rental_id)}, retry=retry
            )
        return self._parse(functools.partial(_to_receipt, tz=self.tz, fallback_id=rental_id), payload)

    async def complete_rental(self, rental_id: str) -> Receipt:
        """POST /api/v1/rental-status/{id}/completed: mark the rental done."""
        payload = await self._call("POST", f"/api/v1/rental-status/{rental_id}/completed", safe=False)
        return self._parse(functools.partial(_to_completed, tz=self.tz, fallback_id=rental_id), payload)

    async def prices(self) -> list[Plan]:
        """GET /api/v1/prices-info (or handler `getPrices`): the one-time plans."""
        if self.use_handler_api:
            payload = await self._handler("getPrices", safe=True)
        else:
            payload = await self._call("GET", "/api/v1/prices-info", safe=True)
        return parse_each(_to_plan, self._parse(_price_items, payload))

    async def re_rent(self, rental_id: str) -> Receipt:
        """POST /api/v1/re-rent: rent the same number again. Spends money; never retried once sent."""
        payload = await self._call("POST", "/api/v1/re-rent", safe=False, json_body={"rental_id": int(rental_id)})
        return self._parse(functools.partial(_to_receipt, tz=self.tz), payload)

    async def balance(self) -> Balance:
        """GET /api/v1/balance (or handler `getBalance`)."""
        if self.use_handler_api:
            payload = await self._handler("getBalance", safe=True)
        else:
            payload = await self._call("GET", "/api/v1/balance", safe=True)
        return self._parse(_to_balance, payload)

    # -- Long rentals -----------------------------------------------------------------------------

    async def long_rentals(self) -> list[Rental]:
        """GET /api/v1/long-rentals."""
        payload = await self._call("GET", "/api/v1/long-rentals", safe=True)
        items = self._parse(functools.partial(_listed, key="long_rentals"), payload)
        return parse_each(functools.partial(_to_long_rental, tz=self.tz), items)

    async def create_long_rental(self, period: LongPeriod, *, auto_renew: bool) -> Receipt:
        """POST /api/v1/long-rentals. Spends money; never retried once sent."""
        body = {"auto_renew": auto_renew, "rental_time": period}
        payload = await self._call("POST", "/api/v1/long-rentals", safe=False, json_body=body)
        return self._parse(functools.partial(_to_long_receipt, tz=self.tz), payload)

    async def update_long_rental(
        self, rental_id: str, action: LongAction, *, auto_renew: bool | None = None
    ) -> Receipt:
        """POST /api/v1/long-rentals/{id}/update with `renew`, `cancel` or `auto_renew` (+ the wanted state)."""
        body: dict[str, Any] = {"action": action}
        if action == "auto_renew":
            body["auto_renew"] = bool(auto_renew)
        payload = await self._call("POST", f"/api/v1/long-rentals/{rental_id}/update", safe=False, json_body=body)
        return self._parse(functools.partial(_to_long_receipt, tz=self.tz, fallback_id=rental_id), payload)

    async def long_rental_messages(self, rental_id: str) -> list[Message]:
        """GET /api/v1/long-rentals/{id}/messages."""
        payload = await self._call("GET", f"/api/v1/long-rentals/{rental_id}/messages", safe=True)
        items = self._parse(functools.partial(_listed, key="messages"), payload)
        return parse_each(functools.partial(_to_long_message, rental_id=rental_id, tz=self.tz), items)

    # -- Domain operations (the Provider protocol) ------------------------------------------------

    async def get_balance(self) -> Balance:
        return await self.balance()

    async def list_plans(self) -> list[Plan]:
        """One-time plans from prices-info, then the long-rental periods (priced only where configured)."""
        return [
            *await self.prices(),
            *(_long_plan(period, self.long_prices.get(period)) for period in LONG_PERIODS.values()),
        ]

    async def rent(self, plan: Ref) -> Receipt:
        if plan.long:
            return await self.create_long_rental(LONG_PERIODS[plan.local_id], auto_renew=False)
        return await self.rent_a_number(plan.local_id)

    async def get_rental(self, rental: Ref) -> Receipt:
        if not rental.long:
            return await self.rental_status(rental.local_id)
        for found in await self.long_rentals():
            if found.rental_id == str(rental):
                return Receipt(rental=found)
        raise ProviderNotFound(
            f"Getatext has no long rental {rental} on this account; check the id with list_rentals.",
            provider=self.name,
            status_code=404,
        )

    async def get_messages(self, rental: Ref) -> list[Message]:
        if rental.long:
            return await self.long_rental_messages(rental.local_id)
        return list((await self.rental_status(rental.local_id)).messages)

    async def poll(self, rental: Ref) -> Receipt:
        if not rental.long:
            return await self.rental_status(rental.local_id, retry=False)
        messages = tuple(await self.long_rental_messages(rental.local_id))
        return Receipt(rental=Rental(rental_id=str(rental), provider=self.name), messages=messages)

    async def refund(self, rental: Ref) -> Receipt:
        if rental.long:
            return await self.update_long_rental(rental.local_id, "cancel")
        return await self.cancel_rental(rental.local_id)

    # -- Optional features (the protocols in `base`) ----------------------------------------------

    async def rent_listing(self) -> list[Rental]:
        return await self.long_rentals()

    def listed(self, ref: Ref) -> bool:
        return ref.long  # one-time rentals have no list

    def extension(self, rental: Ref) -> ExtensionStyle:
        return "renewal" if rental.long else "re_rent"

    async def extend(self, rental: Ref, plan: Ref | None) -> Receipt:
        if rental.long:
            return await self.update_long_rental(rental.local_id, "renew")
        return await self.re_rent(rental.local_id)

    def auto_renews(self, rental: Ref) -> bool:
        return rental.long

    async def set_auto_renew(self, rental: Ref, enabled: bool) -> Receipt:
        return await self.update_long_rental(rental.local_id, "auto_renew", auto_renew=enabled)

    def finishes(self, rental: Ref) -> bool:
        return not rental.long

    async def finish_rental(self, rental: Ref) -> Receipt:
        return await self.complete_rental(rental.local_id)

    # -- Plumbing ---------------------------------------------------------------------------------

    async def _handler(self, action: str, *, safe: bool, retry: bool = True, **params: str) -> Any:
        query = {"api_key": self._api_key.get_secret_value(), "action": action, **params}
        payload = await self._call("GET", "/stubs/handler_api", safe=safe, params=query, retry=retry, accept_text=True)
        if not isinstance(payload, str):
            return payload
        # The handler API's error tokens come with HTTP 200 and are its definite "no" (nothing was done).
        token, _, _ = payload.strip().partition(":")
        kind = _HANDLER_ERRORS.get(token.upper())
        if kind is not None:
            raise kind(self._refined_message(kind, token), provider=self.name, status_code=200)
        return _from_handler_text(payload)

    def _check_payload(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        failed = to_text(payload.get("status")) in ("error", "failed", "fail")
        if failed or _reports_error(payload.get("errors")):
            raise self._error_for(200, self._error_text(payload) or "request failed")

    def _classify(self, detail: str) -> type[ProviderError] | None:
        text = detail.lower()
        if ("wait" in text and ("min" in text or "cancel" in text)) or "cannot be cancel" in text:
            return CancelNotAllowed
        if "not found" in text or "does not exist" in text:
            return ProviderNotFound
        return super()._classify(detail)


def _mask_keys_in_httpx_logs() -> None:
    """httpx logs request URLs at INFO; the handler API puts the key in the URL, so mask it there."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _MaskApiKey) for f in logger.filters):
        logger.addFilter(_MaskApiKey())


class _MaskApiKey(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _API_KEY_IN_URL.sub(r"\1***", record.getMessage())
        record.args = ()
        return True


# -- Pure parsers -------------------------------------------------------------------------------------


def _reports_error(value: Any) -> bool:
    """Whether an `errors` field says the request failed: true, or error text (a string, or messages in a list or
    mapping). null, false, 0 and empties, as strings too, say it did not."""
    flag = to_bool(value)
    if flag is not None:
        return flag
    return flatten_errors(value) is not None


def _status(raw: Any) -> RentalStatus:
    text = to_text(raw)
    return STATUS_MAP.get(text.lower(), RentalStatus.UNKNOWN) if text else RentalStatus.UNKNOWN


def _required_id(item: dict[str, Any], fallback: str | None = None) -> str:
    local = to_text(item.get("id")) or fallback
    if local is None or not local.isdigit():
        raise ValueError("a rental without a numeric id")
    return local


def _to_receipt(
    payload: Any, *, tz: tzinfo, fallback_id: str | None = None, service_code: str | None = None
) -> Receipt:
    """rent-a-number, re-rent, cancel-rental and rental-status answers: one rental and maybe its code."""
    if not isinstance(payload, dict):
        raise ValueError("a rental answer that is not an object")
    local = _required_id(payload, fallback_id)
    rental_id = f"getatext:{local}"
    code = _code_text(payload.get("code"))
    messages = (
        (Message(message_id=f"getatext:{local}:{code}", rental_id=rental_id, code=code),) if code is not None else ()
    )
    rental = Rental(
        rental_id=rental_id,
        provider="getatext",
        phone=to_e164(payload.get("number")),
        phone_display=to_text(payload.get("number")),
        service=to_text(payload.get("service_name")),
        plan_id=f"getatext:{service_code}" if service_code else None,
        price=to_money(payload.get("price", payload.get("cost"))),
        status=_status(payload.get("status")),
        provider_status=to_text(payload.get("status")),
        ends_at=to_datetime(payload.get("end_time"), tz),
    )
    balance = to_money(payload.get("new_balance", payload.get("balance")), zero=True)
    return Receipt(rental=rental, messages=messages, balance_after=balance, note=to_text(payload.get("message")))


def _to_completed(payload: Any, *, tz: tzinfo, fallback_id: str) -> Receipt:
    """The mark-completed answer nests the rental under `rental`."""
    if not isinstance(payload, dict):
        raise ValueError("a completion answer that is not an object")
    inner = payload.get("rental")
    inner = inner if isinstance(inner, dict) else {}
    receipt = _to_receipt({**inner, "status": "completed"}, tz=tz, fallback_id=fallback_id)
    return receipt.model_copy(update={"note": to_text(payload.get("message"))})


def _listed(payload: Any, key: str) -> list[Any]:
    """The list under `key` (or a bare list). One without it is unreadable, not empty: an empty list of long
    rentals proves that none was bought, and a purchase would be settled as not bought on it."""
    items = payload.get(key) if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise ValueError(f"an answer without its {key} list")
    return items


def _price_items(payload: Any) -> list[Any]:
    """prices-info as printed is one object; accept a list, or a list under a wrapper key, too."""
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        if "api_name" in payload:
            return [payload]
        for key in ("data", "prices", "services"):
            if isinstance(payload.get(key), list):
                return list(payload[key])
    raise ValueError("a price list without prices")


def _to_plan(item: Any) -> Plan:
    api_name = to_text(item.get("api_name")) if isinstance(item, dict) else None
    if api_name is None or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", api_name):
        raise ValueError("a price without a usable api_name")
    ttl = to_int(item.get("ttl"))
    return Plan(
        plan_id=f"getatext:{api_name}",
        provider="getatext",
        service=to_text(item.get("service_name")) or api_name,
        service_code=api_name,
        country=COUNTRY,
        price=to_money(item.get("price")),
        duration=f"{ttl} min" if ttl is not None else None,
        duration_minutes=ttl,
        billing_type="one_time",
        multiple_sms=to_bool(item.get("multiple_sms")),
    )


def _long_plan(period: LongPeriod, price: Decimal | None) -> Plan:
    name = PERIOD_NAMES[period]
    return Plan(
        plan_id=f"getatext:long:{period}",
        provider="getatext",
        service="Long-term number (any service)",
        country=COUNTRY,
        price=price,
        duration=name.lower(),
        billing_type="long_rental",
        auto_renew_supported=True,
        multiple_sms=True,
    )


def _to_balance(payload: Any) -> Balance:
    amount = to_money(payload.get("balance"), zero=True) if isinstance(payload, dict) else None
    if amount is None:
        raise ValueError("a balance answer without a balance")
    return Balance(provider="getatext", amount=amount)


def _long_fields(payload: Any) -> dict[str, Any]:
    """A long-rental answer: nested under `long_rental`, or (as the document prints it) flat."""
    if not isinstance(payload, dict):
        raise ValueError("a long-rental answer that is not an object")
    nested = payload.get("long_rental")
    return nested if isinstance(nested, dict) else payload


def _to_long_rental(item: Any, *, tz: tzinfo, fallback_id: str | None = None) -> Rental:
    data = _long_fields(item)
    period = to_text(data.get("period"))
    code = PERIODS.get(period.lower()) if period else None
    return Rental(
        rental_id=f"getatext:long:{_required_id(data, fallback_id)}",
        provider="getatext",
        phone=to_e164(data.get("number")),
        phone_display=to_text(data.get("number")),
        plan_id=f"getatext:long:{code}" if code else None,
        price=to_money(data.get("price")),
        status=_status(data.get("status")),
        provider_status=to_text(data.get("status")),
        started_at=to_datetime(data.get("rented_at"), tz),
        ends_at=to_datetime(data.get("end_time"), tz),
        auto_renew=to_bool(data.get("auto_renew")),
        period=period,
    )


def _to_long_receipt(payload: Any, *, tz: tzinfo, fallback_id: str | None = None) -> Receipt:
    return Receipt(rental=_to_long_rental(payload, tz=tz, fallback_id=fallback_id))


def _to_long_message(item: Any, *, rental_id: str, tz: tzinfo) -> Message:
    if not isinstance(item, dict):
        raise ValueError("a message that is not an object")
    text = to_text(item.get("message"))
    at = item.get("received_at", item.get("rented_at"))
    return Message(
        message_id=f"getatext:long:{rental_id}:{fingerprint(at, item.get('sender'), text)}",
        rental_id=f"getatext:long:{rental_id}",
        sender=to_text(item.get("sender")),
        text=text,
        received_at=to_datetime(at, tz),
    )


def _code_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    return to_text(value)


def _from_handler_text(text: str) -> Any:
    """A classic handler-API text answer as the JSON shape of the matching REST answer."""
    token, _, rest = text.strip().partition(":")
    token = token.upper()
    if token == "ACCESS_BALANCE":
        return {"balance": rest}
    if token == "ACCESS_NUMBER":
        local, _, number = rest.partition(":")
        return {"id": local, "status": "success", "number": number}
    if token == "STATUS_OK":
        return {"status": "active", "code": rest}
    if token in ("STATUS_WAIT_CODE", "STATUS_WAIT_RETRY"):
        return {"status": "active"}
    if token in ("STATUS_CANCEL", "ACCESS_CANCEL"):
        return {"status": "cancelled"}
    return text


def parse_webhook(payload: Any, tz: tzinfo = DEFAULT_TIMEZONE) -> WebhookCode:
    """The webhook body Getatext pushes when a code arrives. Raises ValueError for anything else."""
    if not isinstance(payload, dict):
        raise ValueError("the webhook body is not a JSON object")
    local = _required_id(payload)
    raw = payload.get("code")
    code = _code_text(raw)
    if code is None:
        raise ValueError("the webhook body has no code")
    return WebhookCode(
        rental_id=f"getatext:{local}",
        code=code,
        code_was_number=isinstance(raw, int | float),
        received_at=to_datetime(payload.get("received_at"), tz),
        phone=to_e164(payload.get("number")),
        service=to_text(payload.get("service_name")),
    )
