"""The agents file (`SMSRENT_AGENTS_FILE`): TOML `[[agent]]` tables naming each agent, its key's SHA-256 or its
OAuth subject, its scopes and its own limits. Parsed and validated here, re-read while the server runs, and
edited by `smsrent-mcp agents add/remove`, which never rewrite another entry's text.

```toml
[[agent]]
name = "signup-bot"
key_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
scopes = ["read", "spend"]
daily_budget = "5.00"   # decimal strings: a TOML float would lose cents
max_price = "1.50"
```
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

from smsrent.domain.principal import OWNER_NAME, SCOPES, Scope

log = logging.getLogger("smsrent")

FIELDS = ("name", "key_sha256", "subject", "scopes", "daily_budget", "max_price")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
HEADER = re.compile(r"\s*\[\[\s*agent\s*\]\]\s*(#.*)?")
MAX_SUBJECT = 255
MAX_MONEY = Decimal(10) ** 8
FINEST_AMOUNT = Decimal("0.0001")  # the finest amount the ledger keeps
CHECK_EVERY = 2.0  # seconds between two looks at the file while serving
KEY_PREFIX = "smsrent_"


class AgentsFileError(ValueError):
    """The agents file cannot be used; the message names the file and the line or the entry."""


@dataclass(frozen=True)
class AgentEntry:
    """One `[[agent]]` table, validated."""

    name: str
    scopes: tuple[Scope, ...]
    key_sha256: str | None = None
    subject: str | None = None
    daily_budget: Decimal | None = None
    max_price: Decimal | None = None

    def toml(self) -> str:
        """The entry as `agents add` appends it."""
        lines = ["[[agent]]", f"name = {_string(self.name)}"]
        if self.key_sha256 is not None:
            lines.append(f"key_sha256 = {_string(self.key_sha256)}")
        if self.subject is not None:
            lines.append(f"subject = {_string(self.subject)}")
        lines.append(f"scopes = [{', '.join(map(_string, self.scopes))}]")
        for field, value in (("daily_budget", self.daily_budget), ("max_price", self.max_price)):
            if value is not None:
                lines.append(f"{field} = {_string(str(value))}")
        return "\n".join(lines) + "\n"


def _string(text: str) -> str:
    """A TOML basic string (names and subjects are printable, so escaping `\\` and `"` is enough)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Agents:
    """The entries of one good version of the file."""

    entries: tuple[AgentEntry, ...] = ()

    def by_key(self, presented: str) -> AgentEntry | None:
        """The entry whose key is `presented`: its SHA-256 is compared with every entry's in constant time (no
        early exit), so the answer's timing tells nothing about which hash, or how much of one, matched."""
        digest = key_digest(presented).encode()
        found = None
        for entry in self.entries:
            if entry.key_sha256 is not None and hmac.compare_digest(entry.key_sha256.encode(), digest):
                found = entry
        return found

    def by_subject(self, subject: str) -> AgentEntry | None:
        return next((e for e in self.entries if e.subject == subject), None)


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def fingerprint(digest: str) -> str:
    """A short, safe name for a key: the first 8 hex digits of its SHA-256 (what `agents list` shows)."""
    return digest[:8]


def new_key() -> str:
    """A fresh agent key: 256 random bits, with a prefix secret scanners can recognise."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


# -- Parsing ---------------------------------------------------------------------------------------------------


def parse(text: str, source: str) -> Agents:
    """The agents in `text` (the file `source`). Raises AgentsFileError naming the line of a syntax error, or the
    entry (its position and name) of a content error."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise AgentsFileError(f"{source}: TOML syntax error: {err}") from err
    unknown = sorted(set(document) - {"agent"})
    if unknown:
        raise AgentsFileError(f"{source}: unknown top-level key {unknown[0]!r}: the file holds [[agent]] tables only")
    tables = document.get("agent", [])
    if not isinstance(tables, list):
        raise AgentsFileError(f"{source}: write each agent as an [[agent]] table (double brackets)")
    entries: list[AgentEntry] = []
    for number, table in enumerate(tables, start=1):
        where = f"{source}: [[agent]] #{number}"
        if isinstance(table, dict) and isinstance(table.get("name"), str):
            where += f" ({table['name']!r})"
        try:
            entries.append(entry(table, entries))
        except ValueError as err:
            raise AgentsFileError(f"{where}: {err}") from err
    return Agents(tuple(entries))


def entry(table: object, others: list[AgentEntry] | tuple[AgentEntry, ...] = ()) -> AgentEntry:
    """One validated entry, unique among `others`. Raises ValueError with one sentence."""
    if not isinstance(table, dict):
        raise ValueError("not a table")  # pragma: no cover - tomllib gives tables in an array of tables
    unknown = sorted(set(table) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    name = table.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError("name is required: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if name.lower() == OWNER_NAME:
        raise ValueError(f"the name {OWNER_NAME!r} is the owner's (SMSRENT_HTTP_TOKEN); choose another")
    if any(o.name.lower() == name.lower() for o in others):
        raise ValueError(f"the name {name!r} is already taken by another entry")
    key, subject = table.get("key_sha256"), table.get("subject")
    if (key is None) == (subject is None):
        raise ValueError("give exactly one of key_sha256 (an API key's hash) or subject (an OAuth sub)")
    if key is not None:
        if not isinstance(key, str) or not SHA256_HEX.fullmatch(key):
            raise ValueError(
                "key_sha256 must be 64 lowercase hex digits: the SHA-256 of the key (agents add writes it)"
            )
        if any(o.key_sha256 == key for o in others):
            raise ValueError("this key_sha256 is already another entry's: give each agent its own key")
    if subject is not None:
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT or not subject.isprintable():
            raise ValueError(f"subject must be the OAuth sub as a string of 1 to {MAX_SUBJECT} printable characters")
        if any(o.subject == subject for o in others):
            raise ValueError(f"the subject {subject!r} is already another entry's")
    return AgentEntry(
        name=name,
        scopes=_scopes(table.get("scopes")),
        key_sha256=key,
        subject=subject,
        daily_budget=_money(table, "daily_budget"),
        max_price=_money(table, "max_price"),
    )


def _scopes(value: object) -> tuple[Scope, ...]:
    words = value if isinstance(value, list) else None
    if not words or any(word not in SCOPES for word in words):
        raise ValueError(f"scopes must be a non-empty list of {', '.join(map(repr, SCOPES))}, e.g. ['read', 'spend']")
    return tuple(cast("Scope", word) for word in dict.fromkeys(words))


def _money(table: Mapping[str, Any], field: str) -> Decimal | None:
    value = table.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f'{field} must be a decimal string such as "5.00" (a TOML number would lose cents)')
    try:
        amount = Decimal(value.strip())
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or not 0 < amount < MAX_MONEY or amount.quantize(FINEST_AMOUNT) != amount:
        raise ValueError(f"{field} must be a positive amount in USD with at most 4 decimals, got {value!r}")
    return amount


# -- The file while serving ------------------------------------------------------------------------------------


class AgentsFile:
    """The agents file as the server sees it: read at start (a bad file stops the start), then looked at again
    at most every CHECK_EVERY seconds when a credential is checked. A change is used at once; a bad change is
    logged once and the last good version stays in force (a missing or unreadable file counts as a bad change:
    to revoke a key, remove its entry)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        text = self._read()
        self._agents = parse(self._decode(text), str(path))
        self._digest = hashlib.sha256(text).hexdigest()  # of the version in force
        self._bad: str | None = None  # of the last version refused
        self._checked = clock()

    def current(self) -> Agents:
        """The agents in force, after a look at the file if the last one is CHECK_EVERY seconds old."""
        now = self._clock()
        if now - self._checked >= CHECK_EVERY:
            self._checked = now
            self._reload()
        return self._agents

    def _reload(self) -> None:
        try:
            text = self._read()
        except AgentsFileError as err:
            self._refuse("missing", err)
            return
        digest = hashlib.sha256(text).hexdigest()
        if digest == self._digest:
            self._bad = None  # back to the version in force: a later bad change is news again
            return
        if digest == self._bad:
            return
        try:
            agents = parse(self._decode(text), str(self.path))
        except AgentsFileError as err:
            self._refuse(digest, err)
            return
        self._agents, self._digest = agents, digest
        log.info("agents file %s reloaded: %d agents", self.path, len(agents.entries))

    def _refuse(self, digest: str, err: AgentsFileError) -> None:
        if digest != self._bad:  # logged once per bad version
            log.warning("%s; keeping the last good version (%d agents)", err, len(self._agents.entries))
            self._bad = digest

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as err:
            raise AgentsFileError(f"{self.path}: cannot read the agents file ({err.strerror or err})") from err

    def _decode(self, text: bytes) -> str:
        try:
            return text.decode()
        except UnicodeDecodeError as err:
            raise AgentsFileError(f"{self.path}: not UTF-8 text (byte {err.start})") from err


# -- Editing (smsrent-mcp agents add/remove) -------------------------------------------------------------------


def load(path: Path) -> tuple[str, Agents]:
    """The file's text and agents; a file that does not exist yet is empty."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return "", Agents()
    except (OSError, UnicodeDecodeError) as err:
        raise AgentsFileError(f"{path}: cannot read the agents file ({err})") from err
    return text, parse(text, str(path))


def add(path: Path, table: dict[str, Any]) -> AgentEntry:
    """Validate `table` as a new entry and append it to the file (created readable by its owner only), leaving
    every other byte as it was."""
    text, agents = load(path)
    new = entry(table, agents.entries)
    separator = "" if not text else "\n" if text.endswith("\n") else "\n\n"
    addition = separator + new.toml()
    parse(text + addition, str(path))  # the file as it will be must still be good
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a") as file:
        file.write(addition)
    return new


def remove(path: Path, name: str) -> AgentEntry:
    """Take the entry named `name` out of the file (with the comment lines right above it), replacing the file
    atomically; every other line stays as it was. Raises AgentsFileError if there is no such entry."""
    text, agents = load(path)
    gone = next((e for e in agents.entries if e.name == name), None)
    if gone is None:
        raise AgentsFileError(f"{path}: no agent named {name!r} (agents list shows them)")
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if HEADER.fullmatch(line.rstrip("\r\n"))]
    kept = None
    for number, start in enumerate(headers):
        end = headers[number + 1] if number + 1 < len(headers) else len(lines)
        if parse("".join(lines[start:end]), str(path)).entries[0].name != name:
            continue
        end = _comments_above(lines, end) if end < len(lines) else end  # the next entry's comments stay
        kept = "".join(lines[: _comments_above(lines, start)] + lines[end:])
    remaining = tuple(e for e in agents.entries if e.name != name)
    if kept is None or parse(kept, str(path)).entries != remaining:
        raise AgentsFileError(f"{path}: cannot take {name!r} out without touching other lines; edit the file by hand")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, path.stat().st_mode & 0o777)
    with os.fdopen(descriptor, "w") as file:
        file.write(kept)
    os.replace(temporary, path)
    return gone


def _comments_above(lines: list[str], index: int) -> int:
    """The first line of the comment block directly above `lines[index]` (`index` itself when there is none)."""
    while index > 0 and lines[index - 1].lstrip().startswith("#"):
        index -= 1
    return index
