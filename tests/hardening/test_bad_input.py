"""Bad input: every tool called with arguments drawn from its own input schema and from far outside it.

Property-based (Hypothesis): the arguments come from each tool's real `inputSchema` (as `tools/list`
serves it), then are mutated into hostile ones: wrong types, 10k+ character strings, unicode (emoji, RTL,
NUL), ids with path characters, extreme numbers and money strings, missing required fields, unknown extra
fields (among them the names of the server's hidden resolver parameters). Every call must answer a
result with structured content, or a tool error with a short, clear message; an id that fails validation
must never reach a provider; and the server must keep answering. The same holds on the read-only server,
for unregistered (spending) tools there, and for tool names that do not exist.

One server over the in-process sandboxes serves all the examples of an era: a module-scoped fixture runs it
in a blocking portal (its own event loop thread), and the property tests are synchronous `@given` tests that
call into it. (Drawing inside an async test does not work: Hypothesis ends an example by raising `StopTest`
from `data.draw`, a BaseException that tears down anyio's test runner.) The adapters go through a transport
that records every URL exactly as sent, beside the sandboxes' own request logs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.types import CallToolResult, Tool

from smsrent.mcp.app import App, create_app
from smsrent.mcp.tools import MAX_ERROR_CHARS
from smsrent.providers.registry import Providers
from smsrent.sandbox.base import SandboxServer, SandboxTiming
from smsrent.sandbox.getatext import GetatextSandbox
from smsrent.sandbox.gotsms import GotSmsSandbox
from tests.helpers import getatext_adapter, gotsms_adapter
from tests.helpers import settings as app_settings
from tests.mcp import MODES, text_of

TOOLS = frozenset(
    {
        "get_balance",
        "list_plans",
        "wait_for_code",
        "list_rentals",
        "get_messages",
        "wake_up",
        "rent_number",
        "refund",
        "extend_rental",
        "set_auto_renew",
        "finish_rental",
    }
)
READ_ONLY_TOOLS = frozenset({"get_balance", "list_plans", "wait_for_code", "list_rentals", "get_messages", "wake_up"})
SPENDING_TOOLS = TOOLS - READ_ONLY_TOOLS

CALL_LIMIT = 15.0  # seconds; a valid wait is capped at 1 s by the strategies, so this only catches hangs
# The largest valid value generated for these integer fields, which are then never left out either (an
# omitted `timeout_seconds` means a 45 s wait on a real rental).
CAPS = {"timeout_seconds": 1}
SAFE = re.compile(r"[A-Za-z0-9_.-]+")  # what a provider URL path segment may be made of
ID_FIELDS = ("rental_id", "plan_id")

PROPERTY = settings(
    max_examples=50,
    derandomize=True,  # the same examples on every run: CI stays deterministic
    database=None,  # and nothing is written into the repository
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

Json = Any


# -- The server under test --------------------------------------------------------------------------------


class RecordingTransport(httpx.ASGITransport):
    """The in-process transport to a sandbox, keeping each URL (path and query) exactly as the adapter sent it."""

    def __init__(self, app: Any, sent: list[str]) -> None:
        super().__init__(app=app)
        self.sent = sent

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request.url.raw_path.decode("ascii"))
        return await super().handle_async_request(request)


class ErrorLog(logging.Handler):
    """Every ERROR record logged while the server runs (the SDK logs an escaped exception this way)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass(repr=False)
class Server:
    """A connected client, the sandboxes behind its server, and what was sent to them."""

    name: str
    portal: BlockingPortal
    client: Client
    tools: dict[str, Tool]
    sandboxes: tuple[GotSmsSandbox, GetatextSandbox]
    sent: list[str]
    errors: ErrorLog
    samples: dict[str, list[str]]
    full_schemas: dict[str, dict[str, Any]]
    _strategies: dict[str, st.SearchStrategy[dict[str, Json]]] = field(default_factory=dict)

    def arguments(self, tool: str) -> st.SearchStrategy[dict[str, Json]]:
        """Valid-shaped or hostile arguments for `tool`, from its input schema (a full server's, for a tool
        this server does not register)."""
        if tool not in self._strategies:
            schema = self.tools[tool].input_schema if tool in self.tools else self.full_schemas[tool]
            self._strategies[tool] = call_arguments(schema, self.samples)
        return self._strategies[tool]

    def __repr__(self) -> str:
        return f"<{self.name} server>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # what a failing example shows
        printer.text(repr(self))

    def check(self, tool: str, args: dict[str, Json]) -> CallToolResult:
        """Call `tool` with `args` on the server's event loop, checking everything `check_call` checks."""
        return self.portal.call(check_call, self, tool, args)

    def served(self) -> list[str]:
        """Every path the sandboxes have served (decoded, as they saw it)."""
        return [path for sandbox in self.sandboxes for _, _, path in sandbox.requests]

    def posts(self) -> int:
        return sum(method == "POST" for sandbox in self.sandboxes for _, method, _ in sandbox.requests)


async def _rent(client: Client, **arguments: Json) -> str:
    result = await client.call_tool("rent_number", arguments)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    rental_id: str = result.structured_content["rental"]["rental_id"]
    return rental_id


@asynccontextmanager
async def serving(portal: BlockingPortal, data_dir: Path, mode: str, *, read_only: bool) -> AsyncIterator[Server]:
    """A server over fresh sandboxes that already holds three real rentals (rented before it went read-only)."""
    timing = SandboxTiming.instant()
    gotsms, getatext = GotSmsSandbox(timing=timing, seed=7), GetatextSandbox(timing=timing, seed=7)
    sent: list[str] = []

    def build(only_read: bool) -> App:
        return create_app(
            app_settings(data_dir, read_only=only_read),
            providers=lambda: Providers(
                [
                    gotsms_adapter(gotsms, transport=RecordingTransport(gotsms.app, sent)),
                    getatext_adapter(getatext, transport=RecordingTransport(getatext.app, sent)),
                ]
            ),
        )

    errors = ErrorLog()
    logging.getLogger().addHandler(errors)
    try:
        async with Client(build(False).mcp, mode=mode) as client:
            full_schemas = {tool.name: tool.input_schema for tool in (await client.list_tools()).tools}
            rentals = [
                await _rent(client, service="Telegram", country="USA", provider="gotsms", max_price="2"),
                await _rent(client, plan_id="getatext:whatsapp", max_price="1"),
                await _rent(client, plan_id="getatext:long:1w", max_price="11"),
            ]
            listed = await client.call_tool("list_plans", {"limit": 200})
            assert listed.structured_content is not None
            plans = [plan["plan_id"] for plan in listed.structured_content["plans"]]
        samples = {
            # Unknown but well-formed ids first (Hypothesis shrinks towards them), the real rentals last.
            "rental_id": ["getatext:99999", "gotsms:00000000-0000-4000-8000-000000000000", "getatext:long:7", *rentals],
            "plan_id": ["gotsms:00000000-0000-4000-8000-000000000000", "getatext:nosuch", "getatext:long:1y", *plans],
            "service": ["no-such-service", "Telegram", "whatsapp", "Discord"],
            "country": ["Atlantis", "USA", "UK", "usa"],
            "max_price": ["0.01", "1", "2", "0.50", "11", "1000"],
        }
        async with Client(build(read_only).mcp, mode=mode) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            name = f"{'read-only ' if read_only else ''}{mode}"
            yield Server(name, portal, client, tools, (gotsms, getatext), sent, errors, samples, full_schemas)
    finally:
        logging.getLogger().removeHandler(errors)


@contextmanager
def started(data_dir: Path, mode: str, *, read_only: bool) -> Iterator[Server]:
    """`serving` on an event loop of its own, in a thread, for synchronous tests to call into."""
    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(serving(portal, data_dir, mode, read_only=read_only)) as running,
    ):
        yield running


@pytest.fixture(scope="module", params=MODES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The full server (every tool), on each protocol era."""
    with started(tmp_path_factory.mktemp("bad-input"), request.param, read_only=False) as running:
        yield running


@pytest.fixture(scope="module")
def read_only_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The read-only server (SMSRENT_READ_ONLY): no tool that spends money or changes a rental."""
    with started(tmp_path_factory.mktemp("bad-input-ro"), "auto", read_only=True) as running:
        yield running


# -- Schema -> strategies -----------------------------------------------------------------------------------


def from_schema(schema: Mapping[str, Any], name: str, samples: Mapping[str, list[str]]) -> st.SearchStrategy[Json]:
    """Values valid for one property's JSON schema, mixed with realistic samples for fields named `name`."""
    if "anyOf" in schema:
        return st.one_of([from_schema(branch, name, samples) for branch in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 10_000)
        text = st.text(min_size=low, max_size=min(high, 80))
        realistic = [s for s in samples.get(name, ()) if low <= len(s) <= high]
        return st.one_of(st.sampled_from(realistic), text) if realistic else text
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        if name in CAPS:
            high = CAPS[name] if high is None else min(high, CAPS[name])
        return st.integers(low, high)
    if kind == "number":
        exclusive_low, exclusive_high = "exclusiveMinimum" in schema, "exclusiveMaximum" in schema
        low = schema.get("exclusiveMinimum", schema.get("minimum"))
        high = schema.get("exclusiveMaximum", schema.get("maximum"))
        cent = Decimal("0.01")
        return st.one_of(
            st.floats(low, high, exclude_min=exclusive_low, exclude_max=exclusive_high, allow_nan=False),
            st.decimals(
                None if low is None else Decimal(str(low)) + (cent if exclusive_low else 0),
                None if high is None else Decimal(str(high)) - (cent if exclusive_high else 0),
                places=2,
                allow_nan=False,
                allow_infinity=False,
            ).map(float),  # amounts in cents, as a person would give them
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    raise AssertionError(f"{name}: no strategy for schema {dict(schema)}; extend from_schema")


def arguments(schema: Mapping[str, Any], samples: Mapping[str, list[str]]) -> st.SearchStrategy[dict[str, Json]]:
    """Argument objects valid for a tool's input schema: every required (or capped) field, any optional one."""
    assert schema.get("type") == "object", schema
    properties: dict[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ())) | (CAPS.keys() & properties.keys())
    assert required <= properties.keys(), schema
    return st.fixed_dictionaries(
        {name: from_schema(properties[name], name, samples) for name in sorted(required)},
        optional={
            name: from_schema(sub, name, samples) for name, sub in sorted(properties.items()) if name not in required
        },
    )


ID_PREFIXES = ["gotsms:", "getatext:", "getatext:long:", "", "GOTSMS:", "gotsms::", "getatext:long:long:"]
ID_STEMS = ["", "1", "12345", "9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f", "1w", "whatsapp"]
PATH_BITS = [
    "../", "..", "/", "%2F", "%2f", "%2e%2e%2f", "..%2F", "?", "?x=1", "#", "#frag", " ", "%20", "\n", "\r\n",
    "\t", "\\", "%00", "\x00", ";", "&", "=", "@", ":", "//", "/../../account", "/refund", "\u202e", "😀",
]  # fmt: skip
WEIRD_TEXT = [
    "\u202egotsms:12345",  # right-to-left override
    "gotsms:\u200b12345",  # zero-width space
    "\ufeffgetatext:12345",  # byte-order mark
    "getatext:\uff11\uff12\uff13\uff14\uff15",  # fullwidth digits
    "getatext:\u0661\u0662\u0663",  # Arabic-Indic digits
    "getatext:¹²³",  # superscripts (str.isdigit() says yes)
    "getatext:long:1\uff57",
    "gotsms:e\u0301\u0301\u0301",  # combining accents
    "Telegram\x00",
    "😀😀😀",
    "שלום עולם",
    "İstanbul",
    "",
    "   ",
]
HUGE_UNITS = ["A", "9", "é", "😀", "\u202e", "\x00", "../", "%2F", " ", "\n"]
MONEY_STRINGS = [
    "-1", "0", "-0", "0.0", "1e309", "-1e309", "0.0000001", "1e-7", "1e-400", "NaN", "nan", "-NaN", "sNaN",
    "Infinity", "-Infinity", "inf", "1e3", "1000.0001", "1000.00001", "999999999999", "1,50", "1_000", "0x10",
    " 1 ", "1.", ".5", "+1", "\u0661", "\uff11", "$1", "1 USD", "1.5.0", "",
]  # fmt: skip
EXTREME_NUMBERS: list[Json] = [
    -1, 0, -0.0, 0.5, 1.5, 1.0000001, 51, 201, 1001, 2**31, 2**63, 2**64 + 1, 10**30, -(10**30), 10**400,
    1e308, -1e308, 5e-324, float("nan"), float("inf"), float("-inf"),
]  # fmt: skip


class Huge(str):
    """A 10k+ character string that shows itself briefly in a failing example."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Huge({str.__repr__(self[:24])} + ... {len(self)} chars)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how Hypothesis prints it
        printer.text(repr(self))


def _huge(prefix: str, unit: str) -> Huge:
    return Huge(prefix + unit * (10_000 // len(unit) + 1))


def _nested(depth: int) -> Json:
    value: Json = "gotsms:12345"
    for _ in range(depth):
        value = [value]
    return value


WRONG_TYPES: list[Json] = [
    None, True, False, [], {}, ["gotsms:12345"], {"rental_id": "gotsms:12345"}, {"$ref": "#/x"},
    ["x"] * 1000, _nested(64), {_huge("", "a"): 1}, [None, 1, "a", {}],
]  # fmt: skip

hostile_ids = st.builds(
    lambda prefix, stem, bit, tail: prefix + stem + bit + tail,
    st.sampled_from(ID_PREFIXES),
    st.sampled_from(ID_STEMS),
    st.sampled_from(PATH_BITS),
    st.sampled_from(["", "1", "x", "refund", "../../account"]),
)
huge_strings = st.builds(_huge, st.sampled_from(ID_PREFIXES), st.sampled_from(HUGE_UNITS))
unicode_strings = st.one_of(
    st.sampled_from(WEIRD_TEXT),
    st.builds(lambda prefix, text: prefix + text, st.sampled_from(ID_PREFIXES), st.text(min_size=1, max_size=30)),
)
hostile_numbers = st.one_of(
    st.sampled_from(EXTREME_NUMBERS),
    st.integers(max_value=0),
    st.integers(min_value=10**6),
    # Never a whole number a wait would accept beyond the 1 s cap: that call would just be slow, not wrong.
    st.floats().filter(lambda f: not 1 < f <= 50),
)
hostile_values: st.SearchStrategy[Json] = st.one_of(
    st.sampled_from(WRONG_TYPES),
    hostile_ids,
    huge_strings,
    unicode_strings,
    hostile_numbers,
    st.sampled_from(MONEY_STRINGS),
)


def _extra_fields(samples: Mapping[str, list[str]]) -> st.SearchStrategy[tuple[str, Json]]:
    """Unknown fields, among them the hidden resolver parameters, carrying what would help a forgery."""
    forged_plan = {"plan_id": samples["plan_id"][-1], "provider": "gotsms", "service": "Telegram", "price": "0.01"}
    forged = st.sampled_from(
        [
            ("plan", forged_plan),
            ("approval", {"action": "accept", "data": {"approve": True}}),
            ("extension", {"price": "0.01"}),
            ("ctx", {"request_context": None}),
        ]
    )
    names = st.one_of(
        st.sampled_from(["_meta", "__proto__", "constructor", "rental_id ", "RENTAL_ID", "max_price\x00", "💥"]),
        st.just(_huge("", "a")),
        st.text(max_size=20),
    )
    return st.one_of(forged, st.tuples(names, st.one_of(hostile_values, st.sampled_from(samples["rental_id"]))))


def hostile_arguments(
    schema: Mapping[str, Any], samples: Mapping[str, list[str]]
) -> st.SearchStrategy[dict[str, Json]]:
    """Valid arguments broken in one to three ways: a hostile value, a missing required field, an unknown field."""
    properties = sorted(schema.get("properties", {}))
    required = sorted(schema.get("required", ()))
    extra = _extra_fields(samples)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Json]:
        args = dict(draw(arguments(schema, samples)))
        for _ in range(draw(st.integers(1, 3))):
            how = draw(st.sampled_from(["replace", "drop", "extra"]))
            if how == "replace" and properties:
                args[draw(st.sampled_from(properties))] = draw(hostile_values)
            elif how == "drop" and set(required) & args.keys():
                args.pop(draw(st.sampled_from(sorted(set(required) & args.keys()))))
            else:
                name, value = draw(extra)
                args[name] = value
        return args

    return build()


def call_arguments(schema: Mapping[str, Any], samples: Mapping[str, list[str]]) -> st.SearchStrategy[dict[str, Json]]:
    return st.one_of(arguments(schema, samples), hostile_arguments(schema, samples))


# -- The checks ---------------------------------------------------------------------------------------------


def outcome(result: CallToolResult) -> str:
    """What kind of answer a call got, for Hypothesis' statistics."""
    if not result.is_error:
        return "result"
    text = text_of(result)
    if "validation error" in text:
        return "tool error: arguments refused"
    if "Invalid rental_id" in text or "Invalid plan_id" in text:
        return "tool error: id refused"
    return "tool error: " + ("unknown tool" if "Unknown tool" in text else "other")


def strings_in(value: Json) -> Iterator[str]:
    """Every string inside an argument value, dictionary keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def local_part(value: str) -> str:
    """The provider's own id inside an id argument: what would end up in a provider URL."""
    _, _, rest = value.partition(":")
    return rest.removeprefix("long:")


def unsafe(local: str) -> bool:
    return SAFE.fullmatch(local) is None or local in (".", "..")


def unsafe_segments(path: str) -> list[str]:
    """The segments of a URL path that a provider id must never have put there."""
    return [seg for seg in path.split("?", 1)[0].strip("/").split("/") if unsafe(seg)]


async def check_call(server: Server, tool: str, args: dict[str, Json]) -> CallToolResult:
    """Call `tool` and check the answer, what reached the providers, and that the server still answers."""
    sent_before, served_before = len(server.sent), len(server.served())
    with anyio.fail_after(CALL_LIMIT):
        result = await server.client.call_tool(tool, args)

    escaped = [record.getMessage() for record in server.errors.records]
    assert not escaped, f"the server logged errors: {escaped}"
    if result.is_error:
        text = text_of(result)
        assert text.strip(), "a tool error without a message"
        assert len(text) <= MAX_ERROR_CHARS + 40, f"an unbounded error ({len(text)} chars): {text[:300]}..."
        assert "Traceback" not in text, text
        assert result.structured_content is None
        assert not any(s in text for s in strings_in(args) if len(s) >= 1000), "a huge input echoed whole"
        if "validation error" in text:  # the SDK's refusal of the arguments must name what was wrong
            assert any(name in text for name in server.full_schemas[tool].get("properties", {})), text
        assert all(c.isprintable() or c == "\n" for c in text), f"control characters in the error: {text!r}"
    else:
        assert isinstance(result.structured_content, dict), result

    sent, served = server.sent[sent_before:], server.served()[served_before:]
    properties = server.full_schemas.get(tool, {}).get("properties", {})
    for key in ID_FIELDS:
        value = args.get(key)
        if key in properties and isinstance(value, str) and unsafe(local := local_part(value)):
            assert result.is_error, f"{key}={value!r} with characters no provider id has was accepted"
            for form in {local, quote(local, safe=""), quote(local, safe="/")} - {""}:
                assert not [url for url in sent if form in url], f"{key}={value!r} reached a provider: {sent}"
    assert not [url for url in sent if unsafe_segments(url)], f"unsafe URL sent to a provider: {sent}"
    assert not [path for path in served if unsafe_segments(path)], f"unsafe path served by a sandbox: {served}"

    with anyio.fail_after(CALL_LIMIT):
        listed = await server.client.list_tools()
    assert {t.name for t in listed.tools} == server.tools.keys(), "the server lost tools"
    return result


# -- The properties -----------------------------------------------------------------------------------------


def test_strategies_cover_every_tool_schema(server: Server) -> None:
    """The server lists exactly the 11 tools, and every schema construct they use has a strategy."""
    assert server.tools.keys() == TOOLS
    for name, tool in server.tools.items():
        assert tool.input_schema == server.full_schemas[name]
        arguments(tool.input_schema, server.samples)  # raises on a construct from_schema does not know
        for prop, sub in tool.input_schema.get("properties", {}).items():
            from_schema(sub, prop, server.samples)


@pytest.mark.parametrize("tool", sorted(TOOLS))
@PROPERTY
@given(data=st.data())
def test_every_tool_answers_any_arguments_cleanly(server: Server, tool: str, data: st.DataObject) -> None:
    """A result with structured content or a clear, bounded tool error; bad ids never reach a provider."""
    result = server.check(tool, data.draw(server.arguments(tool), label="arguments"))
    event(outcome(result))  # counted by --hypothesis-show-statistics


@pytest.mark.parametrize("tool", sorted(READ_ONLY_TOOLS))
@PROPERTY
@given(data=st.data())
def test_read_only_tools_answer_any_arguments_cleanly(read_only_server: Server, tool: str, data: st.DataObject) -> None:
    """The same property on the read-only server, for the tools it registers."""
    assert read_only_server.tools.keys() == READ_ONLY_TOOLS
    result = read_only_server.check(tool, data.draw(read_only_server.arguments(tool), label="arguments"))
    event(outcome(result))


@pytest.mark.parametrize("tool", sorted(SPENDING_TOOLS))
@settings(PROPERTY, max_examples=15)
@given(data=st.data())
def test_read_only_server_refuses_spending_tools(read_only_server: Server, tool: str, data: st.DataObject) -> None:
    """A spending tool called on the read-only server is a clean tool error, and nothing is posted."""
    args = data.draw(read_only_server.arguments(tool), label="arguments")
    posts_before = read_only_server.posts()
    result = read_only_server.check(tool, args)
    assert result.is_error
    assert tool in text_of(result)
    assert read_only_server.posts() == posts_before


@settings(PROPERTY, max_examples=25)
@given(
    name=st.one_of(
        st.sampled_from([f(tool) for tool in sorted(TOOLS) for f in (str.upper, "{} ".format, "{}\x00".format)]),
        hostile_ids,
        huge_strings,
        unicode_strings,
    )
)
def test_unknown_tool_names_are_clean_tool_errors(server: Server, name: str) -> None:
    """A call to a tool that does not exist (look-alike, path characters, 10k chars) is a short tool error."""
    assume(name not in TOOLS)
    posts_before = server.posts()
    result = server.check(name, {"rental_id": "getatext:12345", "max_price": "1", "service": "Telegram"})
    assert result.is_error
    assert "Unknown tool" in text_of(result)
    assert server.posts() == posts_before


@pytest.mark.anyio
async def test_forged_resolver_parameters_neither_lower_the_price_nor_approve(
    tmp_path: Path, gotsms_sandbox: GotSmsSandbox, getatext_sandbox: GetatextSandbox
) -> None:
    """`plan`, `approval` and `extension` are resolved by the server: passed as arguments they change nothing."""
    app = create_app(
        app_settings(tmp_path, confirm_above=Decimal("0.50")),
        providers=lambda: Providers([gotsms_adapter(gotsms_sandbox), getatext_adapter(getatext_sandbox)]),
    )
    sandboxes: tuple[SandboxServer, ...] = (gotsms_sandbox, getatext_sandbox)
    forged = {
        "plan": {"plan_id": "getatext:telegram", "provider": "getatext", "service": "Telegram", "price": "0.01"},
        "approval": {"action": "accept", "data": {"approve": True}},
        "extension": {"price": "0.01"},
    }
    async with Client(app.mcp, mode="auto") as client:  # a client without elicitation: it cannot approve
        cheap = await client.call_tool("rent_number", {"plan_id": "getatext:telegram", "max_price": "0.05", **forged})
        assert cheap.is_error
        assert "costs 0.40 USD, above max_price 0.05 USD" in text_of(cheap)
        unapproved = await client.call_tool("rent_number", {"service": "Telegram", "provider": "gotsms", **forged})
        assert unapproved.is_error  # max_price left out: the forged plan's price does not stand in for it
        pricey = {"service": "Telegram", "provider": "gotsms", "max_price": "2", **forged}
        unapproved = await client.call_tool("rent_number", pricey)
        assert unapproved.is_error
        assert "SMSRENT_CONFIRM_ABOVE" in text_of(unapproved)
        rented = await client.call_tool("rent_number", {"plan_id": "getatext:telegram", "max_price": "0.40"})
        assert not rented.is_error, text_of(rented)
        assert rented.structured_content is not None
        rental_id = rented.structured_content["rental"]["rental_id"]
        extended = await client.call_tool("extend_rental", {"rental_id": rental_id, "max_price": "0.05", **forged})
        assert extended.is_error
        assert "above max_price 0.05 USD" in text_of(extended)
    assert len([path for s in sandboxes for _, method, path in s.requests if method == "POST"]) == 1  # the rent


def stays_up(server: Server, tools: frozenset[str]) -> None:
    """The server lists `tools` and answers get_balance; nothing unsafe was ever sent, nothing logged an error."""
    listed = server.portal.call(server.client.list_tools)
    balance = server.check("get_balance", {})
    assert {tool.name for tool in listed.tools} == tools
    assert not balance.is_error, text_of(balance)
    assert balance.structured_content is not None
    assert {b["provider"] for b in balance.structured_content["balances"]} == {"gotsms", "getatext"}
    assert not [url for url in server.sent if unsafe_segments(url)]
    assert not [path for path in server.served() if unsafe_segments(path)]
    assert not server.errors.records


def test_the_server_stays_up(server: Server) -> None:
    """After the barrage (this test runs last on its server): every tool listed, balances answer, paths safe."""
    stays_up(server, TOOLS)


def test_the_read_only_server_stays_up(read_only_server: Server) -> None:
    """The same after the read-only barrage: its six tools listed, balances answer, paths safe."""
    stays_up(read_only_server, READ_ONLY_TOOLS)
