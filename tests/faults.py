"""Transports that make a provider fail the way real ones do: an answer lost after the request reached it, an
endpoint down for a while, a hook when an answer arrives. Each wraps the transport that reaches the provider."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import anyio
import httpx

Loss = Literal["timeout", "disconnect", "hang"]


class LoseAnswer(httpx.AsyncBaseTransport):
    """Forwards every request to `inner`; the next `times` requests to `method path` reach the provider
    (unless `deliver=False`) and then lose their answer: a read timeout, a dropped connection, or a hang.
    `then` is called each time an answer is lost (to start an outage, say); with `hold`, the loss is reported
    only once `hold` is set (the answer is slow, then lost)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        method: str,
        path: str,
        loss: Loss,
        *,
        times: int = 1,
        deliver: bool = True,
        then: Callable[[], object] | None = None,
        hold: anyio.Event | None = None,
    ) -> None:
        self.inner = inner
        self.method, self.path, self.loss = method, path, loss
        self.times, self.deliver, self.then, self.hold = times, deliver, then, hold
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.times <= 0 or request.method != self.method or request.url.path != self.path:
            return await self.inner.handle_async_request(request)
        self.times -= 1
        if self.deliver:
            response = await self.inner.handle_async_request(request)
            await response.aread()
            await response.aclose()
        self.lost += 1
        if self.then is not None:
            self.then()
        if self.hold is not None:
            await self.hold.wait()
        if self.loss == "hang":
            await anyio.sleep_forever()
        if self.loss == "timeout":
            raise httpx.ReadTimeout("timed out waiting for the answer", request=request)
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Outage(httpx.AsyncBaseTransport):
    """Forwards every request to `inner`, except that while `down`, requests to `method path` get a 503."""

    def __init__(self, inner: httpx.AsyncBaseTransport, method: str, path: str, *, down: bool = False) -> None:
        self.inner, self.method, self.path, self.down = inner, method, path, down
        self.refused = 0

    def start(self) -> None:
        self.down = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down and request.method == self.method and request.url.path == self.path:
            self.refused += 1
            return httpx.Response(503, json={"message": "Service Unavailable"}, request=request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class OnAnswer(httpx.AsyncBaseTransport):
    """Forwards every request to `inner` and calls `hook` once the answer to `method path` has arrived."""

    def __init__(self, inner: httpx.AsyncBaseTransport, method: str, path: str, hook: Callable[[], object]) -> None:
        self.inner, self.method, self.path, self.hook = inner, method, path, hook

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == self.method and request.url.path == self.path:
            await response.aread()
            self.hook()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
