"""The Getatext webhook route: `/webhooks/getatext/<secret>`, optionally only from the documented sender."""

from __future__ import annotations

import hmac
import json
import logging

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smsrent.config import Settings
from smsrent.domain.errors import NotConfigured
from smsrent.mcp.state import Runtime
from smsrent.providers.getatext import parse_webhook

log = logging.getLogger("smsrent.webhook")

WEBHOOK_PATH = "/webhooks/getatext/{secret}"
MAX_BODY = 16 * 1024


def webhook_route(runtime: Runtime, settings: Settings, secret: SecretStr | None) -> Route:
    """The route; without a secret configured it answers 404 to everything."""

    async def receive(request: Request) -> Response:
        given = request.path_params["secret"]
        if secret is None or not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
            return JSONResponse({"error": "not found"}, status_code=404)
        sender = request.client.host if request.client else None
        if settings.webhook_allowed_ips and sender not in settings.webhook_allowed_ips:
            log.warning("refused a webhook from %s (not in SMSRENT_WEBHOOK_IPS)", sender)
            return JSONResponse({"error": "forbidden"}, status_code=403)
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY:
            return JSONResponse({"error": "body too large or without a length"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "body too large"}, status_code=413)
        try:
            pushed = parse_webhook(_json(body), settings.provider_tz)
        except ValueError as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        try:
            known = await runtime.require().delivery.push(pushed)
        except NotConfigured:
            return JSONResponse({"error": "starting"}, status_code=503)
        if not known:
            return JSONResponse({"error": "unknown rental"}, status_code=404)
        return JSONResponse({"ok": True})

    return Route(WEBHOOK_PATH, receive, methods=["POST"])


def webhook_app(runtime: Runtime, settings: Settings, secret: SecretStr | None) -> Starlette:
    """The webhook route alone: for the stdio listener and the in-process sandbox's pushes."""
    return Starlette(routes=[webhook_route(runtime, settings, secret)])


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError as err:
        raise ValueError("the body is not JSON") from err
