"""The provider-response fuzzer: hostile answers over real loopback HTTP, met by both adapters with a 1 s timeout.

Three parts. (1) Every hostile body of the sandboxes' fault injector (`HOSTILE`: a lying content-encoding, binary,
JSON nested 100k deep, 30 MB declared or chunked, swapped content types, a 200 that contradicts itself, a body
trickled byte by byte for longer than the timeout), against a safe call (balance, plans, status) and a spending
call (rent) of each adapter: the error class, `uncertain` for the spending call, one bounded sentence, and the
call over within its attempts' deadlines plus a margin. `-s` prints the table of cases and outcomes. (2) Mutations
of the documents' own answers (Hypothesis): values, bytes, encodings, content types and statuses; whatever comes
back is a sane domain object or a `ProviderError`, never another exception, and a spending call's 2xx answer is
never a definite failure. (3) The whole MCP app with hostile bodies at its pollers and tools: tool errors of one
sentence each, the server up, and after the provider heals a code arrives through `wait_for_code`.

Parts (1) and (2) serve from a module-scoped blocking portal (its own event loop thread); the property tests are
synchronous, as in `test_bad_input` (Hypothesis cannot draw inside an anyio test).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from httpx import Timeout
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp import Client
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from smsrent.domain.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from smsrent.domain.ids import parse_plan_id, parse_rental_id
from smsrent.domain.models import Balance, Plan, Receipt
from smsrent.domain.values import MAX_AMOUNT
from smsrent.mcp.app import create_app
from smsrent.providers.base import HttpProvider, RetryPolicy
from smsrent.providers.getatext import GetatextProvider
from smsrent.providers.gotsms import GotSmsProvider
from smsrent.providers.registry import Providers
from smsrent.sandbox import serve_loopback
from smsrent.sandbox.base import HOSTILE, HostileBody, SandboxServer, SandboxTiming
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import getatext_adapter, gotsms_adapter
from tests.helpers import settings as app_settings
from tests.mcp import local_id, text_of
from tests.providers.fixtures import fixture_text

pytestmark = pytest.mark.e2e

TIMEOUT = 1.0  # SMSRENT_PROVIDER_TIMEOUT for every adapter here
MARGIN = 2.0  # generous: the bound catches a call held open by a trickle, not a slow machine
TRICKLE = 6.0  # how long a trickled body lasts: longer than any call's bound
MAX_MESSAGE = 300
RAW = ("\ufffd", "<html", "[[", '{"', "\\x")  # what a message quoting the body would show

Call = Callable[[HttpProvider], Awaitable[object]]


def one_sentence(message: str, *secrets: str) -> None:
    """One short printable sentence with no bytes of the body and no secret in it."""
    assert len(message) <= MAX_MESSAGE, message
    assert message.isprintable(), message
    assert message.endswith("."), message
    assert ". " not in message, message
    assert not any(raw in message for raw in RAW), message
    assert not any(secret in message for secret in secrets), message


# -- The table: every hostile body against a safe and a spending call of each adapter -------------------------


@dataclass(frozen=True)
class Target:
    """One call of one adapter and the endpoint it reaches."""

    provider: str
    call: str
    method: str
    path: str
    spends: bool


TARGETS = (
    Target("gotsms", "balance", "GET", "/api/account", spends=False),
    Target("gotsms", "plans", "GET", "/api/rents/plans", spends=False),
    Target("gotsms", "status", "GET", "/api/rents", spends=False),
    Target("gotsms", "rent", "POST", "/api/rents", spends=True),
    Target("getatext", "balance", "GET", "/api/v1/balance", spends=False),
    Target("getatext", "plans", "GET", "/api/v1/prices-info", spends=False),
    Target("getatext", "status", "POST", "/api/v1/rental-status", spends=False),
    Target("getatext", "rent", "POST", "/api/v1/rent-a-number", spends=True),
)
EXPECTED: dict[HostileBody, type[ProviderError]] = {
    "bad_encoding": ProviderUnavailable,
    "binary": ProviderUnavailable,
    "nested": ProviderUnavailable,
    "huge": ProviderUnavailable,
    "huge_chunked": ProviderUnavailable,
    "html_as_json": ProviderUnavailable,
    "json_as_html": ProviderUnavailable,
    "contradiction": ProviderUnavailable,
    "trickle": ProviderTimeout,
}
# Read, not refused: a Getatext rental-status answer is the asked rental's (the handler API's never carry an id), so
# the contradiction reads as that rental, active, with no code and nothing else: it changes nothing.
READ: set[tuple[HostileBody, str, str]] = {("contradiction", "getatext", "status")}
WORDING: dict[HostileBody, str] = {
    "bad_encoding": "does not match its encoding",
    "binary": "unreadable answer",
    "nested": "unreadable answer",
    "huge": "larger than 4 MiB",
    "huge_chunked": "larger than 4 MiB",
    "html_as_json": "HTML page",
    "json_as_html": "HTML page",
    "contradiction": "cannot read",
    "trickle": "did not answer in time",
}


@dataclass
class Row:
    case: str
    provider: str
    call: str
    outcome: str
    uncertain: bool | None
    attempts: int
    elapsed: float
    bound: float
    message: str


@dataclass
class Wire:
    """Both sandboxes and a scripted server on loopback, their adapters, and the portal that runs them."""

    portal: BlockingPortal
    gotsms: GotSmsSandbox
    getatext: GetatextSandbox
    adapters: dict[str, HttpProvider]
    calls: dict[tuple[str, str], Call]
    scripted: Scripted
    scripted_adapters: dict[str, HttpProvider]
    rows: list[Row] = field(default_factory=list)

    def sandbox(self, provider: str) -> SandboxServer:
        return self.gotsms if provider == "gotsms" else self.getatext

    def secrets(self) -> tuple[str, str]:
        return self.gotsms.token, self.getatext.api_key


@dataclass
class Scripted:
    """A server that answers every request with the one scripted answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    async def answer(self, _request: Request) -> Response:
        body = b"" if self.status in (204, 304) else self.body  # h11 refuses to send a body with these
        return Response(body, self.status, headers=self.headers)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.answer, methods=["GET", "POST"])])


@asynccontextmanager
async def wired(portal: BlockingPortal) -> AsyncIterator[Wire]:
    timing = SandboxTiming.instant()
    gotsms = GotSmsSandbox(timing=timing, seed=11, slow_seconds=TRICKLE)
    getatext = GetatextSandbox(timing=timing, seed=11, slow_seconds=TRICKLE)
    scripted = Scripted()
    async with (
        serve_loopback(gotsms.app) as gotsms_url,
        serve_loopback(getatext.app) as getatext_url,
        serve_loopback(scripted.app()) as scripted_url,
    ):
        adapters: dict[str, HttpProvider] = {
            "gotsms": gotsms_adapter(gotsms, base_url=f"{gotsms_url}/api", timeout=TIMEOUT),
            "getatext": getatext_adapter(getatext, base_url=getatext_url, timeout=TIMEOUT),
        }
        once: dict[str, Any] = {"base_url": scripted_url, "retry": RetryPolicy(attempts=1), "timeout": Timeout(TIMEOUT)}
        scripted_adapters: dict[str, HttpProvider] = {
            "gotsms": GotSmsProvider(SecretStr("gs-secret"), **once),
            "getatext": GetatextProvider(SecretStr("ga-secret"), **once),
            "handler": GetatextProvider(SecretStr("ga-secret"), use_handler_api=True, **once),
        }
        gs, ga = adapters["gotsms"], adapters["getatext"]
        assert isinstance(gs, GotSmsProvider)
        assert isinstance(ga, GetatextProvider)
        plan = next(p for p in await gs.list_plans() if p.price is not None and p.price < 2)
        rented = {"gotsms": (await gs.rent(parse_plan_id(plan.plan_id))).rental.rental_id}
        rented["getatext"] = (await ga.rent(parse_plan_id("getatext:whatsapp"))).rental.rental_id
        calls: dict[tuple[str, str], Call] = {
            ("gotsms", "balance"): lambda a: a.get_balance(),
            ("gotsms", "plans"): lambda a: a.list_plans(),
            ("gotsms", "status"): lambda a: a.get_rental(parse_rental_id(rented["gotsms"])),
            ("gotsms", "rent"): lambda a: a.rent(parse_plan_id(plan.plan_id)),
            ("getatext", "balance"): lambda a: a.get_balance(),
            ("getatext", "plans"): lambda a: a.list_plans(),
            ("getatext", "status"): lambda a: a.get_rental(parse_rental_id(rented["getatext"])),
            ("getatext", "rent"): lambda a: a.rent(parse_plan_id("getatext:whatsapp")),
        }
        try:
            yield Wire(portal, gotsms, getatext, adapters, calls, scripted, scripted_adapters)
        finally:
            for adapter in [*adapters.values(), *scripted_adapters.values()]:
                await adapter.aclose()


@pytest.fixture(scope="module")
def wire() -> Iterator[Wire]:
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(wired(portal)) as running:
        yield running
        print_table(running.rows)


def print_table(rows: list[Row]) -> None:
    """The table of cases and outcomes (`pytest -s` shows it)."""
    if not rows:
        return
    lines = [
        "",
        "Provider fuzzer: loopback HTTP, timeout 1 s, bound = attempts x timeout + 2 s",
        f"{'case':<14}{'provider':<10}{'call':<9}{'outcome':<21}{'uncertain':<10}{'att':>3}{'s':>6}{'bound':>6}"
        "  message",
    ]
    for r in rows:
        uncertain = "-" if r.uncertain is None else str(r.uncertain).lower()
        lines.append(
            f"{r.case:<14}{r.provider:<10}{r.call:<9}{r.outcome:<21}{uncertain:<10}{r.attempts:>3}"
            f"{r.elapsed:>6.2f}{r.bound:>6.1f}  {r.message}"
        )
    print("\n".join(lines))  # noqa: T201


def described(outcome: object) -> str:
    if isinstance(outcome, Receipt):
        return f"read: {outcome.rental.rental_id} {outcome.rental.status}, with nothing else"
    return repr(outcome)[:80]


def run(wire: Wire, target: Target) -> tuple[BaseException | object, float]:
    """Call the target on the portal's loop; what it returned or raised, and how long it took."""
    adapter = wire.adapters[target.provider]
    call = wire.calls[(target.provider, target.call)]

    async def attempt() -> BaseException | object:
        try:
            return await call(adapter)
        except Exception as err:
            return err

    started = time.perf_counter()
    outcome = wire.portal.call(attempt)
    return outcome, time.perf_counter() - started


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.provider}-{t.call}")
@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_body_is_a_clear_provider_error_within_the_deadline(
    wire: Wire, case: HostileBody, target: Target
) -> None:
    sandbox = wire.sandbox(target.provider)
    retried = not target.spends and case != "contradiction"  # a whole answer that reads wrong is not asked again
    attempts = wire.adapters[target.provider].retry.attempts if retried else 1
    before = sandbox.injected[case]
    sandbox.inject(target.method, target.path, case, times=attempts)
    outcome, elapsed = run(wire, target)
    bound = attempts * TIMEOUT + MARGIN
    error = outcome if isinstance(outcome, ProviderError) else None
    wire.rows.append(
        Row(
            case,
            target.provider,
            target.call,
            type(outcome).__name__,
            error.uncertain if error and target.spends else None,
            sandbox.injected[case] - before,
            elapsed,
            bound,
            error.message if error else described(outcome),
        )
    )
    if (case, target.provider, target.call) in READ:
        assert isinstance(outcome, Receipt), outcome
        assert (outcome.messages, outcome.balance_after, outcome.rental.price) == ((), None, None)
        return
    assert type(outcome) is EXPECTED[case], outcome
    assert isinstance(outcome, ProviderError)
    assert WORDING[case] in outcome.message
    one_sentence(outcome.message, *wire.secrets())
    if target.spends:
        assert outcome.uncertain  # bytes came back: the purchase may have been made
    assert sandbox.injected[case] - before == attempts  # a safe call is retried, each attempt with its deadline
    assert elapsed <= bound, f"{elapsed:.2f} s"


def test_the_adapters_still_work_after_the_hostile_bodies(wire: Wire) -> None:
    """Every connection a hostile answer left half-read was dropped, not reused."""
    for target in TARGETS:
        if not target.spends:
            outcome, _ = run(wire, target)
            assert not isinstance(outcome, BaseException), outcome


# -- Mutations of the documents' answers (Hypothesis) ----------------------------------------------------------

PROPERTY = settings(
    max_examples=200,
    derandomize=True,  # the same examples on every run: CI stays deterministic
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Answer:
    """A documented answer for one adapter call."""

    adapter: str
    call: str
    fixture: str
    spends: bool
    status: int = 200


ANSWERS = (
    Answer("gotsms", "balance", "gotsms/account", spends=False),
    Answer("gotsms", "plans", "gotsms/rents_plans", spends=False),
    Answer("gotsms", "rents", "gotsms/rents", spends=False),
    Answer("gotsms", "rent", "gotsms/rent_created", spends=True, status=201),
    Answer("gotsms", "refund", "gotsms/refund_200", spends=True),
    Answer("getatext", "balance", "getatext/balance", spends=False),
    Answer("getatext", "plans", "getatext/prices_info", spends=False),
    Answer("getatext", "status", "getatext/rental_status", spends=False),
    Answer("getatext", "rent", "getatext/rent_a_number", spends=True, status=201),
    Answer("getatext", "long", "getatext/long_rental_created", spends=True),
    Answer("handler", "rent", "", spends=True),
)
CALLS: dict[tuple[str, str], Call] = {
    ("gotsms", "balance"): lambda a: a.get_balance(),
    ("gotsms", "plans"): lambda a: a.list_plans(),
    ("gotsms", "rents"): lambda a: a.rents(),  # type: ignore[attr-defined]
    ("gotsms", "rent"): lambda a: a.rent(parse_plan_id("gotsms:5c2b7e10-aaaa-4bbb-8ccc-0123456789ab")),
    ("gotsms", "refund"): lambda a: a.refund(parse_rental_id("gotsms:9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f")),
    ("getatext", "balance"): lambda a: a.get_balance(),
    ("getatext", "plans"): lambda a: a.list_plans(),
    ("getatext", "status"): lambda a: a.get_rental(parse_rental_id("getatext:12345")),
    ("getatext", "rent"): lambda a: a.rent(parse_plan_id("getatext:whatsapp")),
    ("getatext", "long"): lambda a: a.rent(parse_plan_id("getatext:long:1w")),
    ("handler", "rent"): lambda a: a.rent(parse_plan_id("getatext:whatsapp")),
}
HOSTILE_VALUES = st.one_of(
    st.sampled_from(
        [None, True, False, 0, -1, "", "null", "false", "0", "-0.55", "NaN", "Infinity", "1e400", "1e999999999"]
    ),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.none(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.none(), max_size=2),
)
ENCODINGS = st.sampled_from([None, None, "gzip", "deflate", "br", "zstd", "identity", "gzip, deflate", "x-unknown"])
TYPES = st.sampled_from(
    [
        "application/json",
        "application/json",
        "text/html; charset=utf-8",
        "text/plain",
        "application/json; charset=utf-16",
        "application/json; charset=rot13",
        "application/json; charset=no-such",
    ]
)
STATUSES = st.sampled_from([None, None, None, 200, 201, 202, 204, 302, 400, 404, 422, 429, 500, 503])


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a value can be swapped (the document itself included)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += paths(inner, (*prefix, index))
    return found


def replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy


@st.composite
def mutated_answers(draw: st.DrawFn) -> tuple[Answer, int, dict[str, str], bytes]:
    answer = draw(st.sampled_from(ANSWERS))
    if answer.adapter == "handler":
        body = draw(st.sampled_from(["ACCESS_NUMBER:77:1234567890", "NO_NUMBERS", "ACCESS_NUMBER:x", "ACCESS_NUMBER"]))
        raw = body.encode()
    else:
        provider, name = answer.fixture.split("/")
        document = json.loads(fixture_text(provider, name))
        how = draw(st.sampled_from(["value", "value", "drop", "bytes", "truncate", "as is"]))
        event(how)
        if how == "value":
            document = replaced(document, draw(st.sampled_from(paths(document))), draw(HOSTILE_VALUES))
        elif how == "drop" and isinstance(document, dict) and document:
            document.pop(draw(st.sampled_from(sorted(document))))
        raw = json.dumps(document).encode()
        if how == "bytes":
            at = draw(st.integers(0, len(raw)))
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
        elif how == "truncate":
            raw = raw[: draw(st.integers(0, len(raw) - 1))]
    headers = {"content-type": draw(TYPES)}
    encoding = draw(ENCODINGS)
    if encoding:
        headers["content-encoding"] = encoding
    status = draw(STATUSES) or answer.status
    return answer, status, headers, raw


def sane(result: object) -> None:
    """What an adapter returns holds no amount that could mislead the money checks."""

    def amount(value: Decimal | None, *, zero: bool) -> None:
        if value is not None:
            assert value.is_finite()
            assert value >= 0 if zero else value > 0
            assert value <= MAX_AMOUNT

    if isinstance(result, Balance):
        amount(result.amount, zero=True)
    elif isinstance(result, Receipt):
        amount(result.rental.price, zero=False)
        amount(result.balance_after, zero=True)
    elif isinstance(result, list):
        for item in result:
            if isinstance(item, Plan):
                amount(item.price, zero=False)
                amount(item.renew_price, zero=False)


@PROPERTY
@given(mutated_answers())
def test_a_mutated_documented_answer_is_read_or_refused(
    wire: Wire, mutated: tuple[Answer, int, dict[str, str], bytes]
) -> None:
    answer, status, headers, body = mutated
    wire.scripted.status, wire.scripted.headers, wire.scripted.body = status, headers, body
    adapter = wire.scripted_adapters[answer.adapter]
    call = CALLS[(answer.adapter, answer.call)]

    async def attempt() -> BaseException | object:
        try:
            return await call(adapter)
        except Exception as err:
            return err

    outcome = wire.portal.call(attempt)
    if not isinstance(outcome, BaseException):
        event("read")
        sane(outcome)
        return
    assert isinstance(outcome, ProviderError), repr(outcome)  # never another exception
    event(type(outcome).__name__)
    assert len(outcome.message) <= MAX_MESSAGE
    assert outcome.message.isprintable()
    assert "\ufffd" not in outcome.message
    assert "-secret" not in outcome.message
    if answer.spends and 200 <= status < 300 and answer.adapter != "handler":
        assert outcome.uncertain, outcome.message  # a 2xx may mean it was bought: never a definite failure


# -- The whole server ------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_server_survives_hostile_bodies_and_delivers_after_they_stop(tmp_path: Path) -> None:
    """Before the fix, a lying content-encoding in a poller's answer raised an httpx error that ended the server."""
    timing = SandboxTiming.instant()
    gotsms = GotSmsSandbox(timing=timing, seed=5, slow_seconds=TRICKLE)
    getatext = GetatextSandbox(timing=timing, seed=5, slow_seconds=TRICKLE)
    secrets = (gotsms.token, getatext.api_key)
    async with serve_loopback(gotsms.app) as gotsms_url, serve_loopback(getatext.app) as getatext_url:
        app = create_app(
            app_settings(tmp_path),
            providers=lambda: Providers(
                [
                    gotsms_adapter(gotsms, base_url=f"{gotsms_url}/api", timeout=TIMEOUT),
                    getatext_adapter(getatext, base_url=getatext_url, timeout=TIMEOUT),
                ]
            ),
        )
        async with Client(app.mcp) as client:
            rentals = {}
            for provider, arguments in (
                ("gotsms", {"service": "Telegram", "country": "USA", "provider": "gotsms", "max_price": "2"}),
                ("getatext", {"plan_id": "getatext:whatsapp", "max_price": "1"}),
            ):
                result = await client.call_tool("rent_number", arguments)
                assert not result.is_error, text_of(result)
                assert result.structured_content is not None
                rentals[provider] = result.structured_content["rental"]["rental_id"]

            hostile_since = time.time()
            for sandbox in (gotsms, getatext):
                sandbox.chaos(1.0, HOSTILE)  # every request meets a hostile body, pollers' included
            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    for rental_id in rentals.values():  # waits keep the pollers polling the hostile bodies
                        tg.start_soon(client.call_tool, "wait_for_code", {"rental_id": rental_id, "timeout_seconds": 4})
                    for provider, rental_id in rentals.items():  # tools that always ask the provider
                        for tool, arguments in (
                            ("get_balance", {"provider": provider}),
                            ("get_messages", {"rental_id": rental_id}),
                        ):
                            result = await client.call_tool(tool, arguments)
                            assert result.is_error, result.structured_content
                            one_sentence(text_of(result), *secrets)
            polled = [
                sum(1 for at, _, path in sandbox.requests if at >= hostile_since and path == poll)
                for sandbox, poll in ((gotsms, "/api/messages"), (getatext, "/api/v1/rental-status"))
            ]
            assert min(polled) > 0, polled  # the pollers met hostile bodies too

            for sandbox in (gotsms, getatext):
                sandbox.chaos(0)
            async with anyio.create_task_group() as tg:
                codes: dict[str, Any] = {}

                async def wait(rental_id: str) -> None:
                    result = await client.call_tool("wait_for_code", {"rental_id": rental_id, "timeout_seconds": 10})
                    assert not result.is_error, text_of(result)
                    codes[rental_id] = result.structured_content

                for rental_id in rentals.values():
                    tg.start_soon(wait, rental_id)
                await anyio.sleep(0.5)
                gotsms.deliver(local_id(rentals["gotsms"]), "Your code is 481516", "481516")
                getatext.deliver(int(local_id(rentals["getatext"])), "234200")
            assert [codes[rentals[p]]["outcome"] for p in ("gotsms", "getatext")] == ["code_received"] * 2
            assert codes[rentals["gotsms"]]["code"] == "481516"
            assert codes[rentals["getatext"]]["code"] == "234200"
