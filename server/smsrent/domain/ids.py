"""Plan and rental identifiers: `gotsms:<uuid>`, `getatext:<id>`, `getatext:long:<id>`.

Ids are parsed before any network call, so a malformed id (path characters, unknown provider)
never reaches a provider URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from smsrent.domain.errors import InvalidInput

ProviderName = Literal["gotsms", "getatext"]
PROVIDERS: tuple[ProviderName, ...] = ("gotsms", "getatext")
LongPeriod = Literal["1w", "2w", "1m", "1y"]
LONG_PERIODS: dict[str, LongPeriod] = {"1w": "1w", "2w": "2w", "1m": "1m", "1y": "1y"}  # a typed lookup

_LOCAL = {
    "gotsms": re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}"),
    "getatext": re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
}
_BY_NAME: dict[str, ProviderName] = {name: name for name in PROVIDERS}
_GETATEXT_RENTAL = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed plan or rental id: provider, the provider's own id, and whether it is a Getatext long rental."""

    provider: ProviderName
    local_id: str
    long: bool = False

    def __str__(self) -> str:
        return f"{self.provider}:long:{self.local_id}" if self.long else f"{self.provider}:{self.local_id}"


def _refuse(kind: str, text: str, why: str) -> InvalidInput:
    shown = text if len(text) <= 80 and text.isprintable() else repr(text[:80])
    example = "gotsms:9d3f8f6a-1b2c-4d5e-8f90-1a2b3c4d5e6f or getatext:12345"
    return InvalidInput(f"Invalid {kind} {shown}: {why}. Use an id like {example} from list_plans or list_rentals.")


def _parse(text: str, kind: Literal["plan_id", "rental_id"]) -> Ref:
    prefix, _, rest = text.partition(":")
    provider = _BY_NAME.get(prefix)
    if provider is None:
        raise _refuse(kind, text, "it must start with gotsms: or getatext:")
    long = provider == "getatext" and rest.startswith("long:")
    local = rest.removeprefix("long:") if long else rest
    if kind == "plan_id" and long:
        valid = local in LONG_PERIODS
    elif kind == "rental_id" and provider == "getatext":
        valid = _GETATEXT_RENTAL.fullmatch(local) is not None
    else:
        valid = _LOCAL[provider].fullmatch(local) is not None
    if not valid:
        raise _refuse(kind, text, "the part after the provider has characters or a form this provider never uses")
    return Ref(provider, local, long)


def parse_plan_id(text: str) -> Ref:
    """Parse `gotsms:<plan uuid>`, `getatext:<api_name>` or `getatext:long:<1w|2w|1m|1y>`."""
    return _parse(text, "plan_id")


def parse_rental_id(text: str) -> Ref:
    """Parse `gotsms:<rent uuid>`, `getatext:<id>` or `getatext:long:<id>`."""
    return _parse(text, "rental_id")
