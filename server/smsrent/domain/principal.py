"""Who is calling: the owner, or an agent named by the agents file or by an OAuth token, with its scopes and
limits. The MCP layer finds the caller (`smsrent.mcp.auth.principal`); the service layer receives this value."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

Scope = Literal["read", "spend", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "spend", "admin")
IMPLIED: dict[Scope, frozenset[Scope]] = {  # what each scope brings with it
    "read": frozenset({"read"}),
    "spend": frozenset({"spend", "read"}),
    "admin": frozenset({"admin", "read"}),  # seeing every agent's rentals is reading
}
OWNER_NAME = "owner"  # the ledger's agent of every purchase made before agents existed


def granted(scopes: Iterable[Scope]) -> frozenset[Scope]:
    """`scopes` with what they imply: `spend` and `admin` each bring `read`."""
    return frozenset(s for scope in scopes for s in IMPLIED[scope])


@dataclass(frozen=True)
class Principal:
    """A caller: its name (the agents file's, `oauth:<sub>` for an OAuth subject the file does not list, or
    `owner`), what it may do, and its own limits (None: only the server-wide ones apply)."""

    name: str
    scopes: frozenset[Scope]
    daily_budget: Decimal | None = None
    max_price: Decimal | None = None
    subject: str | None = None  # OAuth `sub`
    issuer: str | None = None  # OAuth `iss`
    is_owner: bool = False

    @property
    def is_admin(self) -> bool:
        """May see (and, with `spend`, act on) every agent's rentals, and read the owner's routes."""
        return self.is_owner or "admin" in self.scopes

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes


OWNER = Principal(OWNER_NAME, frozenset(SCOPES), is_owner=True)
