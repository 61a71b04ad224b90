"""The HTTP base every provider adapter shares: one client, explicit timeouts, safe retries, one error mapping.

Only calls that cannot spend money or change state (`safe=True`) are retried, with exponential
backoff, jitter and `Retry-After`. A state-changing call is retried only when the request provably
never left this process (the connection was not established); anything else is raised with
`request_sent`/`uncertain` set so the caller can reconcile instead of buying twice.

Whatever bytes come back, an attempt ends within the answer timeout (from sending to the last byte) and
raises nothing but a `ProviderError`: a body that cannot be decoded, is too large or too deeply nested is a
provider failure, uncertain after a state-changing request.

Below the HTTP base: the `Provider` protocol the service layer relies on, the `Capabilities` every provider
declares, and the small protocols of its optional features (a rent listing, an account-wide inbox, sleeping
numbers, extensions, auto-renewal, finishing). The service asks for a feature, never for an adapter class.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

import anyio
import httpx

from smsrent import __version__
from smsrent.domain.errors import (
    CancelNotAllowed,
    InsufficientBalance,
    NoNumbersAvailable,
    ProviderAuthError,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderTimeout,
    ProviderTransportError,
    ProviderUnavailable,
    RateLimited,
    bounded,
)
from smsrent.domain.ids import IdSyntax, ProviderName, Ref
from smsrent.domain.models import Balance, Message, NumberStatus, Plan, Receipt, Rental, RentalStatus
from smsrent.providers.observed import ObservedTransport, RequestObserver, Routes

log = logging.getLogger("smsrent.providers")
T = TypeVar("T")

DEFAULT_TIMEOUT = httpx.Timeout(20.0, connect=5.0)
USER_AGENT = f"smsrent/{__version__}"

# The most of an answer read. The largest documented answers (a page of plans, of rents or of messages) are a
# few KiB, and even a whole catalogue in one page stays far below; a body above this is a fault, and reading
# it would hold memory (and, trickled, the call) for nothing.
MAX_BODY_BYTES = 4 * 1024 * 1024

# httpx errors raised before any byte of the request could reach the provider.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
# What reading a body as JSON text can raise: broken JSON or text (ValueError), a charset that is no text
# encoding (LookupError), nesting past the parser's limit (RecursionError).
_UNREADABLE = (ValueError, LookupError, RecursionError)


@dataclass(frozen=True)
class RetryPolicy:
    """How safe calls are retried: `attempts` in all, delays doubling from `base_delay` up to `max_delay`."""

    attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return jitter(min(self.base_delay * 2**attempt, self.max_delay))


def jitter(delay: float) -> float:
    """Spread retries: a random delay between half and all of `delay`."""
    return random.uniform(delay / 2, delay)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds, from either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


DEFAULT_RETRY = RetryPolicy()


class HttpProvider:
    """Owns one `httpx.AsyncClient` for one provider account and maps every failure into the error tree."""

    name: ClassVar[ProviderName]
    display_name: ClassVar[str]
    credential_env: ClassVar[str]
    ids: ClassVar[IdSyntax]  # what its plan and rental ids look like
    capabilities: ClassVar[Capabilities]  # declared by every adapter
    routes: ClassVar[Routes] = Routes(())  # the API's route templates, for metrics and spans

    def __init__(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        secrets: tuple[str, ...],
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        sandbox: bool = False,
    ) -> None:
        self.sandbox = sandbox
        self.retry = retry
        self._secrets = secrets
        self.request_observers: list[RequestObserver] = []  # each finished request, e.g. for the metrics
        # Drop idle connections before common servers do (uvicorn after 5 s): reusing one the server is
        # closing fails with a ReadError, which a poller would see as a failed tick.
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=4.0)
        observed = ObservedTransport(
            transport or httpx.AsyncHTTPTransport(limits=limits),
            provider=self.name,
            routes=self.routes,
            base_url=base_url,
            observers=self.request_observers,
        )
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=timeout,
            transport=observed,
            follow_redirects=False,
            limits=limits,
        )

    @property
    def answer_timeout(self) -> float:
        return self._client.timeout.read or 0.0

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        safe: bool,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str | int] | None = None,
        retry: bool = True,
        accept_text: bool = False,
    ) -> Any:
        """Send one request and return its decoded JSON body, retrying only where that cannot spend twice.

        `accept_text` lets a successful plain-text body through as a string (handler-API answers).
        """
        attempt = 0
        while True:
            try:
                return await self._attempt(method, path, json_body, params, safe=safe, accept_text=accept_text)
            except ProviderError as err:
                may_retry = retry and (err.retryable if safe else not err.request_sent)
                if not may_retry or attempt + 1 >= self.retry.attempts:
                    raise
                delay = self.retry.delay(attempt, err.retry_after if isinstance(err, RateLimited) else None)
                log.info("%s %s failed (%s); retry %d in %.1f s", method, path, type(err).__name__, attempt + 1, delay)
                attempt += 1
                await anyio.sleep(delay)

    async def _attempt(
        self,
        method: str,
        path: str,
        json_body: Mapping[str, Any] | None,
        params: Mapping[str, str | int] | None,
        *,
        safe: bool,
        accept_text: bool,
    ) -> Any:
        """One request, ended by the answer timeout however slowly the answer comes (httpx's own are per read)."""
        started = time.perf_counter()
        progress = _Progress()
        request = self._client.build_request(
            method, path, json=json_body, params=params, extensions={"trace": progress}
        )
        try:
            with anyio.fail_after(self._client.timeout.read):
                response = await self._client.send(request, stream=True)
                try:
                    body = await self._read(response)
                finally:
                    await response.aclose()
        except TimeoutError as err:
            raise self._lost(progress.may_have_left, timed_out=True) from err
        except httpx.HTTPError as err:
            raise self._transport_error(err) from err
        # Log the path only: a query string may carry the API key (Getatext's handler API).
        log.debug("%s %s -> %d in %.0f ms", method, path, response.status_code, (time.perf_counter() - started) * 1000)
        try:
            payload = self._decode(response, body, accept_text)
            if not response.is_success:
                raise self._status_error(response, payload)
            try:
                self._check_payload(payload)
            except ProviderError as err:
                if safe:
                    raise
                raise self._unconfirmed(response.status_code, self._error_text(payload)) from err
        except _UNREADABLE as err:
            raise self._unavailable(response.status_code, "sent an answer this client cannot read") from err
        return payload

    async def _read(self, response: httpx.Response) -> bytes:
        """The whole body, refused (without reading it all) when larger than `MAX_BODY_BYTES`."""
        if _declared_length(response) > MAX_BODY_BYTES:
            raise self._too_large(response.status_code)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise self._too_large(response.status_code)
                chunks.append(chunk)
        except httpx.DecodingError as err:
            raise self._unavailable(response.status_code, "sent a body that does not match its encoding") from err
        return b"".join(chunks)

    def _decode(self, response: httpx.Response, body: bytes, accept_text: bool = False) -> Any:
        """JSON body, or None when empty; an HTML page or broken JSON is a provider failure."""
        text = body.decode(response.encoding or "utf-8", errors="replace")
        if not text.strip():
            return None
        # A text answer is let through whatever its content type says (PHP handler stubs send tokens as text/html).
        html_type = "html" in response.headers.get("content-type", "") and not accept_text
        if html_type or text.lstrip().startswith("<"):
            if response.is_client_error:
                return None  # mapped by its status code alone; the page itself says nothing usable
            raise self._unavailable(response.status_code, "answered with an HTML page instead of JSON")
        try:
            return json.loads(text)
        except _UNREADABLE as err:
            if (response.is_success and not accept_text) or response.status_code >= 500:
                what = "sent an unreadable answer (truncated or invalid JSON)"
                raise self._unavailable(response.status_code, what) from err
            return text if _reads_as_text(text) else None  # binary says nothing usable either

    def _parse(self, parser: Callable[[Any], T], value: Any) -> T:
        """Parse a successful answer; one that cannot be read is a provider failure (and, after a POST, uncertain)."""
        try:
            return parser(value)
        except ValueError as err:
            raise self._unavailable(
                200, f"sent an answer this client cannot read ({bounded(str(err), self._secrets, 80)})"
            ) from err

    def _unavailable(self, status: int, what: str) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"{self.display_name} {what} (HTTP {status}); it may be down, try again shortly.",
            provider=self.name,
            status_code=status,
        )

    def _too_large(self, status: int) -> ProviderUnavailable:
        return self._unavailable(status, f"sent an answer larger than {MAX_BODY_BYTES // 1024 // 1024} MiB")

    def _unconfirmed(self, status: int, detail: str | None) -> ProviderUnavailable:
        """A 2xx answer to a state-changing call that still reports an error: the call may have taken effect (a
        purchase charged), so the error is uncertain and gets reconciled, never recorded as a failure."""
        said = f" ({bounded(detail, self._secrets).rstrip('. ')})" if detail else ""
        return ProviderUnavailable(
            f"{self.display_name} answered HTTP {status} yet reported an error{said}; the request may have taken"
            " effect, its outcome is unknown.",
            provider=self.name,
            status_code=status,
        )

    def _transport_error(self, err: httpx.HTTPError) -> ProviderTransportError:
        sent = not isinstance(err, _NOT_SENT)
        if isinstance(err, httpx.TimeoutException):
            return self._lost(sent, timed_out=True)
        return self._lost(sent, failure=type(err).__name__)

    def _lost(self, sent: bool, *, timed_out: bool = False, failure: str = "") -> ProviderTransportError:
        """The answer never came whole: timed out, or the connection failed (`failure` names how)."""
        outcome = "it may have been received, its outcome is unknown" if sent else "the request was not sent"
        if timed_out:
            return ProviderTimeout(
                f"{self.display_name} did not answer in time; {outcome}.", provider=self.name, request_sent=sent
            )
        return ProviderTransportError(
            f"Could not complete the request to {self.display_name} ({failure}); {outcome}.",
            provider=self.name,
            request_sent=sent,
        )

    def _status_error(self, response: httpx.Response, payload: Any) -> ProviderError:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return self._error_for(response.status_code, self._error_text(payload) or response.reason_phrase, retry_after)

    def _error_for(self, status: int, raw_detail: str, retry_after: float | None = None) -> ProviderError:
        """Map an error answer into the error tree, once for every endpoint of this provider."""
        detail = bounded(raw_detail, self._secrets).rstrip(". ")
        said = f": {detail}" if detail else ""
        who = self.display_name
        if status == 429:
            wait = f" in {retry_after:.0f} s" if retry_after is not None else " shortly"
            return RateLimited(
                f"{who} is rate limiting requests; try again{wait}.", provider=self.name, retry_after=retry_after
            )
        if status >= 500:
            return self._unavailable(status, f"failed{said}")
        if 300 <= status < 400:  # not followed; after a POST the provider may have acted before redirecting
            return self._unavailable(status, "redirected the request")
        kind = self._classify(detail)
        if kind is not None:
            message = self._refined_message(kind, detail)
        elif status in (401, 403):
            kind, message = (
                ProviderAuthError,
                f"{who} refused the credentials (HTTP {status}){said}; check {self.credential_env}.",
            )
        elif status == 404:
            kind, message = (
                ProviderNotFound,
                f"{who} does not know this object (HTTP 404){said}; check the id with list_rentals.",
            )
        else:
            kind, message = ProviderRejected, f"{who} refused the request (HTTP {status}){said}."
        return kind(message, provider=self.name, status_code=status)

    def _refined_message(self, kind: type[ProviderError], detail: str) -> str:
        who = self.display_name
        if kind is InsufficientBalance:
            return f"{who} says the balance is too low ({detail}); top up the account or pick a cheaper plan."
        if kind is CancelNotAllowed:
            return f"{who} will not refund or cancel this rental now ({detail})."
        if kind is NoNumbersAvailable:
            return f"{who} has no number for this service right now ({detail}); try another plan or provider."
        if kind is ProviderAuthError:
            return f"{who} refused the credentials ({detail}); check {self.credential_env}."
        if kind is ProviderNotFound:
            return f"{who} does not know this object ({detail}); check the id with list_rentals."
        return f"{who}: {detail}."

    def _error_text(self, payload: Any) -> str | None:
        """The provider's own error sentence inside an error body."""
        if isinstance(payload, str):
            return payload
        if isinstance(payload, dict):
            parts: list[str] = []
            for key in ("message", "errors", "error"):
                text = flatten_errors(payload.get(key))
                if text and not any(text in part for part in parts):
                    parts.append(text)
            return " - ".join(parts) or None
        return None

    def _classify(self, detail: str) -> type[ProviderError] | None:
        """A finer error class recognised from the provider's wording, if any."""
        text = detail.lower()
        if "balance" in text or "insufficient" in text or "funds" in text:
            return InsufficientBalance
        if "no number" in text or "no free number" in text or "out of stock" in text:
            return NoNumbersAvailable
        return None

    def _check_payload(self, payload: Any) -> None:
        """Raise for a 2xx body that still reports an error (some providers do)."""


class _Progress:
    """How far a request got, from httpcore's trace events: one that timed out before any request header was
    sent never left. A transport that reports nothing (in-process) is taken as having sent it."""

    def __init__(self) -> None:
        self.traced = False
        self.sending = False

    async def __call__(self, event: str, info: Mapping[str, Any]) -> None:
        self.traced = True
        self.sending = self.sending or ".send_request_headers." in event

    @property
    def may_have_left(self) -> bool:
        return self.sending or not self.traced


def _reads_as_text(text: str) -> bool:
    """Printable text, as a provider's error sentence is; not bytes that only decoded with replacements."""
    return "\ufffd" not in text and " ".join(text.split()).isprintable()


def _declared_length(response: httpx.Response) -> int:
    try:
        return int(response.headers.get("content-length", "0"))
    except ValueError:
        return 0


def parse_each(parser: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
    """Parse every item of a list answer, skipping (and logging) the ones that cannot be read."""
    parsed: list[T] = []
    for item in items:
        try:
            parsed.append(parser(item))
        except ValueError as err:
            log.warning("skipped an unreadable list item: %s", err)
    return parsed


def flatten_errors(value: Any) -> str | None:
    """Error text from a string, a list, or a Laravel-style `{field: [messages]}` mapping; `"null"` is no text."""
    if isinstance(value, str):
        return None if value.strip().lower() in ("", "null", "none") else value
    if isinstance(value, list):
        return "; ".join(filter(None, (flatten_errors(item) for item in value))) or None
    if isinstance(value, dict):
        return "; ".join(filter(None, (flatten_errors(item) for item in value.values()))) or None
    return None


def fingerprint(*parts: object) -> str:
    """A stable short id for an object the provider gave no id (same parts, same id)."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


ExtensionStyle = Literal["longer_plan", "renewal", "re_rent"]
"""How a rental is kept longer: moved to a longer plan (the caller names it), renewed in place, or its number rented
again (a new rental at today's price of its plan)."""


@dataclass(frozen=True)
class Capabilities:
    """How the service must treat a provider's purchases and refunds. The defaults are the safe ones: a purchase
    whose answer was lost and that nothing can prove stays uncertain, counted as spent."""

    settle_from_balance: bool = False
    """A lost purchase its rent listing does not show (see `RentListing`) is settled from the balance noted just
    before the call: a lower balance proves a charge, though never its absence nor its amount."""
    serialized_purchases: bool = False
    """Purchases and refunds on the account run one at a time, across every process sharing the ledger."""
    refund_status: RentalStatus = RentalStatus.REFUNDED
    """The status a rental shows once refunded."""
    refund_ends_early: bool = False
    """A refunded rental may show as completed before its end instead."""

    def __post_init__(self) -> None:
        if self.settle_from_balance and not self.serialized_purchases:
            raise ValueError(
                "settling from the balance needs serialized purchases: another purchase's charge or a refund's credit"
                " would blur what the balance shows"
            )


class Provider(Protocol):
    """What the service layer needs from every provider, in domain terms (ids are parsed `Ref`s)."""

    @property
    def name(self) -> ProviderName: ...

    @property
    def display_name(self) -> str: ...

    @property
    def sandbox(self) -> bool: ...

    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def answer_timeout(self) -> float:
        """Seconds the adapter waits for an answer before it gives up."""
        ...

    async def get_balance(self) -> Balance: ...

    async def list_plans(self) -> list[Plan]: ...

    async def rent(self, plan: Ref) -> Receipt:
        """Buy the plan. Spends money: never retried once the request may have reached the provider."""
        ...

    async def get_rental(self, rental: Ref) -> Receipt:
        """The rental as the provider knows it now, with any messages that answer carried."""
        ...

    async def get_messages(self, rental: Ref) -> list[Message]: ...

    async def poll(self, rental: Ref) -> Receipt:
        """What a poller reads of one rental: its messages, and its state where the answer carries it (otherwise
        the receipt's rental has its id alone). A poller keeps its own schedule: skip retries where the API allows."""
        ...

    async def refund(self, rental: Ref) -> Receipt: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class RentListing(Provider, Protocol):
    """A list of the account's rentals, which proves what a purchase made, and that it made nothing."""

    async def rent_listing(self) -> list[Rental]: ...

    def listed(self, ref: Ref) -> bool:
        """Whether the listing shows the rentals of this plan, or this rental."""
        ...


@runtime_checkable
class AccountInbox(Provider, Protocol):
    """Every message of the account in one listing, newest first: one poll serves every waiting rental."""

    async def message_page(self, page: int) -> tuple[list[Message], bool]:
        """One page, and whether older pages follow. Not retried: a poller must feel a 429 at once."""
        ...


@runtime_checkable
class Wakeable(Provider, Protocol):
    """Numbers that sleep: woken on request, online for a window."""

    async def number_state(self, rental: Ref) -> NumberStatus: ...

    async def wake_number(self, rental: Ref) -> None: ...


@runtime_checkable
class Extendable(Provider, Protocol):
    """Rentals that can be kept longer, by a new purchase."""

    def extension(self, rental: Ref) -> ExtensionStyle | None:
        """How this rental is extended, or None if it cannot be."""
        ...

    async def extend(self, rental: Ref, plan: Ref | None) -> Receipt:
        """Buy the extension (`plan`: the longer plan, for `longer_plan`). Spends money: never retried once sent."""
        ...


@runtime_checkable
class SetsAutoRenew(Provider, Protocol):
    """Auto-renewal set to a wanted state."""

    @property
    def auto_renewing(self) -> str:
        """Which rentals can auto-renew, for messages ("long rentals")."""
        ...

    def auto_renews(self, rental: Ref) -> bool: ...

    async def set_auto_renew(self, rental: Ref, enabled: bool) -> Receipt: ...


@runtime_checkable
class FlipsAutoRenew(Provider, Protocol):
    """Auto-renewal that can only be flipped: the service reads the state first and checks where it landed."""

    @property
    def auto_renewing(self) -> str:
        """Which rentals can auto-renew, for messages ("monthly rents")."""
        ...

    def auto_renews(self, rental: Ref) -> bool: ...

    async def flip_auto_renew(self, rental: Ref) -> bool:
        """Flip it; returns the state it landed on."""
        ...


@runtime_checkable
class Finishable(Provider, Protocol):
    """Rentals that can be marked completed once their code was used."""

    @property
    def finishing(self) -> str:
        """Which rentals can be marked completed, for messages ("one-time rentals")."""
        ...

    def finishes(self, rental: Ref) -> bool: ...

    async def finish_rental(self, rental: Ref) -> Receipt: ...
