"""One error tree for every provider and for the server's own guards.

Every message is one short sentence a model can act on: what failed and the next move.
Messages are built from trusted text only; provider text passes through `bounded()` first.
"""

from __future__ import annotations

_MAX_PROVIDER_TEXT = 160


def bounded(text: str, secrets: tuple[str, ...] = (), limit: int = _MAX_PROVIDER_TEXT) -> str:
    """Provider-supplied text made safe to show: secrets masked, one line of printable characters (control and
    format characters, bidi overrides and the replacement character of undecodable bytes become spaces), at most
    `limit` characters."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())[: limit * 2]  # cut before the per-character pass: a body may be megabytes
    text = " ".join("".join(c if c.isprintable() and c != "\ufffd" else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SmsRentError(Exception):
    """Base of every failure the server reports to a caller."""

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider


class InvalidInput(SmsRentError):
    """An argument was refused before any network call."""


class NotConfigured(SmsRentError):
    """The requested provider or feature is not configured."""


class UnknownRental(SmsRentError):
    """A well-formed rental id that neither the ledger nor the provider knows."""


class Unsupported(SmsRentError):
    """The provider's API has no such operation."""


class ProviderError(SmsRentError):
    """The provider answered with an error, or could not be reached.

    `request_sent` tells whether the request may have reached the provider; `uncertain` whether a
    state-changing call may have taken effect even though it failed (so it must be reconciled, not retried).
    """

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        request_sent: bool = True,
    ) -> None:
        super().__init__(message, provider=provider)
        self.status_code = status_code
        self.request_sent = request_sent

    @property
    def uncertain(self) -> bool:
        return False


class ProviderAuthError(ProviderError):
    """401/403: the credentials were refused."""


class ProviderNotFound(ProviderError):
    """404: the provider does not know the object."""


class ProviderRejected(ProviderError):
    """400/422: the provider refused the request as invalid."""


class InsufficientBalance(ProviderError):
    """The account balance does not cover the purchase."""


class NoNumbersAvailable(ProviderError):
    """The provider has no number for the requested service right now."""


class CancelNotAllowed(ProviderError):
    """The rental cannot be refunded or cancelled (yet, or any more)."""


class RateLimited(ProviderError):
    """429: too many requests; `retry_after` seconds if the provider said."""

    retryable = True

    def __init__(self, message: str, *, provider: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider, status_code=429)
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """5xx, an HTML page or an unreadable body: the provider may have acted before failing."""

    retryable = True

    @property
    def uncertain(self) -> bool:
        return self.request_sent


class ProviderTransportError(ProviderError):
    """The connection failed; `request_sent` says whether the request may have reached the provider."""

    retryable = True

    @property
    def uncertain(self) -> bool:
        return self.request_sent


class ProviderTimeout(ProviderTransportError):
    """No answer in time."""


class LedgerUnavailable(SmsRentError):
    """The ledger's database cannot be reached right now (the server reconnects by itself): nothing was done."""

    def __init__(self, why: str = "") -> None:
        super().__init__(
            "The ledger's database cannot be reached right now, so nothing was bought or changed; try again in a"
            " minute (the server reconnects by itself)."
        )
        self.why = why


class GuardRefusal(SmsRentError):
    """The server's own money-safety rules refused the action; nothing was sent to the provider."""


class BudgetExceeded(GuardRefusal):
    """A price cap or the rolling daily budget would be exceeded."""


class PurchaseUnsettled(GuardRefusal):
    """An earlier purchase on this provider has an unknown outcome; no further purchase until it is settled."""


class ConfirmationRefused(GuardRefusal):
    """The human declined, or could not be asked to confirm, a purchase."""
