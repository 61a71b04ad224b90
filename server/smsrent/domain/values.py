"""Tolerant readers for the loose values providers send: money, flags, phones, times.

Each returns None for a missing or unreadable value instead of raising, because a real server
may send a number as a string, `"null"` as a string, or leave a field out. Only `to_money` raises: for a
number no price or balance can be, which must never reach the money checks.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_NULLS = {"", "null", "none", "nil", "undefined"}
_OFFSET = re.compile(r"^(?:UTC|GMT)?([+-])(\d{1,2}):?(\d{2})?$")


def is_null(value: object) -> bool:
    """True for None and for the strings providers use to mean nothing (`"null"`, `""`)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in _NULLS)


def to_text(value: object) -> str | None:
    """A non-empty string, or None."""
    if is_null(value) or isinstance(value, dict | list):
        return None
    return str(value).strip() or None


MAX_AMOUNT = Decimal(10) ** 9
"""The largest price or balance believed: far above any real account, and small enough that every amount keeps its
cents in the default 28-digit decimal context (`format_money` rounds to them)."""
_MAX_INT_DIGITS = 18


def _number(value: object) -> Decimal | None:
    if is_null(value) or isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = repr(value)
    try:
        return Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        return None


def to_decimal(value: object) -> Decimal | None:
    """A number from an int, float or numeric string; floats go through `str` so 4.99 stays 4.99."""
    amount = _number(value)
    return amount if amount is not None and amount.is_finite() else None


def to_money(value: object, *, zero: bool = False) -> Decimal | None:
    """A price (or, with `zero`, a balance): None when missing or unreadable, as `to_decimal`. A ValueError when the
    provider sent a number no price or balance can be: negative, not finite (NaN, Infinity, `1e400` as a JSON
    number), above `MAX_AMOUNT`, or a price of 0 (no provider document shows a free plan)."""
    amount = _number(value)
    if amount is None:
        return None
    if not amount.is_finite():
        raise ValueError("an amount that is not a finite number")
    if amount < 0:
        raise ValueError("a negative amount")
    if amount > MAX_AMOUNT:
        raise ValueError(f"an amount above {MAX_AMOUNT:f}")
    if amount == 0 and not zero:
        raise ValueError("a price of zero")
    return amount


def to_int(value: object) -> int | None:
    """A whole number of at most 18 digits (a larger one is garbage, and costly to build), or None."""
    amount = to_decimal(value)
    return None if amount is None or amount.adjusted() >= _MAX_INT_DIGITS else int(amount)


def to_bool(value: object) -> bool | None:
    """True/False from booleans, 1/0 and `"true"`/`"false"`/`"yes"`/`"no"`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    text = to_text(value)
    if text is None:
        return None
    return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())


def to_e164(value: object) -> str | None:
    """`+1 800 123 4567` or `1234567890` as `+18001234567`; a bare 10-digit number is taken as North American."""
    text = to_text(value)
    if text is None:
        return None
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15:
        return None
    if not text.startswith("+") and len(digits) == 10:
        digits = "1" + digits
    return "+" + digits


def parse_timezone(text: str) -> tzinfo:
    """A fixed offset (`-04:00`, `UTC+3`) or an IANA zone name (`America/New_York`)."""
    match = _OFFSET.match(text.strip())
    if match:
        sign, hours, minutes = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        return timezone(-delta if sign == "-" else delta)
    if text.strip().upper() in {"UTC", "Z", "GMT"}:
        return UTC
    try:
        return ZoneInfo(text.strip())
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(
            f"unknown time zone {text!r}; use an offset like -04:00 or a name like America/New_York"
        ) from err


def to_datetime(value: object, naive_tz: tzinfo = UTC) -> datetime | None:
    """An aware datetime from ISO-8601; naive times and bare dates are read in `naive_tz`."""
    text = to_text(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=naive_tz)
