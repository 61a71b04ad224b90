"""The owner's HTTP routes: `/metrics`, the `/dashboard` page and the JSON its script fetches.

The page and its two assets are static and public (a browser cannot put a bearer header on a page it opens);
`/metrics` and `/dashboard/data` need the owner's credential (`SMSRENT_HTTP_TOKEN`) or an agent's with the
`admin` scope: without any credential configured they answer 403 and say to set one, because they show
spending, phone numbers and codes. Everything is served with a Content-Security-Policy that allows this
server's own scripts and styles only, and no framing.
"""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from typing import Any

from mcp.server import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from smsrent.domain.models import format_money
from smsrent.mcp.app import App
from smsrent.mcp.auth import caller, unauthorized
from smsrent.mcp.state import AppState
from smsrent.mcp.views import SmsView
from smsrent.observe.figures import RENTAL_OUTCOMES, Spend, percentile, rental_outcome, spend_by
from smsrent.observe.metrics import CONTENT_TYPE
from smsrent.service.ledger import DAY, DEFAULT_AGENT

STATIC = {  # path: (file in smsrent/mcp/static, media type); served without a credential
    "/dashboard": ("dashboard.html", "text/html"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css"),
    "/dashboard/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
RECENT_MESSAGES = 10


def add_routes(app: App) -> None:
    """Register the page, its assets, `/dashboard/data` and `/metrics` on the app's HTTP server."""
    mcp: MCPServer[AppState] = app.mcp

    async def static(request: Request) -> Response:
        name, media = STATIC[request.url.path]
        body = resources.files("smsrent.mcp").joinpath("static", name).read_bytes()
        return Response(body, media_type=media, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    async def metrics(request: Request) -> Response:
        if (refusal := _owner_only(app, request)) is not None:
            return refusal
        state = app.runtime.require()
        entries = (
            ()
            if app.credentials is None or app.credentials.agents is None
            else app.credentials.agents.current().entries
        )
        body = await app.metrics.exposition(
            state.rentals.ledger,
            list(state.rentals.providers),
            app.settings.daily_budget,
            {entry.name: app.credentials.limits(entry)[0] for entry in entries if app.credentials is not None},
        )
        return Response(body, media_type=CONTENT_TYPE, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})

    async def data(request: Request) -> Response:
        if (refusal := _owner_only(app, request)) is not None:
            return refusal
        figures = await dashboard_data(app.runtime.require(), app.sandbox)
        return JSONResponse(figures, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})

    for path in STATIC:
        mcp.custom_route(path, methods=["GET"])(static)
    mcp.custom_route("/dashboard/data", methods=["GET"])(data)
    mcp.custom_route("/metrics", methods=["GET"])(metrics)


def _owner_only(app: App, request: Request) -> Response | None:
    """None for the owner or an `admin` agent; else 401 without an accepted credential, and 403 for another
    agent or while no credential is configured at all."""
    route = request.url.path
    if not app.settings.http_auth:
        detail = (
            f"{route} needs the owner's credential: start the server with SMSRENT_HTTP_TOKEN set and send"
            " Authorization: Bearer <SMSRENT_HTTP_TOKEN>."
        )
    elif (who := caller(request.scope)) is None:
        return unauthorized(app.settings, route)
    elif who.is_admin:
        return None
    else:
        detail = f"{route} needs the owner's credential or an agent's with the admin scope; {who.name} has neither."
    return JSONResponse({"error": "forbidden", "detail": detail}, status_code=403, headers=SECURITY_HEADERS)


async def dashboard_data(state: AppState, sandbox: bool) -> dict[str, Any]:
    """What the dashboard shows, from the ledger alone (a refresh never calls a provider)."""
    ledger, guard = state.rentals.ledger, state.rentals.guard
    now = await ledger.now()
    since = now - DAY
    charges = await ledger.charges(since)
    committed = await ledger.committed()
    spent = Decimal(0)
    points = [{"at": since, "net": "0"}]
    for charge in charges:
        if charge.charged:
            spent += charge.charged - charge.refunded
            points.append({"at": charge.created_at, "net": format_money(spent)})
    agents = {DEFAULT_AGENT: Spend()}
    for (_provider, agent), money in spend_by(charges).items():
        agents[agent] = agents.get(agent, Spend()) + money
    active = await ledger.rentals(active=True)
    owners = await ledger.agents([r.rental_id for r in active])
    delays = [h.delay for h in await ledger.handovers(since)]
    outcomes = dict.fromkeys(RENTAL_OUTCOMES, 0)
    for record in await ledger.rental_records(since):
        outcomes[rental_outcome(record)] += 1
    return {
        "now": now,
        "sandbox": sandbox,
        "currency": "USD",
        "budget": {
            "daily": None if guard.daily_budget is None else format_money(guard.daily_budget),
            "committed": format_money(committed),
            "remaining": None if guard.daily_budget is None else format_money(guard.daily_budget - committed),
        },
        "spend": {"since": since, "points": points, "net": format_money(spent)},
        "agents": [{"agent": agent, **money.formatted()} for agent, money in sorted(agents.items())],
        "rentals": outcomes,
        "active": [
            {
                "rental_id": r.rental_id,
                "provider": r.provider,
                "service": r.service,
                "phone": r.phone,
                "status": str(r.status),
                "ends_at": r.ends_at.timestamp() if r.ends_at else None,
                "agent": owners.get(r.rental_id, DEFAULT_AGENT),
            }
            for r in active
        ],
        "messages": [
            {
                "rental_id": m.rental_id,
                "received_at": m.received_at.timestamp() if m.received_at else None,
                "from": view.sender,
                "code": view.code,
                "text": m.text,
            }
            for m in await ledger.recent_messages(RECENT_MESSAGES)
            for view in [SmsView.from_message(m)]
        ],
        "delivery": {
            "count": len(delays),
            "p50": percentile(delays, 0.5),
            "p95": percentile(delays, 0.95),
            "recent": delays[-20:],
        },
        "waiters": state.delivery.waiting,
    }
