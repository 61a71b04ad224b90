"""Tolerant readers for the loose values providers send: money, flags, phones, times.

Each returns None for a missing or unreadable value instead of raising, because a real server
may send a number as a string, `"null"` as a string, or leave a field out.
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


def to_decimal(value: object) -> Decimal | None:
    """Money from an int, float or numeric string; floats go through `str` so 4.99 stays 4.99."""
    if is_null(value) or isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = repr(value)
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def to_int(value: object) -> int | None:
    amount = to_decimal(value)
    return None if amount is None else int(amount)


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
