"""MiniSMS as `minisms-api.txt` describes it: a tiny ASGI app over one account, served on loopback by the tests."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

API_KEY = "minisms-test-key"
PLANS = (
    {"code": "telegram", "service": "Telegram", "country": "USA", "price": "0.40", "minutes": 20},
    {"code": "whatsapp", "service": "WhatsApp", "country": "USA", "price": "0.55", "minutes": 20},
    {"code": "discord_uk", "service": "Discord", "country": "United Kingdom", "price": "0.35", "minutes": 15},
)


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, sentence: str) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status)


@dataclass
class MiniSms:
    """One MiniSMS account: its balance, rentals and their messages, and every request served."""

    balance: Decimal = Decimal("10.00")
    rentals: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def deliver(self, rental_id: str, code: str) -> None:
        """An SMS with `code` reaches the rented number now."""
        number = next(self._ids)
        self.messages[rental_id].append(
            {
                "id": f"m-{number}",
                "from": self.rentals[rental_id]["service"],
                "text": f"Your code is {code}",
                "code": code,
                "received_at": _time(datetime.now(UTC)),
            }
        )

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/balance", self._balance),
                Route("/v1/plans", self._plans),
                Route("/v1/rentals", self._rent, methods=["POST"]),
                Route("/v1/rentals", self._list),
                Route("/v1/rentals/{id}", self._rental),
                Route("/v1/rentals/{id}/refund", self._refund, methods=["POST"]),
            ]
        )

    async def _authorized(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.url.path))
        if request.headers.get("x-api-key") != API_KEY:
            return _error(401, "missing or wrong API key")
        return None

    async def _balance(self, request: Request) -> Response:
        return await self._authorized(request) or JSONResponse({"balance": str(self.balance)})

    async def _plans(self, request: Request) -> Response:
        return await self._authorized(request) or JSONResponse({"plans": list(PLANS)})

    async def _rent(self, request: Request) -> Response:
        if refused := await self._authorized(request):
            return refused
        wanted = json.loads(await request.body()).get("plan")
        plan = next((p for p in PLANS if p["code"] == wanted), None)
        if plan is None:
            return _error(404, "no such plan")
        price = Decimal(plan["price"])
        if price > self.balance:
            return _error(402, "insufficient balance")
        self.balance -= price
        number = next(self._ids)
        now = datetime.now(UTC)
        rental = {
            "id": f"r-{number}",
            "plan": plan["code"],
            "service": plan["service"],
            "phone": f"+1555010{number:04d}",
            "price": plan["price"],
            "status": "active",
            "started_at": _time(now),
            "ends_at": _time(now + timedelta(minutes=int(plan["minutes"]))),
        }
        self.rentals[rental["id"]] = rental
        self.messages[rental["id"]] = []
        return JSONResponse({"rental": rental}, status_code=201)

    async def _list(self, request: Request) -> Response:
        return await self._authorized(request) or JSONResponse({"rentals": list(reversed(self.rentals.values()))})

    async def _rental(self, request: Request) -> Response:
        if refused := await self._authorized(request):
            return refused
        rental_id = request.path_params["id"]
        if rental_id not in self.rentals:
            return _error(404, "no such rental")
        return JSONResponse({"rental": self.rentals[rental_id], "messages": self.messages[rental_id]})

    async def _refund(self, request: Request) -> Response:
        if refused := await self._authorized(request):
            return refused
        rental = self.rentals.get(request.path_params["id"])
        if rental is None:
            return _error(404, "no such rental")
        if rental["status"] != "active":
            return _error(409, "refund not allowed: the rental is not active")
        if self.messages[rental["id"]]:
            return _error(409, "refund not allowed: the rental received a message")
        rental["status"] = "refunded"
        self.balance += Decimal(rental["price"])
        return JSONResponse({"rental": rental})
