"""Pull a one-time verification code out of a raw SMS body.

Used when a provider returns the message text but no parsed code. Candidates (4-8 digit runs, grouped
digits such as `123-456`, sender-prefixed codes such as `G-123456`, and alphanumeric codes marked as the
code) are dropped when they only look like a code (year, date, time, price, percentage, phone number,
URL fragment), then scored by how close they sit to a code keyword in one of ~20 languages.
Pure and bounded: only the first `MAX_SCAN_CHARS` characters are read and no pattern backtracks badly.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_SCAN_CHARS", "extract_code"]

MAX_SCAN_CHARS: Final = 2000

_LETTERS = r"[^\W\d_]*"
_DASHES = "\\-\u2010-\u2015"
_KEYWORD_RE: Final = re.compile(
    "|".join(
        (
            rf"\b{_LETTERS}(?:code|codice|c[oó]digo|kod){_LETTERS}",
            rf"\bv[eé]rifi{_LETTERS}",
            rf"\b(?:weryfikac|confirm|do[gğ]rulama){_LETTERS}",
            r"\bone[\s-]?time\b",
            r"\b(?:passw(?:ord|ort)|otp|pin|senha|clave|şifre|mã)\b",
            r"\bxác (?:thực|minh|nhận)\b",
            rf"(?:код|парол|подтвержд|підтвердж){_LETTERS}",
            r"验证码|驗證碼|校验码|校驗碼|动态码|動態碼|密码|密碼",
            r"コード|認証番号|確認番号|パスワード",
            r"인증\s?(?:번호|코드)|비밀번호",
            r"رمز|كود|تحقق",
            r"कोड|ओटीपी|सत्यापन",
            r"รหัส",
        )
    )
)
# Words that may sit between a keyword and its code without weakening the link ("code is", "kod to").
# fmt: off
_CONNECTORS: Final = frozenset([
    "is", "your", "you", "as", "use", "enter", "to",  # en
    "es", "tu", "su", "é", "e", "seu", "sua", "teu",  # es, pt
    "est", "votre", "ton", "ist", "lautet", "ihr", "ihre", "dein", "deine",  # fr, de
    "è", "il", "tuo", "je", "uw", "jest", "twój", "twoj", "är", "er",  # it, nl, pl, sv/da/no
    "adalah", "ialah", "anda", "kamu", "của", "bạn", "là", "la",  # id, ms, vi
    "ваш", "твой", "это", "为", "為", "是", "は", "คือ", "는", "은", "هو", "है",  # ru, zh, ja, th, ko, ar, hi
])
# fmt: on
_WORD_RE: Final = re.compile(r"\w+")
_SENTENCE_END_RE: Final = re.compile(r"[.!?\u3002\uff01\uff1f](?:\s|$)")

_NOISE_RE: Final = re.compile(r"(?:https?://|www\.)\S+|@\S+|\b[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}/\S*", re.IGNORECASE)
_PHONE_RE: Final = re.compile(r"(?<![0-9])\+?\(?(?>[0-9]+(?:(?:[ .\-]|\) ?| ?\()[0-9]+)*)\)?")
_CHUNK_RE: Final = re.compile(
    rf"(?<![A-Za-z0-9])(?<![0-9][.,:/{_DASHES}])(?>[0-9]+(?:[.,:/{_DASHES}][0-9]+)*)(?![A-Za-z0-9])"
)
_DASH_RE: Final = re.compile(f"[{_DASHES}]")
_TOKEN_RE: Final = re.compile(r"(?<![A-Za-z0-9])(?>[A-Za-z0-9]+)")
_SENDER_PREFIX_RE: Final = re.compile(r"(?:^|[^A-Za-z0-9])[A-Z]{1,3}-$")
_UNIT_RE: Final = re.compile(r"[0-9]+(?:st|nd|rd|th|h|hrs?|mins?|secs?|s|m|d|gb|mb|kb|g|x|am|pm|k)|[0-9]+h[0-9]+")

_SYMBOLS = "$€£¥₹₽₩₺₴₦₱฿₫%‰"
_CURRENCY_CODES = (
    "usd|eur|gbp|inr|rub|brl|mxn|cad|aud|jpy|cny|rmb|krw|uah|idr|php|ngn|zar|pln|chf|sek|nok|dkk|czk|huf|aed|sar|"
    "egp|vnd|thb|myr|sgd|hkd|twd|pkr|bdt|kes"
)
_CURRENCY_BEFORE_RE: Final = re.compile(rf"(?:[{_SYMBOLS}]|\b(?:{_CURRENCY_CODES}|rs|rp|rm)\.?)\s?$")
# \u0440\u0443\u0431 and \u0440 are the Cyrillic rouble abbreviations, escaped because every letter looks Latin.
_CURRENCY_AFTER_RE: Final = re.compile(
    rf"^\s?(?:[{_SYMBOLS}円元원]|(?:\u0440\u0443\u0431|rubl|dollar|euro|rupee|rupia|peso|lira|гривн|ريال|درهم|جنيه|บาท)"
    rf"|(?:{_CURRENCY_CODES}|reais|yuan|yen|baht|грн|zł|zl|kr|tl|lei|\u0440|đ|dh)(?![^\W\d_]))"
)
# Words right before a number that mark it as an id, a card, a phone or an SMS short code.
_NOT_A_CODE_CONTEXT_RE: Final = re.compile(
    r"(?:\b(?:order|ref|reference|invoice|ticket|tracking|booking|reservation|account|acct|a/c|card|ending|id|no|nr"
    r"|number|txn|transaction|customer|member|pedido|commande|bestellung|заказ\w*|номер\w*|stop|reply|text|txt"
    r"|call|dial|tel|phone)\b|[#№]|订单|注文|주문)\W*(?:\w+\W*)?$"
)
_LETTER_STOPWORDS: Final = frozenset({"CODE", "STOP", "HELP", "NEVER", "VALID", "SHARE", "EXPIRES", "ASAP", "HTTP"})

_MAX_GAP = 60
_MAX_CONTEXT = 30
_BEFORE_WEIGHT = 30
_AFTER_WEIGHT = 20
_WORD_COST = 5
_NOT_A_CODE_PENALTY = 25


@dataclass(frozen=True, slots=True)
class _Message:
    text: str  # normalized, with URLs, e-mail handles and phone numbers blanked out
    low: str  # `text` lower-cased character by character, so indexes line up
    keywords: tuple[tuple[int, int], ...]


@dataclass(frozen=True, slots=True)
class _Candidate:
    value: str
    start: int
    end: int
    base: int
    kind: str  # "digits", "alnum" or "letters"


@dataclass(frozen=True, slots=True)
class _Link:
    before: int  # keyword bonus from a keyword before the candidate
    after: int  # keyword bonus from a keyword after it
    tight: bool  # a keyword directly before it, with only connectors in between
    marked: bool  # a keyword at most one word away, before or after


def extract_code(text: str) -> str | None:
    """The most likely verification code in an SMS body, as written (leading zeros kept), or None."""
    if not text:
        return None
    msg = _prepare(text)
    best: tuple[int, int, str] | None = None
    for candidate in _candidates(msg):
        score = _score(candidate, msg)
        if score is not None and (best is None or (score, -candidate.start) > best[:2]):
            best = (score, -candidate.start, candidate.value)
    return best[2] if best else None


def _prepare(text: str) -> _Message:
    """Normalize (NFKC, ASCII digits), blank out URLs and phone numbers, and find the keywords."""
    # A full-width comma (U+FF0C) ends a CJK clause; NFKC alone would turn "482913<U+FF0C>5" into "482913,5".
    norm = unicodedata.normalize("NFKC", text[:MAX_SCAN_CHARS].replace("\uff0c", ", "))[:MAX_SCAN_CHARS]
    norm = "".join(str(unicodedata.decimal(ch)) if ch.isdecimal() else ch for ch in norm)
    norm = _NOISE_RE.sub(_blank, norm)
    norm = _PHONE_RE.sub(lambda m: _blank(m) if _is_phone(m.group()) else m.group(), norm)
    low = "".join(lowered if len(lowered := ch.lower()) == 1 else ch for ch in norm)
    return _Message(norm, low, tuple(m.span() for m in _KEYWORD_RE.finditer(low)))


def _blank(match: re.Match[str]) -> str:
    return " " * len(match.group())


def _is_phone(number: str) -> bool:
    """`+` and 7+ digits, or 9+ digits written with brackets or as 3+ short groups (`1-800-123-4567`)."""
    groups = re.findall(r"[0-9]+", number)
    digits = sum(map(len, groups))
    if number.startswith("+"):
        return digits >= 7
    return digits >= 9 and ("(" in number or (len(groups) >= 3 and all(len(g) <= 4 for g in groups)))


def _candidates(msg: _Message) -> Iterator[_Candidate]:
    """Every substring that could be the code, before any filtering by context."""
    chunks = list(_CHUNK_RE.finditer(msg.text))
    for chunk in chunks:
        value = chunk.group()
        if value.isdigit():
            base = 18 if _SENDER_PREFIX_RE.search(msg.text[max(0, chunk.start() - 5) : chunk.start()]) else 10
            yield _Candidate(value, chunk.start(), chunk.end(), base + 2 * (len(value) == 6), "digits")
        elif grouped := _dash_grouped(value):
            yield _Candidate(grouped, chunk.start(), chunk.end(), 14, "digits")
    yield from _space_grouped(chunks, msg.text)
    for token in _TOKEN_RE.finditer(msg.text):
        value = token.group()
        if 4 <= len(value) <= 10 and not value.isdigit() and not _overlaps_keyword(token.span(), msg):
            kind = "letters" if value.isalpha() else "alnum"
            yield _Candidate(value, token.start(), token.end(), 4 if kind == "letters" else 8, kind)


def _dash_grouped(chunk: str) -> str | None:
    """`123-456` / `1234-5678` as one code; dates, ranges of years and phone pieces give None."""
    groups = _DASH_RE.split(chunk)
    if len(groups) != 2 or not all(g.isdigit() and 3 <= len(g) <= 4 for g in groups):
        return None
    return None if all(_is_year_or_date(g) for g in groups) else "".join(groups)


def _space_grouped(chunks: list[re.Match[str]], text: str) -> Iterator[_Candidate]:
    """`123 456`: exactly two 3-4 digit groups separated by one space, not part of a longer run."""
    runs: list[list[re.Match[str]]] = []
    for chunk in chunks:
        if runs and runs[-1][-1].end() + 1 == chunk.start() and text[chunk.start() - 1] == " ":
            runs[-1].append(chunk)
        else:
            runs.append([chunk])
    for run in runs:
        groups = [m.group() for m in run]
        if len(run) == 2 and all(g.isdigit() and 3 <= len(g) <= 4 and not _is_year_or_date(g) for g in groups):
            yield _Candidate("".join(groups), run[0].start(), run[1].end(), 14, "digits")


def _overlaps_keyword(span: tuple[int, int], msg: _Message) -> bool:
    return any(start < span[1] and span[0] < end for start, end in msg.keywords)


def _score(candidate: _Candidate, msg: _Message) -> int | None:
    """Base score plus keyword proximity minus id/phone context, or None when it cannot be the code."""
    link = _link(candidate, msg)
    if not _plausible(candidate, msg, link):
        return None
    score = candidate.base + max(link.before, link.after)
    if _NOT_A_CODE_CONTEXT_RE.search(_context_before(candidate.start, msg)):
        score -= _NOT_A_CODE_PENALTY
    return score if score > 0 else None


def _link(candidate: _Candidate, msg: _Message) -> _Link:
    """How strongly the nearest keywords before and after point at the candidate."""
    before = [end for _, end in msg.keywords if end <= candidate.start]
    after = [start for start, _ in msg.keywords if start >= candidate.end]
    gap_before = _gap_words(msg.low[before[-1] : candidate.start]) if before else None
    gap_after = _gap_words(msg.low[candidate.end : after[0]]) if after else None
    return _Link(
        before=_bonus(gap_before, _BEFORE_WEIGHT),
        after=_bonus(gap_after, _AFTER_WEIGHT),
        tight=gap_before == (0, False),
        marked=any(gap is not None and gap[0] <= 1 and not gap[1] for gap in (gap_before, gap_after)),
    )


def _gap_words(gap: str) -> tuple[int, bool] | None:
    """(non-connector words, sentence break) between a keyword and a candidate; None if too far apart."""
    if len(gap) > _MAX_GAP:
        return None
    words = sum(word not in _CONNECTORS for word in _WORD_RE.findall(gap))
    return words, bool(_SENTENCE_END_RE.search(gap))


def _bonus(gap: tuple[int, bool] | None, weight: int) -> int:
    if gap is None:
        return 0
    words, broken = gap
    bonus = max(0, weight - _WORD_COST * words)
    return bonus // 2 if broken else bonus


def _plausible(candidate: _Candidate, msg: _Message, link: _Link) -> bool:
    """Reject lookalikes: years, dates, amounts, percentages, units, unmarked or dictionary-looking words."""
    value = candidate.value
    if candidate.kind == "alnum":
        return link.marked and not _UNIT_RE.fullmatch(value.lower())
    if candidate.kind == "letters":
        return (
            link.tight
            and value.isupper()
            and len(value) <= 8
            and value not in _LETTER_STOPWORDS
            and any(ch.islower() for ch in msg.text)
        )
    if not 4 <= len(value) <= 8 or (_is_year_or_date(value) and not link.tight):
        return False
    around_before = msg.low[max(0, candidate.start - 6) : candidate.start]
    around_after = msg.low[candidate.end : candidate.end + 8]
    return not (_CURRENCY_BEFORE_RE.search(around_before) or _CURRENCY_AFTER_RE.search(around_after))


def _is_year_or_date(digits: str) -> bool:
    """`1900`-`2099`, or a compact `YYYYMMDD` date."""
    if len(digits) == 4:
        return 1900 <= int(digits) <= 2099
    if len(digits) == 8:
        return _is_year_or_date(digits[:4]) and 1 <= int(digits[4:6]) <= 12 and 1 <= int(digits[6:]) <= 31
    return False


def _context_before(start: int, msg: _Message) -> str:
    """The few characters before a candidate, cut at the last keyword so "Apple ID code: 1234" stays clean."""
    floor = max([0, start - _MAX_CONTEXT, *(end for _, end in msg.keywords if end <= start)])
    return msg.low[floor:start]
