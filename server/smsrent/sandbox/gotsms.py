"""A simulated GotSMS that follows `gotsms-api.txt`: same paths under `/api`, `{success, data, meta}`
envelopes, page-numbered lists, `before_id` cursors, Laravel-style 422s, and the wake-up cycle: a rented
number sleeps; woken, it waits in a queue, then stays online for a window, and an SMS with a code
arrives some seconds after it comes online.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smsrent.sandbox.base import SandboxServer, json_body

T = TypeVar("T")
TOKEN = "sandbox-gotsms-token"
_NS = uuid.UUID("6f1c1b2e-3d4a-4b5c-8d6e-7f8091a2b3c4")
_SERVICES = {"Telegram": "1.00", "WhatsApp": "1.50", "Google": "0.80", "Discord": "0.60", "OpenAI": "1.20"}
_COUNTRIES = {"USA": Decimal("1"), "United Kingdom": Decimal("1.25"), "Germany": Decimal("1.40")}
_DURATIONS = (("day", 1, 1440, "1 day", Decimal("1")), ("week", 1, 10080, "1 week", Decimal("4")))
_MONTH = ("month", 1, 43200, "1 month", Decimal("10"))


def _ts(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _money(amount: Decimal) -> float | int:
    """GotSMS sends prices as JSON numbers (`1`, `4.99`)."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


@dataclass
class _Plan:
    id: str
    service_id: str
    service: str
    country_id: str
    country: str
    duration_type: str
    duration_in_type: int
    minutes: int
    translation: str
    price: Decimal


@dataclass
class _Rent:
    id: str
    plan: _Plan
    phone: str
    price: Decimal
    active_from: float
    active_till: float
    status: str = "active"
    renew: bool = False
    wake_from: float | None = None
    wake_till: float | None = None
    online_till: float | None = None
    code_due: float | None = None


@dataclass
class _Sms:
    id: str
    rent: _Rent
    body: str
    code: str | None
    received_at: float
    sender: str = "+18001234567"
    read: bool = False


@dataclass
class GotSmsSandbox(SandboxServer):
    """The simulated GotSMS account: plans, a balance, rents, numbers and their SMS."""

    name: ClassVar[str] = "gotsms"
    token: str = TOKEN
    balance: Decimal = Decimal("25.00")
    per_page: int = 20
    lists_renewal: bool = True  # rents carry `is_included_for_next_renewal` (no schema says it is always there)
    rents: dict[str, _Rent] = field(default_factory=dict, init=False)
    sms: list[_Sms] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.plans = _catalogue()
        super().__post_init__()

    # -- Controls -----------------------------------------------------------------------------------

    def deliver(self, rent_id: str, body: str, code: str | None = None, sender: str = "+18001234567") -> str:
        """An SMS reaches the number now; returns its id."""
        message = _Sms(str(uuid.uuid4()), self.rents[rent_id], body, code, time.time(), sender)
        self.sms.append(message)
        return message.id

    def is_online(self, rent_id: str, at: float | None = None) -> bool:
        rent, now = self.rents[rent_id], time.time() if at is None else at
        return rent.wake_till is not None and rent.online_till is not None and rent.wake_till <= now < rent.online_till

    # -- Time ---------------------------------------------------------------------------------------

    def advance(self) -> None:
        now = time.time()
        for rent in self.rents.values():
            if rent.status == "active" and now >= rent.active_till:
                rent.status = "expired"
            if rent.code_due is not None and now >= rent.code_due:
                code = f"{self.rng.randrange(10**6):06d}"
                body = f"Your {rent.plan.service} verification code is {code}. Do not share it."
                self.sms.append(_Sms(str(uuid.uuid4()), rent, body, code, rent.code_due))
                rent.code_due = None

    def next_due(self) -> float | None:
        return min((r.code_due for r in self.rents.values() if r.code_due is not None), default=None)

    # -- Routes -------------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        def route(path: str, handler: Any, method: str = "GET", public: bool = False) -> Route:
            return Route(
                f"/api{path}", self.endpoint(handler, auth=None if public else self._authorized), methods=[method]
            )

        return [
            route("/pricelist", self._pricelist, public=True),
            route("/account", self._account),
            route("/services", self._services),
            route("/rents/plans", self._rent_plans),
            route("/rents", self._list_rents),
            route("/rents", self._create_rent, "POST"),
            route("/rents/{rent_id}/transition", self._transition, "POST"),
            route("/rents/{rent_id}/renewal/toggle", self._toggle_renewal, "POST"),
            route("/rents/{rent_id}/refund", self._refund, "POST"),
            route("/messages", self._messages),
            route("/messages/unread", self._unread),
            route("/numbers/{rent_id}/wake-up", self._wake_up, "POST"),
            route("/numbers/{rent_id}/messages", self._number_messages),
            route("/numbers/{rent_id}/status", self._number_status),
        ]

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.token}"

    async def _pricelist(self, request: Request) -> Response:
        groups: dict[str, list[dict[str, Any]]] = {}
        for plan in self.plans.values():
            groups.setdefault(plan.service, []).append(
                {
                    "service_name": plan.service,
                    "period": plan.duration_in_type,
                    "period_type": plan.duration_type,
                    "period_type_label": plan.duration_type,
                    "duration_translation": plan.translation,
                    "price": _money(plan.price),
                    "renew_price": _money(plan.price),
                    "country": plan.country,
                    "billing_type": "duration",
                }
            )
        return _ok([{"name": name, "plans": plans} for name, plans in groups.items()])

    async def _account(self, request: Request) -> Response:
        return _ok({"balance": _money(self.balance)})

    async def _services(self, request: Request) -> Response:
        services = {p.service_id: p.service for p in self.plans.values()}
        return self._page(request, [{"id": sid, "name": name} for sid, name in services.items()], per_page=25)

    async def _rent_plans(self, request: Request) -> Response:
        return self._page(request, [_plan_json(p) for p in self.plans.values()], per_page=25)

    async def _list_rents(self, request: Request) -> Response:
        rents = sorted(self.rents.values(), key=lambda r: r.active_from, reverse=True)
        return self._page(request, [self._rent_json(r) for r in rents])

    async def _create_rent(self, request: Request) -> Response:
        plan_id = (await json_body(request)).get("plan_id")
        if not plan_id:
            return _invalid("plan_id", "The plan id field is required.")
        plan = self.plans.get(str(plan_id))
        if plan is None:
            return _invalid("plan_id", "The selected plan id is invalid.")
        if plan.price > self.balance:
            return _failure("Insufficient balance to rent this number.")
        self.balance -= plan.price
        now = time.time()
        rent = _Rent(
            id=str(uuid.uuid4()),
            plan=plan,
            phone=f"+1 800 {self.rng.randrange(1000):03d} {self.rng.randrange(10000):04d}",
            price=plan.price,
            active_from=now,
            active_till=now + plan.minutes * 60,
        )
        self.rents[rent.id] = rent
        return _ok(self._rent_json(rent), "Rent created successfully.", status=201)

    async def _transition(self, request: Request) -> Response:
        rent = self.rents.get(request.path_params["rent_id"])
        if rent is None:
            return _not_found()
        if rent.plan.duration_type != "day":
            return _failure("Current rent plan must be daily for this transition endpoint.")
        target = self.plans.get(str((await json_body(request)).get("plan_id")))
        if target is None or (target.service, target.country) != (rent.plan.service, rent.plan.country):
            return _invalid("plan_id", "The selected plan id is invalid.")
        if target.minutes <= rent.plan.minutes:
            return _failure("The new plan must be longer than the current one.")
        if target.price > self.balance:
            return _failure("Insufficient balance for this transition.")
        self.balance -= target.price
        rent.plan, rent.price = target, rent.price + target.price
        rent.active_till = rent.active_from + target.minutes * 60
        return _ok({"id": rent.id, "status": rent.status}, "Plan transitioned successfully.")

    async def _toggle_renewal(self, request: Request) -> Response:
        rent = self.rents.get(request.path_params["rent_id"])
        if rent is None:
            return _not_found()
        if rent.plan.duration_type != "month":
            return _failure("Auto renewal can be toggled only for monthly 1/3/6/12 plans.")
        rent.renew = not rent.renew
        message = "Auto renewal enabled." if rent.renew else "Auto renewal disabled."
        return _ok({"id": rent.id, "is_included_for_next_renewal": rent.renew}, message)

    async def _refund(self, request: Request) -> Response:
        rent = self.rents.get(request.path_params["rent_id"])
        if rent is None:
            return _not_found()
        received = any(m.rent is rent for m in self.sms)
        fresh = time.time() - rent.active_from <= self.timing.refund_window
        if rent.status != "active" or received or not fresh:
            return _failure("Refund not available for this rent.")
        rent.status, rent.code_due = "finished", None
        self.balance += rent.price
        return _ok({"id": rent.id, "status": rent.status}, "Rent has been refunded successfully.")

    async def _messages(self, request: Request) -> Response:
        return self._page(request, [_sms_json(m) for m in self._newest_first()])

    async def _unread(self, request: Request) -> Response:
        shown, meta = self._slice(request, [m for m in self._newest_first() if not m.read], self.per_page)
        for message in shown:
            message.read = True
        return JSONResponse({"success": True, "data": [_sms_json(m) for m in shown], "meta": meta})

    async def _wake_up(self, request: Request) -> Response:
        rent = self.rents.get(request.path_params["rent_id"])
        if rent is None:
            return _not_found()
        if rent.status != "active":
            return _failure("Rent is not active.")
        if not self._can_wake(rent):
            return _failure("Number is already awake or waiting in the queue.")
        now = time.time()
        rent.wake_from, rent.wake_till = now, now + self.timing.wake_queue
        rent.online_till = rent.wake_till + self.timing.online_window
        if self.timing.auto_code and not any(m.rent is rent for m in self.sms):
            rent.code_due = rent.wake_till + self.timing.code_delay
        return JSONResponse({"success": True, "message": "Wake up request sent."})

    async def _number_messages(self, request: Request) -> Response:
        rent = self.rents.get(request.path_params["rent_id"])
        if rent is None:
            return _not_found()
        mine = [m for m in self._newest_first() if m.rent is rent]
        before = request.query_params.get("before_id")
        if before:
            ids = [m.id for m in mine]
            mine = mine[ids.index(before) + 1 :] if before in ids else []
        page, rest = mine[:10], mine[10:]
        data = [{k: v for k, v in _sms_json(m).items() if k not in ("rent_id", "service", "phone")} for m in page]
        meta = {"next_before_id": page[-1].id if rest else None, "count": len(page)}
        return JSONResponse({"success": True, "data": data, "meta": meta})

    async def _number_status(self, request: Request) -> Response:
        rent = self.rents.get(request.path_params["rent_id"])
        if rent is None:
            return _not_found()
        now = time.time()
        online_left = 0
        if rent.wake_till is not None and rent.online_till is not None:
            online_left = round(max(0.0, rent.online_till - max(now, rent.wake_till)))
        data = {
            "rent_id": rent.id,
            "status": rent.status,
            "active_from": _ts(rent.active_from),
            "active_till": _ts(rent.active_till),
            "wake_from": _ts(rent.wake_from),
            "wake_till": _ts(rent.wake_till),
            "online_till": _ts(rent.online_till),
            "wakeup_time_left_seconds": round(max(0.0, (rent.wake_till or now) - now)),
            "online_time_left_seconds": online_left,
            "can_wake_up": self._can_wake(rent),
        }
        return _ok(data)

    # -- Helpers ------------------------------------------------------------------------------------

    def _can_wake(self, rent: _Rent) -> bool:
        return rent.status == "active" and (rent.online_till is None or time.time() >= rent.online_till)

    def _newest_first(self) -> list[_Sms]:
        return sorted(self.sms, key=lambda m: m.received_at, reverse=True)

    def _rent_json(self, rent: _Rent) -> dict[str, Any]:
        return {
            "id": rent.id,
            "service": {"id": rent.plan.service_id, "name": rent.plan.service},
            "plan": {
                "id": rent.plan.id,
                "billing_type": "duration",
                "duration_type": rent.plan.duration_type,
                "duration_in_type": rent.plan.duration_in_type,
                "duration_translation": rent.plan.translation,
                "price": _money(rent.plan.price),
                "renew_price": _money(rent.plan.price),
            },
            "phone": rent.phone,
            "price": _money(rent.price),
            "status": rent.status,
            **({"is_included_for_next_renewal": rent.renew} if self.lists_renewal else {}),
            "active_from": _ts(rent.active_from),
            "active_till": _ts(rent.active_till),
            "wake_from": _ts(rent.wake_from),
            "wake_till": _ts(rent.wake_till),
            "can_wake_up": self._can_wake(rent),
            "transition_options": [],
        }

    def _page(self, request: Request, items: list[dict[str, Any]], per_page: int | None = None) -> Response:
        shown, meta = self._slice(request, items, per_page or self.per_page)
        return JSONResponse({"success": True, "data": shown, "meta": meta})

    @staticmethod
    def _slice(request: Request, items: list[T], size: int) -> tuple[list[T], dict[str, int]]:
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page = 1
        last = max(1, -(-len(items) // size))
        meta = {"current_page": page, "last_page": last, "per_page": size, "total": len(items)}
        return items[(page - 1) * size : page * size], meta


def _catalogue() -> dict[str, _Plan]:
    """Every service in every country, daily and weekly; monthly (renewable) in the USA."""
    plans: dict[str, _Plan] = {}
    for service, base in _SERVICES.items():
        for country, factor in _COUNTRIES.items():
            durations = (*_DURATIONS, _MONTH) if country == "USA" else _DURATIONS
            for kind, count, minutes, label, multiplier in durations:
                plan_id = str(uuid.uuid5(_NS, f"{service}/{country}/{kind}"))
                price = (Decimal(base) * factor * multiplier).quantize(Decimal("0.01"))
                plans[plan_id] = _Plan(
                    id=plan_id,
                    service_id=str(uuid.uuid5(_NS, service)),
                    service=service,
                    country_id=str(uuid.uuid5(_NS, country)),
                    country=country,
                    duration_type=kind,
                    duration_in_type=count,
                    minutes=minutes,
                    translation=label,
                    price=price,
                )
    return plans


def _plan_json(plan: _Plan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "service": {"id": plan.service_id, "name": plan.service},
        "country": {"id": plan.country_id, "name": plan.country},
        "billing_type": "duration",
        "duration_type": plan.duration_type,
        "duration_in_type": plan.duration_in_type,
        "duration_in_minutes": plan.minutes,
        "duration_translation": plan.translation,
        "price": _money(plan.price),
        "renew_price": _money(plan.price),
        "is_monthly_supported": plan.duration_type == "month",
    }


def _sms_json(message: _Sms) -> dict[str, Any]:
    return {
        "id": message.id,
        "rent_id": message.rent.id,
        "service": {"id": message.rent.plan.service_id, "name": message.rent.plan.service},
        "phone": message.rent.phone,
        "from": message.sender,
        "to": "+" + "".join(ch for ch in message.rent.phone if ch.isdigit()),
        "body": message.body,
        "code": message.code,
        "received_at": _ts(message.received_at),
    }


def _ok(data: Any, message: str | None = None, status: int = 200) -> Response:
    body: dict[str, Any] = {"success": True}
    if message:
        body["message"] = message
    body["data"] = data
    return JSONResponse(body, status_code=status)


def _failure(message: str) -> Response:
    return JSONResponse({"success": False, "message": message}, status_code=422)


def _invalid(field_name: str, message: str) -> Response:
    return JSONResponse({"message": message, "errors": {field_name: [message]}}, status_code=422)


def _not_found() -> Response:
    return JSONResponse({"success": False, "message": "Rent not found."}, status_code=404)
