"""The audit trail in the ledger: every call of a tool that spends or changes a rental (purchases, refunds,
extensions, renewal changes, finishing), with the caller, the rental, the amount and the outcome (`ok`, `refused`,
`failed`, or `interrupted`: it ended without an answer, and the purchase protocol settles what it did); and every
failed authentication, with the presented credential's fingerprint (the first 8 hex digits of its SHA-256, as
`agents list` shows keys), never the credential.

Failed authentications are written one by one up to FAILED_AUTH_ROWS a minute; past that they are only counted,
and the count is written as one row by the next failure after the minute is over, so a flood of bad credentials
cannot fill the disk (at most FAILED_AUTH_ROWS + 1 rows a minute).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from pydantic import BaseModel

from smsrent.domain.models import format_money
from smsrent.mcp.auth import principal
from smsrent.mcp.state import Runtime
from smsrent.mcp.tools import TOOLS
from smsrent.service.ledger import AuditEntry

log = logging.getLogger("smsrent.audit")

PARAMETERS = {spec.name: frozenset(inspect.signature(spec.fn).parameters) for spec in TOOLS if spec.needs == "spend"}
AUDITED = frozenset(PARAMETERS)  # the tools that spend money or change a rental
FAILED_AUTH_ROWS = 10  # failed authentications written one by one per minute
WINDOW = 60.0
MAX_DETAIL = 500
MAX_GIVEN = 100  # characters kept of what a caller sent (a rental id is never longer)
MAX_AMOUNT = Decimal(10**6)
INTERRUPTED_WRITE = 5.0  # seconds a cancelled call may still take to record that it was
SDK_PREFIX = "Error executing tool "  # what the SDK puts before a tool error's own message


class Audit:
    """Writes the audit trail to the running server's ledger (nothing before it has started)."""

    def __init__(self, runtime: Runtime, clock: Callable[[], float] = time.monotonic) -> None:
        self.runtime = runtime
        self._clock = clock
        self._window = float("-inf")
        self._written = 0
        self._untold = 0  # failures counted, not written, in earlier windows

    async def tool_calls(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Middleware: record each finished call of an audited tool (not a call still waiting for the human), and
        each one that ended without an answer (cancelled by the client, or its connection lost)."""
        params = ctx.params if isinstance(ctx.params, dict) else {}
        tool, arguments = params.get("name"), params.get("arguments")
        if ctx.method != "tools/call" or not isinstance(tool, str) or tool not in AUDITED:
            return await call_next(ctx)
        given = arguments if isinstance(arguments, dict) else {}
        try:
            result = await call_next(ctx)
        except BaseException:
            with anyio.move_on_after(INTERRUPTED_WRITE, shield=True):  # cancelled: the row is still written
                await self._write(_interrupted(principal(ctx).name, tool, given))
            raise
        answer = result.model_dump(by_alias=True, exclude_none=True) if isinstance(result, BaseModel) else result
        if isinstance(answer, dict) and (answer.get("isError") or "structuredContent" in answer):
            await self._write(_entry(principal(ctx).name, tool, given, answer))
        return result

    async def failed_auth(self, fingerprint: str) -> None:
        """A bearer credential was refused (see the module's rate limit)."""
        now = self._clock()
        if now - self._window >= WINDOW:
            if self._untold:
                detail = f"{self._untold} more failed authentications in an earlier minute, not recorded one by one"
                await self._write(AuditEntry(0.0, None, "authenticate", "unauthenticated", detail=detail))
            self._window, self._written, self._untold = now, 0, 0
        if self._written >= FAILED_AUTH_ROWS:
            self._untold += 1
            return
        self._written += 1
        await self._write(
            AuditEntry(
                0.0, None, "authenticate", "unauthenticated", detail="no such credential", credential=fingerprint
            )
        )

    async def _write(self, entry: AuditEntry) -> None:
        """Append `entry`; a failure is logged, never the caller's (what it reports has happened already)."""
        state = self.runtime.state
        try:
            if state is None:
                raise RuntimeError("the server is not running")
            await state.rentals.ledger.audit(entry)
        except Exception as err:
            log.warning("could not audit %s by %s (%s): %s", entry.action, entry.agent, entry.outcome, err)


def _entry(agent: str, tool: str, arguments: dict[str, Any], answer: dict[str, Any]) -> AuditEntry:
    """What a finished tool call did: `ok` with the rental and the money moved (a purchase's price, a refund's
    amount) as the result says, or `refused` (a limit or a scope) / `failed` with the error, and the rental and
    max_price it asked about."""
    data: dict[str, Any] = answer.get("structuredContent") or {}
    rental: dict[str, Any] = data.get("rental") or {}
    rental_id, asked = _asked(tool, arguments)
    if answer.get("isError"):
        text = " ".join(str(block.get("text", "")) for block in answer.get("content") or ())
        text = text.partition(": ")[2] if text.startswith(SDK_PREFIX) else text
        outcome = "refused" if text.startswith("Refused") else "failed"
        return AuditEntry(0.0, agent, tool, outcome, rental_id, asked, _printable(text, MAX_DETAIL))
    if tool == "refund":
        moved, detail = data.get("refunded"), None
    elif tool == "set_auto_renew":
        moved, detail = None, f"auto_renew {'on' if rental.get('auto_renew') else 'off'}"
    elif tool in ("rent_number", "extend_rental"):
        moved, detail = rental.get("price"), None if asked is None else f"max_price {format_money(asked)}"
    else:
        moved, detail = None, None
    return AuditEntry(0.0, agent, tool, "ok", _given(rental.get("rental_id")) or rental_id, _money(moved), detail)


def _interrupted(agent: str, tool: str, arguments: dict[str, Any]) -> AuditEntry:
    rental_id, asked = _asked(tool, arguments)
    detail = "the call ended without an answer (cancelled, the client went away, or the server failed)"
    return AuditEntry(0.0, agent, tool, "interrupted", rental_id, asked, detail)


def _asked(tool: str, arguments: dict[str, Any]) -> tuple[str | None, Decimal | None]:
    """The rental and max_price a call asked about, from the arguments the tool takes (a caller may send others)."""
    takes = PARAMETERS[tool]
    rental_id = _given(arguments.get("rental_id")) if "rental_id" in takes else None
    return rental_id, _money(arguments.get("max_price")) if "max_price" in takes else None


def _money(value: object) -> Decimal | None:
    """An amount as a caller or a result gave it, if it is one (a caller may send anything)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value)[:MAX_GIVEN])
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and abs(amount) <= MAX_AMOUNT else None


def _given(value: object) -> str | None:
    """A rental id as given: a string, cut to a rental id's longest, printable."""
    return _printable(value, MAX_GIVEN) if isinstance(value, str) and value else None


def _printable(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, each one that is not printable (a NUL, which PostgreSQL refuses, a control
    character) as U+FFFD."""
    return "".join(c if c.isprintable() else "\ufffd" for c in text[:limit])
