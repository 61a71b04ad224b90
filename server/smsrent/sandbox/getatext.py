"""A simulated Getatext that follows `getatext-api.txt`: the `/api/v1` endpoints with the `Auth` header,
the `/stubs/handler_api` GET variant with `api_key`, the all-null-but-`errors` error envelope, naive
`YYYY-MM-DD HH:MM:SS` times in US Eastern (-04:00), the one-minute cancel rule (scaled), long rentals,
and webhook pushes carrying the code as a JSON number.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smsrent.sandbox.base import SandboxServer, json_body

log = logging.getLogger("smsrent.sandbox")

API_KEY = "sandbox-getatext-key"
TZ = timezone(timedelta(hours=-4))
LONG_PRICES = {"1w": Decimal("10.55"), "2w": Decimal("18.00"), "1m": Decimal("30.00"), "1y": Decimal("250.00")}
_LONG_DAYS = {"1w": 7, "2w": 14, "1m": 30, "1y": 365}
_PERIOD_NAMES = {"1w": "1 Week", "2w": "2 Weeks", "1m": "1 Month", "1y": "1 Year"}
_SERVICES = (
    ("whatsapp", "Whatsapp", "0.55", True),
    ("telegram", "Telegram", "0.40", False),
    ("google", "Google", "0.30", False),
    ("discord", "Discord", "0.25", False),
    ("openai", "OpenAI", "0.45", False),
    ("uber", "Uber", "0.20", True),
)
_NULL_RENTAL = ("id", "status", "message", "code", "end_time", "number", "service_name", "price", "new_balance")


def _naive(at: float) -> str:
    return datetime.fromtimestamp(at, TZ).strftime("%Y-%m-%d %H:%M:%S")


def _day(at: float) -> str:
    return datetime.fromtimestamp(at, TZ).strftime("%Y-%m-%d")


@dataclass
class _Service:
    api_name: str
    name: str
    price: Decimal
    multiple_sms: bool
    ttl: int = 15


@dataclass
class _Rental:
    id: int
    service: _Service
    number: str
    price: Decimal
    created: float
    ends: float
    status: str = "active"
    code: str | None = None
    code_at: float | None = None
    code_due: float | None = None


@dataclass
class _LongRental:
    id: int
    number: str
    period: str
    price: Decimal
    rented_at: float
    ends: float
    auto_renew: bool
    status: str = "Active"
    messages: list[tuple[float, str, str]] = field(default_factory=list)
    message_due: float | None = None


@dataclass
class GetatextSandbox(SandboxServer):
    """The simulated Getatext account. `webhook_url` (+ `webhook_transport`) receives pushed codes."""

    name: ClassVar[str] = "getatext"
    api_key: str = API_KEY
    balance: Decimal = Decimal("20.00")
    webhook_url: str | None = None
    webhook_transport: httpx.AsyncBaseTransport | None = None
    rentals: dict[int, _Rental] = field(default_factory=dict, init=False)
    long_rentals: dict[int, _LongRental] = field(default_factory=dict, init=False)
    pushed: list[dict[str, Any]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.services = {api: _Service(api, name, Decimal(price), multi) for api, name, price, multi in _SERVICES}
        self._next_id = 12345
        self._outbox: list[dict[str, Any]] = []
        self._push_client: httpx.AsyncClient | None = None
        super().__post_init__()

    # -- Controls -----------------------------------------------------------------------------------

    def deliver(self, rental_id: int, code: str) -> None:
        """A code reaches the rented number now (and is pushed to the webhook, if one is set)."""
        self._receive(self.rentals[rental_id], code, time.time())
        self.poke()

    def deliver_long(self, rental_id: int, text: str, sender: str = "8888") -> None:
        self.long_rentals[rental_id].messages.append((time.time(), text, sender))

    # -- Time ---------------------------------------------------------------------------------------

    def advance(self) -> None:
        now = time.time()
        for rental in self.rentals.values():
            if rental.code_due is not None and now >= rental.code_due:
                self._receive(rental, f"{self.rng.randrange(10**6):06d}", rental.code_due)
            if rental.status == "active" and now >= rental.ends:
                rental.status = "completed" if rental.code else "expired"
        for long in self.long_rentals.values():
            if long.message_due is not None and now >= long.message_due:
                code = f"{self.rng.randrange(10**6):06d}"
                long.messages.append((long.message_due, f"Your verification code is {code}", "8888"))
                long.message_due = None

    def next_due(self) -> float | None:
        dues = [r.code_due for r in self.rentals.values()] + [r.message_due for r in self.long_rentals.values()]
        return min((d for d in dues if d is not None), default=None)

    async def run(self) -> None:
        async with httpx.AsyncClient(transport=self.webhook_transport, timeout=5.0) as client:
            self._push_client = client
            await super().run()

    async def flush(self) -> None:
        if not self.webhook_url or not self._outbox or self._push_client is None:
            self._outbox.clear()
            return
        outbox, self._outbox = self._outbox, []
        for payload in outbox:
            try:
                response = await self._push_client.post(self.webhook_url, json=payload)
                self.pushed.append({**payload, "answer": response.status_code})
            except httpx.HTTPError as err:
                log.warning("sandbox webhook push failed: %s", type(err).__name__)
                self.pushed.append({**payload, "answer": None})

    def _receive(self, rental: _Rental, code: str, at: float) -> None:
        rental.code, rental.code_at, rental.code_due = code, at, None
        self._outbox.append(
            {
                "id": rental.id,
                "code": int(code) if code.isdigit() else code,
                "received_at": _naive(at),
                "number": rental.number,
                "service_name": rental.service.name,
            }
        )

    # -- Routes -------------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        def route(path: str, handler: Any, method: str) -> Route:
            return Route(path, self.endpoint(handler, auth=self._authorized), methods=[method])

        return [
            route("/api/v1/rent-a-number", self._rent, "POST"),
            route("/api/v1/cancel-rental", self._cancel, "POST"),
            route("/api/v1/rental-status", self._status, "POST"),
            route("/api/v1/rental-status/{rental_id}/completed", self._complete, "POST"),
            route("/api/v1/prices-info", self._prices, "GET"),
            route("/api/v1/re-rent", self._re_rent, "POST"),
            route("/api/v1/balance", self._balance, "GET"),
            route("/api/v1/long-rentals", self._list_long, "GET"),
            route("/api/v1/long-rentals", self._create_long, "POST"),
            route("/api/v1/long-rentals/{rental_id}/update", self._update_long, "POST"),
            route("/api/v1/long-rentals/{rental_id}/messages", self._long_messages, "GET"),
            route("/stubs/handler_api", self._handler_api, "GET"),
        ]

    def _authorized(self, request: Request) -> bool:
        given = request.query_params.get("api_key") if request.url.path.startswith("/stubs/") else None
        return (given or request.headers.get("auth")) == self.api_key

    def unauthorized(self) -> Response:
        return _error("Auth is not presented or is invalid.", 401)

    async def _rent(self, request: Request) -> Response:
        return self._open((await json_body(request)).get("service"))

    def _open(self, api_name: Any, number: str | None = None) -> Response:
        service = self.services.get(str(api_name or "").lower())
        if service is None:
            return _error("Service not found.", 400)
        if service.price > self.balance:
            return _error("Insufficient balance.", 400)
        self.balance -= service.price
        now, self._next_id = time.time(), self._next_id + 1
        rental = _Rental(
            id=self._next_id,
            service=service,
            number=number or f"{self.rng.randrange(201, 989)}{self.rng.randrange(10**7):07d}",
            price=service.price,
            created=now,
            ends=now + self.timing.rental_lifetime,
            code_due=now + self.timing.code_delay if self.timing.auto_code else None,
        )
        self.rentals[rental.id] = rental
        body = {
            "id": rental.id,
            "status": "success",
            "message": "Number rented successfully.",
            "errors": None,
            "end_time": _naive(rental.ends),
            "number": rental.number,
            "service_name": service.name,
            "price": str(rental.price),
            "new_balance": str(self.balance),
        }
        return JSONResponse(body, status_code=201)

    async def _cancel(self, request: Request) -> Response:
        return self._cancel_rental((await json_body(request)).get("id"))

    def _cancel_rental(self, rental_id: Any) -> Response:
        rental = self._find(rental_id)
        if rental is None:
            return _error("Rental not found.", 404)
        if rental.status != "active":
            return _error("Rental is not active.", 400)
        if rental.code is not None:
            return _error("Rental already received a code and cannot be cancelled.", 400)
        if time.time() - rental.created < self.timing.cancel_after:
            return _error("You must wait 1 min before request a cancellation.", 400)
        rental.status, rental.code_due = "cancelled", None
        self.balance += rental.price
        return JSONResponse(self._rental_json(rental))

    async def _status(self, request: Request) -> Response:
        return self._rental_status((await json_body(request)).get("id"))

    def _rental_status(self, rental_id: Any) -> Response:
        rental = self._find(rental_id)
        return _error("Rental not found.", 404) if rental is None else JSONResponse(self._rental_json(rental))

    async def _complete(self, request: Request) -> Response:
        rental = self._find(request.path_params["rental_id"])
        if rental is None:
            return _error("Rental not found.", 404)
        if rental.status != "active":
            return _error("Rental is not active.", 400)
        rental.status, rental.code_due = "completed", None
        inner = {
            "id": rental.id,
            "end_time": _naive(rental.ends),
            "number": rental.number,
            "service_name": rental.service.name,
            "price": str(rental.price),
            "new_balance": str(self.balance),
        }
        body = {"status": "success", "message": "Rental marked as completed successfully.", "errors": "null"}
        return JSONResponse({**body, "rental": inner})

    async def _prices(self, request: Request) -> Response:
        return JSONResponse(self._price_list())

    def _price_list(self) -> list[dict[str, Any]]:
        return [
            {
                "service_name": s.name,
                "api_name": s.api_name,
                "multiple_sms": "true" if s.multiple_sms else "false",
                "price": str(s.price),
                "ttl": s.ttl,
            }
            for s in self.services.values()
        ]

    async def _re_rent(self, request: Request) -> Response:
        rental = self._find((await json_body(request)).get("rental_id"))
        if rental is None:
            return _error("Rental not found.", 404)
        if rental.status == "active":
            return _error("Rental is still active.", 400)
        return self._open(rental.service.api_name, number=rental.number)

    async def _balance(self, request: Request) -> Response:
        return JSONResponse(self._balance_json())

    def _balance_json(self) -> dict[str, Any]:
        return {"status": "success", "balance": str(self.balance), "errors": "null"}

    async def _list_long(self, request: Request) -> Response:
        items = [self._long_json(r) for r in self.long_rentals.values()]
        return JSONResponse({"status": "success", "long_rentals": items, "errors": "null"})

    async def _create_long(self, request: Request) -> Response:
        body = await json_body(request)
        period = str(body.get("rental_time"))
        if period not in LONG_PRICES:
            return _error("Invalid rental time.", 400)
        if LONG_PRICES[period] > self.balance:
            return _error("Insufficient balance.", 400)
        self.balance -= LONG_PRICES[period]
        now, self._next_id = time.time(), self._next_id + 1
        rental = _LongRental(
            id=self._next_id,
            number=f"{self.rng.randrange(201, 989)}{self.rng.randrange(10**7):07d}",
            period=period,
            price=LONG_PRICES[period],
            rented_at=now,
            ends=now + _LONG_DAYS[period] * 86400,
            auto_renew=bool(body.get("auto_renew")),
            message_due=now + self.timing.code_delay if self.timing.auto_code else None,
        )
        self.long_rentals[rental.id] = rental
        return self._long_answer(rental)

    async def _update_long(self, request: Request) -> Response:
        rental = self.long_rentals.get(_int(request.path_params["rental_id"]) or -1)
        if rental is None:
            return _error("Long rental not found.", 404)
        body = await json_body(request)
        action = body.get("action")
        if rental.status != "Active":
            return _error("Long rental is not active.", 400)
        if action == "renew":
            if rental.price > self.balance:
                return _error("Insufficient balance.", 400)
            self.balance -= rental.price
            rental.ends += _LONG_DAYS[rental.period] * 86400
        elif action == "cancel":
            rental.status, rental.message_due = "Cancelled", None
            if not rental.messages:
                self.balance += rental.price
        elif action == "auto_renew":
            rental.auto_renew = bool(body.get("auto_renew"))
        else:
            return _error("Invalid action.", 400)
        return self._long_answer(rental)

    async def _long_messages(self, request: Request) -> Response:
        rental = self.long_rentals.get(_int(request.path_params["rental_id"]) or -1)
        if rental is None:
            return _error("Long rental not found.", 404)
        items = [
            {
                "message": text,
                "number": rental.number,
                "rented_at": datetime.fromtimestamp(at, TZ).isoformat(),
                "sender": who,
            }
            for at, text, who in rental.messages
        ]
        return JSONResponse({"status": "success", "messages": items, "errors": "null"})

    async def _handler_api(self, request: Request) -> Response:
        query = request.query_params
        action = query.get("action")
        if action == "getPrices":
            return JSONResponse(self._price_list())
        if action == "getBalance":
            return JSONResponse(self._balance_json())
        if action == "getNumber":
            return self._open(query.get("service"))
        if action == "getRentalStatus":
            return self._rental_status(query.get("rental_id"))
        if action == "cancelRental":
            return self._cancel_rental(query.get("rental_id"))
        return _error("Unknown action.", 400)

    # -- Helpers ------------------------------------------------------------------------------------

    def _find(self, rental_id: Any) -> _Rental | None:
        key = _int(rental_id)
        return None if key is None else self.rentals.get(key)

    def _rental_json(self, rental: _Rental) -> dict[str, Any]:
        return {
            "id": rental.id,
            "status": rental.status,
            "code": rental.code,
            "errors": None,
            "end_time": _naive(rental.ends),
            "number": rental.number,
            "service_name": rental.service.name,
            "cost": str(rental.price),
            "balance": str(self.balance),
        }

    def _long_json(self, rental: _LongRental) -> dict[str, Any]:
        return {
            "id": rental.id,
            "number": rental.number,
            "end_time": _day(rental.ends),
            "rented_at": _day(rental.rented_at),
            "price": str(rental.price),
            "status": rental.status,
            "period": _PERIOD_NAMES[rental.period],
            "auto_renew": rental.auto_renew,
        }

    def _long_answer(self, rental: _LongRental) -> Response:
        return JSONResponse({"status": "success", "long_rental": self._long_json(rental), "errors": "null"})


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _error(message: str, status: int) -> Response:
    return JSONResponse({**dict.fromkeys(_NULL_RENTAL), "errors": message}, status_code=status)
