"""Plan and rental identifiers: `<provider>:<id>`, and `<provider>:long:<id>` for a provider's long rentals
(`gotsms:<uuid>`, `getatext:<id>`, `getatext:long:<id>`).

Ids are parsed before any network call, so a malformed id (path characters, a provider that is not registered)
never reaches a provider URL. Each provider's grammar is an `IdSyntax`: the built-in providers' are here, so ids
parse without importing any adapter; the provider registry adds the others (`register_ids`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from smsrent.domain.errors import InvalidInput

LongPeriod = Literal["1w", "2w", "1m", "1y"]
LONG_PERIODS: dict[str, LongPeriod] = {"1w": "1w", "2w": "2w", "1m": "1m", "1y": "1y"}  # a typed lookup


@dataclass(frozen=True)
class IdSyntax:
    """What a provider's own ids look like (whole-string patterns); `long_*` for `<provider>:long:<id>` ids, if the
    provider has long rentals."""

    plan: re.Pattern[str]
    rental: re.Pattern[str]
    long_plan: re.Pattern[str] | None = None
    long_rental: re.Pattern[str] | None = None


_UUID_LIKE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
_NUMERIC = re.compile(r"[0-9]{1,18}")
GOTSMS_IDS = IdSyntax(plan=_UUID_LIKE, rental=_UUID_LIKE)
GETATEXT_IDS = IdSyntax(
    plan=re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"),
    rental=_NUMERIC,
    long_plan=re.compile("|".join(LONG_PERIODS)),
    long_rental=_NUMERIC,
)
_SYNTAX: dict[str, IdSyntax] = {"gotsms": GOTSMS_IDS, "getatext": GETATEXT_IDS}
_NAME = re.compile(r"[a-z][a-z0-9_]{1,31}")


def register_ids(name: str, syntax: IdSyntax) -> None:
    """Let ids of provider `name` parse (the provider registry calls this)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"a provider name is 2 to 32 lowercase letters, digits or underscores, got {name!r}")
    _SYNTAX[name] = syntax


def forget_ids(name: str) -> None:
    """Refuse ids of provider `name` again."""
    _SYNTAX.pop(name, None)


def provider_names() -> tuple[str, ...]:
    """Every provider whose ids parse."""
    return tuple(_SYNTAX)


def _registered(name: str) -> str:
    if name not in _SYNTAX:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(_SYNTAX)}")
    return name


class _Registered:
    """Pydantic metadata of `ProviderName`: checked when validated (so a provider registered later counts), shown
    as an enum of the providers registered when the schema is built."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(_registered, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"enum": list(_SYNTAX), "type": "string"}


ProviderName = Annotated[str, _Registered()]
"""The name of a registered provider (`gotsms`, `getatext`, or one added to the provider registry)."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed plan or rental id: provider, the provider's own id, and whether it is one of its long rentals."""

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
    provider, _, rest = text.partition(":")
    syntax = _SYNTAX.get(provider)
    if syntax is None:
        raise _refuse(kind, text, f"it must start with {' or '.join(f'{name}:' for name in _SYNTAX)}")
    long_pattern = syntax.long_plan if kind == "plan_id" else syntax.long_rental
    long = long_pattern is not None and rest.startswith("long:")
    local = rest.removeprefix("long:") if long else rest
    pattern = long_pattern if long else syntax.plan if kind == "plan_id" else syntax.rental
    if pattern is None or pattern.fullmatch(local) is None:
        raise _refuse(kind, text, "the part after the provider has characters or a form this provider never uses")
    return Ref(provider, local, long)


def parse_plan_id(text: str) -> Ref:
    """Parse `gotsms:<plan uuid>`, `getatext:<api_name>`, `getatext:long:<1w|2w|1m|1y>`, or another registered
    provider's plan id."""
    return _parse(text, "plan_id")


def parse_rental_id(text: str) -> Ref:
    """Parse `gotsms:<rent uuid>`, `getatext:<id>`, `getatext:long:<id>`, or another registered provider's rental
    id."""
    return _parse(text, "rental_id")
