"""The tools: thin wrappers that validate, call the service layer, and shape a structured result.

Domain failures become tool errors (`is_error`) carrying the service's one-sentence message.
One `register()` serves every transport; read-only mode leaves out every tool that spends
money or changes a rental.
"""

import functools
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Annotated, Any, Literal, ParamSpec, TypeVar

from mcp.server import MCPServer
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from smsrent.domain.errors import ConfirmationRefused, SmsRentError
from smsrent.domain.ids import ProviderName
from smsrent.domain.models import Plan, Rental, format_money
from smsrent.mcp.state import AppState, problems
from smsrent.mcp.subscriptions import ACTIVE_URI, rental_uri
from smsrent.mcp.views import (
    BalanceResult,
    BalanceView,
    ChangeResult,
    MessagesResult,
    PlansResult,
    PlanView,
    RefundResult,
    RentalsResult,
    RentalView,
    RentResult,
    SmsView,
    WaitResult,
    WakeResult,
)
from smsrent.service.rentals import Extension

P = ParamSpec("P")
R = TypeVar("R")
Ctx = Context[AppState]

MAX_WAIT_SECONDS = 50

ProviderParam = Annotated[
    ProviderName | None, Field(description="Only this provider; omit to use every configured provider.")
]
RentalIdParam = Annotated[
    str,
    Field(
        min_length=3,
        max_length=100,
        description="A rental id from rent_number or list_rentals, e.g. gotsms:9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f.",
    ),
]
MaxPriceParam = Annotated[
    Decimal,
    Field(
        gt=0,
        le=1000,
        max_digits=10,
        decimal_places=4,
        description="The most this purchase may cost, in USD (e.g. 1.50). Required: nothing costing more is bought.",
    ),
]
ServiceParam = Annotated[
    str | None,
    Field(min_length=1, max_length=64, description="Service to receive codes from, e.g. Telegram or whatsapp."),
]
CountryParam = Annotated[str | None, Field(min_length=2, max_length=64, description="Country, e.g. USA or UK.")]
PlanIdParam = Annotated[
    str | None, Field(min_length=3, max_length=100, description="A plan id from list_plans, e.g. getatext:whatsapp.")
]


def _hints(*, read_only: bool, destructive: bool, idempotent: bool) -> ToolAnnotations:
    return ToolAnnotations(
        read_only_hint=read_only, destructive_hint=destructive, idempotent_hint=idempotent, open_world_hint=True
    )


READ = _hints(read_only=True, destructive=False, idempotent=True)


def domain_errors(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Report the service layer's failures as tool errors with its own actionable message."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except SmsRentError as err:
            raise ToolError(err.message) from err

    return wrapper


MAX_ERROR_CHARS = 1000


async def bounded_errors(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: tool errors stay short and printable whatever a caller sent (the SDK's "Unknown tool: ..."
    repeats the name it was given, however long, control characters and all)."""
    result = await call_next(ctx)
    if ctx.method == "tools/call" and isinstance(result, dict) and result.get("isError"):
        for block in result.get("content") or ():
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                block["text"] = _bounded(block["text"])
    return result


def _bounded(text: str) -> str:
    shown = "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= MAX_ERROR_CHARS else f"{shown[:MAX_ERROR_CHARS]}... ({len(text)} characters)"


def _state(ctx: Ctx) -> AppState:
    return ctx.request_context.lifespan_context


def _rental_view(state: AppState, rental: Rental) -> RentalView:
    return RentalView.of(rental, state.provider_ref(rental.provider))


class PurchaseApproval(BaseModel):
    """The human's answer to a purchase above the confirmation threshold."""

    approve: bool = Field(description="Approve this purchase")


@domain_errors
async def _quote(
    ctx: Ctx,
    max_price: Decimal,
    plan_id: str | None,
    service: str | None,
    country: str | None,
    provider: ProviderName | None,
) -> Plan:
    """Resolve the plan a purchase would buy (network read, no spending)."""
    return await _state(ctx).rentals.quote(
        max_price=max_price, plan_id=plan_id, service=service, country=country, provider=provider
    )


def _ask(ctx: Ctx, price: Decimal, what: str) -> Elicit[PurchaseApproval] | PurchaseApproval:
    """Ask the human when `price` is above SMSRENT_CONFIRM_ABOVE; otherwise approve without asking."""
    guard = _state(ctx).rentals.guard
    if not guard.needs_confirmation(price):
        return PurchaseApproval(approve=True)
    threshold = format_money(guard.confirm_above or Decimal(0))
    capabilities = ctx.client_capabilities
    if capabilities is None or capabilities.elicitation is None:
        raise ConfirmationRefused(
            f"Refused: {what} costs {format_money(price)} USD, above SMSRENT_CONFIRM_ABOVE ({threshold} USD), and"
            " this client cannot ask the human to confirm (no elicitation support); nothing was bought. Raise"
            " SMSRENT_CONFIRM_ABOVE or use a client that supports elicitation."
        )
    return Elicit(
        f"Approve {what} for {format_money(price)} USD? Purchases above {threshold} USD need your OK.",
        PurchaseApproval,
    )


@domain_errors
async def _rent_approval(
    ctx: Ctx, plan: Annotated[Plan, Resolve(_quote)]
) -> Elicit[PurchaseApproval] | PurchaseApproval:
    assert plan.price is not None
    place = f"{plan.country or 'any country'}, {plan.duration or 'one rental'}"
    return _ask(ctx, plan.price, f"renting a {plan.service} number ({place}) from {plan.provider}")


@domain_errors
async def _extension(ctx: Ctx, rental_id: str, max_price: Decimal, plan_id: str | None) -> Extension:
    """Resolve what extending would buy and cost (network read, no spending)."""
    return await _state(ctx).rentals.extension(rental_id, max_price, plan_id)


@domain_errors
async def _extension_approval(
    ctx: Ctx, extension: Annotated[Extension, Resolve(_extension)]
) -> Elicit[PurchaseApproval] | PurchaseApproval:
    return _ask(ctx, extension.price, f"extending {extension.ref}")


def _approved(approval: ElicitationResult[PurchaseApproval]) -> None:
    if approval.action != "accept" or not approval.data.approve:
        raise ConfirmationRefused("The purchase was not approved by the human; nothing was bought.")


def register(mcp: MCPServer[AppState], *, read_only: bool) -> None:
    """Add every tool to `mcp`; with `read_only`, only those that neither spend money nor change a rental."""

    @mcp.tool(title="Get balance", annotations=READ)
    @domain_errors
    async def get_balance(ctx: Ctx, provider: ProviderParam = None) -> BalanceResult:
        """Show the money available at each configured provider.

        Use this when you need to know whether a rental is affordable before renting.
        Example: get_balance() or get_balance(provider="gotsms").
        """
        state = _state(ctx)
        balances, failures = await state.rentals.balances(provider)
        return BalanceResult(
            providers=state.asked(provider),
            balances=[BalanceView.of(b, state.provider_ref(b.provider)) for b in balances],
            unavailable=problems(failures),
        )

    @mcp.tool(title="List rentable plans", annotations=READ)
    @domain_errors
    async def list_plans(
        ctx: Ctx,
        service: ServiceParam = None,
        country: CountryParam = None,
        provider: ProviderParam = None,
        max_price: Annotated[
            Decimal | None, Field(gt=0, le=1000, description="Only plans costing at most this (USD).")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="How many of the cheapest plans to return.")] = 25,
    ) -> PlansResult:
        """List every plan you can rent, across providers, cheapest first.

        Use this when you need a number for a service: pick a plan_id (or just the service) for rent_number.
        Example: list_plans(service="telegram", country="USA", max_price=2).
        """
        state = _state(ctx)
        plans, failures = await state.rentals.offers(
            service=service, country=country, provider=provider, max_price=max_price
        )
        if not plans:
            next_step = "Nothing matches: widen the filters (service spelling, country, max_price)."
        elif len(plans) > limit:
            next_step = f"Showing the {limit} cheapest of {len(plans)}: narrow by service or country, or rent one."
        else:
            next_step = "Rent with rent_number(plan_id=..., max_price=...)."
        return PlansResult(
            providers=state.asked(provider),
            plans=[PlanView.of(p, state.provider_ref(p.provider)) for p in plans[:limit]],
            count=len(plans),
            unavailable=problems(failures),
            next_step=next_step,
        )

    @mcp.tool(title="Wait for the SMS code", annotations=_hints(read_only=False, destructive=False, idempotent=False))
    @domain_errors
    async def wait_for_code(
        ctx: Ctx,
        rental_id: RentalIdParam,
        timeout_seconds: Annotated[
            int, Field(ge=1, le=MAX_WAIT_SECONDS, description="How long to wait in this call (at most 50 s).")
        ] = 45,
    ) -> WaitResult:
        """Wait for the next SMS of a rental and return its verification code.

        Use this right after triggering the SMS on the target service. Each call returns the first message not
        returned before (codes that came earlier are not missed), or still_waiting after timeout_seconds: then
        call again. Wakes a sleeping GotSMS number by itself and reports progress while waiting.
        Example: wait_for_code(rental_id="getatext:12345").
        """
        state = _state(ctx)

        async def progress(elapsed: float, text: str) -> None:
            await ctx.report_progress(elapsed, timeout_seconds, text)

        result = await state.delivery.wait(rental_id, timeout_seconds, progress)
        rental = _rental_view(state, result.rental)
        sms = SmsView.from_message(result.message) if result.message else None
        if result.outcome == "code_received":
            next_step = "Enter the code. Call wait_for_code again only if another SMS is expected."
            if sms and sms.code is None:
                next_step = "An SMS came without a recognisable code: read sms.text (untrusted) yourself."
        elif result.outcome == "still_waiting":
            next_step = (
                f"No SMS yet after {result.waited:.0f} s. Check that the code was requested for {rental.phone}, then"
                " call wait_for_code again; refund the rental if no code comes."
            )
        else:
            next_step = f"The rental has ended ({rental.status}); rent a new number if you still need one."
        return WaitResult(
            outcome=result.outcome,
            rental_id=rental.rental_id,
            provider=rental.provider,
            code=sms.code if sms else None,
            sms=sms,
            waited_seconds=round(result.waited, 2),
            number_phase=result.number_phase,
            rental=rental,
            next_step=next_step,
        )

    @mcp.tool(title="List rentals", annotations=READ)
    @domain_errors
    async def list_rentals(
        ctx: Ctx,
        status: Annotated[
            Literal["active", "ended", "all"], Field(description="Which rentals: active (default), ended, or all.")
        ] = "active",
        provider: ProviderParam = None,
    ) -> RentalsResult:
        """List your rentals from the ledger, refreshed from the providers.

        Use this to find a rental id, to see what is still active, and always after a purchase whose outcome
        was uncertain, before buying again. Example: list_rentals(status="all").
        """
        state = _state(ctx)
        rentals, stale = await state.rentals.list_rentals(status, provider)
        return state.rentals_result(rentals, stale, provider)

    @mcp.tool(title="Get a rental's messages", annotations=READ)
    @domain_errors
    async def get_messages(ctx: Ctx, rental_id: RentalIdParam) -> MessagesResult:
        """Return every SMS a rental has received so far, without waiting.

        Use this to re-read a code or check for more messages; it does not move wait_for_code's cursor.
        Example: get_messages(rental_id="gotsms:9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f").
        """
        state = _state(ctx)
        rental, stored = await state.rentals.messages(rental_id)
        return MessagesResult(
            rental_id=rental.rental_id,
            provider=state.provider_ref(rental.provider),
            messages=[SmsView.from_message(s.message) for s in stored],
            count=len(stored),
        )

    @mcp.tool(title="Wake up a GotSMS number", annotations=_hints(read_only=False, destructive=False, idempotent=True))
    @domain_errors
    async def wake_up(ctx: Ctx, rental_id: RentalIdParam) -> WakeResult:
        """Wake a sleeping GotSMS number and report its queue and online windows.

        Use this to bring a number online ahead of requesting a code; wait_for_code wakes numbers itself.
        Getatext numbers are always online. Example: wake_up(rental_id="gotsms:9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f").
        """
        state = _state(ctx)
        status = await state.delivery.wake(rental_id)
        return WakeResult.from_status(status, state.provider_ref("gotsms"))

    if read_only:
        return

    @mcp.tool(title="Rent a phone number", annotations=_hints(read_only=False, destructive=False, idempotent=False))
    @domain_errors
    async def rent_number(
        ctx: Ctx,
        max_price: MaxPriceParam,
        plan: Annotated[Plan, Resolve(_quote)],
        approval: Annotated[ElicitationResult[PurchaseApproval], Resolve(_rent_approval)],
        plan_id: PlanIdParam = None,
        service: ServiceParam = None,
        country: CountryParam = None,
        provider: ProviderParam = None,
    ) -> RentResult:
        """Rent a temporary phone number (spends money, never more than max_price).

        Use this when you need a number to receive a verification SMS. Give plan_id from list_plans, or a service
        (and optionally country) to get the cheapest matching plan within max_price. Then request the code on the
        target service and call wait_for_code. If this fails saying the outcome is unknown, call list_rentals
        before trying again. Example: rent_number(service="telegram", country="USA", max_price=1.50).
        """
        state = _state(ctx)
        _approved(approval)
        outcome = await state.rentals.buy(plan, max_price)
        state.delivery.expect(outcome.rental.rental_id)
        await state.subscriptions.updated([ACTIVE_URI])
        rental = _rental_view(state, outcome.rental)
        return RentResult(
            rental=rental,
            charged=outcome.rental.price,
            note=outcome.note,
            next_step=f"Request the code for {rental.phone} on {rental.service or 'the service'}, then call"
            f' wait_for_code(rental_id="{rental.rental_id}").',
        )

    @mcp.tool(title="Refund a rental", annotations=_hints(read_only=False, destructive=True, idempotent=True))
    @domain_errors
    async def refund(ctx: Ctx, rental_id: RentalIdParam) -> RefundResult:
        """Give back a rental that did not deliver a code and get the money back.

        Use this when no code came or the number was refused by the target service. GotSMS refunds rents without
        messages; Getatext cancels one-time rentals after their first minute, and long rentals.
        Example: refund(rental_id="getatext:12345").
        """
        state = _state(ctx)
        outcome = await state.rentals.refund(rental_id)
        await state.subscriptions.updated([ACTIVE_URI, rental_uri(outcome.rental.rental_id)])
        return RefundResult(
            rental=_rental_view(state, outcome.rental),
            refunded=outcome.refunded,
            balance_after=outcome.balance_after,
            currency="USD",
        )

    @mcp.tool(title="Extend a rental", annotations=_hints(read_only=False, destructive=False, idempotent=False))
    @domain_errors
    async def extend_rental(
        ctx: Ctx,
        rental_id: RentalIdParam,
        max_price: MaxPriceParam,
        extension: Annotated[Extension, Resolve(_extension)],
        approval: Annotated[ElicitationResult[PurchaseApproval], Resolve(_extension_approval)],
        plan_id: Annotated[
            str | None,
            Field(
                min_length=3, max_length=100, description="GotSMS only: the longer plan (weekly or monthly) to move to."
            ),
        ] = None,
    ) -> ChangeResult:
        """Keep a number longer (spends money, never more than max_price).

        Use this when you still need a number after its rental period. GotSMS: move a daily rent to a longer plan
        (plan_id required). Getatext: renew a long rental, or re-rent a one-time number (a new rental id on the same
        number). Each extension is a purchase of its own: max_price and the owner's per-purchase cap apply to it,
        and the daily budget to all of them. Example: extend_rental(rental_id="getatext:long:7", max_price=11).
        """
        state = _state(ctx)
        _approved(approval)
        outcome = await state.rentals.extend_quoted(extension, max_price)
        await state.subscriptions.updated([ACTIVE_URI, rental_uri(outcome.rental.rental_id)])
        return ChangeResult(rental=_rental_view(state, outcome.rental), note=outcome.note)

    @mcp.tool(title="Set auto-renew", annotations=_hints(read_only=False, destructive=False, idempotent=True))
    @domain_errors
    async def set_auto_renew(
        ctx: Ctx,
        rental_id: RentalIdParam,
        enabled: Annotated[bool, Field(description="The wanted state: true to renew automatically, false to stop.")],
    ) -> ChangeResult:
        """Turn automatic renewal on or off (sets the wanted state, never a blind toggle).

        Use this to keep a number you need for a long time, or to stop renewals you no longer want.
        Works for GotSMS monthly rents and Getatext long rentals. Renewals are charged by the provider, so
        enabling is refused while a daily budget is set unless the owner allows it.
        Example: set_auto_renew(rental_id="getatext:long:7", enabled=false).
        """
        state = _state(ctx)
        outcome = await state.rentals.set_auto_renew(rental_id, enabled)
        await state.subscriptions.updated([ACTIVE_URI, rental_uri(outcome.rental.rental_id)])
        return ChangeResult(rental=_rental_view(state, outcome.rental), note=outcome.note)

    @mcp.tool(title="Finish a rental", annotations=_hints(read_only=False, destructive=True, idempotent=True))
    @domain_errors
    async def finish_rental(ctx: Ctx, rental_id: RentalIdParam) -> ChangeResult:
        """Mark a Getatext one-time rental as completed once its code has been used.

        Use this to close a rental you no longer need after success (no refund). Example:
        finish_rental(rental_id="getatext:12345").
        """
        state = _state(ctx)
        outcome = await state.rentals.finish(rental_id)
        await state.subscriptions.updated([ACTIVE_URI, rental_uri(outcome.rental.rental_id)])
        return ChangeResult(rental=_rental_view(state, outcome.rental), note=outcome.note)
