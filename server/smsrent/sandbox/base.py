"""What both simulated providers share: scaled timings, request counting, fault injection, the event loop.

A sandbox is an ASGI app (`.app`) that the real adapters reach through `httpx.ASGITransport`
in-process, or over loopback when served by uvicorn. Its state is a function of time: every
request first applies the events that are due, and `run()` applies them on time in the
background (needed for pushes such as Getatext's webhook).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, get_args

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

Failure = Literal[
    "500",
    "html",
    "not_json",
    "truncated",
    "429",
    "slow",
    "cut",
    "commit_then_500",
    "commit_then_hang",
    "commit_then_cut",
]
"""What a provider can do wrong: `slow` answers after `slow_seconds` (past a client's timeout), `cut` drops the
connection mid-answer (real HTTP only), and `commit_then_*` changes state first and then loses the answer."""
HostileBody = Literal[
    "bad_encoding",
    "binary",
    "nested",
    "huge",
    "huge_chunked",
    "html_as_json",
    "json_as_html",
    "contradiction",
    "trickle",
]
"""Bodies no provider should send, each a 200 answered without acting. Where readable they carry a balance either
adapter would take (`DECOY`), so a client that reads past the fault shows it: `bad_encoding` claims gzip on plain
bytes, `binary` is not text, `nested` is JSON nested far past any parser's limit, `huge` is 30 MB (declared, or
chunked without a length), `html_as_json` and `json_as_html` swap content types, `contradiction` reports success
with an error and no data, and `trickle` sends one byte at a time for `slow_seconds` (real HTTP only)."""
Fault = Failure | HostileBody
FAULTS: tuple[Failure, ...] = get_args(Failure)
HOSTILE: tuple[HostileBody, ...] = get_args(HostileBody)
DECOY = {"success": True, "status": "success", "errors": None, "balance": "1.00", "data": {"balance": 1}}
HUGE_BYTES = 30 * 1024 * 1024
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class SandboxTiming:
    """Provider timings in seconds, scaled down from the documents' for demos (doc values in comments)."""

    wake_queue: float = 4.0  # GotSMS wake-up queue (doc example: 120 s)
    online_window: float = 120.0  # GotSMS online window after waking (doc example: 1800 s)
    code_delay: float = 2.0  # from online (GotSMS) or rented (Getatext) to the SMS with a code
    cancel_after: float = 3.0  # Getatext: no cancellation before this (doc: 1 minute)
    refund_window: float = 900.0  # GotSMS: a rent without messages is refundable this long
    rental_lifetime: float = 900.0  # Getatext one-time rental lifetime
    auto_code: bool = True  # send one SMS with a code by itself after `code_delay`

    @classmethod
    def instant(cls) -> SandboxTiming:
        """Timings for tests: everything happens almost at once, and codes only when a test sends them."""
        return cls(wake_queue=0.05, online_window=30.0, code_delay=0.05, cancel_after=0.0, auto_code=False)


@dataclass
class _FaultRule:
    method: str
    path: str
    fault: Fault
    times: int


@dataclass
class SandboxServer:
    """Base of the simulated providers."""

    name: ClassVar[str]  # the provider it simulates
    timing: SandboxTiming = field(default_factory=SandboxTiming)
    seed: int | None = None
    slow_seconds: float = 30.0
    requests: list[tuple[float, str, str]] = field(default_factory=list, init=False)
    spans: list[tuple[float, float, str, str]] = field(default_factory=list, init=False)  # answered: start, end
    injected: Counter[Fault] = field(default_factory=Counter, init=False)
    _faults: list[_FaultRule] = field(default_factory=list, init=False)
    _chaos: tuple[float, tuple[Fault, ...]] | None = field(default=None, init=False)
    _throttled_until: float = field(default=0.0, init=False)
    _wakeup: anyio.Event = field(default_factory=anyio.Event, init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.app = Starlette(routes=self.routes(), lifespan=self._lifespan)
        self.commits = 0  # requests that changed state before a `commit_then_*` fault failed their answer

    # -- Subclass hooks -----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def advance(self) -> None:
        """Apply every event that is due now."""

    def next_due(self) -> float | None:
        """Time (`time.time()`) of the next scheduled event, if any."""
        return None

    async def flush(self) -> None:
        """Send what `advance()` queued for pushing (webhooks)."""

    # -- Test and demo controls ---------------------------------------------------------------------

    def inject(self, method: str, path: str, fault: Fault, times: int = 1) -> None:
        """Make the next `times` requests to `method path` (a path prefix) fail with `fault`."""
        self._faults.append(_FaultRule(method.upper(), path, fault, times))

    def chaos(self, rate: float, faults: tuple[Fault, ...] = FAULTS) -> None:
        """From now on, fail each request with probability `rate` (0 stops it), by a fault drawn from `faults`
        with the sandbox's seeded generator. `commit_then_*` faults only hit POSTs, the requests that change
        state; a `429` starts a one-second burst in which every request is refused with `Retry-After`. Cuts and
        timeouts need real HTTP: serve the sandbox on loopback for `cut`, `commit_then_cut` and `slow`."""
        self._chaos = (rate, faults) if rate > 0 else None

    def heal(self) -> None:
        """Stop every fault: chaos, injected rules no request has met yet, and a rate-limit burst."""
        self._chaos = None
        self._faults.clear()
        self._throttled_until = 0.0

    def request_count(self, since: float = 0.0) -> int:
        """Requests served since `since` (`time.time()`)."""
        return sum(1 for at, _, _ in self.requests if at >= since)

    def poke(self) -> None:
        """Wake the background loop after a change that schedules an event."""
        self._wakeup.set()

    async def run(self) -> None:
        """Apply timed events on time and send pushes, until cancelled."""
        while True:
            self.advance()
            await self.flush()
            due = self.next_due()
            delay = 1.0 if due is None else max(0.0, min(1.0, due - time.time()))
            with anyio.move_on_after(delay):
                await self._wakeup.wait()
            self._wakeup = anyio.Event()

    @asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.run)
            yield
            tg.cancel_scope.cancel()

    # -- Plumbing for subclasses --------------------------------------------------------------------

    def endpoint(self, handler: Handler, *, auth: Callable[[Request], bool] | None) -> Handler:
        """Wrap a handler with request counting and timing, due events, authentication and injected faults."""

        async def wrapped(request: Request) -> Response:
            started = time.time()
            self.requests.append((started, request.method, request.url.path))
            response = await answer(request)
            self.spans.append((started, time.time(), request.method, request.url.path))
            return response

        async def answer(request: Request) -> Response:
            self.advance()
            fault = self._take_fault(request)
            if fault is not None:
                self.injected[fault] += 1
            if fault == "slow":
                await request.body()  # read now: the client will have gone when the handler runs
                await anyio.sleep(self.slow_seconds)
            elif fault == "429":
                return _throttled(max(self._throttled_until, time.time() + 1.0))
            elif fault is not None and not fault.startswith("commit_then"):
                return _fault_response(fault, self.slow_seconds)
            if auth is not None and not auth(request):
                return self.unauthorized()
            response = await handler(request)
            self.poke()
            if fault is None or not fault.startswith("commit_then"):
                return response
            self.commits += 1
            if fault == "commit_then_hang":
                await anyio.sleep_forever()
            return _fault_response("cut" if fault == "commit_then_cut" else "500")

        return wrapped

    def unauthorized(self) -> Response:
        return JSONResponse({"message": "Unauthenticated."}, status_code=401)

    def _take_fault(self, request: Request) -> Fault | None:
        """The fault this request meets: an injected rule first, then a rate-limit burst, then chaos."""
        for rule in self._faults:
            if rule.method == request.method and request.url.path.startswith(rule.path):
                rule.times -= 1
                if rule.times <= 0:
                    self._faults.remove(rule)
                return rule.fault
        if time.time() < self._throttled_until:
            return "429"
        if self._chaos is None or self.rng.random() >= self._chaos[0]:
            return None
        allowed = [f for f in self._chaos[1] if request.method == "POST" or not f.startswith("commit_then")]
        fault = self.rng.choice(allowed) if allowed else None
        if fault == "429":
            self._throttled_until = time.time() + 1.0
        return fault


_PAGE = "<html><body><h1>502 Bad Gateway</h1></body></html>"


def _fault_response(fault: Fault, slow_seconds: float = 0.0) -> Response:
    if fault in HOSTILE:
        return _hostile(fault, slow_seconds)
    if fault == "html":
        return Response(_PAGE, 502, media_type="text/html")
    if fault == "not_json":
        return Response("OK", 200, media_type="text/plain")
    if fault == "truncated":
        return Response('{"success": true, "data": {"id": "', 200, media_type="application/json")
    if fault == "cut":
        return _CutResponse()
    return JSONResponse({"message": "Server Error"}, status_code=500)


def _hostile(fault: Fault, slow_seconds: float) -> Response:
    decoy = json.dumps(DECOY).encode()
    if fault == "bad_encoding":
        return Response(decoy, 200, media_type="application/json", headers={"Content-Encoding": "gzip"})
    if fault == "binary":
        return Response(bytes(range(255, -1, -1)) * 16, 200, media_type="application/json")
    if fault == "nested":
        return Response(b"[" * 100_000, 200, media_type="application/json")
    if fault in ("huge", "huge_chunked"):
        length = {"Content-Length": str(HUGE_BYTES)} if fault == "huge" else None
        return StreamingResponse(_padded(decoy, HUGE_BYTES), 200, headers=length, media_type="application/json")
    if fault == "html_as_json":
        return Response(_PAGE, 200, media_type="application/json")
    if fault == "json_as_html":
        return Response(decoy, 200, media_type="text/html")
    if fault == "contradiction":
        body = {"success": True, "status": "success", "errors": False, "message": "Insufficient balance.", "data": None}
        return JSONResponse(body)
    return StreamingResponse(_trickled(decoy, slow_seconds), 200, media_type="application/json")


async def _padded(body: bytes, size: int) -> AsyncIterator[bytes]:
    """`body` with `size` bytes in all: JSON whitespace first, in 64 KiB chunks."""
    left = size - len(body)
    while left > 0:
        chunk = min(left, 65536)
        yield b" " * chunk
        left -= chunk
    yield body


async def _trickled(body: bytes, seconds: float) -> AsyncIterator[bytes]:
    """`body` after `seconds` of JSON whitespace, one byte every 50 ms: no read ever waits long."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        yield b" "
        await anyio.sleep(0.05)
    yield body


def _throttled(until: float) -> Response:
    retry_after = max(1, math.ceil(until - time.time()))
    return JSONResponse({"message": "Too Many Attempts."}, status_code=429, headers={"Retry-After": str(retry_after)})


class _CutResponse(Response):
    """Headers and half a body, then the connection drops: the server returns without finishing the answer,
    and uvicorn closes the socket (the client sees an incomplete message)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"200")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"success": true, "da', "more_body": True})


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or an empty one when absent or unreadable."""
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def utcnow() -> datetime:
    return datetime.now(UTC)
